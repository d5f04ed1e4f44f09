"""Configuration: pydantic models and ``load_config``; the only module that sees raw YAML."""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Self, TypeVar

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from heatctl.errors import ConfigError

_ENV_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_NODE_ID_RE = r"^[a-z0-9_-]+$"

Path_ = tuple[str | int, ...]
M = TypeVar("M", bound="BaseModel")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- sources ---------------------------------------------------------------------------


class SourceConfig(_Strict):
    """Where one reading comes from: an MQTT topic or a Home Assistant entity."""

    topic: str | None = None
    json_path: str | None = None
    value_template: str | None = None
    entity: str | None = None
    attribute: str | None = None
    unit: Literal["C", "F", "W", "kW"] | None = None
    stale_after_s: Annotated[float, Field(gt=0)] = 900.0
    valid_range: tuple[float, float] | None = None
    open_when: bool | str | float | None = None  # window sources: the value that means "open"
    # Ask the device for a fresh reading at start and in `check` (zigbee2mqtt's <device>/get, since
    # zigbee2mqtt does not retain by default); default: on for topics under zigbee2mqtt/.
    ask_at_start: bool | None = None

    @property
    def asks_at_start(self) -> bool:
        if self.ask_at_start is not None:
            return self.ask_at_start
        return self.topic is not None and self.topic.startswith("zigbee2mqtt/") and "/bridge/" not in self.topic

    @model_validator(mode="after")
    def _one_origin(self) -> Self:
        if (self.topic is None) == (self.entity is None):
            raise ValueError("give exactly one of 'topic' (MQTT) or 'entity' (Home Assistant)")
        if self.json_path is not None and self.value_template is not None:
            raise ValueError("give at most one of 'json_path' and 'value_template'")
        if self.entity is not None and (self.json_path or self.value_template):
            raise ValueError("'json_path' and 'value_template' apply to MQTT topics, not entities")
        if self.topic is not None and self.attribute is not None:
            raise ValueError("'attribute' applies to Home Assistant entities, not topics")
        if self.valid_range is not None and self.valid_range[0] >= self.valid_range[1]:
            raise ValueError("valid_range must be [low, high] with low < high")
        return self

    @property
    def origin(self) -> str:
        """The topic or entity, for messages."""
        return self.topic if self.topic is not None else f"entity {self.entity}"


# --- control ---------------------------------------------------------------------------


class ControlConfig(_Strict):
    """The zone's outer loop. Defaults were tuned in simulation (see README: Tuning)."""

    interval_s: Annotated[float, Field(gt=0, le=3600)] = 30.0
    kp: Annotated[float, Field(ge=0)] = 200.0  # W per K of error
    ki: Annotated[float, Field(ge=0)] = 0.4  # W per K·s (integral time kp/ki = 500 s)
    kd: Annotated[float, Field(ge=0)] = 0.0  # W·s per K
    ua_w_per_k: Annotated[float, Field(ge=0)] | None = None  # outdoor feed-forward
    max_room_c: float = 26.0
    max_dt_s: Annotated[float, Field(gt=0)] | None = None  # default 3 × interval_s

    @property
    def dt_cap_s(self) -> float:
        """Longest step the integrator accepts after a gap."""
        return self.max_dt_s if self.max_dt_s is not None else 3.0 * self.interval_s

    @property
    def dt_floor_s(self) -> float:
        """Shortest step the PID takes: a setpoint command right after a tick must not kick the derivative."""
        return self.interval_s / 4.0


def minute_of_day(text: str) -> int:
    """``"22:30"`` → 1350; ValueError unless it is a time of day HH:MM."""
    m = re.fullmatch(r"(\d{1,2}):(\d{2})", text)
    if not m or int(m.group(1)) > 23 or int(m.group(2)) > 59:
        raise ValueError(f"{text!r} must be a time of day HH:MM")
    return int(m.group(1)) * 60 + int(m.group(2))


