"""A generic MQTT setpoint topic: the setpoint in °C as plain text (no read-back)."""

from __future__ import annotations

from typing import ClassVar

from heatctl.config.mainheat import MainHeatingBase
from heatctl.mainheat.kinds.base import MainKind, MqttMessage, Value


class TopicMainHeating(MainHeatingBase):
    kind: ClassVar[str] = "topic"
    topic: str


def _command(cfg: TopicMainHeating, value: Value) -> MqttMessage:
    return MqttMessage(cfg.topic, f"{float(value):g}")


KIND = MainKind("topic", TopicMainHeating, _command, lambda cfg: cfg.topic)
