"""Day-one learning: a zone's history from Home Assistant's recorder, so the room is learned at once.

Home Assistant keeps what the room's sensors said (10 days by default). The planner needs the
room temperature, the setpoint, the heat the room got and, where there is one, the outdoor
temperature: the zone's own sources where they are entities, the heat from its ``power_meter``
(a wall plug under the PC) — or, on a node of one zone, heatctl's own ``Heat output`` sensor
from an earlier run. Without a heat history nothing is seeded: the room cannot be learned from
temperatures alone, and a guess would make the planner worse than the reactive loop.

History is a list of changes (a steady sensor writes nothing for hours), resampled as the
planner's own samples are: the room at each sample's start, the mean heat and outdoor over it,
the setpoint at its end. A sample is valid only where every value is known and the room's and the
heat's last report is recent enough (``MAX_HOLD_S``): a silent stretch is a gap, not a steady room.
"""

from __future__ import annotations

import logging
import math
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from heatctl.config import Config, HomeAssistantConfig, ZoneConfig
from heatctl.planner.history import SAMPLE_S, FloatArray
from heatctl.sources.extract import PayloadError, to_number
from heatctl.untrusted import UntrustedJsonError, parse_json

_LOGGER = logging.getLogger(__name__)
SEED_DAYS = 14.0
MAX_HOLD_S = {"room": 3 * 3600.0, "heat": 6 * 3600.0, "setpoint": 7 * 86400.0, "outdoor": 6 * 3600.0}
Fetch = Callable[[list[str], float, float], Mapping[str, list[tuple[float, str, dict[str, Any]]]]]


@dataclass(frozen=True, slots=True)
class Wanted:
    """One series to read: the entity, the attribute (None: its state) and how to read it."""

    role: str  # room, setpoint, outdoor, heat
    entity: str
    attribute: str | None
    kind: str  # the extract role for range checks: temperature, setpoint, outdoor, power
    unit_scale: float = 1.0


def wanted_series(cfg: Config, zone: ZoneConfig) -> tuple[list[Wanted], str | None]:
    """What to read for ``zone``, or why it cannot be seeded."""
    if zone.temperature.entity is None or zone.setpoint.entity is None:
        return [], "its temperature and setpoint are not Home Assistant entities"
    series = [
        Wanted(
            "room",
            zone.temperature.entity,
            _attribute(zone.temperature.entity, zone.temperature.attribute, "current_temperature"),
            "temperature",
        ),
        Wanted(
            "setpoint",
            zone.setpoint.entity,
            _attribute(zone.setpoint.entity, zone.setpoint.attribute, "temperature"),
            "setpoint",
        ),
    ]
    out = zone.outdoor_temperature
    if out is not None and out.entity is not None:
        series.append(Wanted("outdoor", out.entity, _attribute(out.entity, out.attribute, "temperature"), "outdoor"))
    meter = zone.power_meter
    if meter is not None and meter.entity is not None:
        scale = 1000.0 if meter.unit == "kW" else 1.0
        series.append(Wanted("heat", meter.entity, meter.attribute, "power", scale))
    elif len(cfg.zones) == 1:  # heatctl's own heat sensor, from a run before this state_dir
        series.append(Wanted("heat", f"sensor.heatctl_{cfg.node_id.replace('-', '_')}_heat_w", None, "power"))
    else:
        return [], "no heat history: give the zone a power_meter entity (a plug under the PC)"
    return series, None


def _attribute(entity: str, attribute: str | None, climate_default: str) -> str | None:
    if attribute is not None:
        return attribute
    domain = entity.split(".", 1)[0]
    return climate_default if domain in ("climate", "weather") else None


def ha_fetch(ha: HomeAssistantConfig, timeout_s: float = 30.0) -> Fetch:
    """The recorder's history over REST (``/api/history/period``): entity → [(epoch s, state, attributes)]."""

    def fetch(entities: list[str], start_s: float, end_s: float) -> dict[str, list[tuple[float, str, dict[str, Any]]]]:
        start = datetime.fromtimestamp(start_s, UTC).isoformat()
        query = urllib.parse.urlencode(
            {
                "filter_entity_id": ",".join(entities),
                "end_time": datetime.fromtimestamp(end_s, UTC).isoformat(),
                "significant_changes_only": "0",
            }
        )
        url = f"{ha.url.rstrip('/')}/api/history/period/{urllib.parse.quote(start)}?{query}"
        request = urllib.request.Request(url, headers={"Authorization": f"Bearer {ha.token.get_secret_value()}"})
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            data = parse_json(response.read(64 * 1024 * 1024).decode("utf-8"))
        out: dict[str, list[tuple[float, str, dict[str, Any]]]] = {}
        for rows in data if isinstance(data, list) else []:
            for row in rows if isinstance(rows, list) else []:
                if not isinstance(row, dict) or not isinstance(row.get("entity_id"), str):
                    continue
                when = row.get("last_updated") or row.get("last_changed")
                try:
                    at_s = datetime.fromisoformat(str(when)).timestamp()
                except ValueError:
                    continue
                attrs = row["attributes"] if isinstance(row.get("attributes"), dict) else {}
                out.setdefault(row["entity_id"], []).append((at_s, str(row.get("state")), attrs))
        return out

    return fetch


