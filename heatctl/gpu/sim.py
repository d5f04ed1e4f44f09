"""A simulated GPU: the plant model the simulator uses, and a backend for ``heatctl run``."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

from heatctl.config import SimGpuConfig
from heatctl.control.efficiency import Curve
from heatctl.control.surface import InferenceSurface, Limits
from heatctl.gpu.base import GpuReading


def plant_surface(cfg: SimGpuConfig) -> InferenceSurface | None:
    """The simulated GPU's true inference surface (None: a plain GPU whose draw follows the cap)."""
    inf = cfg.inference
    if inf is None:
        return None
    limits = Limits(idle_w=cfg.idle_w, min_limit_w=cfg.min_limit_w, max_limit_w=cfg.max_limit_w)
    return InferenceSurface(
        inf.uncapped, limits, max_concurrency=inf.max_concurrency, clock_exponent=inf.clock_exponent
    )


class SimGpuModel:
    """Steady-state power and work of a GPU under a power cap at a workload level.

    At level L the workload keeps the GPU busy a fraction L of the time at the clocks
    the cap allows: power = idle + L·(P(cap) − idle), work = L·W(cap), where P(cap) is
    the capped draw and W the configured work rate at that cap (zero at idle).
    """

    def __init__(self, cfg: SimGpuConfig) -> None:
        self.cfg = cfg
        self.full_load_w = cfg.full_load_w if cfg.full_load_w is not None else cfg.max_limit_w
        points = sorted((float(w), float(r)) for w, r in cfg.work_at_w)
        if points[0][0] > cfg.idle_w:
            points.insert(0, (cfg.idle_w, 0.0))
        self._work = Curve(points)  # work rate at each busy draw
        # An LLM server: the level is the share of max_concurrency requests in flight, and draw and
        # tokens/s follow the batch first and the cap second.
        self.surface = plant_surface(cfg)

    def in_flight(self, level: float) -> int:
        assert self.surface is not None
        return round(min(max(level, 0.0), 1.0) * self.surface.max_concurrency)

    def busy_w(self, limit_w: float) -> float:
        """Draw while busy under this cap."""
        return min(max(limit_w, self.cfg.min_limit_w), self.cfg.max_limit_w, self.full_load_w)

    def power_w(self, limit_w: float, level: float, extra_level: float = 0.0) -> float:
        if self.surface is not None:
            return self.surface.at(self.in_flight(level + extra_level), limit_w)[0]
        busy = min(level + extra_level, 1.0)
        return self.cfg.idle_w + busy * (self.busy_w(limit_w) - self.cfg.idle_w)

    def work_rate(self, limit_w: float, level: float, extra_level: float = 0.0) -> float:
        """heatctl's work; others' load (``extra_level``) takes its share of a saturated GPU."""
        demand = level + extra_level
        if demand <= 0.0:
            return 0.0
        if self.surface is not None:  # the batch's tokens, shared with others' requests in it
            return self.surface.at(self.in_flight(demand), limit_w)[1] * level / demand
        return min(demand, 1.0) * level / demand * self._work(self.busy_w(limit_w))


class SimGpu:
    """The model in real (or accelerated) time, with a first-order power response.

    ``extra_level`` stands for load that others put on the GPU (interactive requests):
    it draws power but is not heatctl's work.
    """

    can_set_limit = True
    limit_problem: str | None = None

    def __init__(self, gpu_id: str, cfg: SimGpuConfig, *, time_fn: Callable[[], float] = time.monotonic) -> None:
        self.id = gpu_id
        self.model = SimGpuModel(cfg)
        self._time_fn = time_fn
        self._limit_w = cfg.max_limit_w
        self.level = 0.0
        self.extra_level = 0.0
        self._power_w = cfg.idle_w
        self._energy_j = 0.0
        self._work = 0.0
        self._last_s = time_fn()
        self.limit_writes = 0
        self._lock = threading.RLock()  # the demo's room thread reads while the service steers

    def limits_w(self) -> tuple[float, float]:
        return self.model.cfg.min_limit_w, self.model.cfg.max_limit_w

    def idle_w(self) -> float:
        return self.model.cfg.idle_w

    def set_power_limit(self, watts: float) -> float:
        with self._lock:
            self._advance()
            lo, hi = self.limits_w()
            self._limit_w = min(max(watts, lo), hi)
            self.limit_writes += 1
            return self._limit_w

    def set_level(self, level: float) -> None:
        with self._lock:
            self._advance()
            self.level = min(max(level, 0.0), 1.0)

    def read(self) -> GpuReading:
        with self._lock:
            return self._read()

    def _read(self) -> GpuReading:
        self._advance()
        return GpuReading(
            power_w=self._power_w,
            energy_j=self._energy_j,
            temperature_c=30.0 + 0.15 * self._power_w,
            power_limit_w=self._limit_w,
        )

    def work_done(self) -> float:
        with self._lock:
            self._advance()
            return self._work

    def restore(self) -> None:
        self._limit_w = self.model.cfg.max_limit_w

    def _advance(self) -> None:
        now_s = self._time_fn()
        dt_s = max(now_s - self._last_s, 0.0)
        self._last_s = now_s
        target_w = self.model.power_w(self._limit_w, self.level, self.extra_level)
        tau_s = self.model.cfg.response_s
        alpha = 1.0 if tau_s <= 0 else 1.0 - math.exp(-dt_s / tau_s)
        new_w = self._power_w + alpha * (target_w - self._power_w)
        self._energy_j += 0.5 * (self._power_w + new_w) * dt_s
        self._work += self.model.work_rate(self._limit_w, self.level, self.extra_level) * dt_s
        self._power_w = new_w
