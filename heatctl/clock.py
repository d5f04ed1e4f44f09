"""Clocks: real monotonic time, or time running faster for the demo. Injected everywhere."""

from __future__ import annotations

import os
import threading
import time
from datetime import UTC, datetime, tzinfo
from typing import Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]


class Clock(Protocol):
    def __call__(self) -> float: ...  # monotonic seconds

    def wait(self, event: threading.Event, timeout_s: float) -> bool: ...


class RealClock:
    def __call__(self) -> float:
        return time.monotonic()

    def wait(self, event: threading.Event, timeout_s: float) -> bool:
        return event.wait(max(timeout_s, 0.0))


class ScaledClock:
    """Monotonic time running ``speed`` times faster than the wall clock."""

    def __init__(self, speed: float) -> None:
        self.speed = speed
        self._t0 = time.monotonic()

    def __call__(self) -> float:
        return self._t0 + (time.monotonic() - self._t0) * self.speed

    def wait(self, event: threading.Event, timeout_s: float) -> bool:
        return event.wait(max(timeout_s, 0.0) / self.speed)


def local_minute(epoch_s: float, tz: tzinfo | None = None) -> int:
    """The minute of the local day at ``epoch_s`` (quiet hours and tariff periods are in local time)."""
    moment = datetime.fromtimestamp(epoch_s, tz) if tz is not None else datetime.fromtimestamp(epoch_s).astimezone()
    return moment.hour * 60 + moment.minute


def local_day(epoch_s: float, tz: tzinfo | None = None) -> str:
    """The local date at ``epoch_s``, ISO (``2026-12-05``): the money view's day."""
    moment = datetime.fromtimestamp(epoch_s, tz) if tz is not None else datetime.fromtimestamp(epoch_s).astimezone()
    return moment.date().isoformat()


def local_zone() -> tzinfo:
    """The system's time zone with its daylight-saving rules (``TZ``, else ``/etc/localtime``); a
    fixed offset only where neither names one. Schedules follow the clocks when they change."""
    name = os.environ.get("TZ", "").lstrip(":")
    candidates = [name] if name else []
    try:
        target = os.path.realpath("/etc/localtime")
        if "zoneinfo/" in target:
            candidates.append(target.split("zoneinfo/", 1)[1])
    except OSError:
        pass
    for candidate in candidates:
        try:
            return ZoneInfo(candidate)
        except (ZoneInfoNotFoundError, ValueError):
            continue
    if not name:
        try:
            with open("/etc/localtime", "rb") as f:
                return ZoneInfo.from_file(f)
        except (OSError, ValueError):
            pass
    return datetime.now().astimezone().tzinfo or UTC


class DailySpan(Protocol):
    """From ``from_`` to ``to`` (HH:MM, local time) every day; it may run past midnight."""

    @property
    def minutes(self) -> tuple[int, int]: ...


def in_daily_span(span: DailySpan, minute: int) -> bool:
    """Whether ``minute`` of the local day is inside the span."""
    start, end = span.minutes
    return start <= minute < end if start <= end else minute >= start or minute < end


def daily_span_mask(span: DailySpan, minutes: npt.NDArray[np.float64]) -> npt.NDArray[np.bool_]:
    """``in_daily_span`` for many minutes of the day at once."""
    start, end = span.minutes
    if start <= end:
        return np.asarray((minutes >= start) & (minutes < end))
    return np.asarray((minutes >= start) | (minutes < end))


def local_minutes(epoch_s: FloatArray, tz: tzinfo | None) -> FloatArray:
    """The minute of the local day at each epoch time, across daylight-saving changes (offsets
    are looked up once per hour: zones change their offset on the hour)."""
    hours = np.floor(np.asarray(epoch_s, dtype=np.float64) / 3600.0)
    unique, index = np.unique(hours, return_inverse=True)
    offsets_s = np.array(
        [_offset_s(datetime.fromtimestamp(h * 3600.0, UTC), tz) for h in unique.tolist()], dtype=np.float64
    )
    local_s = np.asarray(epoch_s, dtype=np.float64) + offsets_s[index]
    return np.asarray((local_s % 86400.0) / 60.0, dtype=np.float64)


def _offset_s(moment: datetime, tz: tzinfo | None) -> float:
    offset = moment.astimezone(tz).utcoffset()
    return offset.total_seconds() if offset is not None else 0.0
