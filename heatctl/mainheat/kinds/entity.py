"""A Home Assistant climate entity: ``climate.set_temperature``, read back from its ``temperature``."""

from __future__ import annotations

from typing import ClassVar

from pydantic import field_validator

from heatctl.config.mainheat import MainHeatingBase
from heatctl.config.sources import SourceConfig
from heatctl.mainheat.kinds.base import MainKind, ServiceCall, Value


class EntityMainHeating(MainHeatingBase):
    kind: ClassVar[str] = "entity"
    entity: str  # climate.office_radiator

    @field_validator("entity")
    @classmethod
    def _climate(cls, value: str) -> str:
        if not value.startswith("climate."):
            raise ValueError(f"'entity' must be a climate entity (climate.…), not {value!r}")
        return value


def _command(cfg: EntityMainHeating, value: Value) -> ServiceCall:
    return ServiceCall("climate", "set_temperature", {"entity_id": cfg.entity, "temperature": float(value)})


def _readback(cfg: EntityMainHeating) -> SourceConfig:
    return SourceConfig(entity=cfg.entity, attribute="temperature", stale_after_s=86400.0)


KIND = MainKind("entity", EntityMainHeating, _command, lambda cfg: cfg.entity, _readback)
