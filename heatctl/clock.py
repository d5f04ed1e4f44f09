"""Clocks: real monotonic time, or time running faster for the demo. Injected everywhere."""

from __future__ import annotations

import os
import threading
import time
from datetime import UTC, datetime, tzinfo
from typing import Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


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
