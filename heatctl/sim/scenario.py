"""Scenario files: the room, the weather, the schedule, the GPU and the events to simulate."""

from __future__ import annotations

import re
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import Annotated, Literal, Self
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from heatctl.clock import local_minutes
from heatctl.config import SimGpuConfig, load_model
from heatctl.prices import TariffConfig, is_known
from heatctl.sim.batches import SimBatch, SimBatches
from heatctl.sim.room import Room, Room1R1C, Room2R2C
from heatctl.sim.series import RunSeries
from heatctl.sim.weather import Weather


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Room1R1CConfig(_Strict):
    model: Literal["1r1c"]
    c_j_per_k: Annotated[float, Field(gt=0)]
    r_k_per_w: Annotated[float, Field(gt=0)]
    initial_c: float = 18.0
    gains_w: float = 0.0
    window_ua_w_per_k: Annotated[float, Field(ge=0)] = 60.0  # extra loss while a window is open

    @property
    def total_r_k_per_w(self) -> float:
        return self.r_k_per_w

    def build(self) -> Room:
        return Room1R1C(c_j_per_k=self.c_j_per_k, r_k_per_w=self.r_k_per_w, initial_c=self.initial_c)


class Room2R2CConfig(_Strict):
    model: Literal["2r2c"] = "2r2c"
    ci_j_per_k: Annotated[float, Field(gt=0)] = 3.0e5
    ce_j_per_k: Annotated[float, Field(gt=0)] = 3.3e6
    rie_k_per_w: Annotated[float, Field(gt=0)] = 0.0054
    rea_k_per_w: Annotated[float, Field(gt=0)] = 0.066
    initial_c: float = 18.0
    gains_w: float = 0.0
    window_ua_w_per_k: Annotated[float, Field(ge=0)] = 60.0  # extra loss while a window is open

    @property
    def total_r_k_per_w(self) -> float:
        return self.rie_k_per_w + self.rea_k_per_w

    def build(self) -> Room:
        return Room2R2C(
            ci_j_per_k=self.ci_j_per_k,
            ce_j_per_k=self.ce_j_per_k,
            rie_k_per_w=self.rie_k_per_w,
            rea_k_per_w=self.rea_k_per_w,
            initial_c=self.initial_c,
        )


class WeatherConfig(_Strict):
    constant_c: float | None = None
    mean_c: float | None = None
    amplitude_k: float = 0.0
    csv: str | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> Self:
        kinds = [self.constant_c is not None, self.mean_c is not None, self.csv is not None]
        if sum(kinds) != 1:
            raise ValueError("give one of constant_c, {mean_c, amplitude_k} or csv")
        return self


def hh_mm(value: str) -> str:
    """A time of day ``HH:MM``, or a ValueError."""
    m = re.fullmatch(r"(\d{1,2}):(\d{2})", value)
    if not m or int(m.group(1)) > 23 or int(m.group(2)) > 59:
        raise ValueError("must be a time of day HH:MM")
    return value


class ScheduleEntry(_Strict):
    at: str
    setpoint_c: Annotated[float, Field(ge=5, le=35)]

    @field_validator("at")
    @classmethod
    def _hh_mm(cls, value: str) -> str:
        return hh_mm(value)

    @property
    def minute_of_day(self) -> int:
        return _minute_of_day(self.at)


class BackupHeaterConfig(_Strict):
    """A conventional heater that switches on when the room falls below setpoint + offset."""

    power_w: Annotated[float, Field(gt=0)]
    setpoint_offset_k: float = -0.5
    hysteresis_k: Annotated[float, Field(gt=0)] = 0.3


