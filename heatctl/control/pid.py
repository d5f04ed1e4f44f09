"""Zone controller (outer loop): room temperature error → heat demand in watts."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import NamedTuple

from simple_pid import PID

from heatctl.config import ControlConfig


class ZoneDemand(NamedTuple):  # a value made every tick: a named tuple is cheap to build
    """What the zone asks for, and why (the PID's terms, for tuning and logging)."""

    demand_w: float
    p_w: float = 0.0
    i_w: float = 0.0
    d_w: float = 0.0
    ff_w: float = 0.0


HELD = ZoneDemand(demand_w=0.0)
DUE_FRACTION = 0.9  # a zone's PID steps when this much of its interval has passed (ticks jitter)


class ZoneController:
    """simple-pid on room temperature plus an outdoor feed-forward.

    Anti-windup holds with the feed-forward: the PID's output limits are shifted by the
    feed-forward every step, and the integrator stops while the output is saturated in the
    direction the error pushes (conditional integration), so a warm night does not leave a
    large negative integral behind. ``hold()`` freezes the integrator (window, fail-safe,
    mode off); the next ``update()`` resumes from it without a bump. After a gap the step
    given to the integrator is capped at ``dt_cap_s``.
    """

    def __init__(
        self,
        cfg: ControlConfig,
        *,
        capacity_w: float,
        time_fn: Callable[[], float] = time.monotonic,
    ) -> None:
        self._cfg = cfg
        self._time_fn = time_fn
        self.capacity_w = capacity_w
        # Gains, limits and dt are set at every step; the PID starts off and is switched on bumplessly.
        self._pid = PID(cfg.kp, 0.0, cfg.kd, sample_time=None, auto_mode=False)
        self._held_integral_w = 0.0
        self._last_s: float | None = None
        self._last_setpoint_c: float | None = None
        self._last: ZoneDemand = HELD
        self._limits: tuple[float, float] | None = None

    @property
    def integral_w(self) -> float:
        """The integrator's value (persisted across restarts)."""
        return self._pid.components[1] if self._pid.auto_mode else self._held_integral_w

    def restore_integral(self, integral_w: float) -> None:
        """Start from a persisted integrator value."""
        self._held_integral_w = integral_w
        if self._pid.auto_mode:
            self._pid.set_auto_mode(False)

    def update(
        self,
        temperature_c: float,
        setpoint_c: float,
        outdoor_c: float | None = None,
        feedforward_w: float | None = None,
    ) -> ZoneDemand:
        """One control step; returns the heat demand. ``feedforward_w`` (the plan's heat) replaces
        the outdoor feed-forward when given."""
        now_s = self._time_fn()
        not_due = self._last_s is not None and now_s - self._last_s < DUE_FRACTION * self._cfg.interval_s
        if self._pid.auto_mode and not_due and setpoint_c == self._last_setpoint_c:
            return self._last._replace(demand_w=min(self._last.demand_w, self.capacity_w))
        self._last_setpoint_c = setpoint_c
        ff_w = (
            min(max(feedforward_w, 0.0), self.capacity_w)
            if feedforward_w is not None
            else self._feed_forward_w(setpoint_c, outdoor_c)
        )
        self._pid.setpoint = setpoint_c
        limits = (-ff_w, self.capacity_w - ff_w)
        if limits != self._limits:  # simple-pid clamps its state on every set: only when they move
            self._pid.output_limits = self._limits = limits
        if not self._pid.auto_mode:
            self._pid.set_auto_mode(True, last_output=self._held_integral_w)
            self._last_s = None
        dt_s = self._cfg.interval_s if self._last_s is None else now_s - self._last_s
        dt_s = min(max(dt_s, self._cfg.dt_floor_s), self._cfg.dt_cap_s)
        self._last_s = now_s

        error_k = setpoint_c - temperature_c
        saturated_low = self._last.demand_w <= 0.0 and error_k < 0
        saturated_high = self._last.demand_w >= self.capacity_w and error_k > 0
        self._pid.Ki = 0.0 if (saturated_low or saturated_high) else self._cfg.ki

        out_w = self._pid(temperature_c, dt=dt_s)
        assert out_w is not None  # auto mode is on
        demand_w = min(max(out_w + ff_w, 0.0), self.capacity_w)
        p_w, i_w, d_w = self._pid.components
        self._last = ZoneDemand(demand_w=demand_w, p_w=p_w, i_w=i_w, d_w=d_w, ff_w=ff_w)
        return self._last

    def hold(self) -> ZoneDemand:
        """No heat; the integrator keeps its value for a bumpless resume."""
        if self._pid.auto_mode:
            self._held_integral_w = self._pid.components[1]
            self._pid.set_auto_mode(False)
        self._last = HELD
        return HELD

    def _feed_forward_w(self, setpoint_c: float, outdoor_c: float | None) -> float:
        if self._cfg.ua_w_per_k is None or outdoor_c is None:
            return 0.0
        return min(max(self._cfg.ua_w_per_k * (setpoint_c - outdoor_c), 0.0), self.capacity_w)
