"""Open the configured GPUs and their workloads by backend name."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from heatctl.config import GpuConfig
from heatctl.gpu.base import Gpu
from heatctl.gpu.sim import SimGpu
from heatctl.workloads.base import NoWorkload, Workload
from heatctl.workloads.sim import SimWorkload


def open_gpu(cfg: GpuConfig, *, state_dir: Path, time_fn: Callable[[], float]) -> Gpu:
    """The GPU backend named by ``cfg.backend``; NVML is imported only when asked for."""
    if cfg.backend == "sim":
        return SimGpu(cfg.id, cfg.sim, time_fn=time_fn)
    from heatctl.gpu import nvml  # imports pynvml only when a GPU asks for it

    return nvml.open_gpu(cfg, state_dir=state_dir, time_fn=time_fn)


def open_workload(cfg: GpuConfig, gpu: Gpu, *, state_dir: Path, time_fn: Callable[[], float]) -> Workload:
    w = cfg.workload
    if w.type == "sim":
        if not isinstance(gpu, SimGpu):
            from heatctl.errors import ConfigError

            raise ConfigError([f"gpus[{cfg.id}].workload: type sim needs backend sim"])
        return SimWorkload(gpu, time_fn)
    if w.type == "none":
        return NoWorkload()
    if w.type == "process":
        from heatctl.workloads.process import ProcessWorkload

        return ProcessWorkload(cfg.id, w, state_dir=state_dir, time_fn=time_fn)
    from heatctl.workloads.openai import OpenAIWorkload

    return OpenAIWorkload(cfg.id, w, state_dir=state_dir, time_fn=time_fn)
