"""Safety: the last word on heat. Pure functions of readings, config and ``now``."""

from __future__ import annotations

from typing import NamedTuple

from heatctl.config import ControlConfig


class Reading(NamedTuple):  # a value made for every reading: a named tuple is cheap to build
    """A validated value from a source, with the monotonic time it arrived."""

    value: float
    at_s: float
    source: str = ""


class ZoneInputs(NamedTuple):  # a value made every tick: a named tuple is cheap to build
    """Everything the zone controller may use, as the sources last reported it."""

    temperature: Reading | None = None
    setpoint: Reading | None = None
    window_open: Reading | None = None  # 1.0 open, 0.0 closed
    outdoor: Reading | None = None
    thermostat_on: Reading | None = None  # 0.0 when the thermostat's own mode is off
    mode: str = "heat"  # the zone's own mode, set from Home Assistant or MQTT
    temperature_stale_s: float = 900.0
    setpoint_stale_s: float = 900.0
    outdoor_stale_s: float = 3600.0
    # The planner's word: the setpoint above is then the plan's target, and this its heat.
    feedforward_w: float | None = None

    def aiming(self, setpoint: Reading, feedforward_w: float | None) -> ZoneInputs:
        """The same readings with the loop's target (and the plan's heat) in place of the setpoint."""
        return ZoneInputs(
            self.temperature,
            setpoint,
            self.window_open,
            self.outdoor,
            self.thermostat_on,
            self.mode,
            self.temperature_stale_s,
            self.setpoint_stale_s,
            self.outdoor_stale_s,
            feedforward_w,
        )


def fresh(reading: Reading | None, now_s: float, stale_after_s: float) -> bool:
    return reading is not None and now_s - reading.at_s <= stale_after_s


def zone_failsafe(now_s: float, zone: ZoneInputs, cfg: ControlConfig) -> str | None:
    """Why this zone must not get extra heat now, or None. Stale covers 'never received'."""
    if not fresh(zone.temperature, now_s, zone.temperature_stale_s):
        return "temperature stale"
    if not fresh(zone.setpoint, now_s, zone.setpoint_stale_s):
        return "setpoint stale"
    if zone.window_open is not None and zone.window_open.value:
        return "window open"
    assert zone.temperature is not None
    if zone.temperature.value > cfg.max_room_c:
        return "room above max_room_c"
    return None


def zone_wants_no_heat(zone: ZoneInputs) -> bool:
    """The thermostat itself says off (its system_mode); not a fault."""
    if zone.mode != "heat":
        return True
    return zone.thermostat_on is not None and not zone.thermostat_on.value


class ThermalGuard:
    """Lowers a GPU's power ceiling while it runs above ``max_temp_c``, then recovers.

    Rates are per second of the injected clock, so a command that triggers an extra tick
    does not speed them up. The ceiling may fall to the GPU's idle power: below the lowest
    limit the driver accepts, the allocator carries it with the workload level, so a GPU
    whose limit cannot be set (or not low enough) still cools down.
    """

    def __init__(
        self,
        max_temp_c: float,
        floor_w: float,
        max_w: float,
        *,
        down_w_per_s: float = 0.5,
        up_w_per_s: float = 0.2,
        band_k: float = 3.0,
    ) -> None:
        self._max_temp_c = max_temp_c
        self._floor_w = floor_w
        self._max_w = max_w
        self._down_w_per_s = down_w_per_s
        self._up_w_per_s = up_w_per_s
        self._band_k = band_k
        self._last_s: float | None = None
        self.ceiling_w = max_w

    def update(self, now_s: float, temperature_c: float | None, power_w: float | None) -> float:
        dt_s = 1.0 if self._last_s is None else max(now_s - self._last_s, 0.0)  # the first look acts at once
        self._last_s = now_s
        if temperature_c is None:
            return self.ceiling_w
        if temperature_c >= self._max_temp_c:
            # Start from what the GPU draws, not from a ceiling far above it, so the first step bites.
            base_w = min(self.ceiling_w, power_w) if power_w is not None else self.ceiling_w
            self.ceiling_w = max(self._floor_w, base_w - self._down_w_per_s * dt_s)
        elif temperature_c < self._max_temp_c - self._band_k:
            self.ceiling_w = min(self._max_w, self.ceiling_w + self._up_w_per_s * dt_s)
        return self.ceiling_w

    @property
    def derating(self) -> bool:
        return self.ceiling_w < self._max_w
