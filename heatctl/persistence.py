"""What the service keeps across restarts in ``state_dir/state.json``: modes, max power, totals, integrators."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from heatctl.accounting import Counters, Totals
from heatctl.state import StateFile

_LOGGER = logging.getLogger(__name__)
MODES = ("heat", "off")


@dataclass(frozen=True, slots=True, kw_only=True)
class SavedState:
    mode: str | None = None
    zone_modes: Mapping[str, str] = field(default_factory=dict)
    max_power_w: float | None = None  # what a person commanded (None: the config's holds)
    config_max_power_w: float | None = None  # the config's max_power_w when it was commanded
    totals: Totals = field(default_factory=Totals)
    integrals_w: Mapping[str, float] = field(default_factory=dict)
    damaged: str | None = None  # the file could not be trusted: the safe side was taken


class ServiceState:
    """Reads forgivingly (a bad value is dropped, never fatal) and writes atomically."""

    def __init__(self, state_dir: Path, zones: Iterable[str]) -> None:
        self._file = StateFile(state_dir / "state.json")
        self._zones = set(zones)

    @property
    def path(self) -> Path:
        return self._file.path

    def load(self) -> SavedState:
        data = self._file.load()
        if self._file.problem is not None and not data:
            # Nothing to trust: heatctl may have been off, so it starts off until a person turns it on.
            _LOGGER.error("state: %s; heatctl starts with mode off", self._file.problem)
            return SavedState(mode="off", damaged=self._file.problem)
        mode = data.get("mode")
        zone_modes = _mapping(data.get("zone_modes"))
        integrals = _mapping(data.get("integrals_w"))
        max_power_w = data.get("commanded_max_power_w")
        config_w = data.get("config_max_power_w")
        return SavedState(
            mode=mode if mode in MODES else None,
            zone_modes={z: m for z, m in zone_modes.items() if z in self._zones and m in MODES},
            max_power_w=float(max_power_w) if isinstance(max_power_w, int | float) and max_power_w >= 0 else None,
            config_max_power_w=float(config_w) if isinstance(config_w, int | float) else None,
            totals=Counters.from_json(data.get("counters") or {}).snapshot(),
            integrals_w={z: float(i) for z, i in integrals.items() if z in self._zones and _number(i)},
            damaged=self._file.problem,
        )

    def save(self, state: SavedState) -> None:
        data: dict[str, Any] = {
            "mode": state.mode,
            "zone_modes": dict(state.zone_modes),
            "commanded_max_power_w": state.max_power_w,
            "config_max_power_w": state.config_max_power_w,
            "counters": Counters(state.totals).to_json(),
            "integrals_w": dict(state.integrals_w),
        }
        try:
            self._file.save(data)
        except OSError as exc:
            _LOGGER.error("cannot save state to %s: %s", self._file.path, exc)


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _mapping(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}