def history_rows(
    series: list[Wanted],
    events: Mapping[str, list[tuple[float, str, dict[str, Any]]]],
    start_s: float,
    end_s: float,
    sample_s: float = SAMPLE_S,
) -> FloatArray:
    """The planner's sample rows (``history.COLUMNS``) from Home Assistant's changes."""
    slots = np.arange(math.ceil(start_s / sample_s) * sample_s, end_s - sample_s, sample_s)
    values: dict[str, tuple[FloatArray, FloatArray]] = {}
    for want in series:
        times, numbers = _numbers(want, events.get(want.entity, []))
        values[want.role] = (times, numbers)
    rows = np.full((len(slots), 6), np.nan)
    rows[:, 0] = slots
    rows[:, 5] = 0.0
    if len(slots) == 0:
        return rows
    room = _held(values["room"], slots, MAX_HOLD_S["room"])
    setpoint = _held(values["setpoint"], slots + sample_s, MAX_HOLD_S["setpoint"])
    heat = _mean(values["heat"], slots, sample_s, MAX_HOLD_S["heat"])
    outdoor = (
        _mean(values["outdoor"], slots, sample_s, MAX_HOLD_S["outdoor"])
        if "outdoor" in values
        else np.full(len(slots), np.nan)
    )
    rows[:, 1], rows[:, 2], rows[:, 3], rows[:, 4] = room, heat, outdoor, setpoint
    ok = ~np.isnan(room) & ~np.isnan(heat) & ~np.isnan(setpoint)
    if "outdoor" in values:
        ok &= ~np.isnan(outdoor)  # a zone with an outdoor source is fitted with it
    rows[:, 5] = ok.astype(float)
    return rows


def _numbers(want: Wanted, events: list[tuple[float, str, dict[str, Any]]]) -> tuple[FloatArray, FloatArray]:
    """The series' (times, values); unreadable or unavailable values are NaN (a gap from there)."""
    from heatctl.config import SourceConfig

    source = SourceConfig(entity=want.entity)
    times, numbers = [], []
    for at_s, state, attrs in sorted(events, key=lambda e: e[0]):
        raw = attrs.get(want.attribute) if want.attribute is not None else state
        try:
            value = to_number(raw, source, want.kind) * want.unit_scale  # type: ignore[arg-type]
        except PayloadError:
            value = math.nan
        times.append(at_s)
        numbers.append(value)
    return np.array(times, dtype=float), np.array(numbers, dtype=float)


def _held(series: tuple[FloatArray, FloatArray], at_s: FloatArray, max_hold_s: float) -> FloatArray:
    """The last value at or before each time, NaN where none or older than ``max_hold_s``."""
    times, values = series
    if len(times) == 0:
        return np.full(len(at_s), np.nan)
    i = np.searchsorted(times, at_s, side="right") - 1
    out = np.where(i >= 0, values[np.clip(i, 0, None)], np.nan)
    age = at_s - np.where(i >= 0, times[np.clip(i, 0, None)], -np.inf)
    return np.where(age <= max_hold_s, out, np.nan)


def _mean(series: tuple[FloatArray, FloatArray], start_s: FloatArray, sample_s: float, max_hold_s: float) -> FloatArray:
    """The time-weighted mean of a step-held series over each sample (NaN where any part is unknown)."""
    quarter = sample_s / 4.0
    points = np.stack([_held(series, start_s + quarter * (k + 0.5), max_hold_s) for k in range(4)])
    mean: FloatArray = points.mean(axis=0)  # a NaN anywhere makes the sample unknown
    return mean


def seed_source_text(series: list[Wanted], rows: FloatArray) -> str:
    valid_h = float(rows[:, 5].sum()) * SAMPLE_S / 3600.0
    entities = ", ".join(w.entity + (f"[{w.attribute}]" if w.attribute else "") for w in series)
    return f"Home Assistant's recorder: {valid_h:.0f} valid hours of {entities}"


def fetch_zone_rows(
    cfg: Config, zone: ZoneConfig, fetch: Fetch, now_s: float, before_s: float
) -> tuple[FloatArray, str] | str:
    """The seed rows for a zone up to ``before_s`` (its own first sample), with where they came
    from; or why there are none."""
    series, why = wanted_series(cfg, zone)
    if why is not None:
        return why
    start_s = now_s - SEED_DAYS * 86400.0
    try:
        events = fetch(sorted({w.entity for w in series}), start_s, min(before_s, now_s))
    except (OSError, ValueError, UntrustedJsonError) as exc:
        return f"Home Assistant's history could not be read: {exc}"
    rows = history_rows(series, events, start_s, min(before_s, now_s))
    if not rows[:, 5].any():
        missing = [w.entity for w in series if not events.get(w.entity)]
        what = f"nothing recorded for {', '.join(missing)}" if missing else "gaps everywhere"
        return f"no usable history in Home Assistant ({what})"
    return rows, seed_source_text(series, rows)
