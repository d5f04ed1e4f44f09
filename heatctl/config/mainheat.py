"""The heating a room already has, steered as the second stage."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal, Self

from pydantic import (
    Field,
    model_validator,
)

from heatctl.config.base import _Strict


class SwitchConfig(_Strict):
    """An on/off heater heatctl switches itself: a Home Assistant switch or an MQTT relay."""

    entity: str | None = None  # switch.heater (switch.turn_on / turn_off)
    topic: str | None = None  # an MQTT command topic (Tasmota cmnd/…/POWER, Shelly …/command, zigbee2mqtt …/set)
    on: str = "ON"
    off: str = "OFF"
    hysteresis_k: Annotated[float, Field(gt=0, le=5)] = 0.3
    min_on_min: Annotated[float, Field(ge=0)] = 10.0
    min_off_min: Annotated[float, Field(ge=0)] = 10.0
    give_back: Literal["on", "off"] = "on"  # its state when heatctl lets go (on: its own thermostat rules)

    @model_validator(mode="after")
    def _one_target(self) -> Self:
        if (self.entity is None) == (self.topic is None):
            raise ValueError("give exactly one of 'entity' (Home Assistant) or 'topic' (MQTT)")
        return self


class MainHeatingBase(_Strict):
    """The heating the room already has, steered as the second stage and given back on every exit.

    What every kind shares: the cascade's knobs. Each kind (``heatctl.mainheat.kinds``) adds the
    key that names its device (``trv``, ``entity``, ``topic``, ``switch``).
    """

    kind: ClassVar[str] = ""
    offset_k: Annotated[float, Field(ge=0, le=15)] = 1.5  # held back: its setpoint = target - offset_k
    engage_k: Annotated[float, Field(gt=0, le=5)] = 0.3  # released when the room is this far below target ...
    engage_after_min: Annotated[float, Field(ge=0)] = 20.0  # ... for this long with the GPUs at capacity
    hold_after_min: Annotated[float, Field(ge=0)] = 30.0  # held back again after the GPUs had headroom this long
    max_switches_per_day: Annotated[int, Field(ge=2)] = 12
    min_setpoint_c: float = 5.0  # the lowest setpoint it accepts
    prefer: Literal["gpu", "cheapest"] = "gpu"
    cop: Annotated[float, Field(gt=0)] | None = None
    cost_per_kwh_heat: Annotated[float, Field(ge=0)] | None = None

    @model_validator(mode="after")
    def _cost_known(self) -> Self:
        if self.prefer == "cheapest" and self.cop is None and self.cost_per_kwh_heat is None:
            raise ValueError(
                "prefer: cheapest needs the cost of its heat: 'cop' (heat pump, electric) or 'cost_per_kwh_heat'"
            )
        return self
