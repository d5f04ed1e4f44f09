"""Clocks: real monotonic time, or time running faster for the demo. Injected everywhere."""

from __future__ import annotations

import threading
import time
from typing import Protocol


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
