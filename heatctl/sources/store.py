"""The latest validated reading of every source, shared between threads."""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable

from heatctl.config import ZoneConfig
from heatctl.control.safety import Reading, ZoneInputs
from heatctl.sources.extract import Role

_LOGGER = logging.getLogger(__name__)
BAD_LOG_EVERY_S = 60.0  # after the first three, a source's bad payloads are logged at most this often

# The role each ZoneConfig source field plays for extraction and the store.
ROLES: dict[str, Role] = {
    "temperature": "temperature",
    "setpoint": "setpoint",
    "mode": "mode",
    "window": "window",
    "outdoor_temperature": "outdoor",
    "power_meter": "power",
    "main_setpoint": "main_setpoint",  # the main heating's own setpoint, read back (trv, entity)
}


class ReadingStore:
    """Written by the MQTT network thread and pollers, read by the control thread.

    Every method takes the lock; values are immutable Readings, so a reader never sees
    half an update. A setpoint set by command overrides the thermostat's until the
    thermostat reports a different setpoint.
    """

    def __init__(
        self, zones: list[ZoneConfig], time_fn: Callable[[], float], *, on_fresh: Callable[[], None] | None = None
    ) -> None:
        self._zones = {z.name: z for z in zones}
        self._on_fresh = on_fresh  # a source reported for the first time, or after being stale
        self._time_fn = time_fn
        self._lock = threading.Lock()
        self._readings: dict[tuple[str, str], Reading] = {}
        self._overrides: dict[str, float] = {}
        self.bad_payloads = 0
        self.last_bad: str | None = None
        self._bad_by_origin: dict[str, int] = {}
        self._unknown_age_said: set[str] = set()
        self._bad_said: dict[str, tuple[float, int]] = {}  # origin → (when last logged, rejected since)

    def put(self, zone: str, role: str, value: float, source: str, *, age_s: float = 0.0) -> None:
        """A reading; ``age_s``: how old the source says its data is (Home Assistant's
        ``last_reported``, a device's ``last_seen``), so old data arrives already stale."""
        now_s = self._time_fn()
        taken_s = now_s - max(age_s, 0.0)
        with self._lock:
            previous = self._readings.get((zone, role))
            changed = previous is not None and previous.value != value
            if role == "setpoint" and zone in self._overrides and changed:
                _LOGGER.info("zone %s: thermostat setpoint changed to %.1f, override ends", zone, value)
                del self._overrides[zone]
            self._readings[(zone, role)] = Reading(value=value, at_s=taken_s, source=source)
        stale_s = self._stale_after_s(zone, role)
        was_missing = previous is None or now_s - previous.at_s > stale_s
        if was_missing and now_s - taken_s <= stale_s and self._on_fresh is not None:
            self._on_fresh()  # wake the control loop: no need to wait a whole interval in fail-safe

    def put_unknown_age(self, zone: str, role: str, value: float, source: str) -> None:
        """A reading whose age nobody knows (a retained message without ``last_seen``): kept, but
        already stale, so it never holds the heat on. Said once per source."""
        stale_s = self._stale_after_s(zone, role)
        with self._lock:
            first = source not in self._unknown_age_said
            self._unknown_age_said.add(source)
        if first:
            _LOGGER.warning(
                "%s (%s %s): a retained message of unknown age; not counted fresh until the source reports live",
                source,
                zone,
                role,
            )
        self.put(zone, role, value, source, age_s=stale_s + 1.0)

    def metered_w(self, now_s: float) -> dict[str, float]:
        """Zone → wall-plug meter watts, for zones whose meter reports fresh readings."""
        metered = {}
        for name, zone in self._zones.items():
            meter = self.get(name, "power")
            if (
                zone.power_meter is not None
                and meter is not None
                and now_s - meter.at_s <= zone.power_meter.stale_after_s
            ):
                metered[name] = meter.value
        return metered

    def _stale_after_s(self, zone: str, role: str) -> float:
        cfg = self._zones.get(zone)
        field = next((f for f, r in ROLES.items() if r == role), None)
        source = getattr(cfg, field, None) if cfg is not None and field is not None else None
        return source.stale_after_s if source is not None else 900.0

    def now_s(self) -> float:
        return self._time_fn()

    def window(self, zone: str, now_s: float) -> str | None:
        """What the zone's window contact says, as a person reads it: ``open``, ``closed``, ``unknown``
        (silent past its ``stale_after_s``: shown so, while its last state still decides), or None
        without a contact."""
        cfg = self._zones.get(zone)
        if cfg is None or cfg.window is None:
            return None
        reading = self.get(zone, "window")
        if reading is None or now_s - reading.at_s > cfg.window.stale_after_s:
            return "unknown"
        return "open" if reading.value else "closed"

    def override_setpoint(self, zone: str, setpoint_c: float) -> None:
        with self._lock:
            self._overrides[zone] = setpoint_c

    def clear_override(self, zone: str) -> None:
        with self._lock:
            self._overrides.pop(zone, None)

    def has_override(self, zone: str) -> bool:
        with self._lock:
            return zone in self._overrides

    def reject(self, origin: str, payload: bytes, reason: str) -> None:
        """Count a payload that must not reach the controller; log the first few of each source, then
        one a minute with how many came since (a source stuck on garbage is never silent in the log)."""
        now_s = self._time_fn()
        with self._lock:
            self.bad_payloads += 1
            self.last_bad = f"{origin}: {reason}"
            n = self._bad_by_origin[origin] = self._bad_by_origin.get(origin, 0) + 1
            said_s, unsaid = self._bad_said.get(origin, (-math.inf, 0))
            say = n <= 3 or now_s - said_s >= BAD_LOG_EVERY_S
            self._bad_said[origin] = (now_s, 0) if say else (said_s, unsaid + 1)
        if say:
            shown = payload[:120].decode("utf-8", "replace")
            more = f"… ({len(payload)} bytes)" if len(payload) > 120 else ""
            again = f" ({n} so far, {unsaid} since the last said)" if n > 3 else ""
            _LOGGER.warning("bad payload on %s%s: %s: %r%s", origin, again, reason, shown, more)

    def get(self, zone: str, role: str) -> Reading | None:
        with self._lock:
            return self._readings.get((zone, role))

    def zone_inputs(self, zone: str, mode: str = "heat") -> ZoneInputs:
        cfg = self._zones[zone]
        now_s = self._time_fn()
        with self._lock:
            r = self._readings
            setpoint = r.get((zone, "setpoint"))
            if zone in self._overrides:
                setpoint = Reading(value=self._overrides[zone], at_s=now_s, source="command")
            return ZoneInputs(
                temperature=r.get((zone, "temperature")),
                setpoint=setpoint,
                window_open=r.get((zone, "window")),
                outdoor=r.get((zone, "outdoor")),
                thermostat_on=r.get((zone, "mode")),
                mode=mode,
                temperature_stale_s=cfg.temperature.stale_after_s,
                setpoint_stale_s=cfg.setpoint.stale_after_s,
                outdoor_stale_s=cfg.outdoor_temperature.stale_after_s if cfg.outdoor_temperature else 3600.0,
            )
