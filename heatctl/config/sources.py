"""Where readings and forecasts come from: an MQTT topic or a Home Assistant entity."""

from __future__ import annotations

from typing import Annotated, Literal, Self

from pydantic import (
    Field,
    model_validator,
)

from heatctl.config.base import _Strict


class SourceConfig(_Strict):
    """Where one reading comes from: an MQTT topic or a Home Assistant entity."""

    topic: str | None = None
    json_path: str | None = None
    value_template: str | None = None
    entity: str | None = None
    attribute: str | None = None
    unit: Literal["C", "F", "W", "kW"] | None = None
    stale_after_s: Annotated[float, Field(gt=0)] = 900.0
    valid_range: tuple[float, float] | None = None
    open_when: bool | str | float | None = None  # window sources: the value that means "open"
    # Ask the device for a fresh reading at start and in `check` (zigbee2mqtt's <device>/get, since
    # zigbee2mqtt does not retain by default); default: on for topics under zigbee2mqtt/.
    ask_at_start: bool | None = None

    @property
    def asks_at_start(self) -> bool:
        if self.ask_at_start is not None:
            return self.ask_at_start
        return self.topic is not None and self.topic.startswith("zigbee2mqtt/") and "/bridge/" not in self.topic

    @model_validator(mode="after")
    def _one_origin(self) -> Self:
        if (self.topic is None) == (self.entity is None):
            raise ValueError("give exactly one of 'topic' (MQTT) or 'entity' (Home Assistant)")
        if self.json_path is not None and self.value_template is not None:
            raise ValueError("give at most one of 'json_path' and 'value_template'")
        if self.entity is not None and (self.json_path or self.value_template):
            raise ValueError("'json_path' and 'value_template' apply to MQTT topics, not entities")
        if self.topic is not None and self.attribute is not None:
            raise ValueError("'attribute' applies to Home Assistant entities, not topics")
        if self.valid_range is not None and self.valid_range[0] >= self.valid_range[1]:
            raise ValueError("valid_range must be [low, high] with low < high")
        return self

    @property
    def origin(self) -> str:
        """The topic or entity, for messages."""
        return self.topic if self.topic is not None else f"entity {self.entity}"


class ForecastSourceConfig(_Strict):
    """A forecast: a Home Assistant entity (its attribute lists, or ``weather.get_forecasts`` for a
    weather entity) or an MQTT topic carrying a JSON list of points."""

    entity: str | None = None
    topic: str | None = None
    poll_interval_s: Annotated[float, Field(ge=60)] = 900.0  # Home Assistant: how often to ask
    stale_after_s: Annotated[float, Field(gt=0)] = 36 * 3600.0  # unused after this long without news

    @model_validator(mode="after")
    def _one_kind(self) -> Self:
        if (self.entity is None) == (self.topic is None):
            raise ValueError("give exactly one of 'entity' (Home Assistant) or 'topic' (MQTT)")
        return self
