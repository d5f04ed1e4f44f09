"""What every part of the config shares: the strict base model, times of day, durations."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
)

_NODE_ID_RE = r"^[a-z0-9_-]+$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def minute_of_day(text: str) -> int:
    """``"22:30"`` → 1350; ValueError unless it is a time of day HH:MM."""
    m = re.fullmatch(r"(\d{1,2}):(\d{2})", text)
    if not m or int(m.group(1)) > 23 or int(m.group(2)) > 59:
        raise ValueError(f"{text!r} must be a time of day HH:MM")
    return int(m.group(1)) * 60 + int(m.group(2))


class _DailySpan(_Strict):
    """From ``from`` to ``to`` (HH:MM, local time) every day; it may run past midnight."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
    from_: str = Field(alias="from")
    to: str

    @field_validator("from_", "to")
    @classmethod
    def _time_of_day(cls, value: str) -> str:
        minute_of_day(value)
        return value

    @property
    def minutes(self) -> tuple[int, int]:
        """(from, to) as minutes of the day."""
        return minute_of_day(self.from_), minute_of_day(self.to)


WorkPoints = list[tuple[Annotated[float, Field(gt=0)], Annotated[float, Field(ge=0)]]]


_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|min|h|d)\s*$")
_DURATION_S = {"s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}


def duration_s(text: str) -> float:
    """``"24h"`` → 86400.0; ``ValueError`` for anything else (units s, m/min, h, d)."""
    match = _DURATION_RE.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not a duration like 30m, 24h or 2d")
    return float(match.group(1)) * _DURATION_S[match.group(2)]


def _no_duplicates(names: list[str], what: str) -> None:
    seen = set()
    for name in names:
        if name in seen:
            raise ValueError(f"duplicate {what} {name!r}")
        seen.add(name)
