"""A zigbee2mqtt thermostatic radiator valve: its setpoint written through ``<trv>/set``, read back from ``<trv>``."""

from __future__ import annotations

import json
from typing import ClassVar

from heatctl.config.mainheat import MainHeatingBase
from heatctl.config.sources import SourceConfig
from heatctl.mainheat.kinds.base import MainKind, MqttMessage, Value


class TrvMainHeating(MainHeatingBase):
    kind: ClassVar[str] = "trv"
    trv: str  # zigbee2mqtt/office_trv
    trv_key: str = "occupied_heating_setpoint"  # current_heating_setpoint on many Tuya TRVs


def _command(cfg: TrvMainHeating, value: Value) -> MqttMessage:
    return MqttMessage(f"{cfg.trv}/set", json.dumps({cfg.trv_key: float(value)}))


def _readback(cfg: TrvMainHeating) -> SourceConfig:
    return SourceConfig(topic=cfg.trv, json_path=cfg.trv_key, stale_after_s=86400.0)


KIND = MainKind("trv", TrvMainHeating, _command, lambda cfg: cfg.trv, _readback)
