"""The closed loop in virtual time: scenario plant + the real controller."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from heatctl.accounting import WANTED_BAND_K
from heatctl.clock import local_minutes
from heatctl.config import Config, GpuConfig, PlannerConfig, SourceConfig, ZoneConfig
from heatctl.control.core import GpuState
from heatctl.control.efficiency import GpuCaps
from heatctl.control.policy import NOTHING, TickDecision, TickInputs, TickPolicy, cap_outlook
from heatctl.control.safety import Reading, ZoneInputs
from heatctl.errors import ConfigError
from heatctl.gpu.sim import SimGpuModel
from heatctl.mainheat.cascade import Cascade, MainCommand
from heatctl.planner.model import RoomModel
from heatctl.planner.node import weekly_schedule
from heatctl.sim.baselines import CONTROLLERS, STEERS_MAIN_HEATING
from heatctl.sim.batches import SimBatches, SimWorkSource
from heatctl.sim.mainheat import MainHeaterPlant
from heatctl.sim.planning import OraclePlanner, ScenarioSignals, SimPlanner, settings_for
from heatctl.sim.scenario import Scenario, Schedule
from heatctl.worksource import DueWork

FloatArray = npt.NDArray[np.float64]
COLUMNS = (
    "time_s",
    "room_c",
    "setpoint_c",
    "outdoor_c",
    "demand_w",
    "gpu_power_w",
    "power_limit_w",
    "level",
    "work_rate",
    "work_done",
    "backup_w",
    "mode",
    "failsafe",
    "price_per_kwh",  # DESIGN's columns first, in their order; additions after them
    "main_w",
    "main_setpoint_c",
    "plan_w",  # the planner's heat for now (NaN: no plan)
    "target_c",  # what the zone loop aimed at: the plan's room, else the setpoint
    "surplus_w",  # solar export the house had (0 without a solar series)
    "carbon_g_per_kwh",
    "in_flight",  # requests in flight on the first GPU (an LLM server plant: gpu.inference); else 0
)

STEP_COLUMNS = (  # the numeric columns the loop writes at each step
    *COLUMNS[:11],
    "main_w",
    "main_setpoint_c",
    "plan_w",
    "target_c",
    "in_flight",
)

# The window sensor's two states (the loop reads its value, not its age).
WINDOW_OPEN, WINDOW_SHUT = Reading(value=1.0, at_s=0.0), Reading(value=0.0, at_s=0.0)


class FakeClock:
    """Virtual time, injected into the controller."""

    def __init__(self, now_s: float = 0.0) -> None:
        self.now_s = now_s

    def __call__(self) -> float:
        return self.now_s


@dataclass(slots=True)
class SimResult:
    scenario: Scenario
    controller: str
    series: dict[str, FloatArray]  # numeric columns
    mode: list[str]
    failsafe: list[str]
    idle_w: float
    batches: SimBatches | None = None
    main_switches: int | None = None  # the cascade's stage changes, when heatctl steered the main heating
    model: RoomModel | None = None  # what the planner learned of the room by the end
    planner_status: str | None = None
    zone: ZoneConfig | None = None  # the zone simulated (its main heating prices the heat replaced)


def default_config() -> Config:
    """One zone, one simulated GPU: what ``simulate`` uses without ``-c``."""
    return Config(
        node_id="sim",
        mqtt=None,
        zones=[
            ZoneConfig(
                name="room",
                temperature=SourceConfig(topic="sim/room/temperature"),
                setpoint=SourceConfig(topic="sim/room/setpoint"),
                gpus=["gpu0"],
            )
        ],
        gpus=[GpuConfig(id="gpu0", backend="sim")],
    )


def simulate(
    scenario: Scenario,
    config: Config | None = None,
    *,
    controller: str = "heatctl",
    zone_name: str | None = None,
    base_dir: Path = Path("."),
    progress: Callable[[float], None] | None = None,
) -> SimResult:
    """Run the scenario for one zone of the config (its only one, or ``zone_name``); one row per step."""
    node = SimNode(scenario, config, controller=controller, zone_name=zone_name, base_dir=base_dir)
    report_every = max(node.n // 100, 1)
    for k in range(node.n):
        node.tick(k)
        node.advance(k)
        if progress is not None and k % report_every == 0:
            progress(k / node.n)
    if progress is not None:
        progress(1.0)
    return node.result()


class SimNode:
    """One heatctl node in virtual time: its room, its GPUs, and the service's tick policy deciding.

    ``tick(k)`` makes the policy's decision when the zone's interval has passed (with a house's
    ``budget_w`` for this node, like the service's ``NodeHouse`` gives it); ``advance(k)`` moves the
    plant and the room one step. ``batches`` and ``work`` replace the scenario's own batch work (a
    house's pool: the work this node's GPUs pay into, and the tick's view of what is due)."""

    def __init__(
        self,
        scenario: Scenario,
        config: Config | None = None,
        *,
        controller: str = "heatctl",
        zone_name: str | None = None,
        base_dir: Path = Path("."),
        batches: SimBatches | None = None,
        work: DueWork | None = None,
    ) -> None:
        cfg = config or default_config()
        zone = self.zone = pick_zone(cfg, zone_name)
        self.scenario, self.controller = scenario, controller
        self.plant = plant = SimGpuModel(scenario.gpu)
        gpu_ids = self.gpu_ids = list(zone.gpus)
        caps = self.caps = {gid: _caps(cfg.gpu(gid), scenario) for gid in gpu_ids}
        cfg = self.cfg = cfg.model_copy(update={"zones": [zone], "gpus": [cfg.gpu(g) for g in gpu_ids]})
        clock = self.clock = FakeClock()
        inference = dict.fromkeys(gpu_ids, scenario.gpu.inference) if scenario.gpu.inference is not None else None
        ctrl = self.ctrl = CONTROLLERS[controller](cfg, caps, inference=inference, time_fn=clock)

        self.room = room = scenario.room.build()
        signals = self.signals = ScenarioSignals(scenario, cfg, base_dir)  # the weather, tariff, carbon, solar
        self.batches = batches if batches is not None else scenario.build_batches()
        self.main_plant = MainHeaterPlant(scenario.main_heating) if scenario.main_heating is not None else None
        self.cascade = cascade = (
            Cascade(zone.main_heating)
            if self.main_plant is not None and zone.main_heating is not None and controller in STEERS_MAIN_HEATING
            else None
        )
        self.main_cmd: MainCommand | None = None
        self.cheapest = cascade is not None and cascade.cfg.prefer == "cheapest"
        schedule = Schedule(scenario.schedule, scenario.start, scenario.timezone)
        guide: SimPlanner | OraclePlanner | None = None
        planner_cfg = cfg.planner if cfg.planner is not None and cfg.planner.enabled else None
        cap_w = cap_outlook(cfg.quiet, cfg.max_power_w, scenario.tz)  # the node's cap ahead, as the planner sees it
        if work is None and self.batches is not None:
            work = SimWorkSource(self.batches, clock, lambda: _full_rate(ctrl, plant, gpu_ids))
        self.work = work
        if controller == "oracle":
            settings = settings_for(cfg, zone, caps, planner_cfg or PlannerConfig())
            guide = OraclePlanner(settings, signals, scenario=scenario, schedule=schedule, time_fn=clock, cap_w=cap_w)
        elif controller in ("heatctl", "round-robin") and planner_cfg is not None:
            guide = SimPlanner(
                settings_for(cfg, zone, caps, planner_cfg),
                signals,
                weekly_schedule(zone, scenario.tz),
                time_fn=clock,
                tz=scenario.tz,
                cap_w=cap_w,
                # The work due like the service's planner is told it: the policy's own rule.
                work_fn=(lambda: self.policy.work_for_plan(zone.name)) if work is not None else None,
            )
        self.guide = guide
        # The service's own policy: caps and quiet hours, the plan's targets, the cascade, work due.
        self.policy = TickPolicy(
            cfg,
            ctrl,
            cascades={zone.name: cascade} if cascade is not None else {},
            planner=guide,
            work=work,
            runners=gpu_ids,
            time_fn=clock,
        )
        self.decision: TickDecision | None = None
        self.plan_w, self.target_c, self.plan_target_c, self.gpu_w = math.nan, math.nan, math.nan, 0.0
        step_s = scenario.step_s
        n = self.n = round(scenario.duration_h * 3600.0 / step_s)
        # What depends on time alone, for every step at once (as Python lists: read one value a step).
        times = np.arange(n, dtype=np.float64) * step_s
        self.outdoor_at = signals.weather.at_many(times).tolist()
        self.setpoint_at = schedule.at_many(times).tolist()
        self.minute_at = local_minutes(times + signals.start_epoch_s, scenario.tz).astype(int).tolist()
        self.window_at = _during(times, [e.span_s for e in scenario.events if e.window_open_min]).tolist()
        self.off_at = _during(times, [e.span_s for e in scenario.events if e.mode_off_min]).tolist()
        self.dropout_at = _during(times, [e.span_s for e in scenario.events if e.sensor_dropout_min]).tolist()
        extra_at = np.zeros(n)
        for e in scenario.events:
            if e.interactive_min:
                extra_at += e.interactive_level * _during(times, [e.span_s])
        self.extra_level_at = extra_at.tolist()
        self.src = zone.temperature.origin

        self.table = np.zeros((n, len(STEP_COLUMNS)))  # a row a step: one write
        self.modes: list[str] = []
        self.failsafes: list[str] = []
        self.limits = {g: caps[g].max_limit_w for g in gpu_ids}
        self.levels = dict.fromkeys(gpu_ids, 0.0)
        idle_w = plant.power_w(plant.cfg.max_limit_w, 0.0)  # at the start each GPU idles, the way the service finds it
        self.states = {g: GpuState(power_w=idle_w, temperature_c=30.0 + 0.15 * idle_w) for g in gpu_ids}
        self.drives: dict[str, tuple[float, float, float]] = {}  # each GPU's (limit, level, others' level)
        self.temp_reading = Reading(value=room.air_c, at_s=0.0, source=self.src)
        self.demand_w, self.failsafe, self.backup_on, self.work_done = 0.0, "", False, 0.0
        self.next_tick_s = 0.0
        self.heat_wanted = False  # this step, the way the service counts it (for the batches' heat reused)

    @property
    def capacity_w(self) -> float:
        return float(self.ctrl.capacity_w)

    @property
    def floor_w(self) -> float:
        """What the node's GPUs draw idle (a house's split sets it aside)."""
        return float(self.ctrl.floor_w)

    def tick(self, k: int, *, budget_w: float | None = None) -> TickDecision | None:
        """The policy's decision, when the zone's interval has passed since the last one (else None)."""
        t = k * self.scenario.step_s
        self.clock.now_s = t
        zone, name = self.zone, self.zone.name
        setpoint_c = self.setpoint_at[k]
        if not self.dropout_at[k]:
            resolution_k = self.scenario.sensor_resolution_k
            air_c = self.room.air_c
            measured_c = round(air_c / resolution_k) * resolution_k if resolution_k else air_c
            self.temp_reading = Reading(value=measured_c, at_s=t, source=self.src)
        if t < self.next_tick_s:
            return None
        decision = self.decision = self.policy.decide(
            TickInputs(
                "off" if self.off_at[k] else "heat",
                {
                    name: ZoneInputs(
                        temperature=self.temp_reading,
                        setpoint=Reading(value=setpoint_c, at_s=t),
                        window_open=WINDOW_OPEN if self.window_at[k] else WINDOW_SHUT,
                        outdoor=Reading(value=self.outdoor_at[k], at_s=t),
                        temperature_stale_s=zone.temperature.stale_after_s,
                        setpoint_stale_s=zone.setpoint.stale_after_s,
                    )
                },
                dict(self.states),  # a value: the plant's states move on after the tick
                self.minute_at[k],
                self.cfg.max_power_w,
                budget_w=budget_w,
                heat_w={name: self.gpu_w} if self.guide is not None else NOTHING,
                price_per_kwh=self.signals.price_at(t) if self.cheapest else None,
                user_setpoint_c={name: setpoint_c} if self.cascade is not None else NOTHING,
            )
        )
        out = decision.node
        if self.guide is not None:
            guidance = decision.guidance.get(name)
            self.plan_target_c = guidance.target_c if guidance is not None and guidance.warming else setpoint_c
            self.plan_w = guidance.feedforward_w if guidance is not None else math.nan
        else:
            self.plan_target_c = setpoint_c
        self.target_c = decision.aim_c[name] or setpoint_c
        if self.cascade is not None:
            self.main_cmd = decision.main.get(name, self.main_cmd)
        for g in self.gpu_ids:
            command = out.gpus[g]
            self.limits[g], self.levels[g] = command.power_limit_w, command.level
        self.demand_w = out.zones[name].demand_w
        self.failsafe = out.failsafe or ""
        self.next_tick_s += zone.control.interval_s
        if self.next_tick_s <= t:
            self.next_tick_s = t + zone.control.interval_s
        return decision

    def advance(self, k: int) -> None:
        """The GPUs, the heaters, the batches and the room, one step on from the last decision."""
        scenario, plant, room = self.scenario, self.plant, self.room
        step_s = scenario.step_s
        t = k * step_s
        setpoint_c, outdoor_c, window_open = self.setpoint_at[k], self.outdoor_at[k], self.window_at[k]
        extra_level = self.extra_level_at[k]
        gpu_w = work_rate = 0.0
        for g in self.gpu_ids:
            drive = (self.limits[g], self.levels[g], extra_level)
            if drive != self.drives.get(g):  # the plant's steady state: worked out when what drives it moves
                p, r = plant.power_w(*drive), plant.work_rate(*drive)
                self.states[g], self.drives[g] = GpuState(power_w=p, work_rate=r, temperature_c=30.0 + 0.15 * p), drive
            gpu_w += self.states[g].power_w or 0.0
            work_rate += self.states[g].work_rate or 0.0
        self.gpu_w = gpu_w
        backup_w = 0.0
        backup = scenario.backup_heater
        if backup is not None:
            backup_target_c = setpoint_c + backup.setpoint_offset_k
            if room.air_c < backup_target_c - backup.hysteresis_k / 2:
                self.backup_on = True
            elif room.air_c > backup_target_c + backup.hysteresis_k / 2:
                self.backup_on = False
            backup_w = backup.power_w if self.backup_on else 0.0
        self.work_done += work_rate * step_s
        main_w, main_sp = 0.0, math.nan
        if self.main_plant is not None:
            cmd = self.main_cmd
            if cmd is None:  # not steered: its own thermostat at the user's setpoint
                main_sp, enabled = setpoint_c, True
            elif cmd.on is None:
                main_sp, enabled = cmd.setpoint_c or setpoint_c, True
            else:  # a relay heatctl switches; the heater's own thermostat stays at the user's setpoint
                main_sp, enabled = (setpoint_c, True) if cmd.on else (math.nan, False)
            main_w = self.main_plant.power_w(t, room.air_c, main_sp if enabled else None, enabled)
        # As the service counts it: heat made for the plan's target (optimum start) is wanted heat.
        self.heat_wanted = room.air_c <= max(setpoint_c, self.plan_target_c) + WANTED_BAND_K
        if self.batches is not None:
            self.batches.run(t, step_s, work_rate * step_s, gpu_w * step_s, heat_wanted=self.heat_wanted)
        first = self.gpu_ids[0]
        self.table[k] = (  # in STEP_COLUMNS' order
            t,
            room.air_c,
            setpoint_c,
            outdoor_c,
            self.demand_w,
            gpu_w,
            self.limits[first],
            self.levels[first],
            work_rate,
            self.work_done,
            backup_w,
            main_w,
            main_sp,
            self.plan_w,
            self.target_c,
            plant.in_flight(self.levels[first]) if plant.surface is not None else 0.0,
        )
        self.modes.append("off" if self.off_at[k] else "heat")
        self.failsafes.append(self.failsafe)
        window_w = scenario.room.window_ua_w_per_k * (room.air_c - outdoor_c) if window_open else 0.0
        room.step(step_s, gpu_w + backup_w + main_w + scenario.room.gains_w - window_w, outdoor_c)

    def result(self) -> SimResult:
        cols = {c: np.ascontiguousarray(self.table[:, i]) for i, c in enumerate(STEP_COLUMNS)}
        _signal_columns(cols, self.signals)
        guide = self.guide
        return SimResult(
            scenario=self.scenario,
            controller=self.controller,
            series=cols,
            mode=self.modes,
            failsafe=self.failsafes,
            idle_w=self.scenario.gpu.idle_w * len(self.gpu_ids),
            batches=self.batches,
            main_switches=self.cascade.switches_total if self.cascade is not None else None,
            zone=self.zone,
            model=guide.model if isinstance(guide, SimPlanner) else None,
            planner_status=f"{guide.planner.status}: {guide.planner.reason}".rstrip(": ")
            if isinstance(guide, SimPlanner)
            else None,
        )


def _during(times: FloatArray, spans: list[tuple[float, float]]) -> npt.NDArray[np.bool_]:
    """Whether each time falls in one of the spans [start, end)."""
    inside = np.zeros(len(times), dtype=bool)
    for start_s, end_s in spans:
        inside |= (times >= start_s) & (times < end_s)
    return inside


def _signal_columns(cols: dict[str, npt.NDArray[np.float64]], signals: ScenarioSignals) -> None:
    """The price, solar surplus and carbon at each step: functions of time alone, filled at once."""
    t = cols["time_s"]
    price = signals.price(t + signals.start_epoch_s)
    cols["price_per_kwh"] = price if price is not None else np.full(len(t), math.nan)
    cols["surplus_w"] = signals.solar.at_many(t) if signals.solar is not None else np.zeros(len(t))
    cols["carbon_g_per_kwh"] = signals.carbon.at_many(t) if signals.carbon is not None else np.full(len(t), math.nan)


def _full_rate(ctrl: Any, plant: SimGpuModel, gpu_ids: list[str]) -> float:
    """Work per second of all the zone's GPUs at their most efficient caps (as the controller knows them)."""
    allocators = getattr(ctrl, "allocators", {})
    return sum(
        plant.work_rate(allocators[g].model.efficient_cap_w if g in allocators else plant.cfg.max_limit_w, 1.0)
        for g in gpu_ids
    )


def pick_zone(cfg: Config, zone_name: str | None) -> ZoneConfig:
    """The one zone a simulation models; several zones need a name (the room model is one room)."""
    names = [z.name for z in cfg.zones]
    if zone_name is None:
        if len(names) > 1:
            raise ConfigError(
                [f"the config has zones {', '.join(names)}: simulate models one room, pick one with --zone"]
            )
        return cfg.zones[0]
    for zone in cfg.zones:
        if zone.name == zone_name:
            return zone
    raise ConfigError([f"--zone {zone_name}: no such zone in the config (it has {', '.join(names)})"])


def _caps(gpu: GpuConfig, scenario: Scenario) -> GpuCaps:
    top_w = scenario.gpu.max_limit_w
    if gpu.max_power_w is not None:
        top_w = max(min(top_w, gpu.max_power_w), scenario.gpu.min_limit_w)
    return GpuCaps(idle_w=scenario.gpu.idle_w, min_limit_w=scenario.gpu.min_limit_w, max_limit_w=top_w)