class _DailySpan(_Strict):
    """From ``from`` to ``to`` (HH:MM, local time) every day; it may run past midnight."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
    from_: str = Field(alias="from")
    to: str

    @field_validator("from_", "to")
    @classmethod
    def _time_of_day(cls, value: str) -> str:
        minute_of_day(value)
        return value

    def active(self, minute: int) -> bool:
        """Whether ``minute`` of the local day is inside the span."""
        start, end = minute_of_day(self.from_), minute_of_day(self.to)
        return start <= minute < end if start <= end else minute >= start or minute < end


class TariffPeriodConfig(_DailySpan):
    price_per_kwh: Annotated[float, Field(ge=0)]


class TariffConfig(_Strict):
    """What electricity costs: fixed, daily time-of-use periods (local time), or a price forecast
    (a Home Assistant entity's attribute lists, or an MQTT topic with a JSON list of {start, price})."""

    price_per_kwh: Annotated[float, Field(ge=0)] | None = None
    periods: list[TariffPeriodConfig] | None = None
    default_per_kwh: Annotated[float, Field(ge=0)] = 0.0
    entity: str | None = None
    topic: str | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> Self:
        kinds = (self.price_per_kwh, self.periods, self.entity, self.topic)
        if sum(k is not None for k in kinds) != 1:
            raise ValueError("give one of price_per_kwh, periods (with default_per_kwh), entity or topic")
        return self

    @property
    def is_forecast(self) -> bool:
        """Prices arrive from an entity or a topic (known only once they came)."""
        return self.entity is not None or self.topic is not None

    def price_at(self, minute: int) -> float | None:
        """The price at ``minute`` of the local day; None for a forecast tariff (see the planner's signals)."""
        if self.price_per_kwh is not None:
            return self.price_per_kwh
        if self.periods is None:
            return None
        return next((p.price_per_kwh for p in self.periods if p.active(minute)), self.default_per_kwh)


class ForecastSourceConfig(_Strict):
    """A forecast: a Home Assistant entity (its attribute lists, or ``weather.get_forecasts`` for a
    weather entity) or an MQTT topic carrying a JSON list of points."""

    entity: str | None = None
    topic: str | None = None
    poll_interval_s: Annotated[float, Field(ge=60)] = 900.0  # Home Assistant: how often to ask
    stale_after_s: Annotated[float, Field(gt=0)] = 36 * 3600.0  # unused after this long without news

    @model_validator(mode="after")
    def _one_kind(self) -> Self:
        if (self.entity is None) == (self.topic is None):
            raise ValueError("give exactly one of 'entity' (Home Assistant) or 'topic' (MQTT)")
        return self


class PlannerConfig(_Strict):
    """Prediction and planning: learn the room, look ahead, plan the heat (see README: Planner)."""

    enabled: bool = True
    objective: Literal["cost", "carbon", "energy"] = "cost"
    horizon_h: Annotated[float, Field(ge=4, le=72)] = 36.0
    step_min: Annotated[float, Field(ge=5, le=60)] = 15.0
    comfort_tolerance_k: Annotated[float, Field(ge=0, le=2)] = 0.3
    store_k: Annotated[float, Field(ge=0, le=5)] = 0.0
    replan_min: Annotated[float, Field(ge=1, le=240)] = 15.0
    refit_h: Annotated[float, Field(gt=0, le=48)] = 1.0
    history_days: Annotated[float, Field(ge=2, le=60)] = 14.0


class ScheduleEntryConfig(_Strict):
    """From ``at`` on the given days (local time), the setpoint is ``setpoint_c``."""

    days: str = "daily"  # mon-fri, sat,sun, daily, …
    at: str
    setpoint_c: Annotated[float, Field(ge=5, le=35)]

    @field_validator("at")
    @classmethod
    def _time_of_day(cls, value: str) -> str:
        minute_of_day(value)
        return value

    @field_validator("days")
    @classmethod
    def _days(cls, value: str) -> str:
        from heatctl.planner.schedule import parse_days

        parse_days(value)
        return value


class QuietConfig(_DailySpan):
    """Hours with a power ceiling for the whole node (noise follows power)."""

    max_power_w: Annotated[float, Field(ge=0)]


class SwitchConfig(_Strict):
    """An on/off heater heatctl switches itself: a Home Assistant switch or an MQTT relay."""

    entity: str | None = None  # switch.heater (switch.turn_on / turn_off)
    topic: str | None = None  # an MQTT command topic (Tasmota cmnd/…/POWER, Shelly …/command, zigbee2mqtt …/set)
    on: str = "ON"
    off: str = "OFF"
    hysteresis_k: Annotated[float, Field(gt=0, le=5)] = 0.3
    min_on_min: Annotated[float, Field(ge=0)] = 10.0
    min_off_min: Annotated[float, Field(ge=0)] = 10.0
    give_back: Literal["on", "off"] = "on"  # its state when heatctl lets go (on: its own thermostat rules)

    @model_validator(mode="after")
    def _one_target(self) -> Self:
        if (self.entity is None) == (self.topic is None):
            raise ValueError("give exactly one of 'entity' (Home Assistant) or 'topic' (MQTT)")
        return self


class MainHeatingConfig(_Strict):
    """The heating the room already has, steered as the second stage and given back on every exit."""

    trv: str | None = None  # zigbee2mqtt/office_trv: occupied_heating_setpoint through <trv>/set
    trv_key: str = "occupied_heating_setpoint"  # current_heating_setpoint on many Tuya TRVs
    entity: str | None = None  # climate.office_radiator: climate.set_temperature
    topic: str | None = None  # a generic MQTT setpoint command topic (°C as plain text)
    switch: SwitchConfig | None = None
    offset_k: Annotated[float, Field(ge=0, le=15)] = 1.5  # held back: its setpoint = target - offset_k
    engage_k: Annotated[float, Field(gt=0, le=5)] = 0.3  # released when the room is this far below target ...
    engage_after_min: Annotated[float, Field(ge=0)] = 20.0  # ... for this long with the GPUs at capacity
    hold_after_min: Annotated[float, Field(ge=0)] = 30.0  # held back again after the GPUs had headroom this long
    max_switches_per_day: Annotated[int, Field(ge=2)] = 12
    min_setpoint_c: float = 5.0  # the lowest setpoint it accepts
    prefer: Literal["gpu", "cheapest"] = "gpu"
    cop: Annotated[float, Field(gt=0)] | None = None
    cost_per_kwh_heat: Annotated[float, Field(ge=0)] | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> Self:
        if sum(x is not None for x in (self.trv, self.entity, self.topic, self.switch)) != 1:
            raise ValueError("give exactly one of 'trv', 'entity', 'topic' or 'switch'")
        if self.entity is not None and not self.entity.startswith("climate."):
            raise ValueError(f"'entity' must be a climate entity (climate.…), not {self.entity!r}")
        if self.prefer == "cheapest" and self.cop is None and self.cost_per_kwh_heat is None:
            raise ValueError(
                "prefer: cheapest needs the cost of its heat: 'cop' (heat pump, electric) or 'cost_per_kwh_heat'"
            )
        return self

    def heat_cost_per_kwh(self, price_per_kwh: float) -> float:
        """What a kWh of its heat costs now: gas at its own price, electric through its COP."""
        if self.cost_per_kwh_heat is not None:
            return self.cost_per_kwh_heat
        return price_per_kwh / (self.cop or 1.0)

    @property
    def kind(self) -> str:
        return "trv" if self.trv else "entity" if self.entity else "topic" if self.topic else "switch"

    @property
    def readback(self) -> SourceConfig | None:
        """Where it reports its own setpoint (trv, entity): how heatctl tells a person's change from its own."""
        if self.trv is not None:
            return SourceConfig(topic=self.trv, json_path=self.trv_key, stale_after_s=86400.0)
        if self.entity is not None:
            return SourceConfig(entity=self.entity, attribute="temperature", stale_after_s=86400.0)
        return None

    @property
    def device(self) -> str:
        """What it steers, for messages."""
        if self.switch is not None:
            return self.switch.entity or str(self.switch.topic)
        return str(self.trv or self.entity or self.topic)


class ZoneConfig(_Strict):
    name: Annotated[str, Field(pattern=_NODE_ID_RE)]
    temperature: SourceConfig
    setpoint: SourceConfig
    mode: SourceConfig | None = None  # thermostat's own mode (e.g. system_mode): off → no heat
    window: SourceConfig | None = None
    outdoor_temperature: SourceConfig | None = None
    power_meter: SourceConfig | None = None  # wall-plug meter: true heat output
    control: ControlConfig = ControlConfig()
    gpus: list[str] = Field(min_length=1)
    main_heating: MainHeatingConfig | None = None
    # Named targets for the zone's climate entity (HA presets); ``boost`` is always there.
    presets: dict[Literal["comfort", "eco", "away"], Annotated[float, Field(ge=5, le=30)]] = {}
    schedule: list[ScheduleEntryConfig] | None = None  # for the planner; else learned from the setpoint history

    SOURCE_FIELDS: ClassVar[tuple[str, ...]] = (
        "temperature",
        "setpoint",
        "mode",
        "window",
        "outdoor_temperature",
        "power_meter",
        "main_setpoint",
    )

    @property
    def main_setpoint(self) -> SourceConfig | None:
        """The main heating's own setpoint as it reports it (derived from ``main_heating``)."""
        return self.main_heating.readback if self.main_heating is not None else None

    def sources(self) -> Iterator[tuple[str, SourceConfig]]:
        """(field name, source) for every source this zone configures."""
        for name in self.SOURCE_FIELDS:
            source = getattr(self, name)
            if source is not None:
                yield name, source


# --- GPUs and workloads ----------------------------------------------------------------

WorkPoints = list[tuple[Annotated[float, Field(gt=0)], Annotated[float, Field(ge=0)]]]


class SimGpuConfig(_Strict):
    """A simulated GPU: power behaviour and work rate at each power cap."""

    idle_w: Annotated[float, Field(ge=0)] = 20.0
    min_limit_w: Annotated[float, Field(gt=0)] = 100.0
    max_limit_w: Annotated[float, Field(gt=0)] = 300.0
    full_load_w: Annotated[float, Field(gt=0)] | None = None  # uncapped draw; default max_limit_w
    work_at_w: WorkPoints = [(100, 40), (150, 62), (200, 75), (250, 82), (300, 86)]
    response_s: Annotated[float, Field(ge=0)] = 1.0  # time constant of power after a change

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if not self.idle_w < self.min_limit_w <= self.max_limit_w:
            raise ValueError("need idle_w < min_limit_w <= max_limit_w")
        if len(self.work_at_w) < 1:
            raise ValueError("work_at_w needs at least one [watts, work] point")
        return self


class SimWorkloadConfig(_Strict):
    """The simulator's workload (``backend: sim`` only)."""

    type: Literal["sim"] = "sim"


class NoWorkloadConfig(_Strict):
    """Something else loads the GPU; heatctl steers only the power limit."""

    type: Literal["none"]


class ProcessWorkloadConfig(_Strict):
    """A command (or an adopted process) paused and resumed with SIGSTOP/SIGCONT."""

    type: Literal["process"]
    command: list[str] | str | None = None
    pid_file: str | None = None
    period_s: Annotated[float, Field(gt=0)] = 20.0
    on_exit: Literal["resume", "stop"] = "resume"

    @model_validator(mode="after")
    def _command_or_pid_file(self) -> Self:
        if self.command is None and self.pid_file is None:
            raise ValueError("type process needs 'command' or 'pid_file'")
        return self


class OpenAIWorkloadConfig(_Strict):
    """Batch jobs for a local OpenAI-compatible inference server."""

    type: Literal["openai"]
    work_unit: ClassVar[str] = "tokens"  # what its work rate counts (completion tokens)
    url: str
    model: str
    api_key: SecretStr | None = None
    jobs: str | None = None  # a folder of JSONL job files; the Batch API (batch_api:) is the other way in
    max_concurrency: Annotated[int, Field(ge=1, le=256)] = 4
    request_timeout_s: Annotated[float, Field(gt=0)] = 300.0
    max_attempts: Annotated[int, Field(ge=1)] = 5
    # Runs (paused and resumed by the level) only while heat is wanted and no batch or job waits.
    fallback: ProcessWorkloadConfig | None = None


WorkloadConfig = Annotated[
    SimWorkloadConfig | NoWorkloadConfig | OpenAIWorkloadConfig | ProcessWorkloadConfig,
    Field(discriminator="type"),
]


def work_unit(workloads: list[WorkloadConfig]) -> str:
    """The unit of work of these workloads together: tokens when all count tokens, else units."""
    units = {getattr(w, "work_unit", "units") for w in workloads}
    return units.pop() if len(units) == 1 else "units"


class GpuConfig(_Strict):
    id: Annotated[str, Field(pattern=_NODE_ID_RE)]
    backend: Literal["nvml", "sim"]  # no default: a forgotten `nvml` must not become a heater that heats nothing
    index: Annotated[int, Field(ge=0)] | None = None
    uuid: str | None = None
    max_power_w: Annotated[float, Field(gt=0)] | None = None  # clamped to the driver's range
    max_temp_c: float = 83.0
    idle_w: Annotated[float, Field(ge=0)] | None = None  # default: the backend's estimate
    work_at_w: WorkPoints | None = None  # prior efficiency curve; learned at run time
    limit_deadband_w: Annotated[float, Field(ge=0)] = 5.0
    sim: SimGpuConfig = SimGpuConfig()
    workload: WorkloadConfig = SimWorkloadConfig()

    @model_validator(mode="after")
    def _selector(self) -> Self:
        if self.index is not None and self.uuid is not None:
            raise ValueError("give at most one of 'index' and 'uuid'")
        return self


class DutyConfig(_Strict):
    """Time-proportional on/off below the lowest efficient power cap."""

    period_s: Annotated[float, Field(gt=0)] = 300.0
    min_on_s: Annotated[float, Field(ge=0)] = 60.0
    min_off_s: Annotated[float, Field(ge=0)] = 60.0


# --- services --------------------------------------------------------------------------


class TlsConfig(_Strict):
    ca_certs: str | None = None
    certfile: str | None = None
    keyfile: str | None = None
    insecure: bool = False


class MqttConfig(_Strict):
    host: str = "localhost"
    port: Annotated[int, Field(ge=1, le=65535)] = 1883
    username: str | None = None
    password: SecretStr | None = None
    tls: bool | TlsConfig = False
    client_id: str | None = None
    keepalive_s: Annotated[int, Field(ge=5)] = 60
    base_topic: str = "heatctl"
    discovery: bool = True
    discovery_prefix: str = "homeassistant"


class InfluxConfig(_Strict):
    url: str
    token: SecretStr | None = None
    org: str = ""
    bucket: str = "heatctl"
    verify_ssl: bool = True
    timeout_s: Annotated[float, Field(gt=0)] = 10.0
    write_interval_s: Annotated[float, Field(gt=0)] | None = None  # default: the control interval
    tags: dict[str, str] = {}
    buffer_points: Annotated[int, Field(ge=100)] = 20_000
    spool: str | None = None  # file that keeps unsent points across restarts


class HomeAssistantConfig(_Strict):
    url: str
    token: SecretStr
    poll_interval_s: Annotated[float, Field(gt=0)] = 30.0
    verify_ssl: bool = True


_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|min|h|d)\s*$")
_DURATION_S = {"s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}


def duration_s(text: str) -> float:
    """``"24h"`` → 86400.0; ``ValueError`` for anything else (units s, m/min, h, d)."""
    match = _DURATION_RE.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not a duration like 30m, 24h or 2d")
    return float(match.group(1)) * _DURATION_S[match.group(2)]


class BatchApiConfig(_Strict):
    """An OpenAI-compatible Batch API: work from anyone in the house, run when heat is wanted."""

    listen: str = "127.0.0.1:8090"
    token: SecretStr
    max_file_mb: Annotated[float, Field(gt=0, le=2048)] = 200.0
    max_requests: Annotated[int, Field(ge=1, le=1_000_000)] = 50_000  # per batch
    completion_windows: list[str] = Field(default=["24h"], min_length=1)
    passthrough: bool = True  # /v1/chat/completions, /v1/completions, /v1/embeddings, /v1/models proxied

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{value!r} is not host:port (e.g. 127.0.0.1:8090)")
        return value

    @field_validator("completion_windows")
    @classmethod
    def _windows(cls, windows: list[str]) -> list[str]:
        for window in windows:
            duration_s(window)
        return windows

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])


