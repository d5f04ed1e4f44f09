"""The node's main heatings: each zone's device opened and steered, the user's setpoints kept on disk.

Thread: the control thread only (devices that call Home Assistant have threads of their own).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from heatctl.config import Config
from heatctl.control.safety import ZoneInputs
from heatctl.mainheat.cascade import Cascade, MainCommand
from heatctl.mainheat.devices import open_device
from heatctl.mainheat.steer import Held, ZoneMainHeating, load_held, save_held
from heatctl.mqtt_link import MqttLink
from heatctl.sources.store import ReadingStore

_LOGGER = logging.getLogger(__name__)


class NodeMainHeating:
    def __init__(self, cfg: Config, state_dir: Path, link: MqttLink | None, time_fn: Callable[[], float]) -> None:
        self._state_dir = state_dir
        self._time_fn = time_fn
        self.zones: dict[str, ZoneMainHeating] = {}  # zone → its main heating, where heatctl steers one
        zones = [z for z in cfg.zones if z.main_heating is not None]
        self._held: dict[str, Held] = load_held(state_dir, (z.name for z in zones)) if zones else {}

        def publish(topic: str, payload: str) -> bool:
            if link is None:
                return False
            link.publish(topic, payload, qos=1)
            return True

        def publish_wait(topic: str, payload: str) -> bool:
            return link is not None and link.publish_wait(topic, payload)

        for zone in zones:
            assert zone.main_heating is not None
            held = self._held.setdefault(zone.name, Held())
            device = open_device(zone.main_heating, cfg, publish, publish_wait)
            self.zones[zone.name] = ZoneMainHeating(zone, device, held, on_change=self._save, time_fn=time_fn)

    def _save(self) -> None:
        try:
            save_held(self._state_dir, self._held)
        except OSError as exc:
            _LOGGER.error("cannot keep the main heating's state in %s: %s", self._state_dir, exc)

    @property
    def cascades(self) -> dict[str, Cascade]:
        return {name: main.cascade for name, main in self.zones.items()}

    def user_setpoints_c(self) -> dict[str, float | None]:
        """What a give-back restores, per zone."""
        return {name: main.held.user_setpoint_c for name, main in self.zones.items()}

    def targets(self, zones: Mapping[str, ZoneInputs], store: ReadingStore) -> dict[str, ZoneInputs]:
        """Zones whose thermostat is the main heating itself: the user's setpoint is the target."""
        out = dict(zones)
        for name, main in self.zones.items():
            zin = zones[name]
            main.observe(store.get(name, "main_setpoint"), zin.setpoint)
            out[name] = zin._replace(setpoint=main.target(zin.setpoint))
        return out

    def apply(self, commands: Mapping[str, MainCommand]) -> None:
        for name, cmd in commands.items():
            self.zones[name].apply(cmd)

    def give_back(self) -> None:
        """The user's own setpoint to every main heating heatctl steered; what failed stays for restore."""
        for name, main in self.zones.items():
            problem = main.give_back_now()
            if problem is not None:
                _LOGGER.error("zone %s: could not give the main heating back (%s): run heatctl restore", name, problem)
            main.device.close()

    def state(self) -> dict[str, Any]:
        """The state's ``main_heating`` block: each zone's stage, why, and what its device was told."""
        now_s = self._time_fn()
        return {"main_heating": {name: main.status(now_s) for name, main in self.zones.items()}}
