"""The GPU interface every backend satisfies."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True, kw_only=True)
class GpuReading:
    """One look at a GPU. A value the GPU cannot report is None."""

    power_w: float | None = None
    energy_j: float | None = None  # monotonic within one run
    temperature_c: float | None = None
    utilization_pct: float | None = None
    power_limit_w: float | None = None
    cap_binding: bool | None = None  # the power cap is what holds the clocks back
    lost: bool = False


class Gpu(Protocol):
    """A GPU whose power heatctl can steer."""

    id: str
    can_set_limit: bool

    def limits_w(self) -> tuple[float, float]: ...

    def idle_w(self) -> float: ...

    def set_power_limit(self, watts: float) -> float: ...  # returns what the driver enforces

    def read(self) -> GpuReading: ...

    def restore(self) -> None: ...  # always called on shutdown
