"""The simulator's workload in ``heatctl run``: drives a simulated GPU's level."""

from __future__ import annotations

from collections.abc import Callable

from heatctl.gpu.sim import SimGpu


class SimWorkload:
    kind = "sim"
    steerable = True

    def __init__(self, gpu: SimGpu, time_fn: Callable[[], float]) -> None:
        self._gpu = gpu
        self._time_fn = time_fn
        self._last: tuple[float, float] | None = None
        self._rate: float | None = None

    def start(self) -> None:
        self._last = (self._time_fn(), self._gpu.work_done())

    def set_level(self, level: float) -> None:
        self._gpu.set_level(level)

    def effective_level(self) -> float | None:
        return self._gpu.level

    def has_work(self) -> bool:
        return True

    def work_rate(self) -> float | None:
        """Average work per second since the last call."""
        now_s, done = self._time_fn(), self._gpu.work_done()
        if self._last is not None and now_s > self._last[0]:
            self._rate = (done - self._last[1]) / (now_s - self._last[0])
        self._last = (now_s, done)
        return self._rate

    def status(self) -> str:
        return f"sim level {self._gpu.level:.2f}"

    def fault(self) -> str | None:
        return None

    def stop(self) -> None:
        self._gpu.set_level(0.0)