class Config(_Strict):
    node_id: Annotated[str, Field(pattern=_NODE_ID_RE)] = "heatctl"
    state_dir: str | None = None
    mode: Literal["heat", "off"] = "heat"  # initial mode; the last commanded mode is kept
    max_power_w: Annotated[float, Field(gt=0)] | None = None  # whole node
    mqtt: MqttConfig | None = MqttConfig()
    influxdb: InfluxConfig | None = None
    homeassistant: HomeAssistantConfig | None = None
    batch_api: BatchApiConfig | None = None
    quiet: QuietConfig | None = None
    tariff: TariffConfig | None = None
    planner: PlannerConfig | None = None
    carbon: ForecastSourceConfig | None = None  # g CO2/kWh forecast, for objective: carbon
    grid_power: SourceConfig | None = None  # live W, import > 0, export < 0: solar surplus
    weather_forecast: ForecastSourceConfig | None = None
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
            raise ValueError("planner objective: carbon needs a 'carbon:' forecast (entity or topic)")
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


def _no_duplicates(names: list[str], what: str) -> None:
    seen = set()
    for name in names:
        if name in seen:
            raise ValueError(f"duplicate {what} {name!r}")
        seen.add(name)


# --- loading ---------------------------------------------------------------------------


class _Secret:
    """Placeholder for ``!secret NAME``; resolved after loading, with its path."""

    def __init__(self, name: str) -> None:
        self.name = name


