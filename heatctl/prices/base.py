"""What a price source is: its config model, and either the prices it knows ahead or the forecast it
arrives as."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import tzinfo
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel

from heatctl.config.sources import ForecastSourceConfig

FloatArray = npt.NDArray[np.float64]
KnownPrices = Callable[[Any, FloatArray, tzinfo, Path], FloatArray]


@dataclass(frozen=True, slots=True)
class PriceKind:
    """One kind of price source, named in the config by ``key``. ``known``: the price per kWh at
    epoch times, for a tariff known ahead (``tz``: the house's; ``base_dir``: where relative files
    are); ``forecast``: the forecast source it arrives as, for one known only once it comes."""

    key: str
    model: type[BaseModel]
    known: KnownPrices | None = None
    forecast: Callable[[Any], ForecastSourceConfig] | None = None
