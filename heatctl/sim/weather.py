"""Outdoor temperature over virtual time: constant, a daily sine, or a CSV series."""

from __future__ import annotations

import csv
import math
from datetime import datetime
from pathlib import Path

import numpy as np
import numpy.typing as npt

from heatctl.errors import ConfigError


class Weather:
    def __init__(self, times_s: list[float], temps_c: list[float]) -> None:
        self._times_s = np.asarray(times_s, dtype=np.float64)
        self._temps_c = np.asarray(temps_c, dtype=np.float64)

    @classmethod
    def constant(cls, temp_c: float) -> Weather:
        return cls([0.0], [temp_c])

    @classmethod
    def daily_sine(cls, mean_c: float, amplitude_k: float, start: datetime, duration_s: float) -> Weather:
        """Coldest at 03:00, warmest at 15:00; sampled every 10 minutes."""
        start_h = start.hour + start.minute / 60.0
        times = [i * 600.0 for i in range(int(duration_s / 600.0) + 2)]
        temps = [mean_c + amplitude_k * math.cos(2.0 * math.pi * ((start_h + t / 3600.0) - 15.0) / 24.0) for t in times]
        return cls(times, temps)

    @classmethod
    def from_csv(cls, path: Path, start: datetime) -> Weather:
        """Columns ``time`` (ISO 8601) and ``temp_c``; interpolated; flat beyond the ends."""
        times: list[float] = []
        temps: list[float] = []
        try:
            with path.open(newline="", encoding="utf-8") as fh:
                for lineno, row in enumerate(csv.DictReader(fh), start=2):
                    try:
                        at = datetime.fromisoformat(row["time"])
                        temp = float(row["temp_c"])
                    except (KeyError, TypeError, ValueError) as exc:
                        raise ConfigError([f"{path}:{lineno}: need time (ISO 8601) and temp_c: {exc}"]) from exc
                    times.append((at.replace(tzinfo=None) - start.replace(tzinfo=None)).total_seconds())
                    temps.append(temp)
        except OSError as exc:
            raise ConfigError([f"{path}: cannot read weather: {exc}"]) from exc
        if not times:
            raise ConfigError([f"{path}: no weather rows"])
        order = sorted(range(len(times)), key=times.__getitem__)
        return cls([times[i] for i in order], [temps[i] for i in order])

    def at(self, t_s: float) -> float:
        return float(self.at_many(np.array([t_s]))[0])

    def at_many(self, times_s: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """Interpolated between the rows; flat beyond the ends."""
        return np.asarray(np.interp(times_s, self._times_s, self._temps_c), dtype=np.float64)
