"""Electricity price over virtual time: fixed, time-of-use periods, or a CSV series held until the next row."""

from __future__ import annotations

import bisect
import csv
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import numpy.typing as npt

from heatctl.errors import ConfigError


class Tariff:
    """``at(t_s)`` gives the price per kWh at a moment of the simulation."""

    def __init__(self, times_s: list[float], prices: list[float]) -> None:
        self._times_s = times_s
        self._prices = prices

    @classmethod
    def fixed(cls, price_per_kwh: float) -> Tariff:
        return cls([0.0], [price_per_kwh])

    @classmethod
    def periods(
        cls, periods: list[tuple[int, int, float]], default_per_kwh: float, start: datetime, duration_s: float
    ) -> Tariff:
        """Daily periods ``(from_minute, to_minute, price)``, wrapping midnight; sampled per minute's change."""
        times: list[float] = []
        prices: list[float] = []
        day0 = start.replace(hour=0, minute=0, second=0, microsecond=0)
        days = int(duration_s // 86400) + 2
        for day in range(days):
            for minute in range(0, 1440, 15):
                at = (day0 + timedelta(days=day, minutes=minute) - start).total_seconds()
                price = next((p for a, b, p in periods if _within(minute, a, b)), default_per_kwh)
                if not prices or prices[-1] != price:
                    times.append(at)
                    prices.append(price)
        return cls(times, prices)

    @classmethod
    def from_csv(cls, path: Path, start: datetime, column: str = "price_per_kwh", what: str = "tariff") -> Tariff:
        """Columns ``time`` (ISO 8601) and ``column``; each value holds until the next row.

        Also the scenario's carbon intensity (``g_per_kwh``) and solar surplus (``surplus_w``).
        """
        rows: list[tuple[float, float]] = []
        try:
            with path.open(newline="", encoding="utf-8") as fh:
                for lineno, row in enumerate(csv.DictReader(fh), start=2):
                    try:
                        at = datetime.fromisoformat(row["time"]).replace(tzinfo=None)
                        rows.append(((at - start.replace(tzinfo=None)).total_seconds(), float(row[column])))
                    except (KeyError, TypeError, ValueError) as exc:
                        raise ConfigError([f"{path}:{lineno}: need time (ISO 8601) and {column}: {exc}"]) from exc
        except OSError as exc:
            raise ConfigError([f"{path}: cannot read the {what}: {exc}"]) from exc
        if not rows:
            raise ConfigError([f"{path}: no {what} rows"])
        rows.sort()
        return cls([t for t, _ in rows], [p for _, p in rows])

    def at(self, t_s: float) -> float:
        i = bisect.bisect_right(self._times_s, t_s)
        return self._prices[max(i - 1, 0)]

    def at_many(self, times_s: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        idx = np.searchsorted(np.asarray(self._times_s), times_s, side="right") - 1
        return np.asarray(self._prices)[np.maximum(idx, 0)]


def _within(minute: int, start: int, end: int) -> bool:
    return start <= minute < end if start <= end else minute >= start or minute < end
