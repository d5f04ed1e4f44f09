"""Commands from MQTT (and Home Assistant through it): parsed, validated, queued for the control thread."""

from __future__ import annotations

import logging
import math
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass

from heatctl.config import Config
from heatctl.mqtt_link import Handler, MqttLink

_LOGGER = logging.getLogger(__name__)
MODES = ("heat", "off")


@dataclass(frozen=True, slots=True)
class SetMode:
    """The whole node: ``heat`` or ``off``."""

    mode: str


@dataclass(frozen=True, slots=True)
class SetZoneMode:
    """One zone (its climate entity): ``heat`` or ``off``."""

    zone: str
    mode: str


@dataclass(frozen=True, slots=True)
class SetMaxPower:
    """A cap for the whole node in watts; 0 means no heat at all."""

    watts: float


@dataclass(frozen=True, slots=True)
class SetSetpoint:
    """Overrides the thermostat's setpoint until the thermostat's own setpoint next changes."""

    zone: str
    setpoint_c: float


@dataclass(frozen=True, slots=True)
class SetPreset:
    """One zone's preset: a configured target (comfort, eco, away), ``boost`` or ``none``."""

    zone: str
    preset: str


Command = SetMode | SetZoneMode | SetMaxPower | SetSetpoint | SetPreset


def preset_names(cfg: Config, zone: str) -> list[str]:
    """What a zone's climate entity offers: its configured presets, then boost (and none to leave them)."""
    presets = next(z.presets for z in cfg.zones if z.name == zone)
    return [*presets, "boost"]


class CommandError(ValueError):
    pass


def parse_mode(payload: bytes) -> str:
    text = payload.decode("utf-8", "replace").strip().lower()
    if text not in MODES:
        raise CommandError(f"mode must be one of {', '.join(MODES)}")
    return text


def parse_number(payload: bytes, low: float, high: float) -> float:
    text = payload.decode("utf-8", "replace").strip()
    try:
        value = float(text)
    except ValueError as exc:
        raise CommandError("expected a number") from exc
    if not math.isfinite(value) or not low <= value <= high:
        raise CommandError(f"must be between {low:g} and {high:g}")
    return value


class CommandInbox:
    """Commands handed from the network thread to the control thread, which is woken at once."""

    def __init__(self) -> None:
        self.queue: queue.SimpleQueue[Command] = queue.SimpleQueue()
        self.wake = threading.Event()
        self._lock = threading.Lock()
        self._rejected = 0

    def put(self, command: Command) -> None:
        self.queue.put(command)
        self.wake.set()

    def reject(self) -> None:
        with self._lock:
            self._rejected += 1

    @property
    def rejected(self) -> int:
        with self._lock:
            return self._rejected

    def drain(self) -> list[Command]:
        commands = []
        while True:
            try:
                commands.append(self.queue.get_nowait())
            except queue.Empty:
                return commands


def command_topics(cfg: Config) -> dict[str, str]:
    """topic → what it sets, for every command topic of this node."""
    assert cfg.mqtt is not None  # only called with MQTT configured
    base = f"{cfg.mqtt.base_topic}/{cfg.node_id}"
    topics = {f"{base}/mode/set": "mode", f"{base}/max_power_w/set": "max_power_w"}
    for zone in cfg.zones:
        topics[f"{base}/{zone.name}/setpoint/set"] = f"setpoint:{zone.name}"
        topics[f"{base}/{zone.name}/mode/set"] = f"zone_mode:{zone.name}"
        topics[f"{base}/{zone.name}/preset/set"] = f"preset:{zone.name}"
    return topics


def bind_commands(cfg: Config, link: MqttLink, inbox: CommandInbox, max_node_w: Callable[[], float]) -> None:
    """Subscribe every command topic; ``max_node_w`` gives the node's capacity now (it changes when a GPU opens)."""
    presets = {z.name: preset_names(cfg, z.name) for z in cfg.zones}
    for topic, what in command_topics(cfg).items():
        link.subscribe(topic, _handler(inbox, what, max_node_w, presets))


SETPOINT_RANGE_C = (5.0, 30.0)  # what a zone's target may be set to: the climate entity's min_temp and max_temp


def parse_command(what: str, payload: bytes, max_node_w: float, presets: dict[str, list[str]] | None = None) -> Command:
    """The command a payload on one of ``command_topics`` means; raises CommandError."""
    kind, _, zone = what.partition(":")
    if kind == "preset":
        name = payload.decode("utf-8", "replace").strip().lower()
        allowed = [*(presets or {}).get(zone, ["boost"]), "none"]
        if name not in allowed:
            raise CommandError(f"preset must be one of {', '.join(allowed)}")
        return SetPreset(zone, name)
    if kind == "mode":
        return SetMode(parse_mode(payload))
    if kind == "zone_mode":
        return SetZoneMode(zone, parse_mode(payload))
    if kind == "max_power_w":
        return SetMaxPower(parse_number(payload, 0.0, max_node_w))
    return SetSetpoint(zone, parse_number(payload, *SETPOINT_RANGE_C))


def _handler(inbox: CommandInbox, what: str, max_node_w: Callable[[], float], presets: dict[str, list[str]]) -> Handler:
    # Runs on paho's network thread: validate, enqueue, wake the control thread.
    def handle(topic: str, payload: bytes) -> None:
        try:
            command = parse_command(what, payload, max_node_w(), presets)
        except CommandError as exc:
            inbox.reject()
            _LOGGER.warning("rejected command on %s: %s: %r", topic, exc, payload[:60])
            return
        inbox.put(command)

    return handle
