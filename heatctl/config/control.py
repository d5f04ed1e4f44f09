"""The zone loop, duty cycling and quiet hours."""

from __future__ import annotations

from typing import Annotated

from pydantic import (
    Field,
)

from heatctl.config.base import _DailySpan, _Strict


class ControlConfig(_Strict):
    """The zone's outer loop. Defaults were tuned in simulation (see README: Tuning)."""

    interval_s: Annotated[float, Field(gt=0, le=3600)] = 30.0
    kp: Annotated[float, Field(ge=0)] = 200.0  # W per K of error
    ki: Annotated[float, Field(ge=0)] = 0.4  # W per K·s (integral time kp/ki = 500 s)
    kd: Annotated[float, Field(ge=0)] = 0.0  # W·s per K
    ua_w_per_k: Annotated[float, Field(ge=0)] | None = None  # outdoor feed-forward
    max_room_c: Annotated[float, Field(ge=15, le=35)] = 26.0  # above it, no heat at all (a safety bound)
    max_dt_s: Annotated[float, Field(gt=0)] | None = None  # default 3 × interval_s

    @property
    def dt_cap_s(self) -> float:
        """Longest step the integrator accepts after a gap."""
        return self.max_dt_s if self.max_dt_s is not None else 3.0 * self.interval_s

    @property
    def dt_floor_s(self) -> float:
        """Shortest step the PID takes: a setpoint command right after a tick must not kick the derivative."""
        return self.interval_s / 4.0


class QuietConfig(_DailySpan):
    """Hours with a power ceiling for the whole node (noise follows power)."""

    max_power_w: Annotated[float, Field(ge=0)]


class DutyConfig(_Strict):
    """Time-proportional on/off below the lowest efficient power cap."""

    period_s: Annotated[float, Field(gt=0)] = 300.0
    min_on_s: Annotated[float, Field(ge=0)] = 60.0
    min_off_s: Annotated[float, Field(ge=0)] = 60.0
