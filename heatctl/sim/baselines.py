"""Baseline controllers on the same plant, so KPIs compare like with like."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from heatctl.config import Config
from heatctl.control.allocate import DutyCycle, GpuCommand
from heatctl.control.core import GpuState, NodeController
from heatctl.control.efficiency import GpuCaps
from heatctl.control.pid import ZoneDemand
from heatctl.control.safety import ZoneInputs


class HysteresisController(NodeController):
    """Home Assistant generic_thermostat style: full power below setpoint − 0.3 K, off above + 0.3 K."""

    band_k = 0.3

    def __init__(self, cfg: Config, caps: Mapping[str, GpuCaps], **kwargs: Any) -> None:
        super().__init__(cfg, caps, **kwargs)
        self._on = dict.fromkeys(self.zones, False)

    def _demand(self, name: str, zin: ZoneInputs, now_s: float) -> ZoneDemand:
        assert zin.temperature is not None and zin.setpoint is not None
        room_c, setpoint_c = zin.temperature.value, zin.setpoint.value
        if room_c < setpoint_c - self.band_k:
            self._on[name] = True
        elif room_c > setpoint_c + self.band_k:
            self._on[name] = False
        return ZoneDemand(demand_w=self.zones[name].capacity_w if self._on[name] else 0.0)

    def _allocate(self, gpu_id: str, now_s: float, target_w: float, state: GpuState) -> GpuCommand:
        top_w = self.allocators[gpu_id].model.caps.max_limit_w
        on = target_w > self.allocators[gpu_id].model.caps.idle_w
        return GpuCommand(target_w=target_w, power_limit_w=top_w, level=1.0 if on else 0.0, regime="duty")


class DutyCycleController(NodeController):
    """The PID's demand as a duty cycle at full power (no use of lower caps)."""

    def __init__(self, cfg: Config, caps: Mapping[str, GpuCaps], **kwargs: Any) -> None:
        super().__init__(cfg, caps, **kwargs)
        self._cycles = {gid: DutyCycle(self.cfg.duty) for gid in self.allocators}

    def _allocate(self, gpu_id: str, now_s: float, target_w: float, state: GpuState) -> GpuCommand:
        caps = self.allocators[gpu_id].model.caps
        fraction = (target_w - caps.idle_w) / (caps.max_limit_w - caps.idle_w)
        on = self._cycles[gpu_id].step(now_s, min(max(fraction, 0.0), 1.0))
        return GpuCommand(target_w=target_w, power_limit_w=caps.max_limit_w, level=1.0 if on else 0.0, regime="duty")


class CapController(NodeController):
    """An LLM server run with every request in flight, its heat set by the cap and duty cycling only
    (heatctl before it knew the batch is a lever)."""

    uses_surface = False


class ConcurrencyController(NodeController):
    """The cap at its maximum and the requests in flight following the heat wanted: what a plain
    integration of an inference server does."""

    def _allocate(self, gpu_id: str, now_s: float, target_w: float, state: GpuState) -> GpuCommand:
        caps = self.allocators[gpu_id].model.caps
        level = min(max((target_w - caps.idle_w) / (caps.max_limit_w - caps.idle_w), 0.0), 1.0)
        regime = "continuous" if level > 0 else "idle"
        return GpuCommand(target_w=target_w, power_limit_w=caps.max_limit_w, level=level, regime=regime)


class MainOnlyController(NodeController):
    """The GPU idle: the room's main heating alone, at the user's setpoint (a house without heatctl)."""

    def _demand(self, name: str, zin: ZoneInputs, now_s: float) -> ZoneDemand:
        return ZoneDemand(demand_w=0.0)


CONTROLLERS: dict[str, type[NodeController]] = {
    "heatctl": NodeController,
    "hysteresis": HysteresisController,
    "dutycycle": DutyCycleController,
    "main-only": MainOnlyController,
    "cap": CapController,
    "concurrency": ConcurrencyController,
    "side-by-side": NodeController,  # heatctl as today, next to the main heating at the user's setpoint
    "oracle": NodeController,  # tracks the LP solved with the true room, weather and schedule (sim/planning.py)
    "round-robin": NodeController,  # a house: heatctl in every room, the pool dealt out evenly (sim/house.py)
}
STEERS_MAIN_HEATING = frozenset({"heatctl"})  # the others leave the main heating at the user's setpoint
