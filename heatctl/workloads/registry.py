"""Workload kinds by name (``workload.type``): each registers a factory; the core sees ``Workload``."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Final

from heatctl.config import GpuConfig
from heatctl.errors import ConfigError
from heatctl.gpu.base import Gpu
from heatctl.workloads.base import Workload

if TYPE_CHECKING:
    from heatctl.worksource import WorkSource


@dataclass(frozen=True, slots=True)
class WorkloadContext:
    """What the service gives every workload it opens."""

    state_dir: Path
    time_fn: Callable[[], float] = field(default=time.monotonic)
    batches: WorkSource | None = None  # where batch work comes from (the Batch API's queue), for ``openai``


WorkloadFactory = Callable[[GpuConfig, Gpu | None, WorkloadContext], Workload]


def _sim(cfg: GpuConfig, gpu: Gpu | None, ctx: WorkloadContext) -> Workload:
    from heatctl.gpu.sim import SimGpu
    from heatctl.workloads.sim import SimWorkload

    if not isinstance(gpu, SimGpu):
        raise ConfigError([f"gpus[{cfg.id}].workload: type sim needs backend sim"])
    return SimWorkload(gpu, ctx.time_fn)


def _none(cfg: GpuConfig, gpu: Gpu | None, ctx: WorkloadContext) -> Workload:
    from heatctl.workloads.none import NoWorkload

    return NoWorkload()


def _process(cfg: GpuConfig, gpu: Gpu | None, ctx: WorkloadContext) -> Workload:
    from heatctl.config import ProcessWorkloadConfig
    from heatctl.workloads.process import ProcessWorkload

    assert isinstance(cfg.workload, ProcessWorkloadConfig)  # the registry's key is the union's tag
    return ProcessWorkload(cfg.id, cfg.workload, state_dir=ctx.state_dir, time_fn=ctx.time_fn)


def _openai(cfg: GpuConfig, gpu: Gpu | None, ctx: WorkloadContext) -> Workload:
    from heatctl.config import OpenAIWorkloadConfig
    from heatctl.workloads.openai import OpenAIWorkload

    assert isinstance(cfg.workload, OpenAIWorkloadConfig)  # the registry's key is the union's tag
    return OpenAIWorkload(cfg.id, cfg.workload, state_dir=ctx.state_dir, time_fn=ctx.time_fn, batches=ctx.batches)


WORKLOADS: Final[dict[str, WorkloadFactory]] = {"sim": _sim, "none": _none, "process": _process, "openai": _openai}


def open_workload(cfg: GpuConfig, gpu: Gpu | None, ctx: WorkloadContext) -> Workload:
    """The workload ``cfg.workload.type`` names, for this GPU."""
    return WORKLOADS[cfg.workload.type](cfg, gpu, ctx)
