"""Values known only as they come: a Home Assistant entity's forecast attributes (prices from Nord
Pool, Tibber, ENTSO-E; carbon from Electricity Maps, CO2 Signal), or an MQTT topic carrying a JSON
list of ``{start, value}``."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from heatctl.config.base import _Strict
from heatctl.config.sources import ForecastSourceConfig
from heatctl.prices.base import PriceKind


class EntityTariff(_Strict):
    entity: str
    poll_interval_s: Annotated[float, Field(ge=60)] = 900.0
    stale_after_s: Annotated[float, Field(gt=0)] = 36 * 3600.0


class TopicTariff(_Strict):
    topic: str
    stale_after_s: Annotated[float, Field(gt=0)] = 36 * 3600.0


def _from_entity(cfg: EntityTariff) -> ForecastSourceConfig:
    return ForecastSourceConfig(entity=cfg.entity, poll_interval_s=cfg.poll_interval_s, stale_after_s=cfg.stale_after_s)


def _from_topic(cfg: TopicTariff) -> ForecastSourceConfig:
    return ForecastSourceConfig(topic=cfg.topic, stale_after_s=cfg.stale_after_s)


ENTITY = PriceKind("entity", EntityTariff, forecast=_from_entity)
TOPIC = PriceKind("topic", TopicTariff, forecast=_from_topic)
