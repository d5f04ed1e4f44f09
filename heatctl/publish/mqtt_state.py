"""The retained state message: a pure builder from what the control thread knows."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from heatctl.accounting import Totals


@dataclass(frozen=True, slots=True, kw_only=True)
class ZoneSnapshot:
    temperature_c: float | None
    setpoint_c: float | None
    demand_w: float
    mode: str
    failsafe: str | None
    window_open: bool | None = None  # the contact's last state (None: never heard)
    window: str | None = None  # open, closed, unknown (silent), or None without a contact
    pid_p: float = 0.0
    pid_i: float = 0.0
    pid_d: float = 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class GpuSnapshot:
    power_w: float | None
    power_limit_w: float | None  # as the driver reports it; None while it cannot be read
    temperature_c: float | None
    level: float
    work_rate: float | None
    target_w: float = 0.0
    regime: str = "idle"
    limit_control: bool = True  # False: no permission or unsupported; heat steered by workload only
    workload: str = ""
    fault: str | None = None  # why it gets no work now (lost, driver error, cannot be opened)
    effective_level: float | None = None  # what the workload really runs, read back
    limit_mismatches: int = 0  # times the driver's limit was found differing from heatctl's
    level_mismatches: int = 0  # times the workload was found running more than commanded
    steerable: bool = True  # False: neither the limit nor the workload can take heat away
    model: str | None = None  # the LLM it serves (an openai workload): its work is that model's tokens

    @property
    def efficiency_per_kwh(self) -> float | None:
        """Work per kWh at the current operating point."""
        if self.work_rate is None or not self.power_w:
            return None
        return self.work_rate / self.power_w * 3.6e6

    @property
    def energy_per_work_j(self) -> float | None:
        """Joules per unit of work (per token for an inference server) at the current operating point."""
        if not self.work_rate or self.power_w is None:
            return None
        return self.power_w / self.work_rate


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeSnapshot:
    mode: str
    failsafe: str | None
    max_power_w: float | None
    zones: Mapping[str, ZoneSnapshot]
    gpus: Mapping[str, GpuSnapshot]
    counters: Totals
    bad_payloads: int = 0
    rejected_commands: int = 0
    metered_w: Mapping[str, float] = field(default_factory=dict)  # zone → wall-plug meter reading
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def heat_w(self) -> float:
        """Heat output: what the wall-plug meters measure, else what the GPUs report."""
        return sum(self.metered_w.values()) + sum(
            g.power_w or 0.0 for gid, g in self.gpus.items() if gid not in self.metered_gpus
        )

    @property
    def metered_gpus(self) -> set[str]:
        return set(self.extra.get("metered_gpus", ()))


def _num(value: float | None, digits: int = 2) -> float | None:
    return None if value is None or not math.isfinite(value) else round(value, digits)


def state_payload(snap: NodeSnapshot) -> dict[str, Any]:
    c = snap.counters
    return {
        "mode": snap.mode,
        "failsafe": snap.failsafe,
        "heat_w": _num(snap.heat_w, 1),
        "max_power_w": _num(snap.max_power_w, 1),
        "energy_kwh": _num(c.energy_kwh, 4),
        "added_kwh": _num(c.added_kwh, 4),
        "heat_reused_kwh": _num(c.heat_reused_kwh, 4),
        "work_done": _num(c.work_done, 1),
        "bad_payloads": snap.bad_payloads,
        "rejected_commands": snap.rejected_commands,
        "zones": {
            name: {
                "temperature_c": _num(z.temperature_c),
                "setpoint_c": _num(z.setpoint_c),
                "demand_w": _num(z.demand_w, 1),
                "mode": z.mode,
                "failsafe": z.failsafe,
                "window_open": z.window_open,
                "window": z.window,
                "action": "off" if z.mode != "heat" else ("heating" if z.demand_w > 0 else "idle"),
            }
            for name, z in snap.zones.items()
        },
        "gpus": {
            gid: {
                "power_w": _num(g.power_w, 1),
                "power_limit_w": _num(g.power_limit_w, 1),
                "temperature_c": _num(g.temperature_c, 1),
                "level": _num(g.level, 3),
                "work_rate": _num(g.work_rate, 3),
                "efficiency": _num(g.efficiency_per_kwh, 1),
                "energy_per_work_j": _num(g.energy_per_work_j, 4),
                "target_w": _num(g.target_w, 1),
                "regime": g.regime,
                "limit_control": g.limit_control,
                "workload": g.workload,
                "fault": g.fault,
                "effective_level": _num(g.effective_level, 3),
                "limit_mismatches": g.limit_mismatches,
                "level_mismatches": g.level_mismatches,
                "steerable": g.steerable,
                "model": g.model,
            }
            for gid, g in snap.gpus.items()
        },
        **{k: v for k, v in snap.extra.items() if k not in EVENTS_ONLY},
    }


EVENTS_ONLY = frozenset({"batches_finished"})  # once per event for InfluxDB; not part of the retained state


def state_json(snap: NodeSnapshot) -> str:
    return json.dumps(state_payload(snap), separators=(",", ":"))
