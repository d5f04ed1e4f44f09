"""The planner in the service: every zone's ``ZonePlanner``, the forecasts they share, and the
thread that plans (and asks Home Assistant for forecasts) so the control loop never waits.

Forecasts arrive on MQTT topics (the network thread parses and validates them) or from Home
Assistant entities (this thread polls them). A bad or missing forecast is logged once and
left out: the planner falls back to what it has (a known tariff, persistence of the weather),
and without a trusted room model heatctl stays reactive.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, tzinfo
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from heatctl.clock import local_zone
from heatctl.config import Config, ForecastSourceConfig, PlannerConfig, ZoneConfig, minute_of_day
from heatctl.control.efficiency import GpuCaps
from heatctl.control.policy import cap_outlook
from heatctl.errors import plain
from heatctl.mqtt_link import MqttLink
from heatctl.planner.schedule import WeeklySchedule, parse_days
from heatctl.planner.seed import Fetch, fetch_zone_rows, ha_fetch
from heatctl.planner.series import ForecastError, Series, parse_attributes, parse_payload
from heatctl.planner.zone import Guidance, PlannerSettings, Signals, ZonePlanner
from heatctl.prices import forecast_source, is_known, known_prices
from heatctl.sources.homeassistant import hourly_forecast

_LOGGER = logging.getLogger(__name__)
FloatArray = npt.NDArray[np.float64]
PLAN_EVERY_S = 60.0  # the thread looks this often; each zone plans when its plan is due
RANGES = {"price": (-10.0, 100.0), "carbon": (0.0, 5000.0), "outdoor": (-60.0, 60.0)}


@dataclass(frozen=True, slots=True)
class _Forecast:
    series: Series
    received_s: float


@dataclass(slots=True)
class _Latest:
    room_c: float | None = None
    setpoint_c: float | None = None
    guidance: Guidance | None = None  # what the loop was told this tick (None: reactive)


def planner_settings(
    planner: PlannerConfig, zone: ZoneConfig, *, capacity_w: float, floor_w: float, max_power_w: float | None
) -> PlannerSettings:
    """The zone's planner knobs: the config's, within its GPUs' capacity and the node's cap (service and simulator)."""
    if max_power_w is not None:
        capacity_w = min(capacity_w, max_power_w)
    return PlannerSettings(
        objective=planner.objective,
        horizon_h=planner.horizon_h,
        step_min=planner.step_min,
        comfort_tolerance_k=planner.comfort_tolerance_k,
        store_k=planner.store_k,
        replan_min=planner.replan_min,
        refit_h=planner.refit_h,
        history_days=planner.history_days,
        max_room_c=zone.control.max_room_c,
        capacity_w=capacity_w,
        floor_w=floor_w,
    )


def weekly_schedule(zone: ZoneConfig, tz: tzinfo | None) -> WeeklySchedule | None:
    """The zone's configured schedule in ``tz``, or None (the planner then learns it)."""
    if not zone.schedule:
        return None
    changes = [(parse_days(e.days), minute_of_day(e.at), e.setpoint_c) for e in zone.schedule]
    return WeeklySchedule(changes, tz)


def planner_path(state_dir: Path, zone: str) -> Path:
    return state_dir / "planner" / f"{zone}.json"


