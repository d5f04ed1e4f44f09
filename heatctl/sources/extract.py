"""Payload → value: plain numbers, dotted JSON paths, Home Assistant-style templates.

Pure functions. Every rejection raises ``PayloadError`` with a reason fit for a log line.
"""

from __future__ import annotations

import math
from datetime import datetime
from functools import lru_cache
from typing import Any, Literal

from jinja2 import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from heatctl.config import SourceConfig
from heatctl.untrusted import UntrustedJsonError, parse_json

MAX_PAYLOAD_BYTES = 64 * 1024
Role = Literal["temperature", "setpoint", "outdoor", "window", "mode", "power", "main_setpoint", "grid"]

# What a plausible value looks like for each role, when the source gives no valid_range.
DEFAULT_RANGES: dict[str, tuple[float, float]] = {
    "temperature": (-30.0, 60.0),
    "setpoint": (5.0, 35.0),
    "main_setpoint": (4.0, 35.0),  # what the main heating itself reports (TRVs go down to 4–5 °C)
    "outdoor": (-60.0, 60.0),
    "power": (0.0, 10_000.0),
    "grid": (-100_000.0, 100_000.0),  # the house's grid meter: import > 0, export < 0
}
# Thermostat modes that mean "this room wants heat when cold" (zigbee2mqtt system_mode, HA hvac_mode).
HEATING_MODES = frozenset({"heat", "auto", "on", "heat_cool", "comfort", "eco", "manual", "schedule"})
OFF_MODES = frozenset({"off", "cool", "fan_only", "dry", "sleep", "standby", "frost_protection"})
_TRUE = frozenset({"true", "on", "open", "1", "yes"})
_FALSE = frozenset({"false", "off", "closed", "0", "no"})

_UNKNOWN = frozenset({"", "unknown", "unavailable", "none", "null", "maybe", "?"})

_JINJA = ImmutableSandboxedEnvironment()


class PayloadError(ValueError):
    """A payload that must not reach the controller."""


def decode(payload: bytes) -> str:
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise PayloadError(f"payload of {len(payload)} bytes is larger than {MAX_PAYLOAD_BYTES}")
    try:
        return payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PayloadError(f"not UTF-8: {exc.reason} at byte {exc.start}") from exc


def raw_value(text: str, source: SourceConfig) -> Any:
    """The value the source points at, before conversion."""
    if source.value_template is not None:
        return _render(source.value_template, text)
    if source.json_path is None:
        return text.strip()
    data = _json(text)
    for part in source.json_path.split("."):
        if isinstance(data, dict) and part in data:
            data = data[part]
        elif isinstance(data, list) and part.lstrip("-").isdigit() and -len(data) <= int(part) < len(data):
            data = data[int(part)]
        else:
            raise PayloadError(f"json_path {source.json_path!r}: no {part!r} in payload")
    return data


def _json(text: str) -> Any:
    try:
        return parse_json(text)
    except UntrustedJsonError as exc:
        raise PayloadError(str(exc)) from exc


@lru_cache(maxsize=256)
def _compiled(template: str) -> Any:
    return _JINJA.from_string(template)


def _render(template: str, text: str) -> str:
    try:
        value_json: Any = parse_json(text)
    except UntrustedJsonError:
        value_json = None
    try:
        return str(_compiled(template).render(value=text, value_json=value_json)).strip()
    except TemplateError as exc:
        raise PayloadError(f"value_template failed: {exc}") from exc


def to_number(value: Any, source: SourceConfig, role: Role) -> float:
    """A finite number in range, converted to °C or W."""
    if isinstance(value, bool) or value is None:
        raise PayloadError(f"expected a number, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError) as exc:
        raise PayloadError(f"expected a number, got {_short(value)}") from exc
    if not math.isfinite(number):
        raise PayloadError(f"expected a finite number, got {number}")
    if source.unit == "F":
        number = (number - 32.0) * 5.0 / 9.0
    elif source.unit == "kW":
        number *= 1000.0
    low, high = source.valid_range or DEFAULT_RANGES.get(role, (-math.inf, math.inf))
    if not low <= number <= high:
        raise PayloadError(f"{number:g} is outside the valid range [{low:g}, {high:g}]")
    return number


def to_open(value: Any, source: SourceConfig) -> float:
    """1.0 when the window is open. ``open_when`` names the value that means open; the other state
    must be as plain (the opposite flag, or another word or number): ``"maybe"``, ``null`` or
    ``"unavailable"`` is a bad payload, never read as closed."""
    if source.open_when is not None:
        if _same(value, source.open_when):
            return 1.0
        if isinstance(source.open_when, bool) and _bool(value) is None:
            raise PayloadError(f"expected true or false (open when {source.open_when}), got {_short(value)}")
        if value is None or str(value).strip().lower() in _UNKNOWN:
            raise PayloadError(f"the contact does not know: {_short(value)}")
        return 0.0
    flag = _bool(value)
    if flag is None:
        raise PayloadError(f"expected open/closed or true/false, got {_short(value)}")
    return 1.0 if flag else 0.0


def to_heating(value: Any) -> float:
    """1.0 when a thermostat mode means heating is allowed, 0.0 when it means off."""
    mode = str(value).strip().lower()
    if mode in HEATING_MODES:
        return 1.0
    if mode in OFF_MODES:
        return 0.0
    raise PayloadError(f"unknown thermostat mode {_short(value)}")


def extract(payload: bytes, source: SourceConfig, role: Role) -> float:
    """The whole path from bytes to a validated value for the controller."""
    value = raw_value(decode(payload), source)
    if role == "window":
        return to_open(value, source)
    if role == "mode":
        return to_heating(value)
    return to_number(value, source, role)


def reported_age_s(payload: bytes, wall_now_s: float) -> float | None:
    """How old the data in a payload says it is (zigbee2mqtt's ``last_seen``: ISO 8601, or epoch
    milliseconds), or None when it does not say."""
    if b'"last_seen"' not in payload:
        return None
    try:
        data = parse_json(decode(payload))
    except (UntrustedJsonError, PayloadError):
        return None
    seen = data.get("last_seen") if isinstance(data, dict) else None
    try:
        if isinstance(seen, (int, float)) and not isinstance(seen, bool):
            seen_s = seen / 1000.0
        elif isinstance(seen, str):
            seen_s = datetime.fromisoformat(seen.replace("Z", "+00:00")).timestamp()
        else:
            return None
    except (ValueError, OverflowError):
        return None
    return max(wall_now_s - seen_s, 0.0) if math.isfinite(seen_s) else None


def describe(value: float, role: Role) -> str:
    """A reading as a person reads it, for ``heatctl check``."""
    if role == "window":
        return "open" if value else "closed"
    if role == "mode":
        return "heating allowed" if value else "off"
    if role == "power":
        return f"{value:g} W"
    return f"{value:g} °C"


def _bool(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    return True if text in _TRUE else False if text in _FALSE else None


def _same(value: Any, expected: Any) -> bool:
    if isinstance(expected, bool):
        return _bool(value) is expected
    if isinstance(expected, (int, float)):  # open_when: 1 is read as 1.0; the payload says "1"
        try:
            return float(value) == expected
        except (TypeError, ValueError):
            return False
    return str(value).strip().lower() == str(expected).strip().lower()


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "…"
