"""The planner in the simulator: the service's ``ZonePlanner`` fed what the service would see, and
the ``oracle``: the same LP with the true room, weather and schedule over the whole run."""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, tzinfo
from pathlib import Path

import numpy as np
import numpy.typing as npt

from heatctl.config import Config, PlannerConfig, ZoneConfig
from heatctl.control.efficiency import GpuCaps
from heatctl.planner.lp import LinearRoom, Outlook
from heatctl.planner.model import RoomModel
from heatctl.planner.node import PLAN_EVERY_S, planner_settings
from heatctl.planner.schedule import WeeklySchedule
from heatctl.planner.zone import (
    Guidance,
    Plan,
    PlannerSettings,
    Signals,
    ZonePlanner,
    guidance_from,
    objective_weight,
)
from heatctl.prices import is_known, known_prices
from heatctl.sim.scenario import Room1R1CConfig, Scenario, Schedule

FloatArray = npt.NDArray[np.float64]
ORACLE_CHUNK_D = 14.0  # the oracle's LP, in pieces this long (each looking two days further)


def settings_for(cfg: Config, zone: ZoneConfig, caps: dict[str, GpuCaps], planner: PlannerConfig) -> PlannerSettings:
    return planner_settings(
        planner,
        zone,
        capacity_w=sum(caps[g].max_limit_w for g in zone.gpus),
        floor_w=sum(caps[g].idle_w for g in zone.gpus),
        max_power_w=cfg.max_power_w,
    )


