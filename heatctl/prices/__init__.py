"""Price and carbon sources by kind, as GPU backends, workloads and main-heating kinds are: each
module holds its config model and what it says. A new kind is one module and one line in
``PRICE_KINDS`` (or ``CARBON_KINDS``).

``tariff:`` is told apart by its key: ``price_per_kwh`` (fixed), ``periods`` (time of use),
``csv`` (a series), ``entity`` or ``topic`` (a forecast that arrives at run time); ``carbon:`` by
``g_per_kwh`` (fixed), ``csv``, ``entity`` or ``topic``. The service, its planner and the
simulator all read them through ``known_prices`` (known ahead) and ``forecast_source``: one rule.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import tzinfo
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Final, Protocol, Union

import numpy as np
from pydantic import BaseModel, Discriminator, Tag

from heatctl.clock import local_zone
from heatctl.config.sources import ForecastSourceConfig
from heatctl.prices import csvfile, fixed, forecast, periods
from heatctl.prices.base import FloatArray, PriceKind
from heatctl.prices.csvfile import CsvTariff
from heatctl.prices.fixed import FixedTariff
from heatctl.prices.forecast import EntityTariff, TopicTariff
from heatctl.prices.periods import PeriodsTariff

PRICE_KINDS: Final[dict[str, PriceKind]] = {
    k.key: k for k in (fixed.KIND, periods.KIND, csvfile.KIND, forecast.ENTITY, forecast.TOPIC)
}
CARBON_KINDS: Final[dict[str, PriceKind]] = {
    k.key: k for k in (fixed.CARBON, csvfile.CARBON, forecast.ENTITY, forecast.TOPIC)
}


def _tag(key: str) -> str:
    return f"<{key}>"  # never a YAML key: the loader leaves it out of error paths


def _union(kinds: dict[str, PriceKind], what: str) -> Any:
    """The config's union of these kinds' models, told apart by the key each names."""

    def kind_of(value: Any) -> str | None:
        if isinstance(value, dict):
            named = [key for key in kinds if key in value]
            return _tag(named[0]) if len(named) == 1 else None
        return next((_tag(k.key) for k in kinds.values() if isinstance(value, k.model)), None)

    return Annotated[
        Union[tuple(Annotated[k.model, Tag(_tag(k.key))] for k in kinds.values())],  # noqa: UP007
        Discriminator(
            kind_of,
            custom_error_type=f"{what}_kind",
            custom_error_message="give one of " + ", ".join(f"'{k}'" for k in kinds),
        ),
    ]


if TYPE_CHECKING:
    TariffConfig = BaseModel
    CarbonConfig = BaseModel
else:
    TariffConfig = _union(PRICE_KINDS, "tariff")
    CarbonConfig = _union(CARBON_KINDS, "carbon")


def price_kind(cfg: BaseModel) -> PriceKind:
    """The kind of a tariff or carbon source (the first registry whose model it is)."""
    return next(k for kinds in (PRICE_KINDS, CARBON_KINDS) for k in kinds.values() if isinstance(cfg, k.model))


def is_known(cfg: BaseModel) -> bool:
    """Whether the tariff's prices are known ahead (else they arrive as a forecast)."""
    return price_kind(cfg).known is not None


def known_prices(cfg: BaseModel, times_s: FloatArray, tz: tzinfo, base_dir: Path = Path(".")) -> FloatArray | None:
    """The price per kWh at each epoch time for a tariff known ahead; None for a forecast tariff."""
    known = price_kind(cfg).known
    return known(cfg, np.asarray(times_s, dtype=np.float64), tz, base_dir) if known is not None else None


class ForecastPrices(Protocol):
    def price_now(self) -> float | None: ...


def price_now(cfg: BaseModel | None, wall_s: float, forecast: ForecastPrices | None) -> float | None:
    """Electricity now: a known tariff's (in the system's time zone), else the forecast's (None: unknown)."""
    return _signal_now(cfg, wall_s, forecast.price_now if forecast is not None else None)


class ForecastCarbon(Protocol):
    def carbon_now(self) -> float | None: ...


def carbon_now(cfg: BaseModel | None, wall_s: float, forecast: ForecastCarbon | None) -> float | None:
    """Grid carbon intensity now (g/kWh): a known source's, else the forecast's (None: unknown)."""
    value = _signal_now(cfg, wall_s, forecast.carbon_now if forecast is not None else None)
    return value if value is None or math.isfinite(value) else None


def _signal_now(cfg: BaseModel | None, wall_s: float, forecast_now: Callable[[], float | None] | None) -> float | None:
    """A price or carbon signal now: known ahead (its value at ``wall_s``), else the forecast's."""
    if cfg is None:
        return None
    known = known_prices(cfg, np.array([wall_s]), local_zone())
    if known is not None:
        return float(known[0])
    return forecast_now() if forecast_now is not None else None


def forecast_source(cfg: BaseModel) -> ForecastSourceConfig | None:
    """Where a forecast tariff's prices arrive from (None: known ahead)."""
    make = price_kind(cfg).forecast
    return make(cfg) if make is not None else None


__all__ = [
    "CARBON_KINDS",
    "PRICE_KINDS",
    "CarbonConfig",
    "CsvTariff",
    "EntityTariff",
    "FixedTariff",
    "PeriodsTariff",
    "PriceKind",
    "TariffConfig",
    "TopicTariff",
    "carbon_now",
    "forecast_source",
    "is_known",
    "known_prices",
    "price_kind",
    "price_now",
]
