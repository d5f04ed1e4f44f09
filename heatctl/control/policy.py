"""The tick's policy: every decision ``run`` and ``simulate`` make, in one place.

Given what the sources, the GPUs and the work say now, it decides the node's cap (the
configured or commanded ``max_power_w``, quiet hours, a house budget), presets and boost, what
each zone's loop aims at (the planner's guidance turned into a target and feed-forward, the
main heating's cascade), the work due, and the main heating's command; the node controller
then turns that into each GPU's command. The service and the simulator both call
``TickPolicy.decide``: neither re-implements any of it, so the simulator predicts the service.

Its clock and every input are injected; it talks to the planner and to the work through two
small protocols (``PlannerPort``, ``worksource.DueWork``).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable, Mapping
from datetime import tzinfo
from types import MappingProxyType
from typing import Any, NamedTuple, Protocol

import numpy as np
import numpy.typing as npt

from heatctl.batch.queue import work_for_plan
from heatctl.clock import daily_span_mask, in_daily_span, local_minutes
from heatctl.config import Config, QuietConfig, ZoneConfig
from heatctl.control.core import NO_INPUTS, GpuState, NodeController, NodeInputs, NodeOutput
from heatctl.control.safety import Reading, ZoneInputs, fresh, zone_failsafe, zone_wants_no_heat
from heatctl.mainheat.cascade import GIVEN_BACK, HELD, PUSH_K, Cascade, MainCommand, main_is_cheaper
from heatctl.planner.zone import Guidance
from heatctl.worksource import DueWork

FloatArray = npt.NDArray[np.float64]
PRESETS = ("none", "comfort", "eco", "away", "boost")


class PlannerPort(Protocol):
    """The planner as the tick sees it (the service's ``NodePlanner``, the simulator's ``SimPlanner``)."""

    def record(
        self,
        zone: str,
        *,
        room_c: float | None,
        setpoint_c: float | None,
        heat_w: float | None,
        outdoor_c: float | None,
        valid: bool,
    ) -> Guidance | None: ...

    def shortfall_in_s(self, zone: str) -> float | None: ...

    def covers_work(self, zone: str) -> bool: ...

    def reach_c(self, zone: str, room_c: float, outdoor_c: float, heat_w: float, seconds: float) -> float | None: ...


NOTHING: Mapping[str, Any] = MappingProxyType({})


class TickInputs(NamedTuple):
    """What one tick decides from. ``zones``' setpoints are the zones' targets (the user's, or a preset's).

    A value (a named tuple: made once a tick in the simulator's hot loop, where a frozen dataclass's
    field-by-field construction showed in the profile)."""

    mode: str  # heatctl's own: "heat" | "off"
    zones: Mapping[str, ZoneInputs]
    gpus: Mapping[str, GpuState]
    local_minute: int  # the minute of the local day (quiet hours)
    max_power_w: float | None  # the configured cap, or the one a person commanded
    budget_w: float | None = None  # a house's share for this node (None: no house)
    heat_w: Mapping[str, float | None] = NOTHING  # each zone's heat now (meter, else GPUs)
    price_per_kwh: float | None = None  # electricity now, for ``prefer: cheapest``
    user_setpoint_c: Mapping[str, float | None] = NOTHING  # what a give-back restores
    overridden: frozenset[str] = frozenset()  # zones whose target is a preset's (it ends when that goes)


class TickDecision(NamedTuple):
    node: NodeOutput  # each GPU's command; each zone's demand, and the setpoint its loop aimed at
    cap_w: float | None  # the node's cap this tick
    quiet: bool  # quiet hours lowered it
    aim_c: Mapping[str, float | None]  # what each zone's loop aimed at
    guidance: Mapping[str, Guidance | None]
    main: Mapping[str, MainCommand]  # each steered main heating's command
    work_due: Mapping[str, float]


def house_wants(decision: TickDecision, capacity_w: float) -> tuple[float, float]:
    """What this node asks of the house's budget (comfort, work due), from its tick's decision: its
    rooms' demand, or all it can take when that demand is held at the cap (it would take more)."""
    zones = decision.node.zones.values()
    demand_w = sum(z.demand_w for z in zones)
    # A room below its target whose loop is held at the cap (even a cap of 0) wants more than it asks.
    below = any(
        z.failsafe is None
        and z.temperature_c is not None
        and z.setpoint_c is not None
        and z.temperature_c < z.setpoint_c
        for z in zones
    )
    if decision.cap_w is not None and demand_w >= decision.cap_w - 1.0 and (demand_w > 0 or below):
        demand_w = capacity_w
    due_w = capacity_w if any(v > 0 for v in decision.work_due.values()) else 0.0
    return min(demand_w, capacity_w), due_w