class ScenarioSignals:
    """The scenario's future as the planner may see it: prices and carbon (day-ahead, known),
    the weather through the forecast error (or not at all), the solar surplus only now."""

    def __init__(self, scenario: Scenario, cfg: Config, base_dir: Path) -> None:
        self.start_epoch_s = scenario.start_epoch_s
        self.carbon = scenario.build_series(base_dir, "carbon")
        self.solar = scenario.build_series(base_dir, "solar")
        self.weather = scenario.build_weather(base_dir)
        self._tz = scenario.tz
        self._base_dir = base_dir
        # The scenario's tariff is the truth; without one, the config's known tariff (a forecast one has no data here).
        self._tariff = scenario.tariff if scenario.tariff is not None else cfg.tariff
        self._cfg_carbon = cfg.carbon
        self._forecast = scenario.forecast
        if scenario.forecast is not None:
            hours = int(scenario.duration_h) + 24 * 4
            rng = np.random.default_rng(scenario.forecast.seed)
            z = np.zeros(hours)
            for i in range(1, hours):  # a slowly wandering error, unit variance
                z[i] = 0.95 * z[i - 1] + math.sqrt(1 - 0.95**2) * rng.standard_normal()
            self._noise = z

    def epoch(self, t_s: float) -> float:
        return self.start_epoch_s + t_s

    def price_at(self, t_s: float) -> float:
        value = self.price(np.array([self.epoch(t_s)]))
        return float(value[0]) if value is not None else math.nan

    def price(self, times: FloatArray) -> FloatArray | None:
        if self._tariff is None:
            return None
        return known_prices(self._tariff, times, self._tz, self._base_dir)

    def carbon_at(self, times: FloatArray) -> FloatArray | None:
        """The scenario's carbon intensity; without one, the config's when it is known ahead."""
        if self.carbon is not None:
            return self.carbon.at_many(times - self.start_epoch_s)
        if self._cfg_carbon is not None and is_known(self._cfg_carbon):
            return known_prices(self._cfg_carbon, times, self._tz, self._base_dir)
        return None

    def outdoor_seen(self, now_s: float) -> object:
        """The weather forecast as the planner sees it at ``now_s`` (epoch), or None."""
        if self._forecast is None:
            return lambda times: None
        error_k = self._forecast.outdoor_error_k

        def forecast(times: FloatArray) -> FloatArray:
            t = times - self.start_epoch_s
            lead = np.clip((times - now_s) / 86400.0, 0.0, 1.0)
            idx = np.clip((t // 3600.0).astype(int), 0, len(self._noise) - 1)
            return np.asarray(self.weather.at_many(t) + error_k * lead * self._noise[idx], dtype=np.float64)

        return forecast

    def signals(
        self,
        now_s: float,
        t_s: float,
        *,
        cap_w: Callable[[FloatArray], FloatArray | None] | None = None,
        work: tuple[tuple[float, float], ...] = (),
    ) -> Signals:
        return Signals(
            price=self.price,
            carbon=self.carbon_at,
            outdoor=self.outdoor_seen(now_s),  # type: ignore[arg-type]
            cap_w=cap_w if cap_w is not None else (lambda t: None),
            surplus_w=self.solar.at(t_s) if self.solar is not None else 0.0,
            work=work,
        )


class SimPlanner:
    """The service's planner, fed at each controller tick (a ``PlannerPort``, like the service's ``NodePlanner``)."""

    def __init__(
        self,
        settings: PlannerSettings,
        signals: ScenarioSignals,
        schedule: WeeklySchedule | None,
        *,
        time_fn: Callable[[], float],
        tz: tzinfo = UTC,
        cap_w: Callable[[FloatArray], FloatArray | None] | None = None,
        work_fn: Callable[[], tuple[tuple[float, float], ...]] | None = None,
    ) -> None:
        """``work_fn``: the batch work due, (deadline in run seconds, heat J above idle), when asked;
        ``cap_w``: the node's cap over epoch times (quiet hours), like the service's planner sees it."""
        self.settings = settings
        self.signals = signals
        self.planner = ZonePlanner("sim", settings, schedule=schedule, tz=tz)
        self._time_fn = time_fn
        self._cap_w = cap_w
        self._work_fn = work_fn
        self._next_update_s = 0.0

    def record(
        self,
        zone: str,
        *,
        room_c: float | None,
        setpoint_c: float | None,
        heat_w: float | None,
        outdoor_c: float | None,
        valid: bool,
    ) -> Guidance | None:
        t_s = self._time_fn()
        now = self.signals.epoch(t_s)
        self.planner.record(now, room_c=room_c, setpoint_c=setpoint_c, heat_w=heat_w, outdoor_c=outdoor_c, valid=valid)
        if t_s >= self._next_update_s:  # as often like the service's planner thread looks
            work = tuple((self.signals.epoch(d), j) for d, j in self._work_fn()) if self._work_fn else ()
            signals = self.signals.signals(now, t_s, cap_w=self._cap_w, work=work)
            self.planner.update(now, room_c, setpoint_c, signals)
            self._next_update_s = t_s + PLAN_EVERY_S
        return self.planner.guidance(now, setpoint_c) if valid and setpoint_c is not None else None

    def shortfall_in_s(self, zone: str) -> float | None:
        return self.planner.shortfall_in_s(self.signals.epoch(self._time_fn()))

    def covers_work(self, zone: str) -> bool:
        return self.planner.covers_work()

    def reach_c(self, zone: str, room_c: float, outdoor_c: float, heat_w: float, seconds: float) -> float | None:
        return self.planner.reach_c(room_c, outdoor_c, heat_w, seconds)

    @property
    def model(self) -> RoomModel | None:
        return self.planner.model


class OraclePlanner:
    """The LP over the whole run with the true room, weather, schedule and prices; the loop tracks it."""

    def __init__(
        self,
        settings: PlannerSettings,
        signals: ScenarioSignals,
        *,
        scenario: Scenario,
        schedule: Schedule,
        time_fn: Callable[[], float],
        cap_w: Callable[[FloatArray], FloatArray | None] | None = None,
    ) -> None:
        self.settings = settings
        self._time_fn = time_fn
        step_s = settings.step_min * 60.0
        total = math.ceil(scenario.duration_h * 3600.0 / step_s)
        chunk = max(round(ORACLE_CHUNK_D * 86400.0 / step_s), 1)
        look = round(2 * 86400.0 / step_s)
        room = _true_room(scenario, step_s)
        heat, rooms = np.zeros(total), np.zeros(total)
        weather = signals.weather  # the scenario's own, unlike the planner's view
        for a in range(0, total, chunk):
            n = min(chunk, total - a) + look
            t = (a + np.arange(n, dtype=np.float64)) * step_s
            mids = t + step_s / 2
            setpoints = schedule.at_many(mids)
            price = signals.price(mids + signals.start_epoch_s)
            carbon = signals.carbon_at(mids + signals.start_epoch_s)
            weight = objective_weight(settings.objective, price, carbon, n)
            cap_at = cap_w(mids + signals.start_epoch_s) if cap_w is not None else None
            cap = np.full(n, settings.capacity_w) if cap_at is None else np.minimum(cap_at, settings.capacity_w)
            surplus = signals.solar.at_many(mids) if signals.solar is not None else np.zeros(n)
            outlook = Outlook(
                setpoint_c=setpoints, outdoor_c=weather.at_many(mids), weight=weight, cap_w=cap, surplus_w=surplus
            )
            lp = settings.solve(room, outlook, time_limit_s=120.0)
            keep = min(chunk, total - a)
            heat[a : a + keep], rooms[a : a + keep] = lp.heat_w[:keep], lp.room_c[:keep]
            room = LinearRoom(a=room.a, bq=room.bq, bo=room.bo, e=room.e, x0=lp.states[keep - 1])
        self.plan = Plan(
            created_s=0.0,
            step_s=step_s,
            starts_s=np.arange(total, dtype=np.float64) * step_s,
            heat_w=heat,
            room_now_c=scenario.room.initial_c,
            room_c=rooms,
            setpoint_c=np.full(total, math.nan),
            price=np.full(total, math.nan),
            outdoor_c=np.full(total, math.nan),
        )

    def record(self, zone: str, *, setpoint_c: float | None, valid: bool, **_: float | None) -> Guidance | None:
        if not valid or setpoint_c is None:
            return None
        return guidance_from(self.plan, self._time_fn(), setpoint_c, self.settings)

    def shortfall_in_s(self, zone: str) -> float | None:
        return None

    def covers_work(self, zone: str) -> bool:
        return False

    def reach_c(self, zone: str, room_c: float, outdoor_c: float, heat_w: float, seconds: float) -> float | None:
        return None  # the oracle's plan already knows; its cascade judges a rise as without a model


def _true_room(scenario: Scenario, step_s: float) -> LinearRoom:
    r = scenario.room
    if isinstance(r, Room1R1CConfig):
        model = RoomModel.one_node(
            ua_w_per_k=1.0 / r.r_k_per_w, tau_h=r.c_j_per_k * r.r_k_per_w / 3600.0, gains_w=r.gains_w
        )
        return LinearRoom.from_model(model, r.initial_c, r.initial_c, step_s)
    return LinearRoom.two_node(
        ci_j_per_k=r.ci_j_per_k,
        ce_j_per_k=r.ce_j_per_k,
        rie_k_per_w=r.rie_k_per_w,
        rea_k_per_w=r.rea_k_per_w,
        gains_w=r.gains_w,
        air_c=r.initial_c,
        envelope_c=r.initial_c,
        step_s=step_s,
    )