class _Loader(yaml.SafeLoader):
    pass


_Loader.add_constructor(
    "!secret",
    lambda loader, node: _Secret(str(loader.construct_scalar(node))),  # type: ignore[arg-type]
)


def format_path(path: Path_) -> str:
    """('zones', 0, 'setpoint', 'topic') → 'zones[0].setpoint.topic'."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _line_map(node: yaml.Node | None, path: Path_, lines: dict[Path_, int]) -> None:
    if node is None:
        return
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode):
                lines[(*path, key.value)] = key.start_mark.line + 1
                _line_map(value, (*path, key.value), lines)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _line_map(item, (*path, i), lines)


class _Resolver:
    """Replaces ``${ENV}`` and ``!secret`` everywhere, collecting problems with paths."""

    def __init__(self, secrets_file: Path | None, env: Mapping[str, str]) -> None:
        self._secrets_file = secrets_file
        self._secrets: dict[str, Any] | None = None
        self._missing_file = False
        self._env = env
        self.problems: list[tuple[Path_, str]] = []

    def resolve(self, value: Any, path: Path_) -> Any:
        if isinstance(value, dict):
            return {k: self.resolve(v, (*path, k)) for k, v in value.items()}
        if isinstance(value, list):
            return [self.resolve(v, (*path, i)) for i, v in enumerate(value)]
        if isinstance(value, _Secret):
            return self._secret(value.name, path)
        if isinstance(value, str) and "${" in value:
            return _ENV_RE.sub(lambda m: self._env_var(m, path), value)
        return value

    def _env_var(self, match: re.Match[str], path: Path_) -> str:
        name, default = match.group(1), match.group(2)
        if name in self._env:
            return self._env[name]
        if default is not None:
            return default
        self.problems.append((path, f"environment variable {name} is not set"))
        return ""

    def _secret(self, name: str, path: Path_) -> Any:
        if self._secrets is None:
            self._secrets = self._load_secrets(path)
        if self._missing_file:
            return ""  # said once, for the first !secret
        if name not in self._secrets:
            self.problems.append((path, f"secret {name!r} not found in {self._secrets_file}"))
            return ""
        return self._secrets[name]

    def _load_secrets(self, path: Path_) -> dict[str, Any]:
        if self._secrets_file is None or not self._secrets_file.is_file():
            self.problems.append((path, f"!secret used, but there is no {self._secrets_file}"))
            self._missing_file = True
            return {}
        try:
            data = yaml.safe_load(self._secrets_file.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            self.problems.append((path, f"cannot read {self._secrets_file}: {exc}"))
            return {}
        return data if isinstance(data, dict) else {}


def _cross_references(data: dict[str, Any]) -> list[tuple[Path_, str]]:
    """What one part of the file says about another (a zone naming a GPU), each at its own path.

    Runs on the raw data, so these problems are reported together with every other one.
    """
    problems: list[tuple[Path_, str]] = []
    gpus = _list(data.get("gpus"))
    zones = _list(data.get("zones"))
    known = [g.get("id") for g in gpus if isinstance(g, dict)]
    owner: dict[str, str] = {}
    for i, zone in enumerate(zones):
        if not isinstance(zone, dict):
            continue
        name = str(zone.get("name", i))
        for j, gpu_id in enumerate(_list(zone.get("gpus"))):
            if gpu_id not in known:
                hint = _did_you_mean(str(gpu_id), [str(k) for k in known])
                problems.append((("zones", i, "gpus", j), f"unknown gpu {gpu_id!r}{hint}"))
            elif gpu_id in owner:
                problems.append((("zones", i, "gpus", j), f"gpu {gpu_id} is already in zone {owner[gpu_id]}"))
            else:
                owner[str(gpu_id)] = name
        main = zone.get("main_heating")
        if isinstance(main, dict):
            switch: dict[str, Any] = main["switch"] if isinstance(main.get("switch"), dict) else {}
            if (main.get("entity") or switch.get("entity")) and data.get("homeassistant") is None:
                needs = "steers a Home Assistant entity: needs a 'homeassistant:' section"
                problems.append((("zones", i, "main_heating"), needs))
            if (main.get("trv") or main.get("topic") or switch.get("topic")) and data.get("mqtt", {}) is None:
                problems.append((("zones", i, "main_heating"), "steers an MQTT device: needs the 'mqtt:' section"))
        if data.get("homeassistant") is None:
            for field in ZoneConfig.SOURCE_FIELDS:
                source = zone.get(field)
                if isinstance(source, dict) and "entity" in source:
                    needs = "reads a Home Assistant entity: needs a 'homeassistant:' section"
                    problems.append((("zones", i, field, "entity"), needs))
    return problems


def _list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def _all_keys(model: type[BaseModel], seen: set[type[BaseModel]] | None = None) -> set[str]:
    """Every key any config model knows, for 'did you mean'."""
    seen = seen if seen is not None else set()
    if model in seen:
        return set()
    seen.add(model)
    keys = set(model.model_fields)
    for field in model.model_fields.values():
        for sub in _models_in(field.annotation):
            keys |= _all_keys(sub, seen)
    return keys


def _models_in(annotation: Any) -> Iterator[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation
        return
    for arg in getattr(annotation, "__args__", ()) or ():
        yield from _models_in(arg)
    for meta in getattr(annotation, "__metadata__", ()) or ():
        yield from _models_in(meta)
    origin = getattr(annotation, "__origin__", None)
    if origin is not None and origin is not annotation:
        yield from _models_in(origin)


def _did_you_mean(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.7)
    return f" (did you mean {close[0]!r}?)" if close else ""


def load_config(path: str | Path, *, env: Mapping[str, str] | None = None) -> Config:
    """Read, substitute and validate a config file.

    Raises:
        ConfigError: listing every problem, each as ``file:line: path: message``.
    """
    return load_model(Config, path, env=env)


def parse_config(
    text: str,
    *,
    name: str = "<config>",
    secrets_file: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> Config:
    """Validate YAML text; see :func:`load_config`."""
    return parse_model(Config, text, name=name, secrets_file=secrets_file, env=env)


def load_model(model: type[M], path: str | Path, *, env: Mapping[str, str] | None = None) -> M:
    """Read a YAML file into ``model``; every problem is reported with file, line and path."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{path}: cannot read: {exc}"]) from exc
    return parse_model(model, text, name=str(path), secrets_file=path.parent / "secrets.yaml", env=env)


