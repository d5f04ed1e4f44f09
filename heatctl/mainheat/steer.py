"""One zone's main heating under heatctl: the cascade's commands sent, the user's own setpoint kept.

The user's setpoint is never lost. It is what the main heating was set to before heatctl
steered it, and every change a person makes later — on the device, or in Home Assistant. A
report from the device is heatctl's own write coming back when it matches a value heatctl
wrote lately; any other value is a person's, and becomes the user's setpoint (and, when the
zone's thermostat *is* this device, the new target). The user's setpoint and whether heatctl
holds the device are kept in ``state_dir/main_heating.json`` before every write, so a crash
loses neither: ``heatctl restore`` (the systemd unit's ExecStopPost) and the next start give it
back.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from heatctl.config import Config, ZoneConfig
from heatctl.control.safety import Reading
from heatctl.errors import plain
from heatctl.mainheat.cascade import GIVEN_BACK, Cascade, MainCommand
from heatctl.mainheat.devices import MainDevice
from heatctl.mainheat.kinds import Value, main_kind
from heatctl.state import StateFile

_LOGGER = logging.getLogger(__name__)
STATE_FILE = "main_heating.json"
ECHO_K = 0.25  # a report this close to a value heatctl wrote is heatctl's own
REWRITE_S = 900.0  # while steering, the command is sent again this often (a lost message, a device reset)
RECENT = 4  # how many of heatctl's last writes a late report may still echo


@dataclass
class Held:
    """What survives a restart about one zone's main heating."""

    user_setpoint_c: float | None = None
    steered: bool = False  # heatctl has it at something other than the user's own setting
    recent: list[float] = field(default_factory=list)  # setpoints heatctl wrote lately
    # The record was damaged: heatctl may have held it back and does not know the user's setpoint, so
    # it neither takes the device's value for the user's nor steers it, until it learns the setpoint.
    uncertain: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "user_setpoint_c": self.user_setpoint_c,
            "steered": self.steered,
            "recent": self.recent,
            "uncertain": self.uncertain,
        }

    @classmethod
    def from_json(cls, data: Any) -> Held:
        if not isinstance(data, dict):
            return cls()
        user = data.get("user_setpoint_c")
        recent = [float(v) for v in data.get("recent", []) if isinstance(v, int | float)]
        return cls(
            user_setpoint_c=float(user) if isinstance(user, int | float) else None,
            steered=bool(data.get("steered")),
            recent=recent[-RECENT:],
            uncertain=bool(data.get("uncertain")),
        )


def load_held(state_dir: Path, zones: Iterable[str] = ()) -> dict[str, Held]:
    """What a previous run kept; a damaged record with no good copy makes every zone ``uncertain``."""
    state = StateFile(state_dir / STATE_FILE)
    data = state.load()
    if state.problem is not None and not data:
        _LOGGER.error("%s: the user's setpoints are unknown until each main heating reports a change", state.problem)
        return {zone: Held(steered=True, uncertain=True) for zone in zones}
    return {str(k): Held.from_json(v) for k, v in data.items()}


def save_held(state_dir: Path, held: dict[str, Held]) -> None:
    StateFile(state_dir / STATE_FILE).save({k: v.to_json() for k, v in held.items()})


def shares_thermostat(zone: ZoneConfig) -> bool:
    """The zone's setpoint is read from the very device heatctl writes (the TRV is the thermostat)."""
    main, sp = zone.main_heating, zone.setpoint
    readback = main_kind(main).readback(main) if main is not None else None
    if readback is None:
        return False
    return (readback.topic is not None and readback.topic == sp.topic) or (
        readback.entity is not None and readback.entity == sp.entity
    )


