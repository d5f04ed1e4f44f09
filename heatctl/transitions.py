"""Say what changed, once: zones entering and leaving fail-safe, sources going silent and coming back.

The control thread calls ``update`` every tick; only changes are logged, so the log reads as a
story of the service ("window open", "thermostat silent", "reports again") and not as a stream.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from heatctl.config import ZoneConfig
from heatctl.control.core import ZoneOutput
from heatctl.control.safety import fresh
from heatctl.sources.mqtt import zone_sources
from heatctl.sources.store import ReadingStore

_LOGGER = logging.getLogger("heatctl.service")


class Transitions:
    def __init__(self, zones: list[ZoneConfig], store: ReadingStore) -> None:
        self._zones = zones
        self._store = store
        self._failsafes: dict[str, str | None] = {}
        self._fresh: dict[tuple[str, str], bool] = {}

    def update(self, now_s: float, zones: Mapping[str, ZoneOutput]) -> None:
        self._failsafe_changes(zones)
        self._source_changes(now_s)

    def _failsafe_changes(self, zones: Mapping[str, ZoneOutput]) -> None:
        for name, zone in zones.items():
            before = self._failsafes.get(name)
            if zone.failsafe != before:
                if zone.failsafe is not None and name not in self._failsafes:
                    _LOGGER.info("zone %s: no heat until it reports (%s)", name, zone.failsafe)  # at start
                elif zone.failsafe is not None:
                    _LOGGER.warning("zone %s: fail-safe, no heat: %s", name, zone.failsafe)
                elif name in self._failsafes:
                    _LOGGER.info("zone %s: fail-safe cleared (was: %s)", name, before)
            self._failsafes[name] = zone.failsafe

    def _source_changes(self, now_s: float) -> None:
        for zone in self._zones:
            for role, source in zone_sources(zone):
                reading = self._store.get(zone.name, role)
                is_fresh = fresh(reading, now_s, source.stale_after_s)
                was = self._fresh.get((zone.name, role))
                if was is not None and was != is_fresh:
                    if is_fresh:
                        _LOGGER.info("zone %s: %s (%s) reports again", zone.name, role, source.origin)
                    elif role == "window":
                        _LOGGER.warning(
                            "zone %s: window (%s) silent for %.0f s: shown as unknown; its last state (%s) "
                            "still decides, and the room's temperature still guards the heat",
                            zone.name,
                            source.origin,
                            source.stale_after_s,
                            "open" if reading is not None and reading.value else "closed",
                        )
                    else:
                        silent_s = source.stale_after_s
                        _LOGGER.warning(
                            "zone %s: %s (%s) silent for %.0f s: stale", zone.name, role, source.origin, silent_s
                        )
                if reading is not None:
                    self._fresh[(zone.name, role)] = is_fresh
