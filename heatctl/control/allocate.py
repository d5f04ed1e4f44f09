"""Inner loop: a heat target in watts → a power limit and a workload level for one GPU."""

from __future__ import annotations

import math
from typing import NamedTuple

from heatctl.config import DutyConfig
from heatctl.control.efficiency import EfficiencyModel
from heatctl.control.surface import LearnedSurface


class GpuCommand(NamedTuple):  # a value made every tick: a named tuple is cheap to build
    """What one GPU should do until the next tick."""

    target_w: float
    power_limit_w: float
    level: float  # workload level 0..1
    regime: str  # "idle" | "duty" | "continuous"


class DutyCycle:
    """Time-proportional on/off with minimum on and off times."""

    def __init__(self, cfg: DutyConfig) -> None:
        self._cfg = cfg
        self.on = False
        self._since_s: float | None = None

    def step(self, now_s: float, fraction: float) -> bool:
        """Whether to be on now, for a wanted on-fraction of time."""
        if self._since_s is None:
            self._since_s = now_s
            self.on = fraction > 0.0
        on_s, off_s = self.phases_s(fraction)
        elapsed_s = now_s - self._since_s
        if self.on and elapsed_s >= on_s:
            self.on, self._since_s = False, now_s
        elif not self.on and elapsed_s >= off_s:
            self.on, self._since_s = True, now_s
        return self.on

    def phases_s(self, fraction: float) -> tuple[float, float]:
        """(on, off) durations for a fraction, honouring the minimum times."""
        cfg = self._cfg
        if fraction <= 0.0:
            return 0.0, math.inf
        if fraction >= 1.0:
            return math.inf, 0.0
        on_s = fraction * cfg.period_s
        off_s = cfg.period_s - on_s
        if on_s < cfg.min_on_s:
            on_s = cfg.min_on_s
            off_s = on_s * (1.0 - fraction) / fraction
        if off_s < cfg.min_off_s:
            off_s = cfg.min_off_s
            on_s = off_s * fraction / (1.0 - fraction)
        return on_s, off_s


