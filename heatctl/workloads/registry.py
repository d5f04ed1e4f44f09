"""Workload kinds by name (``workload.type``): each registers a factory; the core sees ``Workload``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Final

from heatctl.config import GpuConfig
from heatctl.errors import ConfigError
from heatctl.gpu.base import Gpu
from heatctl.workloads.base import Workload

WorkloadFactory = Callable[[GpuConfig, Gpu | None, Path, Callable[[], float]], Workload]


def _sim(cfg: GpuConfig, gpu: Gpu | None, state_dir: Path, time_fn: Callable[[], float]) -> Workload:
    from heatctl.gpu.sim import SimGpu
    from heatctl.workloads.sim import SimWorkload

    if not isinstance(gpu, SimGpu):
        raise ConfigError([f"gpus[{cfg.id}].workload: type sim needs backend sim"])
    return SimWorkload(gpu, time_fn)


def _none(cfg: GpuConfig, gpu: Gpu | None, state_dir: Path, time_fn: Callable[[], float]) -> Workload:
    from heatctl.workloads.none import NoWorkload

    return NoWorkload()


def _process(cfg: GpuConfig, gpu: Gpu | None, state_dir: Path, time_fn: Callable[[], float]) -> Workload:
    from heatctl.config import ProcessWorkloadConfig
    from heatctl.workloads.process import ProcessWorkload

    assert isinstance(cfg.workload, ProcessWorkloadConfig)  # the registry's key is the union's tag
    return ProcessWorkload(cfg.id, cfg.workload, state_dir=state_dir, time_fn=time_fn)


def _openai(cfg: GpuConfig, gpu: Gpu | None, state_dir: Path, time_fn: Callable[[], float]) -> Workload:
    from heatctl.config import OpenAIWorkloadConfig
    from heatctl.workloads.openai import OpenAIWorkload

    assert isinstance(cfg.workload, OpenAIWorkloadConfig)  # the registry's key is the union's tag
    return OpenAIWorkload(cfg.id, cfg.workload, state_dir=state_dir, time_fn=time_fn)


WORKLOADS: Final[dict[str, WorkloadFactory]] = {"sim": _sim, "none": _none, "process": _process, "openai": _openai}


def open_workload(cfg: GpuConfig, gpu: Gpu | None, *, state_dir: Path, time_fn: Callable[[], float]) -> Workload:
    """The workload ``cfg.workload.type`` names, for this GPU."""
    return WORKLOADS[cfg.workload.type](cfg, gpu, state_dir, time_fn)