class ZoneMainHeating:
    def __init__(
        self,
        zone: ZoneConfig,
        device: MainDevice,
        held: Held,
        *,
        on_change: Callable[[], None],
        time_fn: Callable[[], float] = time.monotonic,
    ) -> None:
        assert zone.main_heating is not None
        self.zone = zone
        self.cfg = zone.main_heating
        self.kind = main_kind(self.cfg)
        self.name = self.kind.describe(self.cfg)  # what it steers, for messages
        self.device = device
        self.held = held
        self.cascade = Cascade(self.cfg)
        self.shares = shares_thermostat(zone)
        self._on_change = on_change  # persist
        self._time_fn = time_fn
        self._seen_at: float | None = None  # the device report last looked at
        self._sent: Value | None = None
        self._sent_s = -1e18
        self._first_seen_c: float | None = None  # an uncertain zone's first report (perhaps heatctl's own)
        self.command: MainCommand | None = None
        if held.uncertain:
            _LOGGER.error(
                "zone %s: %s: its record is damaged; heatctl does not steer it until it learns your setpoint "
                "(from the zone's thermostat, or when you next set it on the device)",
                zone.name,
                self.name,
            )
        elif held.steered:
            _LOGGER.warning(
                "zone %s: %s was left held back by a run that did not stop cleanly; your setpoint %s is kept",
                zone.name,
                self.name,
                held.user_setpoint_c,
            )

    # --- the user's setpoint ------------------------------------------------------------

    def observe(self, reported: Reading | None, thermostat: Reading | None) -> None:
        """Learn the user's setpoint from the device's reports (or, without read-back, the thermostat's)."""
        if self.held.uncertain:
            self._settle_uncertain(reported, thermostat)
            return
        if self.kind.readback(self.cfg) is None:
            if thermostat is not None and thermostat.value != self.held.user_setpoint_c:
                self.held.user_setpoint_c = thermostat.value
                self._on_change()
            return
        if reported is None or reported.at_s == self._seen_at:
            return
        self._seen_at = reported.at_s
        value = reported.value
        if self.held.steered and any(abs(value - w) <= ECHO_K for w in self.held.recent):
            return  # heatctl's own write, reported back
        if value != self.held.user_setpoint_c:
            if self.held.steered:
                _LOGGER.info(
                    "zone %s: %s set to %.1f °C by a person: their new setpoint", self.zone.name, self.name, value
                )
            self.held.user_setpoint_c = value
            self._on_change()

    def _settle_uncertain(self, reported: Reading | None, thermostat: Reading | None) -> None:
        """After a damaged record: the zone's own thermostat, where it is another device, says the user's
        setpoint; where this device is the thermostat, only a change a person makes to it does."""
        if not self.shares and thermostat is not None:
            learned: float | None = thermostat.value
        elif reported is None or reported.at_s == self._seen_at:
            return
        elif self._first_seen_c is None:
            self._seen_at, self._first_seen_c = reported.at_s, reported.value  # maybe heatctl's held-back value
            return
        else:
            self._seen_at = reported.at_s
            learned = reported.value if reported.value != self._first_seen_c else None
        if learned is not None:
            _LOGGER.info("zone %s: %s: the user's setpoint is %.1f °C again", self.zone.name, self.name, learned)
            self.held.user_setpoint_c, self.held.uncertain = learned, False
            self._on_change()

    def target(self, thermostat: Reading | None) -> Reading | None:
        """The zone's target: the thermostat's, or, when the thermostat is this device, the user's setpoint."""
        if not self.shares or thermostat is None or self.held.user_setpoint_c is None:
            return thermostat
        return thermostat._replace(value=self.held.user_setpoint_c)

    # --- commands -------------------------------------------------------------------------

    def apply(self, cmd: MainCommand) -> None:
        """Send the cascade's command when it changes (and again every ``REWRITE_S`` while steering)."""
        self.command = cmd
        value = self._value(cmd)
        if value is None or self.held.uncertain:  # the user's setpoint unknown: heatctl does not steer it
            return
        now_s = self._time_fn()
        steered = cmd.stage != GIVEN_BACK and value != self._own_value()
        if value == self._sent and (not steered or now_s - self._sent_s < REWRITE_S):
            return
        if steered and isinstance(value, float):
            self.held.recent = [*self.held.recent, value][-RECENT:]
        self.held.steered = steered
        self._on_change()  # on disk before it is on the wire
        self.device.send(value)
        if self._sent != value:
            _LOGGER.info("zone %s: %s → %s (%s: %s)", self.zone.name, self.name, value, cmd.stage, cmd.reason)
        self._sent, self._sent_s = value, now_s

    def _value(self, cmd: MainCommand) -> Value | None:
        if self.kind.switched:
            return cmd.on
        return float(cmd.setpoint_c) if cmd.setpoint_c is not None else None

    def _own_value(self) -> Value | None:
        """What the device would be without heatctl."""
        return self.kind.give_back(self.cfg, self.held.user_setpoint_c)

    def give_back_now(self) -> str | None:
        """The last word: the user's own setpoint (or switch state), sent and waited for."""
        own = self._own_value()
        if self.held.uncertain and not self.kind.switched:
            return f"{self.name}: the user's setpoint is unknown (a damaged record): set it on the device"
        if own is None:
            return None  # never learned it: heatctl never wrote anything either
        if not self.held.steered and self._sent in (None, own):
            return None
        problem = self.device.send_now(own)
        if problem is None:
            self.held.steered = False
            self._sent = own
            self._on_change()
            _LOGGER.info("zone %s: %s given back at %s", self.zone.name, self.name, own)
        return problem

    def status(self, now_s: float) -> dict[str, Any]:
        cmd = self.command
        return {
            "stage": cmd.stage if cmd else GIVEN_BACK,
            "reason": cmd.reason if cmd else "starting",
            "device": self.name,
            "setpoint_c": cmd.setpoint_c if cmd else None,
            "on": cmd.on if cmd else None,
            "user_setpoint_c": self.held.user_setpoint_c,
            "uncertain": self.held.uncertain,
            "switches_today": self.cascade.switches_today(now_s),
            "error": getattr(self.device, "last_error", None),
        }


