"""An on/off heater heatctl switches itself: a Home Assistant switch or an MQTT relay (Tasmota, Shelly)."""

from __future__ import annotations

from typing import ClassVar

from heatctl.config.mainheat import MainHeatingBase, SwitchConfig
from heatctl.mainheat.kinds.base import MainKind, MqttMessage, ServiceCall, Value


class SwitchMainHeating(MainHeatingBase):
    kind: ClassVar[str] = "switch"
    switch: SwitchConfig


def _command(cfg: SwitchMainHeating, value: Value) -> MqttMessage | ServiceCall:
    sw = cfg.switch
    if sw.entity is not None:
        domain = sw.entity.split(".", 1)[0]
        return ServiceCall(domain, "turn_on" if value else "turn_off", {"entity_id": sw.entity})
    assert sw.topic is not None  # SwitchConfig holds exactly one
    return MqttMessage(sw.topic, sw.on if value else sw.off)


def _describe(cfg: SwitchMainHeating) -> str:
    return cfg.switch.entity or str(cfg.switch.topic)


def _give_back(cfg: SwitchMainHeating, user_c: float | None) -> bool:
    return cfg.switch.give_back == "on"  # on: its own thermostat rules again


KIND = MainKind("switch", SwitchMainHeating, _command, _describe, switched=True, give_back=_give_back)
