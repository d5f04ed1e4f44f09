"""The planner and the zone's weekly schedule."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import (
    Field,
    field_validator,
)

from heatctl.config.base import _Strict, minute_of_day


class PlannerConfig(_Strict):
    """Prediction and planning: learn the room, look ahead, plan the heat (see README: Planner)."""

    enabled: bool = True
    objective: Literal["cost", "carbon", "energy"] = "cost"
    horizon_h: Annotated[float, Field(ge=4, le=72)] = 36.0
    step_min: Annotated[float, Field(ge=5, le=60)] = 15.0
    comfort_tolerance_k: Annotated[float, Field(ge=0, le=2)] = 0.3
    store_k: Annotated[float, Field(ge=0, le=5)] = 0.0
    replan_min: Annotated[float, Field(ge=1, le=240)] = 15.0
    refit_h: Annotated[float, Field(gt=0, le=48)] = 1.0
    history_days: Annotated[float, Field(ge=2, le=60)] = 14.0


class ScheduleEntryConfig(_Strict):
    """From ``at`` on the given days (local time), the setpoint is ``setpoint_c``."""

    days: str = "daily"  # mon-fri, sat,sun, daily, …
    at: str
    setpoint_c: Annotated[float, Field(ge=5, le=35)]

    @field_validator("at")
    @classmethod
    def _time_of_day(cls, value: str) -> str:
        minute_of_day(value)
        return value

    @field_validator("days")
    @classmethod
    def _days(cls, value: str) -> str:
        from heatctl.planner.schedule import parse_days

        parse_days(value)
        return value
