"""One value at all times: a fixed price, or a fixed carbon intensity."""

from __future__ import annotations

from datetime import tzinfo
from pathlib import Path
from typing import Annotated

import numpy as np
from pydantic import Field

from heatctl.config.base import _Strict
from heatctl.prices.base import FloatArray, PriceKind


class FixedTariff(_Strict):
    price_per_kwh: Annotated[float, Field(ge=0)]


def _known(cfg: FixedTariff, times_s: FloatArray, tz: tzinfo, base_dir: Path) -> FloatArray:
    return np.full(len(times_s), cfg.price_per_kwh)


KIND = PriceKind("price_per_kwh", FixedTariff, known=_known)


class FixedCarbon(_Strict):
    g_per_kwh: Annotated[float, Field(ge=0)]


def _known_carbon(cfg: FixedCarbon, times_s: FloatArray, tz: tzinfo, base_dir: Path) -> FloatArray:
    return np.full(len(times_s), cfg.g_per_kwh)


CARBON = PriceKind("g_per_kwh", FixedCarbon, known=_known_carbon)
