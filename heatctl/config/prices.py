"""A time-of-use period of a tariff (the tariff's kinds are in ``heatctl.prices``)."""

from __future__ import annotations

from typing import Annotated

from pydantic import (
    Field,
)

from heatctl.config.base import _DailySpan


class TariffPeriodConfig(_DailySpan):
    price_per_kwh: Annotated[float, Field(ge=0)]
