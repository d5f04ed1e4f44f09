"""What electricity costs: fixed, time-of-use periods, or a forecast."""

from __future__ import annotations

from typing import Annotated, Self

from pydantic import (
    Field,
    model_validator,
)

from heatctl.config.base import _DailySpan, _Strict


class TariffPeriodConfig(_DailySpan):
    price_per_kwh: Annotated[float, Field(ge=0)]


class TariffConfig(_Strict):
    """What electricity costs: fixed, daily time-of-use periods (local time), or a price forecast
    (a Home Assistant entity's attribute lists, or an MQTT topic with a JSON list of {start, price})."""

    price_per_kwh: Annotated[float, Field(ge=0)] | None = None
    periods: list[TariffPeriodConfig] | None = None
    default_per_kwh: Annotated[float, Field(ge=0)] = 0.0
    entity: str | None = None
    topic: str | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> Self:
        kinds = (self.price_per_kwh, self.periods, self.entity, self.topic)
        if sum(k is not None for k in kinds) != 1:
            raise ValueError("give one of price_per_kwh, periods (with default_per_kwh), entity or topic")
        return self

    @property
    def is_forecast(self) -> bool:
        """Prices arrive from an entity or a topic (known only once they came)."""
        return self.entity is not None or self.topic is not None

    def price_at(self, minute: int) -> float | None:
        """The price at ``minute`` of the local day; None for a forecast tariff (see the planner's signals)."""
        if self.price_per_kwh is not None:
            return self.price_per_kwh
        if self.periods is None:
            return None
        return next((p.price_per_kwh for p in self.periods if p.active(minute)), self.default_per_kwh)