def zones_heat_w(cfg: Config, gpus: Mapping[str, GpuState], metered_w: Mapping[str, float]) -> dict[str, float | None]:
    """Each zone's heat now: its wall-plug meter, else its GPUs' draw (None while one cannot be read)."""
    heat_w: dict[str, float | None] = {}
    for zone in cfg.zones:
        gpu_w = [gpus[g].power_w for g in zone.gpus if g in gpus]
        measured = [w for w in gpu_w if w is not None]
        heat_w[zone.name] = metered_w.get(zone.name, sum(measured) if len(measured) == len(gpu_w) else None)
    return heat_w


def node_cap_w(
    max_power_w: float | None, quiet: QuietConfig | None, minute: int, budget_w: float | None = None
) -> float | None:
    """The node's cap now: ``max_power_w``, within quiet hours' ceiling and a house budget (None: none)."""
    caps = [c for c in (max_power_w, budget_w) if c is not None]
    if quiet is not None and in_daily_span(quiet, minute):
        caps.append(quiet.max_power_w)
    return min(caps) if caps else None


def cap_outlook(
    quiet: QuietConfig | None, max_power_w: float | None, tz: tzinfo | None, share: float = 1.0
) -> Callable[[FloatArray], FloatArray | None]:
    """The node's cap over the planner's horizon (a zone's ``share`` of it), as ``Signals.cap_w``."""

    def cap_at(times_s: FloatArray) -> FloatArray | None:
        if quiet is None and max_power_w is None:
            return None
        top = np.inf if max_power_w is None else max_power_w
        out = np.full(len(times_s), top)
        if quiet is not None:
            inside = daily_span_mask(quiet, np.floor(local_minutes(times_s, tz)))
            out[inside] = np.minimum(out[inside], quiet.max_power_w)
        return np.asarray(out * share, dtype=np.float64)

    return cap_at