def give_back_recorded(cfg: Config, state_dir: Path) -> list[str]:
    """``heatctl restore``: every main heating a run left held back gets the user's setpoint again."""
    from heatctl.mainheat.devices import HomeAssistantDevice, MqttDevice, through_homeassistant
    from heatctl.mqtt_link import publish_and_wait, short_lived_client
    from heatctl.sources.homeassistant import make_client

    held = load_held(state_dir, (z.name for z in cfg.zones if z.main_heating is not None))
    done: list[str] = []
    client = None
    for zone in cfg.zones:
        main, kept = zone.main_heating, held.get(zone.name)
        if main is None or kept is None or not kept.steered:
            continue
        kind = main_kind(main)
        name = kind.describe(main)
        own = kind.give_back(main, kept.user_setpoint_c)
        if kept.uncertain and not kind.switched:
            done.append(f"zone {zone.name}: {name}: the record is damaged, the user's setpoint unknown: set it there")
            continue
        if own is None:
            continue
        device: MainDevice
        if through_homeassistant(main):
            ha = cfg.homeassistant
            assert ha is not None  # the config's cross-checks require it
            device = HomeAssistantDevice(main, lambda ha=ha: make_client(ha))  # type: ignore[misc]
        else:
            if cfg.mqtt is None:
                done.append(f"cannot give {name} back: no 'mqtt:' section")
                continue
            if client is None:
                try:
                    client = short_lived_client(cfg.mqtt, "restore")
                    client.connect(cfg.mqtt.host, cfg.mqtt.port, keepalive=30)
                    client.loop_start()
                except (OSError, ValueError) as exc:
                    done.append(f"cannot give {name} back: MQTT {cfg.mqtt.host}:{cfg.mqtt.port}: {plain(exc)}")
                    client = None
                    continue
            device = MqttDevice(main, lambda t, p: True, partial(publish_and_wait, client, timeout_s=10.0))
        problem = device.send_now(own)
        device.close()
        if problem is None:
            kept.steered = False
            done.append(f"zone {zone.name}: {name} given back at {own}")
        else:
            done.append(f"cannot give {name} back: {problem}")
    if client is not None:
        client.loop_stop()
        client.disconnect()
    if held:
        save_held(state_dir, held)
    return done
