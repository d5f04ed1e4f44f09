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
    power_limit_w: float | None = None  # the limit the driver holds now (read back, not remembered)
    fault: str | None = None  # why the GPU cannot be read now (lost, driver error); the rest is then None


class Gpu(Protocol):
    """A GPU whose power heatctl can steer."""

    id: str
    can_set_limit: bool
    limit_problem: str | None  # why limits cannot be set, for messages

    def limits_w(self) -> tuple[float, float]: ...

    def idle_w(self) -> float: ...

    def set_power_limit(self, watts: float) -> float: ...  # returns what the driver enforces

    def read(self) -> GpuReading: ...

    def restore(self) -> None: ...  # always called on shutdown
