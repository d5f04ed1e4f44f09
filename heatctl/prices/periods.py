"""Daily time-of-use periods in local time (the first that holds a minute wins), a default between them."""

from __future__ import annotations

from datetime import tzinfo
from pathlib import Path
from typing import Annotated

import numpy as np
from pydantic import Field

from heatctl.clock import daily_span_mask, local_minutes
from heatctl.config.base import _Strict
from heatctl.config.prices import TariffPeriodConfig
from heatctl.prices.base import FloatArray, PriceKind


class PeriodsTariff(_Strict):
    periods: list[TariffPeriodConfig] = Field(min_length=1)
    default_per_kwh: Annotated[float, Field(ge=0)] = 0.0


def _known(cfg: PeriodsTariff, times_s: FloatArray, tz: tzinfo, base_dir: Path) -> FloatArray:
    minutes = local_minutes(times_s, tz)
    out = np.full(len(times_s), cfg.default_per_kwh)
    unset = np.ones(len(times_s), dtype=bool)
    for period in cfg.periods:
        inside = daily_span_mask(period, minutes) & unset
        out[inside] = period.price_per_kwh
        unset &= ~inside
    return out


KIND = PriceKind("periods", PeriodsTariff, known=_known)
