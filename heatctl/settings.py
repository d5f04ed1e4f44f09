"""What a person set on the node — heatctl's mode, each zone's mode, the commanded power cap — the
commands that change it, and how it survives a restart (``persistence``).

Thread: the control thread only; commands reach it through the ``CommandInbox``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from heatctl.accounting import Totals
from heatctl.commands import Command, SetMaxPower, SetMode, SetPreset, SetSetpoint, SetZoneMode
from heatctl.config import Config
from heatctl.persistence import SavedState, ServiceState

if TYPE_CHECKING:
    from heatctl.control.policy import TickPolicy
    from heatctl.sources.store import ReadingStore

_LOGGER = logging.getLogger(__name__)


class NodeSettings:
    def __init__(self, cfg: Config, state_dir: Path) -> None:
        self._file = ServiceState(state_dir, (z.name for z in cfg.zones))
        self._cfg_max_w = cfg.max_power_w
        self._presets = {z.name: dict(z.presets) for z in cfg.zones}
        self.mode: str = cfg.mode
        self.zone_modes = {z.name: "heat" for z in cfg.zones}
        self.max_power_w: float | None = cfg.max_power_w  # the config's, or what a person commanded
        self._commanded_max_w: float | None = None  # kept across restarts while the config's stays the same
        self.problem: str | None = None  # the saved state could not be trusted at start

    def apply(self, cmd: Command, store: ReadingStore, policy: TickPolicy | None) -> None:
        """One command; a setpoint or a preset becomes the zone's target in the readings (until the
        thermostat's own setpoint changes), and the policy's preset (boost: flat out until warm)."""
        _LOGGER.info("command: %s", cmd)
        match cmd:
            case SetMode(mode):
                self.mode = mode
            case SetZoneMode(zone, mode) if zone in self.zone_modes:
                self.zone_modes[zone] = mode
                if mode == "heat" and self.mode != "heat":
                    _LOGGER.info("zone %s asked to heat while heatctl was off: heatctl on", zone)
                    self.mode = "heat"
            case SetMaxPower(watts):
                self.max_power_w = self._commanded_max_w = watts
            case SetSetpoint(zone, setpoint_c):
                store.override_setpoint(zone, setpoint_c)
                if policy is not None:
                    policy.presets[zone] = "none"
            case SetPreset(zone, preset) if zone in self.zone_modes:
                targets = self._presets[zone]
                if preset in targets:
                    store.override_setpoint(zone, targets[preset])
                elif preset == "none":
                    store.clear_override(zone)
                if policy is not None:
                    policy.set_preset(zone, preset)

    def save(self, totals: Totals, integrals_w: Mapping[str, float]) -> None:
        """Into ``state_dir/state.json``, with the counters and integrators that survive a restart too."""
        self._file.save(self.saved(totals, integrals_w))

    def saved(self, totals: Totals, integrals_w: Mapping[str, float]) -> SavedState:
        return SavedState(
            mode=self.mode,
            zone_modes=dict(self.zone_modes),
            max_power_w=self._commanded_max_w,
            config_max_power_w=self._cfg_max_w,
            totals=totals,
            integrals_w=dict(integrals_w),
        )

    def restore(self) -> SavedState:
        """A previous run's settings (returned whole, with its counters and integrators); a cap commanded
        against another config's max_power_w yields to it."""
        saved = self._file.load()
        self.mode = saved.mode or self.mode
        self.zone_modes.update(saved.zone_modes)
        self.problem = saved.damaged
        if saved.max_power_w is not None and saved.config_max_power_w == self._cfg_max_w:
            self.max_power_w = self._commanded_max_w = saved.max_power_w
        elif saved.max_power_w is not None:
            _LOGGER.info(
                "max_power_w is %s in the config now (was %s): it replaces the %.0f W set by command",
                self._cfg_max_w,
                saved.config_max_power_w,
                saved.max_power_w,
            )
        return saved
