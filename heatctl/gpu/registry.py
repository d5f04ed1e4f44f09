"""GPU backends by name. The core holds only the ``Gpu`` interface; NVML is imported when asked for."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Final

from heatctl.config import GpuConfig
from heatctl.gpu.base import Gpu

GpuFactory = Callable[[GpuConfig, Path, Callable[[], float]], Gpu]


def _open_sim(cfg: GpuConfig, state_dir: Path, time_fn: Callable[[], float]) -> Gpu:
    from heatctl.gpu.sim import SimGpu

    return SimGpu(cfg.id, cfg.sim, time_fn=time_fn)


def _open_nvml(cfg: GpuConfig, state_dir: Path, time_fn: Callable[[], float]) -> Gpu:
    from heatctl.gpu import nvml  # imports pynvml only when a GPU asks for it

    return nvml.open_gpu(cfg, state_dir=state_dir, time_fn=time_fn)


GPU_BACKENDS: Final[dict[str, GpuFactory]] = {"sim": _open_sim, "nvml": _open_nvml}


def open_gpu(cfg: GpuConfig, *, state_dir: Path, time_fn: Callable[[], float]) -> Gpu:
    """The GPU backend named by ``cfg.backend``."""
    return GPU_BACKENDS[cfg.backend](cfg, state_dir, time_fn)
