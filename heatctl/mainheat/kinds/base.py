"""What a main-heating kind is: its config model, how a value reaches it, where it reports back."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from heatctl.config.mainheat import MainHeatingBase
from heatctl.config.sources import SourceConfig

Value = float | bool  # a setpoint in °C, or on/off


@dataclass(frozen=True, slots=True)
class MqttMessage:
    topic: str
    payload: str


@dataclass(frozen=True, slots=True)
class ServiceCall:
    """A Home Assistant service call."""

    domain: str
    service: str
    data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class MainKind:
    """One kind of main heating. ``switched``: heatctl turns it on and off around the target (a
    relay) rather than giving it a setpoint; ``command`` is how a value reaches it."""

    name: str
    model: type[MainHeatingBase]
    command: Callable[[Any, Value], MqttMessage | ServiceCall]
    describe: Callable[[Any], str]  # what it steers, for messages
    readback: Callable[[Any], SourceConfig | None] = lambda cfg: None  # where it reports its own setpoint
    switched: bool = False
    # What it is without heatctl, from the user's own setpoint: what every exit gives back.
    give_back: Callable[[Any, float | None], Value | None] = lambda cfg, user_c: user_c

    def sample(self) -> Value:
        """A value of the right type, to see where a command goes."""
        return True if self.switched else 20.0
