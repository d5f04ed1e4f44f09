"""A series from a CSV file: ``time`` (ISO 8601; without an offset, the house's local time) and the
value (``price_per_kwh`` for a tariff, ``g_per_kwh`` for carbon), each holding until the next row
(day-ahead prices, a year's tariff, a grid's carbon intensity)."""

from __future__ import annotations

import csv
import functools
from datetime import datetime, tzinfo
from pathlib import Path

import numpy as np

from heatctl.config.base import _Strict
from heatctl.errors import ConfigError
from heatctl.prices.base import FloatArray, KnownPrices, PriceKind


class CsvTariff(_Strict):
    csv: str  # relative to the config's (or scenario's) folder


class CsvCarbon(_Strict):
    csv: str  # relative to the config's folder


def read_series(path: Path, column: str, tz: tzinfo, what: str = "tariff") -> tuple[FloatArray, FloatArray]:
    """(epoch times, values) from the CSV, sorted; read once while the file stays the same."""
    try:
        stamp = path.stat().st_mtime_ns
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read the {what}: {exc}"]) from exc
    return _read(path, column, tz, what, stamp)


@functools.lru_cache(maxsize=16)
def _read(path: Path, column: str, tz: tzinfo, what: str, stamp: int) -> tuple[FloatArray, FloatArray]:
    rows: list[tuple[float, float]] = []
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            for lineno, row in enumerate(csv.DictReader(fh), start=2):
                try:
                    at = datetime.fromisoformat(row["time"])
                    at = at.replace(tzinfo=tz) if at.tzinfo is None else at
                    rows.append((at.timestamp(), float(row[column])))
                except (KeyError, TypeError, ValueError) as exc:
                    raise ConfigError([f"{path}:{lineno}: need time (ISO 8601) and {column}: {exc}"]) from exc
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read the {what}: {exc}"]) from exc
    if not rows:
        raise ConfigError([f"{path}: no {what} rows"])
    rows.sort()
    return np.array([t for t, _ in rows]), np.array([v for _, v in rows])


def held(times_s: FloatArray, values: FloatArray, at_s: FloatArray) -> FloatArray:
    """Each value held until the next row's time (the first one before it)."""
    idx = np.searchsorted(times_s, at_s, side="right") - 1
    return np.asarray(values[np.maximum(idx, 0)], dtype=np.float64)


def _column(column: str, what: str) -> KnownPrices:
    def known(cfg: CsvTariff | CsvCarbon, times_s: FloatArray, tz: tzinfo, base_dir: Path) -> FloatArray:
        series_t, values = read_series(base_dir / cfg.csv, column, tz, what)
        return held(series_t, values, times_s)

    return known


KIND = PriceKind("csv", CsvTariff, known=_column("price_per_kwh", "tariff"))
CARBON = PriceKind("csv", CsvCarbon, known=_column("g_per_kwh", "carbon intensity"))