class EventConfig(_Strict):
    at_h: Annotated[float, Field(ge=0)]
    window_open_min: Annotated[float, Field(gt=0)] | None = None
    sensor_dropout_min: Annotated[float, Field(gt=0)] | None = None
    interactive_min: Annotated[float, Field(gt=0)] | None = None  # others use the GPU meanwhile
    interactive_level: Annotated[float, Field(gt=0, le=1)] = 0.5
    mode_off_min: Annotated[float, Field(gt=0)] | None = None  # heatctl's mode set to off meanwhile

    @model_validator(mode="after")
    def _one_kind(self) -> Self:
        kinds = (self.window_open_min, self.sensor_dropout_min, self.interactive_min, self.mode_off_min)
        if sum(k is not None for k in kinds) != 1:
            raise ValueError("give one of window_open_min, sensor_dropout_min, interactive_min or mode_off_min")
        return self

    @property
    def span_s(self) -> tuple[float, float]:
        minutes = self.window_open_min or self.sensor_dropout_min or self.interactive_min or self.mode_off_min or 0.0
        return self.at_h * 3600.0, self.at_h * 3600.0 + minutes * 60.0


class MainHeatingPlantConfig(_Strict):
    """The room's own heating: a heater with its own thermostat (at the setpoint it is given)."""

    power_w: Annotated[float, Field(gt=0)] = 1000.0
    hysteresis_k: Annotated[float, Field(gt=0)] = 0.3
    min_cycle_min: Annotated[float, Field(ge=0)] = 10.0  # at least this long on or off


class BatchArrivalConfig(_Strict):
    """Batch work arriving: ``requests`` × ``work_per_request`` (the GPU's work units), due ``window_h`` later."""

    at_h: Annotated[float, Field(ge=0)]
    requests: Annotated[int, Field(ge=1)] = 100
    work_per_request: Annotated[float, Field(gt=0)] = 100.0
    window_h: Annotated[float, Field(gt=0)] = 24.0
    every_h: Annotated[float, Field(gt=0)] | None = None  # repeats until the end of the run


class SeriesCsvConfig(_Strict):
    """A CSV of ``time`` (ISO 8601) and one value column, each value held until the next row."""

    csv: str


class ForecastErrorConfig(_Strict):
    """The planner sees the scenario's weather with this error (growing with lead time over a day)."""

    outdoor_error_k: Annotated[float, Field(ge=0)] = 1.0
    seed: int = 7


def _minute_of_day(text: str) -> int:
    h, m = text.split(":")
    return int(h) * 60 + int(m)


