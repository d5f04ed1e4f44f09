"""What the planner remembers of a zone: one sample every ``SAMPLE_S``, a sliding window of days.

Each sample keeps the room at its start, the mean heat and outdoor temperature during it, the
setpoint, and whether every reading in it could be trusted (no gap, dropout, window, fail-safe
or implausible value: the control loop says so with ``valid``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
SAMPLE_S = 300.0
COLUMNS = ("time_s", "room_c", "heat_w", "outdoor_c", "setpoint_c", "valid")
PLAUSIBLE_ROOM_C = (0.0, 40.0)
PLAUSIBLE_HEAT_W = (0.0, 20_000.0)


@dataclass(slots=True)
class _Bin:
    start_s: float
    room_c: float
    setpoint_c: float
    heat_j: float = 0.0
    outdoor_sum: float = 0.0
    outdoor_n: int = 0
    seen_s: float = 0.0
    last_s: float = 0.0
    valid: bool = True


@dataclass(frozen=True, slots=True)
class Samples:
    time_s: FloatArray
    room_c: FloatArray
    heat_w: FloatArray
    outdoor_c: FloatArray  # NaN where unknown
    setpoint_c: FloatArray
    valid: npt.NDArray[np.bool_]

    def since(self, start_s: float) -> Samples:
        """The samples from ``start_s`` on."""
        i = int(np.searchsorted(self.time_s, start_s))
        return Samples(
            self.time_s[i:], self.room_c[i:], self.heat_w[i:], self.outdoor_c[i:], self.setpoint_c[i:], self.valid[i:]
        )


class History:
    """Samples of one zone; ``record`` is called at every control tick."""

    def __init__(self, days: float, sample_s: float = SAMPLE_S) -> None:
        self.sample_s = sample_s
        self._max_rows = max(round(days * 86400.0 / sample_s), 1)
        # One row per closed sample, in COLUMNS' order: the last ``_max_rows`` of the first ``_n`` rows of a
        # buffer twice that long (rows are appended in place; when it is full the window moves to its start).
        self._buf = np.zeros((2 * self._max_rows, len(COLUMNS)))
        self._n = 0
        self._bin: _Bin | None = None
        self._samples: Samples | None = None  # cached until the next sample closes

    def record(
        self,
        now_s: float,
        *,
        room_c: float | None,
        setpoint_c: float | None,
        heat_w: float | None,
        outdoor_c: float | None,
        valid: bool,
    ) -> None:
        b = self._bin
        if b is not None and not b.start_s <= now_s < b.start_s + self.sample_s:
            self._close(b, math.floor(now_s / self.sample_s) * self.sample_s)
            b = None
        ok = bool(
            valid
            and room_c is not None
            and setpoint_c is not None
            and heat_w is not None
            and PLAUSIBLE_ROOM_C[0] <= room_c <= PLAUSIBLE_ROOM_C[1]
            and PLAUSIBLE_HEAT_W[0] <= heat_w <= PLAUSIBLE_HEAT_W[1]
        )
        if b is None:
            slot_s = math.floor(now_s / self.sample_s) * self.sample_s
            b = self._bin = _Bin(
                start_s=slot_s,
                room_c=room_c if room_c is not None else math.nan,
                setpoint_c=setpoint_c if setpoint_c is not None else math.nan,
                last_s=now_s,
                valid=ok and now_s - slot_s < 0.5 * self.sample_s,  # a bin joined late has no room at its start
            )
        dt_s = min(now_s - b.last_s, self.sample_s)
        b.last_s = now_s
        if setpoint_c is not None:
            b.setpoint_c = setpoint_c
        b.valid &= ok
        if heat_w is not None:
            b.heat_j += heat_w * dt_s
            b.seen_s += dt_s
        if outdoor_c is not None:
            b.outdoor_sum += outdoor_c
            b.outdoor_n += 1

    def _close(self, b: _Bin, next_start_s: float) -> None:
        contiguous = next_start_s - b.start_s <= self.sample_s  # the next tick came in the next bin
        covered = b.seen_s >= 0.5 * self.sample_s
        heat_w = b.heat_j / b.seen_s if b.seen_s > 0 else math.nan
        outdoor = b.outdoor_sum / b.outdoor_n if b.outdoor_n else math.nan
        ok = bool(b.valid and contiguous and covered)
        self._append(np.array([[b.start_s, b.room_c, heat_w, outdoor, b.setpoint_c, float(ok)]]))

    @property
    def _rows(self) -> FloatArray:
        return self._buf[max(self._n - self._max_rows, 0) : self._n]

    def _append(self, rows: FloatArray) -> None:
        rows = rows[-self._max_rows :]
        if self._n + len(rows) > len(self._buf):  # full: the rows still in the window after these move to the start
            keep = self._max_rows - len(rows)
            kept = self._rows[len(self._rows) - keep :].copy() if keep > 0 else self._rows[:0]
            self._buf[: len(kept)] = kept
            self._n = len(kept)
        self._buf[self._n : self._n + len(rows)] = rows
        self._n += len(rows)
        self._samples = None

    def valid_hours(self) -> float:
        return float((self._rows[:, 5] > 0.5).sum()) * self.sample_s / 3600.0

    def first_time_s(self) -> float | None:
        rows = self._rows
        return float(rows[0, 0]) if len(rows) else None

    def seed(self, rows: FloatArray) -> int:
        """Older samples from elsewhere (Home Assistant's recorder), put before this history's own;
        returns how many were taken. Rows at or after the first own sample are left out."""
        own = self._rows.copy()
        if len(own):
            rows = rows[rows[:, 0] < own[0, 0]]
        if not len(rows):
            return 0
        self._n = 0
        self._append(np.concatenate([rows, own]) if len(own) else rows)
        return len(rows)

    def samples(self) -> Samples:
        """The closed samples; a sample is fitted only if the next one follows it and gives its end."""
        if self._samples is None:
            self._samples = self._build()
        return self._samples

    def _build(self) -> Samples:
        rows = self._rows
        time_s, valid = rows[:, 0].copy(), rows[:, 5] > 0.5
        # Sample k is usable when sample k+1 starts one step later (it holds the room at k's end).
        follows = np.zeros(len(rows), dtype=bool)
        follows[:-1] = (np.abs(np.diff(time_s) - self.sample_s) <= 1e-5 * self.sample_s) & valid[1:]
        return Samples(
            time_s, rows[:, 1].copy(), rows[:, 2].copy(), rows[:, 3].copy(), rows[:, 4].copy(), valid & follows
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "sample_s": self.sample_s,
            "rows": [
                [*(None if math.isnan(x) else round(float(x), 3) for x in r[:5]), bool(r[5] > 0.5)] for r in self._rows
            ],
        }

    def load_json(self, data: dict[str, Any]) -> None:
        if float(data.get("sample_s", 0)) != self.sample_s:
            return
        rows = [
            [float(t), _f(room), _f(heat), _f(outdoor), _f(sp), float(bool(ok))]
            for t, room, heat, outdoor, sp, ok in data.get("rows", [])
        ]
        if rows:
            self._append(np.array(rows, dtype=float))


def _f(x: Any) -> float:
    return math.nan if x is None else float(x)