class NodePlanner:
    def __init__(
        self,
        cfg: Config,
        capacity_w: dict[str, float],
        floor_w: dict[str, float],
        state_dir: Path,
        *,
        wall_fn: Callable[[], float] = time.time,
        on_plan: Callable[[dict[str, Any]], None] | None = None,
        ha_client_factory: Callable[[Any], Any] | None = None,
        work_fn: Callable[[str], tuple[tuple[float, float], ...]] | None = None,
        max_power_fn: Callable[[], float | None] | None = None,
        tz: tzinfo | None = None,
    ) -> None:
        self.cfg = cfg
        self._max_power_fn = max_power_fn or (lambda: cfg.max_power_w)  # the node's cap a person set
        self._work_fn = work_fn  # zone → batch work due there: (deadline, heat J above idle)
        self._wall_fn = wall_fn
        self._on_plan = on_plan
        self._ha_client_factory = ha_client_factory
        planner = cfg.planner or PlannerConfig()
        tz = tz or local_zone()  # with its daylight-saving rules: the schedule follows the clocks
        self._tz = tz
        total_w = sum(capacity_w.values())
        self._share = {z.name: capacity_w[z.name] / total_w if total_w > 0 else 0.0 for z in cfg.zones}
        self.zones = {
            z.name: ZonePlanner(
                z.name,
                planner_settings(
                    planner, z, capacity_w=capacity_w[z.name], floor_w=floor_w[z.name], max_power_w=cfg.max_power_w
                ),
                schedule=weekly_schedule(z, tz),
                tz=tz,
                path=planner_path(state_dir, z.name),
            )
            for z in cfg.zones
        }
        self._latest = {name: _Latest() for name in self.zones}
        self._forecasts: dict[str, _Forecast] = {}
        self._problems: dict[str, str] = {}  # kind → last problem, logged once
        self._grid_w: tuple[float, float] | None = None  # (W, received)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="planner", daemon=True)
        self._last_polled_s: dict[str, float] = {}
        self._published: dict[str, float] = {}
        self._round = threading.Lock()  # one planning round at a time (the thread, or a test)
        self._sources = self._configured_sources()

    # --- sources --------------------------------------------------------------------------

    def sources(self) -> dict[str, ForecastSourceConfig]:
        """kind → the forecast source the config names (price, carbon, outdoor)."""
        return self._sources

    def _configured_sources(self) -> dict[str, ForecastSourceConfig]:
        out: dict[str, ForecastSourceConfig] = {}
        tariff = self.cfg.tariff
        prices = forecast_source(tariff) if tariff is not None else None
        if prices is not None:
            out["price"] = prices
        carbon = forecast_source(self.cfg.carbon) if self.cfg.carbon is not None else None
        if carbon is not None:
            out["carbon"] = carbon
        if self.cfg.weather_forecast is not None:
            out["outdoor"] = self.cfg.weather_forecast
        return out

    def topic_handlers(self) -> dict[str, Callable[[str, bytes], None]]:
        """MQTT topic → handler (run on the network thread)."""
        handlers: dict[str, Callable[[str, bytes], None]] = {
            src.topic: self._forecast_handler(kind) for kind, src in self.sources().items() if src.topic
        }
        grid = self.cfg.grid_power
        if grid is not None and grid.topic is not None:
            handlers[grid.topic] = self._grid_handler
        return handlers

    def _forecast_handler(self, kind: str) -> Callable[[str, bytes], None]:
        def handle(topic: str, payload: bytes) -> None:
            try:
                series = parse_payload(payload, RANGES[kind])
            except ForecastError as exc:
                self._problem(kind, f"{topic}: {exc}")
                return
            self.put_forecast(kind, series)

        return handle

    def _grid_handler(self, topic: str, payload: bytes) -> None:
        from heatctl.sources.extract import PayloadError, extract

        assert self.cfg.grid_power is not None
        try:
            value = extract(payload, self.cfg.grid_power, "grid")
        except PayloadError as exc:
            self._problem("grid_power", f"{topic}: {exc}")
            return
        self.put_grid_w(value)

    def put_forecast(self, kind: str, series: Series) -> None:
        with self._lock:
            self._forecasts[kind] = _Forecast(series, self._wall_fn())
        if self._problems.pop(kind, None) is not None:
            _LOGGER.info("planner: the %s forecast is back", kind)
        for zone in self.zones.values():
            zone.signals_changed()

    def put_grid_w(self, watts: float) -> None:
        with self._lock:
            self._grid_w = (watts, self._wall_fn())

    def _problem(self, kind: str, text: str) -> None:
        if self._problems.get(kind) != text:
            _LOGGER.warning("planner: %s forecast left out: %s", kind, text)
        self._problems[kind] = text

    def poll_homeassistant(self, client: Any) -> None:
        """Ask Home Assistant for every entity forecast that is due (this thread)."""
        now = self._wall_fn()
        for kind, src in self.sources().items():
            if src.entity is None or now - self._last_polled_s.get(kind, -1e18) < src.poll_interval_s:
                continue
            self._last_polled_s[kind] = now
            try:
                if src.entity.startswith("weather."):
                    assert self.cfg.homeassistant is not None
                    response = hourly_forecast(self.cfg.homeassistant, src.entity)
                    series = parse_attributes(response, RANGES[kind])
                else:
                    state = client.get_state(entity_id=src.entity)
                    series = parse_attributes(dict(state.attributes or {}), RANGES[kind])
            except ForecastError as exc:
                self._problem(kind, f"{src.entity}: {exc}")
                continue
            except Exception as exc:  # Home Assistant down: the forecast we have ages out
                self._problem(kind, f"{src.entity}: {plain(exc)}")
                continue
            self.put_forecast(kind, series)

    # --- what the planners see ------------------------------------------------------------

    def signals(self) -> Signals:
        now = self._wall_fn()
        with self._lock:
            fresh = {
                kind: f.series
                for kind, f in self._forecasts.items()
                if now - f.received_s <= self.sources().get(kind, ForecastSourceConfig(topic="-")).stale_after_s
            }
            grid = self._grid_w
        surplus = -grid[0] if grid is not None and now - grid[1] <= 300.0 and grid[0] < 0 else 0.0

        def series_fn(kind: str) -> Callable[[FloatArray], FloatArray | None]:
            series = fresh.get(kind)
            return series.at if series is not None else (lambda t: None)

        price = series_fn("price")
        tariff = self.cfg.tariff
        if tariff is not None and is_known(tariff):
            price = functools.partial(self._known_price, tariff)
        carbon = series_fn("carbon")
        if self.cfg.carbon is not None and is_known(self.cfg.carbon):
            carbon = functools.partial(self._known_price, self.cfg.carbon)
        return Signals(price=price, carbon=carbon, outdoor=series_fn("outdoor"), surplus_w=surplus)

    def _known_price(self, tariff: Any, times_s: FloatArray) -> FloatArray:
        prices = known_prices(tariff, times_s, self._tz)
        assert prices is not None  # is_known
        return prices

    def price_now(self) -> float | None:
        value = self.signals().price(np.array([self._wall_fn()]))
        return None if value is None or np.isnan(value[0]) else float(value[0])

    def carbon_now(self) -> float | None:
        value = self.signals().carbon(np.array([self._wall_fn()]))
        return None if value is None or np.isnan(value[0]) else float(value[0])

    # --- the control loop's side --------------------------------------------------------------

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
        """This tick's readings; the plan's guidance for now (None: control reactively)."""
        now = self._wall_fn()
        planner = self.zones[zone]
        planner.record(now, room_c=room_c, setpoint_c=setpoint_c, heat_w=heat_w, outdoor_c=outdoor_c, valid=valid)
        latest = self._latest[zone]
        latest.room_c, latest.setpoint_c = room_c, setpoint_c
        latest.guidance = None
        if valid and setpoint_c is not None and self.cfg.planner and self.cfg.planner.enabled:
            latest.guidance = planner.guidance(now, setpoint_c)
        return latest.guidance

    def shortfall_in_s(self, zone: str) -> float | None:
        """How long until the zone's plan expects its room to fall behind with the GPUs flat out (None: never)."""
        return self.zones[zone].shortfall_in_s(self._wall_fn())

    def reach_c(self, zone: str, room_c: float, outdoor_c: float, heat_w: float, seconds: float) -> float | None:
        """The zone's room after ``seconds`` of ``heat_w`` by its learned model (None: not trusted yet)."""
        return self.zones[zone].reach_c(room_c, outdoor_c, heat_w, seconds)

    def covers_work(self, zone: str) -> bool:
        """The zone's active plan makes the heat of all the batch work due before its deadlines."""
        return self.zones[zone].covers_work()

    def target_c(self, zone: str) -> float | None:
        """The target the loop was given at the last tick (None: it controlled reactively)."""
        guidance = self._latest[zone].guidance
        return guidance.target_c if guidance is not None else None

    def warming_c(self, zone: str) -> float | None:
        """The target the plan heats for at the last tick (None: reactive, or the plan lets the room coast)."""
        guidance = self._latest[zone].guidance
        return guidance.target_c if guidance is not None and guidance.warming else None

    def state(self) -> dict[str, Any]:
        """The state's ``planner`` (status, reason, per zone) — worst zone first."""
        zones = {
            name: {
                "status": p.status,
                "reason": p.reason,
                "model": p.model.public() if p.model is not None else None,
                **self._plan_summary(p),
                **self._next_change(name, p),
                **self._guidance(name),
            }
            for name, p in self.zones.items()
        }
        order = {"fallback": 0, "learning": 1, "active": 2}
        worst = min(zones.values(), key=lambda z: order.get(str(z["status"]), 0))
        if not (self.cfg.planner and self.cfg.planner.enabled):
            worst = {"status": "fallback", "reason": "planner disabled: learning only"}
        return {"planner": {"status": worst["status"], "reason": worst["reason"], "zones": zones}}

    def _guidance(self, name: str) -> dict[str, Any]:
        g = self._latest[name].guidance
        if g is None:
            return {"target_c": None, "plan_w": None}
        return {"target_c": round(g.target_c, 2), "plan_w": round(g.feedforward_w, 1)}

    def _next_change(self, name: str, p: ZonePlanner) -> dict[str, Any]:
        setpoint_c = self._latest[name].setpoint_c
        change = p.next_setpoint_change(self._wall_fn(), setpoint_c) if setpoint_c is not None else None
        if change is None:
            return {"next_setpoint_change": None, "next_setpoint_c": None}
        return {"next_setpoint_change": _local_iso(change[0]), "next_setpoint_c": round(change[1], 1)}

    def _plan_summary(self, p: ZonePlanner) -> dict[str, Any]:
        plan = p.plan
        if plan is None or p.status != "active":
            return {"next_heat_start": None, "planned_kwh_24h": None, "planned_cost_24h": None}
        now = self._wall_fn()
        day = plan.starts_s < now + 86400.0
        kwh = plan.heat_w[day] * plan.step_s / 3.6e6
        start = plan.next_heat_start_s(now, p.settings.floor_w)
        cost = float(np.nansum(kwh * plan.price[day])) if not np.isnan(plan.price[day]).all() else None
        return {
            "next_heat_start": _local_iso(start) if start is not None else None,
            "planned_kwh_24h": round(float(kwh.sum()), 3),
            "planned_cost_24h": round(cost, 3) if cost is not None else None,
        }

    # --- the thread -------------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10.0)
        for p in self.zones.values():
            try:
                p.save()
            except OSError as exc:
                _LOGGER.error("zone %s: cannot keep what the planner learned: %s", p.zone, exc)

    def run_once(self, client: Any = None) -> None:
        """One round: forecasts from Home Assistant, then every zone's refit/plan when due."""
        with self._round:
            self._run_once(client)

    def _run_once(self, client: Any) -> None:
        if client is not None:
            self.poll_homeassistant(client)
        signals = self.signals()
        now = self._wall_fn()
        for name, p in self.zones.items():
            latest = self._latest[name]
            before = p.plan
            cap_w = cap_outlook(self.cfg.quiet, self._max_power_fn(), self._tz, self._share[name])
            zone_signals = dataclasses.replace(signals, work=self._work(name), cap_w=cap_w)
            p.update(now, latest.room_c, latest.setpoint_c, zone_signals)
            if self._on_plan is not None and (p.plan is not before or self._published.get(name) != hash(p.status)):
                self._published[name] = hash(p.status)
                try:
                    self._on_plan(p.document())
                except Exception:
                    _LOGGER.exception("publishing the plan failed")

    def _work(self, zone: str) -> tuple[tuple[float, float], ...]:
        if self._work_fn is None:
            return ()
        try:
            return self._work_fn(zone)
        except Exception:  # the batches' bookkeeping must not stop the plan
            _LOGGER.exception("reading the batch work due failed")
            return ()

    def seed_from_homeassistant(self, fetch: Fetch | None = None) -> dict[str, str]:
        """Day one: each zone short of its own history takes Home Assistant's (``planner.seed``);
        zone → what happened, for the log. Never raises: without it, the planner learns as before."""
        ha = self.cfg.homeassistant
        if ha is None:
            return {}
        fetch = fetch or ha_fetch(ha)
        done = {}
        for zone in self.cfg.zones:
            planner = self.zones[zone.name]
            if not planner.wants_seed():
                continue
            now = self._wall_fn()
            try:
                got = fetch_zone_rows(self.cfg, zone, fetch, now, planner.first_sample_s() or now)
            except Exception as exc:  # a bad history must leave the planner as it was
                _LOGGER.exception("zone %s: seeding from Home Assistant failed", zone.name)
                got = f"seeding failed: {exc}"
            if isinstance(got, str):
                _LOGGER.info("zone %s: not learned from Home Assistant's history: %s", zone.name, got)
                done[zone.name] = got
                continue
            rows, source = got
            planner.seed(rows, source)
            done[zone.name] = source
        return done

    def _run(self) -> None:
        ha = self.cfg.homeassistant
        wants_ha = ha is not None and any(s.entity for s in self.sources().values())
        if ha is not None and not self._stop.is_set():
            self.seed_from_homeassistant()
        while not self._stop.is_set():
            try:
                if wants_ha and self._ha_client_factory is not None:
                    try:
                        with self._ha_client_factory(ha) as client:
                            self.run_once(client)
                    except Exception as exc:
                        self._problem("homeassistant", plain(exc))
                        self.run_once()
                else:
                    self.run_once()
            except Exception:  # never let the planner's thread die: heatctl is reactive meanwhile
                _LOGGER.exception("planner round failed")
            self._stop.wait(PLAN_EVERY_S)