def parse_model(
    model: type[M],
    text: str,
    *,
    name: str,
    secrets_file: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> M:
    """Validate YAML text into ``model``; see :func:`load_model`."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else {}
    except yaml.YAMLError as exc:
        hint = ""
        if "${" in text and "flow mapping" in str(exc):
            hint = ' (inside { } write ${VAR} in quotes: password: "${MQTT_PASSWORD}")'
        mark = getattr(exc, "problem_mark", None)
        where = f"{name}:{mark.line + 1}" if mark is not None else name
        what = " ".join(str(getattr(exc, "problem", None) or exc).split())
        context = getattr(exc, "context", None)
        column = f" (column {mark.column + 1}{', ' + context if context else ''})" if mark is not None else ""
        raise ConfigError([f"{where}: not valid YAML: {what}{column}{hint}"]) from exc
    finally:
        loader.dispose()
    if not isinstance(data, dict):
        raise ConfigError([f"{name}: the top level must be a mapping of keys to values"])
    lines: dict[Path_, int] = {}
    _line_map(node, (), lines)
    resolver = _Resolver(secrets_file, os.environ if env is None else env)
    data = resolver.resolve(data, ())
    problems = list(resolver.problems)
    result: M | None = None
    try:
        result = model.model_validate(data)
    except ValidationError as exc:
        keys = _all_keys(model)
        problems += [(_input_path(data, tuple(err["loc"])), _message(err, keys)) for err in exc.errors()]
    if model is Config:
        problems += _cross_references(data)
    if problems:
        raise ConfigError([_problem(name, p, msg, lines) for p, msg in problems])
    assert result is not None
    return result


def _input_path(data: Any, loc: Path_) -> Path_:
    """The error's location in the file: without the tags pydantic inserts for unions (``workload.openai.url``)."""
    path: list[str | int] = []
    current = data
    for i, part in enumerate(loc):
        is_tag = (
            isinstance(current, dict)
            and part not in current
            and i + 1 < len(loc)
            and (loc[i + 1] in current or isinstance(loc[i + 1], str))
        )
        if is_tag:
            continue
        path.append(part)
        current = current.get(part) if isinstance(current, dict) else _item(current, part)
    return tuple(path)


def _item(current: Any, part: str | int) -> Any:
    if isinstance(current, list) and isinstance(part, int) and 0 <= part < len(current):
        return current[part]
    return None


def _message(err: Any, keys: set[str]) -> str:
    msg = str(err["msg"]).removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        msg = "unknown key" + _did_you_mean(str(err["loc"][-1]), keys)
    return msg[:1].lower() + msg[1:]


def _problem(name: str, path: Path_, msg: str, lines: dict[Path_, int]) -> str:
    line = next((lines[path[:n]] for n in range(len(path), -1, -1) if path[:n] in lines), None)
    where = f"{name}:{line}" if line else name
    return f"{where}: {format_path(path)}: {msg}"
