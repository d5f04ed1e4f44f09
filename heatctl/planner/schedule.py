"""What the setpoint will be: the zone's configured schedule, or the one learned from its history."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, tzinfo

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
DAY_S = 86400.0
WEEK_S = 7 * DAY_S
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def parse_days(text: str) -> frozenset[int]:
    """``mon-fri``, ``sat,sun``, ``daily`` → weekday numbers (Monday 0); ValueError otherwise."""
    words = text.strip().lower()
    if words in ("daily", "all", "every day", "mon-sun"):
        return frozenset(range(7))
    days: set[int] = set()
    for raw in words.split(","):
        part = raw.strip()
        if "-" in part:
            a, b = (p.strip()[:3] for p in part.split("-", 1))
            if a not in DAYS or b not in DAYS:
                raise ValueError(f"{text!r}: days are mon … sun, e.g. mon-fri or sat,sun")
            i, j = DAYS.index(a), DAYS.index(b)
            days.update(range(i, j + 1) if i <= j else [*range(i, 7), *range(0, j + 1)])
        elif part[:3] in DAYS:
            days.add(DAYS.index(part[:3]))
        else:
            raise ValueError(f"{text!r}: days are mon … sun, e.g. mon-fri or sat,sun")
    return frozenset(days)


class WeeklySchedule:
    """Setpoint changes at (weekday, minute) of local time, repeated every week."""

    def __init__(self, changes: Sequence[tuple[frozenset[int], int, float]], tz: tzinfo | None) -> None:
        # Minute of the week → setpoint.
        self._changes = sorted((d * 1440 + minute, sp) for days, minute, sp in changes for d in days)
        self._tz = tz

    def at(self, times_s: FloatArray) -> FloatArray:
        out = np.empty(len(times_s))
        for i, t in enumerate(times_s):
            moment = datetime.fromtimestamp(float(t), self._tz)
            minute = moment.weekday() * 1440 + moment.hour * 60 + moment.minute
            current = self._changes[-1][1]  # before the week's first change: last week's last one
            for at_min, sp in self._changes:
                if at_min > minute:
                    break
                current = sp
            out[i] = current
        return out


def learned_setpoints(
    history_s: FloatArray, history_c: FloatArray, now_s: float, now_c: float, times_s: FloatArray
) -> FloatArray:
    """The setpoint ahead, from what the thermostat did: a week ago with a week of history, else a day ago.

    The setpoint now holds until the pattern's next change, so a person who just changed it is
    not overruled by yesterday.
    """
    known = ~np.isnan(history_c)
    if not known.any():
        return np.full(len(times_s), now_c)
    hs, hc = history_s[known], history_c[known]
    span_s = now_s - hs[0]
    if span_s >= WEEK_S:
        period_s = WEEK_S
    elif span_s >= DAY_S:
        period_s = DAY_S
    else:
        return np.full(len(times_s), now_c)
    back = times_s - period_s * np.ceil((times_s - now_s + 1e-6) / period_s)  # the same moment, in the past
    idx = np.clip(np.searchsorted(hs, back, side="right") - 1, 0, len(hs) - 1)
    pattern = hc[idx]
    pattern_now = hc[max(int(np.searchsorted(hs, now_s - period_s, side="right")) - 1, 0)]
    changes = np.flatnonzero(np.abs(np.diff(np.concatenate([[pattern_now], pattern]))) > 0.05)
    first_change = int(changes[0]) if changes.size else len(times_s)
    pattern[:first_change] = now_c
    return pattern