class Scenario(_Strict):
    name: str | None = None
    duration_h: Annotated[float, Field(gt=0, le=24 * 366 * 2)]
    step_s: Annotated[float, Field(gt=0, le=600)] = 10.0
    start: datetime = datetime(2026, 1, 5)
    timezone: str | None = (
        None  # the house's zone (e.g. Europe/Brussels): start, schedules and quiet hours in its wall time
    )
    room: Annotated[Room1R1CConfig | Room2R2CConfig, Field(discriminator="model")] = Room2R2CConfig()
    weather: WeatherConfig = WeatherConfig(constant_c=5.0)
    schedule: list[ScheduleEntry] = Field(default=[ScheduleEntry(at="00:00", setpoint_c=21.0)], min_length=1)
    gpu: SimGpuConfig = SimGpuConfig()
    backup_heater: BackupHeaterConfig | None = None
    sensor_resolution_k: Annotated[float, Field(ge=0)] = 0.1  # thermostats report in steps
    events: list[EventConfig] = []
    tariff: TariffConfig | None = None  # for the cost KPI, the planner and the plot's footer (known ahead)
    carbon: SeriesCsvConfig | None = None  # time, g_per_kwh: the carbon_kg KPI, the planner's carbon objective
    solar: SeriesCsvConfig | None = None  # time, surplus_w: export the house would send to the grid
    forecast: ForecastErrorConfig | None = None  # the weather forecast the planner sees (else persistence)
    batches: list[BatchArrivalConfig] = []  # batch work with deadlines (the Batch API's queue)
    main_heating: MainHeatingPlantConfig | None = None  # steered through the config's zone main_heating

    @field_validator("tariff")
    @classmethod
    def _known_ahead(cls, value: TariffConfig | None) -> TariffConfig | None:
        if value is not None and not is_known(value):
            raise ValueError("a scenario's tariff is known ahead: give price_per_kwh, periods or csv")
        return value

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                ZoneInfo(value)
            except (ZoneInfoNotFoundError, ValueError) as exc:
                raise ValueError(f"unknown time zone {value!r} (an IANA name such as Europe/Brussels)") from exc
        return value

    @property
    def start_epoch_s(self) -> float:
        """The start as epoch seconds: its wall time in ``timezone`` (UTC without one)."""
        return self.start.replace(tzinfo=self.tz).timestamp() if self.start.tzinfo is None else self.start.timestamp()

    @property
    def tz(self) -> tzinfo:
        return ZoneInfo(self.timezone) if self.timezone else UTC

    def build_batches(self) -> SimBatches | None:
        if not self.batches:
            return None
        end_s = self.duration_h * 3600.0
        made = []
        for b in self.batches:
            at_s = b.at_h * 3600.0
            while at_s < end_s:
                work = b.requests * b.work_per_request
                made.append(SimBatch(arrival_s=at_s, deadline_s=at_s + b.window_h * 3600.0, work=work, left=work))
                if b.every_h is None:
                    break
                at_s += b.every_h * 3600.0
        return SimBatches(made)

    def build_series(self, base_dir: Path, kind: str) -> RunSeries | None:
        """The scenario's carbon (``g_per_kwh``) or solar (``surplus_w``) series, or None."""
        source = self.carbon if kind == "carbon" else self.solar
        if source is None:
            return None
        column = "g_per_kwh" if kind == "carbon" else "surplus_w"
        start_s = (
            self.start.replace(tzinfo=self.tz).timestamp() if self.start.tzinfo is None else self.start.timestamp()
        )
        return RunSeries.from_csv(base_dir / source.csv, start_s, self.tz, column, kind)

    def build_weather(self, base_dir: Path) -> Weather:
        w = self.weather
        if w.csv is not None:
            return Weather.from_csv(base_dir / w.csv, self.start)
        if w.mean_c is not None:
            return Weather.daily_sine(w.mean_c, w.amplitude_k, self.start, self.duration_h * 3600.0)
        assert w.constant_c is not None
        return Weather.constant(w.constant_c)


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate a scenario file (errors like config errors: every one, with its path)."""
    return load_model(Scenario, path)


class Schedule:
    """The daily setpoint schedule as a function of virtual time."""

    def __init__(self, entries: list[ScheduleEntry], start: datetime, timezone: str | None = None) -> None:
        """``timezone``: the schedule is in that zone's wall time, across its clock changes."""
        self._tz = ZoneInfo(timezone) if timezone else None
        self._start_epoch_s = start.replace(tzinfo=self._tz).timestamp() if self._tz is not None else 0.0
        entries_sorted = sorted((e.minute_of_day, e.setpoint_c) for e in entries)
        self._at_min = np.array([m for m, _ in entries_sorted], dtype=np.float64)
        self._setpoints_c = np.array([sp for _, sp in entries_sorted], dtype=np.float64)
        self._start_min = start.hour * 60 + start.minute + start.second / 60.0

    def at_many(self, times_s: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """The setpoint at each time: the last entry at or before its minute of the day (before the
        first entry, yesterday's last)."""
        if self._tz is not None:
            minute = local_minutes(self._start_epoch_s + times_s, self._tz)
        else:
            minute = (self._start_min + times_s / 60.0) % 1440.0
        return np.asarray(self._setpoints_c[np.searchsorted(self._at_min, minute, side="right") - 1], dtype=np.float64)

    def at(self, t_s: float) -> float:
        return float(self.at_many(np.array([t_s]))[0])


def default_scenario_path() -> Path:
    """The cold week shipped inside the package: ``simulate`` with no arguments runs it."""
    return Path(__file__).parent / "scenarios" / "cold-week.yaml"
