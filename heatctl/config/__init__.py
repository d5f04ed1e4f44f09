"""Configuration: pydantic models by area and ``load_config``; the only package that sees raw YAML.

- ``loader``: YAML, ``!secret`` and ``${ENV}``, every problem with its path and line
- ``node``: the whole ``Config``; ``zone``, ``sources``, ``control``, ``mainheat``, ``planner``,
  ``prices``, ``gpus``, ``services``: the models of each area; ``base``: what they share

The models hold data; what is done with it lives with the code that uses it.
"""

from heatctl.config.base import WorkPoints, duration_s, minute_of_day
from heatctl.config.control import ControlConfig, DutyConfig, QuietConfig
from heatctl.config.gpus import (
    GpuConfig,
    InferenceConfig,
    NoWorkloadConfig,
    OpenAIWorkloadConfig,
    ProcessWorkloadConfig,
    SimGpuConfig,
    SimWorkloadConfig,
    WorkloadConfig,
    work_unit,
)
from heatctl.config.loader import format_path, load_config, load_model, parse_config, parse_model
from heatctl.config.mainheat import MainHeatingBase, SwitchConfig
from heatctl.config.node import Config
from heatctl.config.planner import PlannerConfig, ScheduleEntryConfig
from heatctl.config.prices import TariffPeriodConfig
from heatctl.config.services import (
    BatchApiConfig,
    FleetConfig,
    HomeAssistantConfig,
    HouseConfig,
    InfluxConfig,
    MqttConfig,
    TlsConfig,
)
from heatctl.config.sources import ForecastSourceConfig, SourceConfig
from heatctl.config.zone import ZoneConfig
from heatctl.mainheat.kinds import MainHeatingConfig
from heatctl.prices import CarbonConfig, TariffConfig

__all__ = [
    "BatchApiConfig",
    "CarbonConfig",
    "Config",
    "ControlConfig",
    "DutyConfig",
    "FleetConfig",
    "ForecastSourceConfig",
    "GpuConfig",
    "HomeAssistantConfig",
    "HouseConfig",
    "InferenceConfig",
    "InfluxConfig",
    "MainHeatingBase",
    "MainHeatingConfig",
    "MqttConfig",
    "NoWorkloadConfig",
    "OpenAIWorkloadConfig",
    "PlannerConfig",
    "ProcessWorkloadConfig",
    "QuietConfig",
    "ScheduleEntryConfig",
    "SimGpuConfig",
    "SimWorkloadConfig",
    "SourceConfig",
    "SwitchConfig",
    "TariffConfig",
    "TariffPeriodConfig",
    "TlsConfig",
    "WorkPoints",
    "WorkloadConfig",
    "ZoneConfig",
    "duration_s",
    "format_path",
    "load_config",
    "load_model",
    "minute_of_day",
    "parse_config",
    "parse_model",
    "work_unit",
]
