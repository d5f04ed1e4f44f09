"""A time series over the run's seconds from a CSV (the scenario's carbon intensity, solar surplus):
each value held until the next row. Read with the same rule as a CSV tariff (``heatctl.prices``)."""

from __future__ import annotations

from datetime import tzinfo
from pathlib import Path

import numpy as np
import numpy.typing as npt

from heatctl.prices.csvfile import held, read_series

FloatArray = npt.NDArray[np.float64]


class RunSeries:
    def __init__(self, times_s: FloatArray, values: FloatArray) -> None:
        self._times_s = times_s
        self._values = values

    @classmethod
    def from_csv(cls, path: Path, start_epoch_s: float, tz: tzinfo, column: str, what: str) -> RunSeries:
        """Columns ``time`` (ISO 8601, the scenario's local time without an offset) and ``column``."""
        times, values = read_series(path, column, tz, what)
        return cls(times - start_epoch_s, values)

    def at(self, t_s: float) -> float:
        return float(self.at_many(np.array([t_s]))[0])

    def at_many(self, times_s: FloatArray) -> FloatArray:
        return held(self._times_s, self._values, times_s)
