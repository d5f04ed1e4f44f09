"""The whole config: one node, its zones and GPUs, and the services."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal, Self

from pydantic import (
    Field,
    field_validator,
    model_validator,
)

from heatctl.config.base import _NODE_ID_RE, _no_duplicates, _Strict
from heatctl.config.control import DutyConfig, QuietConfig
from heatctl.config.gpus import GpuConfig, OpenAIWorkloadConfig
from heatctl.config.planner import PlannerConfig
from heatctl.config.services import BatchApiConfig, HomeAssistantConfig, HouseConfig, InfluxConfig, MqttConfig
from heatctl.config.sources import ForecastSourceConfig, SourceConfig
from heatctl.config.zone import ZoneConfig
from heatctl.prices import CarbonConfig, TariffConfig


class Config(_Strict):
    node_id: Annotated[str, Field(pattern=_NODE_ID_RE)] = "heatctl"
    state_dir: str | None = None
    mode: Literal["heat", "off"] = "heat"  # initial mode; the last commanded mode is kept
    max_power_w: Annotated[float, Field(gt=0)] | None = None  # whole node
    mqtt: MqttConfig | None = MqttConfig()
    influxdb: InfluxConfig | None = None
    homeassistant: HomeAssistantConfig | None = None
    batch_api: BatchApiConfig | None = None
    house: HouseConfig | None = None  # one budget with the house's other heaters (NATS JetStream)
    quiet: QuietConfig | None = None
    tariff: TariffConfig | None = None
    planner: PlannerConfig | None = None
    carbon: CarbonConfig | None = None  # g CO2/kWh: fixed, a CSV, or a forecast (for objective: carbon)
    grid_power: SourceConfig | None = None  # live W, import > 0, export < 0: solar surplus
    weather_forecast: ForecastSourceConfig | None = None
    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$")] = "EUR"  # of the tariff's prices: the money view's unit
    work_value_per_unit: Annotated[float, Field(ge=0)] = 0.0  # for main_heating prefer: cheapest (planner)
    duty: DutyConfig = DutyConfig()
    zones: list[ZoneConfig] = Field(min_length=1)
    gpus: list[GpuConfig] = Field(min_length=1)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_levels: dict[str, Literal["debug", "info", "warning", "error"]] = {}

    @field_validator("mode", mode="before")
    @classmethod
    def _yaml_off(cls, value: object) -> object:
        """YAML reads a bare ``off`` as false (and ``on`` as true): take what the person meant."""
        if isinstance(value, bool):
            return "heat" if value else "off"
        return value

    @field_validator("zones")
    @classmethod
    def _unique_zones(cls, zones: list[ZoneConfig]) -> list[ZoneConfig]:
        _no_duplicates([z.name for z in zones], "zone name")
        return zones

    @field_validator("gpus")
    @classmethod
    def _unique_gpus(cls, gpus: list[GpuConfig]) -> list[GpuConfig]:
        _no_duplicates([g.id for g in gpus], "gpu id")
        return gpus

    @model_validator(mode="after")
    def _cheapest_needs_a_tariff(self) -> Self:
        for z in self.zones:
            if z.main_heating is not None and z.main_heating.prefer == "cheapest" and self.tariff is None:
                raise ValueError(
                    f"zone {z.name}: main_heating prefer: cheapest needs a 'tariff:' (price_per_kwh or periods)"
                )
        return self

    @model_validator(mode="after")
    def _planner_signals(self) -> Self:
        if self.planner is not None and self.planner.objective == "carbon" and self.carbon is None:
            raise ValueError("planner objective: carbon needs a 'carbon:' source (g_per_kwh, csv, entity or topic)")
        return self

    @model_validator(mode="after")
    def _work_for_openai(self) -> Self:
        runners = [g for g in self.gpus if isinstance(g.workload, OpenAIWorkloadConfig)]
        if self.batch_api is not None and not runners:
            raise ValueError("batch_api needs a GPU with 'workload: {type: openai, ...}' to run the batches")
        if self.batch_api is None:
            for g in runners:
                if g.workload.jobs is None:  # type: ignore[union-attr]
                    raise ValueError(f"gpu {g.id}: a workload of type openai needs 'jobs' (a folder) or 'batch_api:'")
        return self

    def gpu(self, gpu_id: str) -> GpuConfig:
        return next(g for g in self.gpus if g.id == gpu_id)

    def resolved_state_dir(self) -> Path:
        """HEATCTL_STATE_DIR, else the configured one, else a default for the user."""
        if env := os.environ.get("HEATCTL_STATE_DIR"):
            return Path(env)
        if self.state_dir:
            return Path(self.state_dir).expanduser()
        if os.geteuid() == 0:
            return Path("/var/lib/heatctl")
        return Path.home() / ".local/state/heatctl"
