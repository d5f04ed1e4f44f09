"""Forecasts as step series, and the forms they arrive in (MQTT JSON lists, Home Assistant attributes).

A ``Series`` holds each value from its start until the next one. Parsers accept what the
common integrations publish and raise ``ForecastError`` with a reason fit for one log line:

- MQTT / generic: ``[{"start": ISO, "price": 0.21}, …]`` (also ``time``, ``value``, ``g_per_kwh``,
  ``temperature_c``);
- Nord Pool: attributes ``raw_today`` / ``raw_tomorrow`` = ``[{"start", "end", "value"}]``;
- Tibber style: ``today`` / ``tomorrow`` = ``[{"startsAt", "total"}]``;
- Octopus style: ``rates`` = ``[{"start", "value_inc_vat"}]`` (pence or currency per kWh);
- ``weather.get_forecasts``: ``{"weather.home": {"forecast": [{"datetime", "temperature"}]}}``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt

from heatctl.untrusted import UntrustedJsonError, parse_json

FloatArray = npt.NDArray[np.float64]
TIME_KEYS = ("start", "startsAt", "starts_at", "time", "datetime", "from", "valid_from", "period_start")
VALUE_KEYS = (
    "price",
    "value",
    "total",
    "value_inc_vat",
    "price_per_kwh",
    "g_per_kwh",
    "intensity",
    "carbon_intensity",
    "temperature_c",
    "temperature",
)
LIST_ATTRIBUTES = (("raw_today", "raw_tomorrow"), ("today", "tomorrow"), ("rates",), ("prices",), ("forecast",))
MAX_POINTS = 2000


class ForecastError(ValueError):
    """A forecast that must not reach the planner."""


@dataclass(frozen=True, slots=True)
class Series:
    """Values held from each start (epoch s) until the next."""

    starts_s: FloatArray
    values: FloatArray

    def at(self, times_s: FloatArray) -> FloatArray:
        """The value at each time; NaN before the first start or after ``until_s``."""
        idx = np.searchsorted(self.starts_s, times_s, side="right") - 1
        out = np.where(idx >= 0, self.values[np.maximum(idx, 0)], np.nan)
        return np.where(np.asarray(times_s) < self.until_s, out, np.nan)

    @property
    def until_s(self) -> float:
        """How far the series reaches: its last value holds one typical step past its start."""
        if len(self.starts_s) < 2:
            return float(self.starts_s[-1]) + 3600.0
        return float(self.starts_s[-1] + np.median(np.diff(self.starts_s)))

    @classmethod
    def from_points(cls, points: Iterable[tuple[float, float]]) -> Series:
        pairs = sorted(dict(points).items())
        if not pairs:
            raise ForecastError("the forecast is empty")
        return cls(np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs]))


def parse_time(value: Any) -> float:
    """ISO 8601 (naive means UTC) or epoch seconds → epoch seconds."""
    if isinstance(value, bool):
        raise ForecastError(f"not a time: {value!r}")
    if isinstance(value, int | float):
        return float(value) / (1000.0 if value > 1e11 else 1.0)
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError as exc:
            raise ForecastError(f"not an ISO 8601 time: {value!r}") from exc
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return moment.timestamp()
    raise ForecastError(f"not a time: {value!r}")


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ForecastError(f"{what}: not a number: {value!r}")
    try:
        x = float(value)
    except ValueError as exc:
        raise ForecastError(f"{what}: not a number: {value!r}") from exc
    if not math.isfinite(x):
        raise ForecastError(f"{what}: not a finite number: {value!r}")
    return x


def points_from_list(items: Sequence[Any], valid_range: tuple[float, float]) -> list[tuple[float, float]]:
    """``[{start, value}, …]`` in any of the known key spellings → (epoch s, value) points."""
    if not isinstance(items, list):
        raise ForecastError(f"expected a JSON list, got {type(items).__name__}")
    if len(items) > MAX_POINTS:
        raise ForecastError(f"{len(items)} points: more than {MAX_POINTS}")
    points = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise ForecastError(f"item {i}: expected an object with a start and a value, got {item!r}")
        t_key = next((k for k in TIME_KEYS if k in item), None)
        v_key = next((k for k in VALUE_KEYS if k in item), None)
        if t_key is None or v_key is None:
            raise ForecastError(f"item {i}: needs a start ({'/'.join(TIME_KEYS[:3])}) and a value, got {item!r}")
        value = _number(item[v_key], f"item {i} {v_key}")
        lo, hi = valid_range
        if not lo <= value <= hi:
            raise ForecastError(f"item {i}: {v_key} {value} outside {lo}..{hi}")
        points.append((parse_time(item[t_key]), value))
    return points


def parse_payload(payload: bytes, valid_range: tuple[float, float]) -> Series:
    """An MQTT payload: a JSON list of points (or an object holding one under a known key)."""
    try:
        data = parse_json(payload)
    except UntrustedJsonError as exc:
        raise ForecastError(str(exc)) from exc
    if isinstance(data, dict):
        return parse_attributes(data, valid_range)
    return Series.from_points(points_from_list(data, valid_range))


def parse_attributes(attributes: dict[str, Any], valid_range: tuple[float, float]) -> Series:
    """A Home Assistant entity's attributes (or a ``weather.get_forecasts`` response)."""
    for names in LIST_ATTRIBUTES:
        lists = [attributes[n] for n in names if isinstance(attributes.get(n), list)]
        if lists:
            return Series.from_points(p for items in lists for p in points_from_list(items, valid_range))
    # weather.get_forecasts answers {entity_id: {"forecast": [...]}}
    for value in attributes.values():
        if isinstance(value, dict) and isinstance(value.get("forecast"), list):
            return Series.from_points(points_from_list(value["forecast"], valid_range))
    known = ", ".join("/".join(n) for n in LIST_ATTRIBUTES)
    raise ForecastError(f"no forecast list among the attributes ({known})")
