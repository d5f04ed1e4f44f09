"""The node controller: zones' demands → GPUs' commands, with safety having the last word."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from heatctl.config import Config, ZoneConfig
from heatctl.control.allocate import Allocator, GpuCommand
from heatctl.control.efficiency import EfficiencyModel, GpuCaps
from heatctl.control.pid import ZoneController, ZoneDemand
from heatctl.control.safety import ThermalGuard, ZoneInputs, fresh, zone_failsafe, zone_wants_no_heat


@dataclass(frozen=True, slots=True, kw_only=True)
class GpuState:
    """What the backend measured on one GPU at this tick (None: not supported)."""

    power_w: float | None = None
    temperature_c: float | None = None
    work_rate: float | None = None
    lost: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeInputs:
    mode: str  # "heat" | "off"
    zones: Mapping[str, ZoneInputs]
    gpus: Mapping[str, GpuState] = field(default_factory=dict)
    max_power_w: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ZoneOutput:
    temperature_c: float | None
    setpoint_c: float | None
    demand: ZoneDemand
    failsafe: str | None

    @property
    def demand_w(self) -> float:
        return self.demand.demand_w


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeOutput:
    mode: str
    failsafe: str | None
    zones: Mapping[str, ZoneOutput]
    gpus: Mapping[str, GpuCommand]


class Controller(Protocol):
    """Anything that turns inputs into actions at the injected clock's ``now``."""

    def step(self, inputs: NodeInputs) -> NodeOutput: ...


class NodeController:
    """heatctl's controller: a PID per zone, the efficiency allocator per GPU."""

    def __init__(
        self,
        cfg: Config,
        caps: Mapping[str, GpuCaps],
        *,
        models: Mapping[str, EfficiencyModel] | None = None,
        time_fn: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cfg = cfg
        self._time_fn = time_fn
        self._zones_cfg = {z.name: z for z in cfg.zones}
        self._capacity_w = {z.name: self._zone_capacity_w(z, caps) for z in cfg.zones}
        self.zones = {
            z.name: ZoneController(z.control, capacity_w=self._capacity_w[z.name], time_fn=time_fn) for z in cfg.zones
        }
        self.allocators: dict[str, Allocator] = {}
        self.thermal: dict[str, ThermalGuard] = {}
        for g in cfg.gpus:
            model = models[g.id] if models and g.id in models else EfficiencyModel(caps[g.id], g.work_at_w)
            self.allocators[g.id] = Allocator(
                model, cfg.duty, deadband_w=g.limit_deadband_w, limit_only=g.workload.type == "none"
            )
            self.thermal[g.id] = ThermalGuard(g.max_temp_c, caps[g.id].min_limit_w, caps[g.id].max_limit_w)
        self._last: dict[str, GpuCommand] = {}

    @staticmethod
    def _zone_capacity_w(zone: ZoneConfig, caps: Mapping[str, GpuCaps]) -> float:
        return sum(caps[g].max_limit_w for g in zone.gpus)

    def step(self, inputs: NodeInputs) -> NodeOutput:
        now_s = self._time_fn()
        reasons: list[str] = []
        zones: dict[str, ZoneOutput] = {}
        targets_w: dict[str, float] = {}
        for name, zcfg in self._zones_cfg.items():
            zin = inputs.zones.get(name, ZoneInputs())
            failsafe = zone_failsafe(now_s, zin, zcfg.control)
            if failsafe:
                reasons.append(f"{name}: {failsafe}")
            cap_w = self._capacity_w[name]
            self.zones[name].capacity_w = min(cap_w, inputs.max_power_w or cap_w)
            if failsafe or inputs.mode != "heat" or zone_wants_no_heat(zin):
                demand = self.zones[name].hold()
            else:
                demand = self._demand(name, zin, now_s)
            zones[name] = ZoneOutput(
                temperature_c=zin.temperature.value if zin.temperature else None,
                setpoint_c=zin.setpoint.value if zin.setpoint else None,
                demand=demand,
                failsafe=failsafe,
            )
            total_cap_w = sum(self.allocators[g].model.caps.max_limit_w for g in zcfg.gpus)
            for gpu_id in zcfg.gpus:
                share = self.allocators[gpu_id].model.caps.max_limit_w / total_cap_w
                targets_w[gpu_id] = demand.demand_w * share
        total_w = sum(targets_w.values())
        if inputs.max_power_w is not None and total_w > inputs.max_power_w:
            scale = inputs.max_power_w / total_w
            targets_w = {gid: w * scale for gid, w in targets_w.items()}
        gpus = {gid: self._gpu(gid, now_s, w, inputs, reasons) for gid, w in targets_w.items()}
        self._last = gpus
        return NodeOutput(mode=inputs.mode, failsafe="; ".join(reasons) or None, zones=zones, gpus=gpus)

    def _demand(self, name: str, zin: ZoneInputs, now_s: float) -> ZoneDemand:
        assert zin.temperature is not None and zin.setpoint is not None
        outdoor = zin.outdoor.value if fresh(zin.outdoor, now_s, zin.outdoor_stale_s) and zin.outdoor else None
        return self.zones[name].update(zin.temperature.value, zin.setpoint.value, outdoor)

    def _gpu(self, gpu_id: str, now_s: float, target_w: float, inputs: NodeInputs, reasons: list[str]) -> GpuCommand:
        state = inputs.gpus.get(gpu_id, GpuState())
        alloc = self.allocators[gpu_id]
        if state.lost:
            reasons.append(f"{gpu_id}: gpu lost")
            return GpuCommand(target_w=0.0, power_limit_w=alloc.power_limit_w, level=0.0, regime="idle")
        self._learn(gpu_id, state)
        alloc.ceiling_w = self.thermal[gpu_id].update(state.temperature_c, state.power_w)
        return self._allocate(gpu_id, now_s, target_w, state)

    def _allocate(self, gpu_id: str, now_s: float, target_w: float, state: GpuState) -> GpuCommand:
        return self.allocators[gpu_id].step(now_s, target_w, state.power_w)

    def _learn(self, gpu_id: str, state: GpuState) -> None:
        last = self._last.get(gpu_id)
        if last is None or last.level < 1.0 or state.power_w is None or state.work_rate is None:
            return
        if abs(state.power_w - last.power_limit_w) <= 0.03 * last.power_limit_w:
            self.allocators[gpu_id].model.observe(state.power_w, state.work_rate)