class Allocator:
    """Chooses the operating point with the most work per joule for a heat target.

    At or above the efficient cap, the GPU runs continuously with the cap at the target
    (a lower cap does more work per joule than full power part of the time). Below it,
    the GPU duty-cycles between idle and the efficient cap. The limit is only written
    when it moves by more than the deadband. While no heat is wanted the cap goes to the
    driver's minimum, so load that others put on the GPU adds as little heat as possible.
    With ``limit_only`` (a workload heatctl cannot steer) the cap is the only lever: it
    follows the target between the driver's minimum and maximum, with no duty cycling.
    A measured power that misses the target while the cap binds trims the limit.

    ``ceiling_w`` (the thermal guard's) may lie below the lowest limit the driver accepts
    (always so for a GPU whose limit cannot be set: min = max): the level then carries the
    rest, scaled so the busy GPU draws about the ceiling.
    """

    def __init__(
        self,
        model: EfficiencyModel,
        duty: DutyConfig,
        *,
        deadband_w: float = 5.0,
        ceiling_w: float | None = None,
        limit_only: bool = False,
        surface: LearnedSurface | None = None,
    ) -> None:
        self.model = model
        self.limit_only = limit_only
        self.surface = surface  # an LLM server: requests in flight, cap and duty chosen together
        self._duty = DutyCycle(duty)
        self._deadband_w = deadband_w
        self.ceiling_w = ceiling_w if ceiling_w is not None else model.caps.max_limit_w
        self._limit_w = model.caps.max_limit_w
        self._trim_w = 0.0
        self._limit_set_s = 0.0  # when the limit last moved while running continuously
        self._continuous = False
        self.settle_s = 10.0  # a reading reflects a new limit only after the GPU settled under it
        self.limit_writes = 0

    @property
    def power_limit_w(self) -> float:
        return self._limit_w

    def level_cap(self) -> float:
        """The highest level that keeps a busy GPU at or below the ceiling, at the lowest settable limit."""
        caps = self.model.caps
        if self.ceiling_w >= caps.min_limit_w:
            return 1.0
        return min(max((self.ceiling_w - caps.idle_w) / max(caps.min_limit_w - caps.idle_w, 1e-9), 0.0), 1.0)

    def step(self, now_s: float, target_w: float, measured_w: float | None = None) -> GpuCommand:
        if self.surface is not None and not self.limit_only:
            return self._step_surface(now_s, target_w)
        caps = self.model.caps
        top_w = min(self.ceiling_w, caps.max_limit_w)
        target_w = min(max(target_w, 0.0), top_w)
        efficient_w = max(min(self.model.efficient_cap_w, top_w), caps.min_limit_w)
        level_cap = self.level_cap()
        if target_w <= caps.idle_w + 1.0:
            self._continuous = False
            self._duty.step(now_s, 0.0)
            self._trim_w = 0.0
            self._write(caps.min_limit_w, force=True)
            return GpuCommand(target_w=target_w, power_limit_w=self._limit_w, level=0.0, regime="idle")
        on_w = caps.idle_w + level_cap * (efficient_w - caps.idle_w)  # a busy GPU's draw when on
        if target_w < on_w and not self.limit_only:
            self._continuous = False
            fraction = (target_w - caps.idle_w) / (on_w - caps.idle_w)
            on = self._duty.step(now_s, fraction)
            self._trim_w = 0.0
            if on:
                self._write(efficient_w, force=True)
            level = level_cap if on else 0.0
            return GpuCommand(target_w=target_w, power_limit_w=self._limit_w, level=level, regime="duty")
        self._duty.step(now_s, 1.0)
        if not self._continuous:
            self._continuous, self._limit_set_s = True, now_s  # the GPU is just being loaded
        if measured_w is not None and now_s - self._limit_set_s >= self.settle_s:
            # Under a settled limit, a cap that holds loosely shows as a steady bias: learn it.
            bias_w = self._limit_w - measured_w
            if abs(bias_w) <= 0.1 * self._limit_w:
                self._trim_w += 0.5 * (bias_w - self._trim_w)
        highest_w = max(top_w, caps.min_limit_w)  # a limit above a lowered cap is moved however little
        if self._write(min(max(target_w + self._trim_w, caps.min_limit_w), highest_w), force=self._limit_w > highest_w):
            self._limit_set_s = now_s
        return GpuCommand(target_w=target_w, power_limit_w=self._limit_w, level=level_cap, regime="continuous")

    def _step_surface(self, now_s: float, target_w: float) -> GpuCommand:
        """An LLM server: the point (requests in flight, cap) with the most tokens per joule that can
        make the target, run continuously or for a share of the time (``heatctl.control.surface``)."""
        assert self.surface is not None
        caps = self.model.caps
        top_w = min(self.ceiling_w, caps.max_limit_w)
        target_w = min(max(target_w, 0.0), max(top_w, caps.idle_w))
        point = self.surface.surface.choose(
            target_w, ceiling_w=top_w, settable=caps.max_limit_w - caps.min_limit_w > 1.0
        )
        if point.in_flight == 0 or point.share <= 0.0:
            self._continuous = False
            self._duty.step(now_s, 0.0)
            self._write(caps.min_limit_w, force=True)
            return GpuCommand(target_w=target_w, power_limit_w=self._limit_w, level=0.0, regime="idle")
        level = point.in_flight / self.surface.prior.max_concurrency
        if point.share >= 0.999:
            self._continuous = True
            self._duty.step(now_s, 1.0)
            self._write(point.cap_w)
            return GpuCommand(target_w=target_w, power_limit_w=self._limit_w, level=level, regime="continuous")
        self._continuous = False
        on = self._duty.step(now_s, point.share)
        if on:
            self._write(point.cap_w, force=True)
        return GpuCommand(target_w=target_w, power_limit_w=self._limit_w, level=level if on else 0.0, regime="duty")

    def _write(self, limit_w: float, *, force: bool = False) -> bool:
        """Move the limit if it moves by the deadband (or ``force``); whether it moved."""
        moved_w = abs(limit_w - self._limit_w)
        if moved_w > 1e-6 and (force or moved_w >= self._deadband_w):
            self._limit_w = limit_w
            self.limit_writes += 1
            return True
        return False