def _local_iso(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s).astimezone().isoformat(timespec="minutes")


def open_node_planner(
    cfg: Config,
    caps: Mapping[str, GpuCaps],
    state_dir: Path,
    link: MqttLink | None,
    *,
    work_fn: Callable[[str], tuple[tuple[float, float], ...]],
    max_power_fn: Callable[[], float | None],
) -> NodePlanner:
    """Each zone's planner and the forecasts, its plan published on ``<base>/<node>/plan``; its thread
    starts last (forecast topics are subscribed first, so none is missed)."""
    capacity = {z.name: sum(caps[g].max_limit_w for g in z.gpus) for z in cfg.zones}
    floor = {z.name: sum(caps[g].idle_w for g in z.gpus) for z in cfg.zones}
    plan_topic = f"{cfg.mqtt.base_topic}/{cfg.node_id}/plan" if cfg.mqtt is not None else None

    def on_plan(document: dict[str, Any]) -> None:
        if link is not None and plan_topic is not None:
            link.publish(plan_topic, json.dumps(document), retain=True, qos=1)

    factory = None
    if cfg.homeassistant is not None:
        from heatctl.sources.homeassistant import make_client

        factory = make_client
    planner = NodePlanner(
        cfg,
        capacity,
        floor,
        state_dir,
        on_plan=on_plan,
        ha_client_factory=factory,
        work_fn=work_fn,
        max_power_fn=max_power_fn,
    )
    if link is not None:
        for topic, handler in planner.topic_handlers().items():
            link.subscribe(topic, handler)
    planner.start()
    return planner