class TickPolicy:
    """Presets, boost and the cascades' stages are its state; everything else comes in each tick."""

    def __init__(
        self,
        cfg: Config,
        controller: NodeController,
        *,
        cascades: Mapping[str, Cascade] | None = None,
        planner: PlannerPort | None = None,
        work: DueWork | None = None,
        runners: Iterable[str] = (),
        time_fn: Callable[[], float],
    ) -> None:
        self.cfg = cfg
        self.controller = controller
        self.cascades = dict(cascades or {})
        self.planner = planner
        self.work = work
        self.runners = [g for g in runners if any(g in z.gpus for z in cfg.zones)]  # GPUs that run batch work
        self._time_fn = time_fn
        self._zone_of = {gid: z.name for z in cfg.zones for gid in z.gpus}
        self._zones = {z.name: z for z in cfg.zones}
        self.presets = {z.name: "none" for z in cfg.zones}
        self._quiet = False  # the last tick's cap was lowered by quiet hours
        self._presets_set = False  # some zone has a preset (checked each tick only then)

    def state(self) -> dict[str, Any]:
        """The state's presets and whether quiet hours cap the node now."""
        return {"presets": dict(self.presets), "quiet": self._quiet}

    # --- presets --------------------------------------------------------------------------

    def set_preset(self, zone: str, preset: str) -> None:
        """A person chose a preset; boost asks the main heating to help at once."""
        self.presets[zone] = preset
        self._presets_set = True
        if preset == "boost" and zone in self.cascades:
            self.cascades[zone].boost(self._time_fn())

    def _end_presets(self, inputs: TickInputs) -> None:
        """Boost ends when the room is warm; another preset when its target is gone."""
        for name, preset in self.presets.items():
            zin = inputs.zones.get(name)
            room, target = (zin.temperature, zin.setpoint) if zin is not None else (None, None)
            if preset == "boost":
                if room is not None and target is not None and room.value >= target.value:
                    self.presets[name] = "none"
            elif preset != "none" and name not in inputs.overridden:
                self.presets[name] = "none"
        self._presets_set = any(p != "none" for p in self.presets.values())

    # --- one tick -------------------------------------------------------------------------

    def decide(self, inputs: TickInputs) -> TickDecision:
        # The simulator calls this at every step of a year: what is not configured costs nothing here.
        now_s = self._time_fn()
        if self._presets_set:
            self._end_presets(inputs)
        uncapped_w = inputs.max_power_w
        if inputs.budget_w is not None:
            uncapped_w = node_cap_w(uncapped_w, None, inputs.local_minute, inputs.budget_w)
        quiet = self.cfg.quiet
        cap_w = node_cap_w(uncapped_w, quiet, inputs.local_minute) if quiet is not None else uncapped_w
        guidance = self._guidance(now_s, inputs) if self.planner is not None else {}
        aims: dict[str, float | None] = {}
        zones = dict(inputs.zones)
        for name, zin in inputs.zones.items():
            target = zin.setpoint
            if target is None:
                aims[name] = None
                continue
            g = guidance.get(name)
            aim = g.target_c if g is not None else target.value
            if name in self.cascades:
                aim = self.cascades[name].gpu_target(aim, zin.temperature.value if zin.temperature else None)
            if self._presets_set and self.presets.get(name) == "boost":
                aim = target.value + PUSH_K
            aims[name] = aim
            if g is not None or aim != target.value:  # a new value only where the aim moved
                feedforward_w = g.feedforward_w if g is not None else zin.feedforward_w
                zones[name] = zin.aiming(Reading(aim, target.at_s, target.source), feedforward_w)
        work_due = self._work_due() if self.work is not None else {}
        out = self.controller.step(
            NodeInputs(mode=inputs.mode, zones=zones, gpus=inputs.gpus, max_power_w=cap_w, work_due=work_due)
        )
        main = self._main_commands(now_s, inputs, out) if self.cascades else {}
        self._quiet = cap_w != uncapped_w
        return TickDecision(out, cap_w, self._quiet, aims, guidance, main, work_due)

    def _guidance(self, now_s: float, inputs: TickInputs) -> dict[str, Guidance | None]:
        """Readings to each zone's planner; its word for now where the plan may steer."""
        assert self.planner is not None
        out: dict[str, Guidance | None] = {}
        for zone in self.cfg.zones:
            name = zone.name
            zin = inputs.zones.get(name, NO_INPUTS)
            heat_w = inputs.heat_w.get(name)
            cascade = self.cascades.get(name)
            # Only the GPUs' own heat, measured, in a room that is heated, teaches the planner.
            valid = (
                heat_w is not None
                and inputs.mode == "heat"
                and (not self._presets_set or self.presets[name] != "boost")
                and (cascade is None or cascade.stage in (HELD, GIVEN_BACK))
                and not zone_wants_no_heat(zin)
                and zone_failsafe(now_s, zin, zone.control) is None
            )
            outdoor = zin.outdoor
            outdoor_fresh = outdoor is not None and now_s - outdoor.at_s <= zin.outdoor_stale_s
            out[name] = self.planner.record(
                name,
                room_c=zin.temperature.value if zin.temperature is not None else None,
                setpoint_c=zin.setpoint.value if zin.setpoint is not None else None,
                heat_w=heat_w,
                outdoor_c=outdoor.value if outdoor is not None and outdoor_fresh else None,
                valid=valid,
            )
        return out

    def _work_due(self) -> dict[str, float]:
        """Batch runners that must run now for a deadline, whatever the room wants."""
        if self.work is None or not self.runners:
            return {}
        zones = {self._zone_of[g] for g in self.runners}
        planned = self.planner is not None and all(self.planner.covers_work(z) for z in zones)
        due = self.work.due_level(full_speedup=self.full_speedup(self.runners) if planned else None)
        return dict.fromkeys(self.runners, due) if due else {}

    def work_for_plan(self, zone: str) -> tuple[tuple[float, float], ...]:
        """The work due, as heat the zone's runners make doing it flat out: (due by, J above idle) each."""
        if self.work is None:
            return ()
        allocators = self.controller.allocators
        models = [allocators[g].model for g in self.runners if self._zone_of[g] == zone and g in allocators]
        heat_w = sum(m.caps.max_limit_w - m.caps.idle_w for m in models)
        if heat_w <= 0:
            return ()
        return work_for_plan(self.work.open_work(), full_speedup=self.full_speedup(self.runners), full_heat_w=heat_w)

    def full_speedup(self, gpus: Iterable[str]) -> float:
        """How much faster the GPUs work at full power than at their efficient caps (as learned)."""
        models = [self.controller.allocators[g].model for g in gpus if g in self.controller.allocators]
        efficient = sum(m.work_rate(m.efficient_cap_w) for m in models)
        full = sum(m.work_rate(m.caps.max_limit_w) for m in models)
        return max(full / efficient, 1.0) if efficient > 0 else 1.0

    def work_per_kwh(self, gpus: Iterable[str]) -> float:
        """The GPUs' work per kWh at their most efficient caps (as learned)."""
        models = [self.controller.allocators[g].model for g in gpus if g in self.controller.allocators]
        per_kwh = [m.work_rate(m.efficient_cap_w) / m.efficient_cap_w * 3.6e6 for m in models if m.efficient_cap_w > 0]
        return sum(per_kwh) / len(per_kwh) if per_kwh else 0.0

    def _main_commands(self, now_s: float, inputs: TickInputs, out: NodeOutput) -> dict[str, MainCommand]:
        """The cascade's stage for each zone with main heating, and what its device is told."""
        commands = {}
        faults = {g: s.fault for g, s in inputs.gpus.items() if s.fault}
        for name, cascade in self.cascades.items():
            zin, zout = inputs.zones.get(name, ZoneInputs()), out.zones[name]
            failsafe = zout.failsafe
            if inputs.mode != "heat" or zin.mode != "heat":
                failsafe = failsafe or "heatctl off"
            zone = self._zones[name]
            lost = [g for g in zone.gpus if g in faults]
            failsafe = failsafe or (f"gpu {lost[0]}: {faults[lost[0]]}" if lost else None)
            commands[name] = cascade.update(
                now_s,
                room_c=_value(zin.temperature),
                target_c=_value(zin.setpoint),
                user_c=inputs.user_setpoint_c.get(name, _value(zin.setpoint)),
                demand_w=zout.demand_w,
                capacity_w=zout.capacity_w,
                failsafe=failsafe,
                main_cheaper=self._main_cheaper(cascade, zone.gpus, inputs.price_per_kwh),
                shortfall_in_s=self.planner.shortfall_in_s(name) if self.planner is not None else None,
                reach_c=functools.partial(self._reach_c, zone, zin, zout.capacity_w),
            )
        return commands

    def _reach_c(self, zone: ZoneConfig, zin: ZoneInputs, heat_w: float, seconds: float) -> float | None:
        """The room the zone's GPUs reach in ``seconds`` flat out, by its learned model (None: cannot tell)."""
        if self.planner is None or zin.temperature is None:
            return None
        if fresh(zin.outdoor, self._time_fn(), zin.outdoor_stale_s) and zin.outdoor is not None:
            outdoor_c = zin.outdoor.value
        elif zone.outdoor_temperature is None:
            outdoor_c = 0.0  # the model was learned without one: its gains stand for the rest
        else:
            return None  # the outdoor sensor is silent: no telling
        return self.planner.reach_c(zone.name, zin.temperature.value, outdoor_c, heat_w, seconds)

    def _main_cheaper(self, cascade: Cascade, gpus: Iterable[str], price: float | None) -> bool:
        """With ``prefer: cheapest``: whether the main heating makes heat for less than the GPUs now."""
        if cascade.cfg.prefer != "cheapest" or price is None or math.isnan(price):
            return False
        return main_is_cheaper(cascade.cfg, price, self.work_per_kwh(gpus), self.cfg.work_value_per_unit)


def _value(reading: object) -> float | None:
    return getattr(reading, "value", None)
