"""The node controller: zones' demands → GPUs' commands, with safety having the last word."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

from heatctl.config import Config, GpuConfig, InferenceConfig
from heatctl.control.allocate import Allocator, GpuCommand
from heatctl.control.efficiency import EfficiencyModel, GpuCaps
from heatctl.control.pid import ZoneController, ZoneDemand
from heatctl.control.safety import ThermalGuard, ZoneInputs, fresh, zone_failsafe, zone_wants_no_heat
from heatctl.control.surface import InferenceSurface, LearnedSurface, Limits, prior_surface


@dataclass(frozen=True, slots=True, kw_only=True)
class GpuState:
    """What the backend measured on one GPU at this tick (None: not supported).

    ``fault`` says why heatctl cannot see or steer this GPU now (lost, driver error, no
    power reading): it gets no heat target and its workload no work.
    """

    power_w: float | None = None
    temperature_c: float | None = None
    work_rate: float | None = None
    fault: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeInputs:
    mode: str  # "heat" | "off"
    zones: Mapping[str, ZoneInputs]
    gpus: Mapping[str, GpuState] = field(default_factory=dict)
    max_power_w: float | None = None  # None: no node cap; 0 means no heat at all
    # GPU → share of its work that must run now whatever the room wants (a batch deadline): it
    # runs at least that at the most efficient cap (1), or up to flat out (2: a deadline the
    # planner's plan was to meet at full power), unless mode is off, the zone is in fail-safe
    # (stale inputs, window, too warm) or the GPU is faulted. Safety stays last.
    work_due: Mapping[str, float] = field(default_factory=dict)


class ZoneOutput(NamedTuple):  # a value made every tick: a named tuple is cheap to build
    temperature_c: float | None
    setpoint_c: float | None
    demand: ZoneDemand
    failsafe: str | None
    capacity_w: float = 0.0  # what the zone may ask for now: its healthy GPUs within the node cap

    @property
    def demand_w(self) -> float:
        return self.demand.demand_w


class NodeOutput(NamedTuple):  # a value made every tick: a named tuple is cheap to build
    mode: str
    failsafe: str | None
    zones: Mapping[str, ZoneOutput]
    gpus: Mapping[str, GpuCommand]


NO_INPUTS = ZoneInputs()
NO_STATE = GpuState()


def inference_of(gpu: GpuConfig) -> InferenceConfig | None:
    """A GPU serving an LLM, as the config says: an ``openai`` workload (its ``max_concurrency``), or
    a simulated GPU with ``sim.inference``."""
    if gpu.workload.type == "openai":
        return InferenceConfig(max_concurrency=gpu.workload.max_concurrency)
    if gpu.backend == "sim" and gpu.sim.inference is not None:
        return gpu.sim.inference
    return None


class NodeController:
    """heatctl's controller: a PID per zone, the efficiency allocator per GPU.

    Caps are limits *inside* the loop: each zone's PID gets as its output range the
    capacity of its healthy GPUs, within its share of the node's ``max_power_w`` (shared
    among the zones that may heat, in proportion to their capacity). Anti-windup therefore
    sees every cap, and a cap of 0 holds the integrator where it was.
    """

    uses_surface = True  # an LLM server's requests in flight are a lever (a baseline may not use them)

    def __init__(
        self,
        cfg: Config,
        caps: Mapping[str, GpuCaps],
        *,
        models: Mapping[str, EfficiencyModel] | None = None,
        inference: Mapping[str, InferenceConfig] | None = None,
        calibrated: Mapping[str, InferenceConfig] | None = None,
        time_fn: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cfg = cfg
        self._calibrated = dict(calibrated or {}) if self.uses_surface else {}
        # GPUs serving an LLM: their requests in flight (and the clock exponent of the prior) — the
        # config's (an openai workload's max_concurrency), or what the simulator's plant says.
        self._inference: dict[str, InferenceConfig] = {}
        if self.uses_surface:
            self._inference = {g.id: c for g in cfg.gpus if (c := inference_of(g)) is not None}
            self._inference |= dict(inference or {}) | self._calibrated
        self._time_fn = time_fn
        self._zones_cfg = {z.name: z for z in cfg.zones}
        self.zones = {
            z.name: ZoneController(z.control, capacity_w=sum(caps[g].max_limit_w for g in z.gpus), time_fn=time_fn)
            for z in cfg.zones
        }
        self.allocators: dict[str, Allocator] = {}
        self.thermal: dict[str, ThermalGuard] = {}
        self._max_w: dict[str, float] = {}  # each GPU's top limit, kept with its allocator
        self._healthy_caps_w: dict[str, float] | None = None  # the zones' capacities without faults, once known
        for g in cfg.gpus:
            model = models[g.id] if models and g.id in models else EfficiencyModel(caps[g.id], g.work_at_w)
            self.set_caps(g.id, caps[g.id], model=model)
        self._last: dict[str, GpuCommand] = {}
        self._before: dict[str, GpuCommand] = {}  # the tick before: a measurement under a command held twice

    @property
    def capacity_w(self) -> float:
        """The node's capacity: every GPU's top limit."""
        return sum(a.model.caps.max_limit_w for a in self.allocators.values())

    @property
    def floor_w(self) -> float:
        """What the node draws with every GPU idle (no cap takes it lower)."""
        return sum(a.model.caps.idle_w for a in self.allocators.values())

    def integrals_w(self) -> dict[str, float]:
        """Each zone's integrator, kept across restarts."""
        return {name: zone.integral_w for name, zone in self.zones.items()}

    def restore_integrals(self, integrals_w: Mapping[str, float]) -> None:
        for name, integral_w in integrals_w.items():
            if name in self.zones:
                self.zones[name].restore_integral(integral_w)

    def set_caps(self, gpu_id: str, caps: GpuCaps, *, model: EfficiencyModel | None = None) -> None:
        """(Re)build one GPU's allocator and thermal guard, e.g. when it was opened late."""
        g = self.cfg.gpu(gpu_id)
        surface = None
        if (inf := self._inference.get(gpu_id)) is not None:
            limits = Limits(idle_w=caps.idle_w, min_limit_w=caps.min_limit_w, max_limit_w=caps.max_limit_w)
            if gpu_id in self._calibrated:  # measured on this card: the batches' own figures
                prior = InferenceSurface(
                    inf.uncapped, limits, max_concurrency=inf.max_concurrency, clock_exponent=inf.clock_exponent
                )
            else:  # the published shape, scaled to the card
                prior = prior_surface(limits, inf.max_concurrency, inf.clock_exponent)
            surface = LearnedSurface(prior)
        self.allocators[gpu_id] = Allocator(
            model or EfficiencyModel(caps, g.work_at_w),
            self.cfg.duty,
            deadband_w=g.limit_deadband_w,
            limit_only=g.workload.type == "none",
            surface=surface,
        )
        self.thermal[gpu_id] = ThermalGuard(g.max_temp_c, caps.idle_w, caps.max_limit_w)
        self._max_w[gpu_id] = caps.max_limit_w
        self._healthy_caps_w = None  # a top limit may have moved: the zones' capacities are worked out again

    def step(self, inputs: NodeInputs) -> NodeOutput:
        now_s = self._time_fn()
        faulted = {gid: s.fault for gid, s in inputs.gpus.items() if s.fault and gid in self.allocators}
        reasons = [f"{gid}: {fault}" for gid, fault in faulted.items()]
        zone_caps_w = self._zone_caps_w(faulted)
        failsafes: dict[str, str | None] = {}
        held: dict[str, bool] = {}
        for name, zcfg in self._zones_cfg.items():
            zin = inputs.zones.get(name, NO_INPUTS)
            failsafes[name] = zone_failsafe(now_s, zin, zcfg.control)
            if failsafes[name]:
                reasons.append(f"{name}: {failsafes[name]}")
            held[name] = bool(failsafes[name]) or inputs.mode != "heat" or zone_wants_no_heat(zin)
        active_w = sum(w for name, w in zone_caps_w.items() if not held[name])
        zones: dict[str, ZoneOutput] = {}
        targets_w: dict[str, float] = {}
        gpu_caps_w: dict[str, float] = {}  # each GPU's part of the node cap: its limit goes no higher
        for name, zcfg in self._zones_cfg.items():
            zin = inputs.zones.get(name, NO_INPUTS)
            cap_w = zone_caps_w[name]
            if inputs.max_power_w is not None and active_w > 0:
                cap_w = min(cap_w, inputs.max_power_w * cap_w / active_w)
            controller = self.zones[name]
            controller.capacity_w = cap_w
            demand = controller.hold() if held[name] or cap_w <= 0 else self._demand(name, zin, now_s)
            zones[name] = ZoneOutput(
                temperature_c=zin.temperature.value if zin.temperature else None,
                setpoint_c=zin.setpoint.value if zin.setpoint else None,
                demand=demand,
                failsafe=failsafes[name],
                capacity_w=cap_w,
            )
            for gpu_id in zcfg.gpus:
                share = self._max_w[gpu_id] / zone_caps_w[name] if gpu_id not in faulted else 0.0
                targets_w[gpu_id] = demand.demand_w * share
                if inputs.max_power_w is not None:
                    gpu_caps_w[gpu_id] = cap_w * share
                due = inputs.work_due.get(gpu_id, 0.0)
                if due > 0 and share > 0 and inputs.mode == "heat" and not failsafes[name]:
                    targets_w[gpu_id] = max(targets_w[gpu_id], self._due_w(gpu_id, due, inputs.max_power_w))
        gpus = {
            gid: self._gpu(gid, now_s, w, inputs.gpus.get(gid, NO_STATE), gpu_caps_w.get(gid))
            for gid, w in targets_w.items()
        }
        self._before, self._last = self._last, gpus
        return NodeOutput(mode=inputs.mode, failsafe="; ".join(reasons) or None, zones=zones, gpus=gpus)

    def _zone_caps_w(self, faulted: Mapping[str, str]) -> dict[str, float]:
        """Each zone's capacity: the top limits of its GPUs that are not faulted."""
        if not faulted and self._healthy_caps_w is not None:
            return self._healthy_caps_w
        caps_w = {name: sum(self._max_w[g] for g in z.gpus if g not in faulted) for name, z in self._zones_cfg.items()}
        if not faulted:
            self._healthy_caps_w = caps_w
        return caps_w

    def _due_w(self, gpu_id: str, due: float, max_power_w: float | None) -> float:
        """The target that runs ``due`` of the GPU's work at its most efficient cap (within the node cap)."""
        alloc = self.allocators[gpu_id]
        caps = alloc.model.caps
        efficient_w = alloc.model.efficient_cap_w  # an LLM server: its surface's most tokens per joule
        if alloc.surface is not None and not alloc.limit_only:
            efficient_w = max(alloc.surface.surface.most_efficient(settable=True).draw_w, caps.idle_w)
        due_w = caps.idle_w + min(due, 1.0) * (efficient_w - caps.idle_w)
        if due > 1.0:  # flat out: the plan's timing
            due_w = efficient_w + min(due - 1.0, 1.0) * (self._max_w[gpu_id] - efficient_w)
        if max_power_w is not None:
            due_w = min(due_w, max_power_w * self._max_w[gpu_id] / sum(self._max_w.values()))
        return due_w

    def _demand(self, name: str, zin: ZoneInputs, now_s: float) -> ZoneDemand:
        assert zin.temperature is not None and zin.setpoint is not None  # zone_failsafe checked both
        outdoor = zin.outdoor.value if fresh(zin.outdoor, now_s, zin.outdoor_stale_s) and zin.outdoor else None
        return self.zones[name].update(zin.temperature.value, zin.setpoint.value, outdoor, zin.feedforward_w)

    def _gpu(
        self, gpu_id: str, now_s: float, target_w: float, state: GpuState, cap_w: float | None = None
    ) -> GpuCommand:
        alloc = self.allocators[gpu_id]
        if state.fault:
            return GpuCommand(target_w=0.0, power_limit_w=alloc.power_limit_w, level=0.0, regime="idle")
        self._learn(gpu_id, state)
        alloc.ceiling_w = self.thermal[gpu_id].update(now_s, state.temperature_c, state.power_w)
        if cap_w is not None:  # the node's cap (max_power_w, quiet hours, a house's share) binds the limit too
            alloc.ceiling_w = min(alloc.ceiling_w, cap_w)
        return self._allocate(gpu_id, now_s, target_w, state)

    def _allocate(self, gpu_id: str, now_s: float, target_w: float, state: GpuState) -> GpuCommand:
        return self.allocators[gpu_id].step(now_s, target_w, state.power_w)

    def _learn(self, gpu_id: str, state: GpuState) -> None:
        last = self._last.get(gpu_id)
        surface = self.allocators[gpu_id].surface
        if surface is not None and last is not None and last.level > 0 and state.power_w is not None:
            before = self._before.get(gpu_id)
            held = before is not None and (before.level, before.power_limit_w) == (last.level, last.power_limit_w)
            if state.work_rate is not None and held:  # the command held a tick: the GPU settled under it
                n = round(last.level * surface.prior.max_concurrency)
                surface.observe(n, last.power_limit_w, state.power_w, state.work_rate)
        if last is None or last.level < 1.0 or state.power_w is None or state.work_rate is None:
            return
        if abs(state.power_w - last.power_limit_w) <= 0.03 * last.power_limit_w:
            self.allocators[gpu_id].model.observe(state.power_w, state.work_rate)
