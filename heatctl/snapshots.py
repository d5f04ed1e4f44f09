"""The tick's snapshot: an immutable value built from what the control thread knows, for every output."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Protocol

from heatctl.accounting import Totals
from heatctl.actuation import ActuationStatus
from heatctl.control.core import GpuState, NodeOutput
from heatctl.control.safety import ZoneInputs
from heatctl.publish.mqtt_state import GpuSnapshot, NodeSnapshot, ZoneSnapshot

if TYPE_CHECKING:
    from heatctl.actuation import GpuActuator
    from heatctl.config import Config
    from heatctl.settings import NodeSettings
    from heatctl.sources.store import ReadingStore


def build_snapshot(
    out: NodeOutput,
    *,
    mode: str,
    zone_modes: Mapping[str, str],
    windows_open: Mapping[str, bool | None],
    windows: Mapping[str, str | None] | None = None,
    states: Mapping[str, GpuState],
    actuation: Mapping[str, ActuationStatus],
    workloads: Mapping[str, str],
    models: Mapping[str, str] | None = None,
    totals: Totals,
    max_power_w: float,
    metered_w: Mapping[str, float],
    metered_gpus: list[str],
    bad_payloads: int,
    rejected_commands: int,
    extra: Mapping[str, Any],
) -> NodeSnapshot:
    zones = {
        name: ZoneSnapshot(
            temperature_c=z.temperature_c,
            setpoint_c=z.setpoint_c,
            demand_w=z.demand_w,
            mode=zone_modes[name],
            failsafe=z.failsafe,
            window_open=windows_open.get(name),
            window=(windows or {}).get(name),
            pid_p=z.demand.p_w,
            pid_i=z.demand.i_w,
            pid_d=z.demand.d_w,
        )
        for name, z in out.zones.items()
    }
    gpus = {}
    for gid, cmd in out.gpus.items():
        act, state = actuation[gid], states[gid]
        gpus[gid] = GpuSnapshot(
            power_w=state.power_w,
            power_limit_w=act.limit_w,
            temperature_c=state.temperature_c,
            level=0.0 if act.fault else cmd.level,
            work_rate=state.work_rate,
            target_w=cmd.target_w,
            regime=cmd.regime,
            limit_control=act.limit_control,
            workload=workloads[gid],
            fault=act.fault,
            effective_level=act.level,
            limit_mismatches=act.limit_mismatches,
            level_mismatches=act.level_mismatches,
            steerable=act.steerable,
            model=(models or {}).get(gid),
        )
    all_extra = dict(extra)
    if metered_gpus:
        all_extra["metered_gpus"] = list(metered_gpus)
    return NodeSnapshot(
        mode=mode,
        failsafe=out.failsafe,
        max_power_w=max_power_w,
        zones=MappingProxyType(zones),
        gpus=MappingProxyType(gpus),
        counters=totals,
        bad_payloads=bad_payloads,
        rejected_commands=rejected_commands,
        metered_w=MappingProxyType(dict(metered_w)),
        extra=MappingProxyType(all_extra),
    )


def shown_targets(out: NodeOutput, zones: Mapping[str, ZoneInputs]) -> NodeOutput:
    """The zones as a person sees them: their targets, not what the GPUs' loop aimed at (the plan's
    room, the cascade's push, boost)."""
    shown = {}
    for name, z in out.zones.items():
        zin = zones.get(name)
        target_c = zin.setpoint.value if zin is not None and zin.setpoint is not None else None
        shown[name] = z if z.setpoint_c == target_c else z._replace(setpoint_c=target_c)
    return out._replace(zones=shown)


class StatePart(Protocol):
    """A part of the node that adds a block to the state (the batches, the planner, …)."""

    def state(self) -> dict[str, Any]: ...


def node_snapshot(
    out: NodeOutput,
    *,
    cfg: Config,
    settings: NodeSettings,
    store: ReadingStore,
    states: Mapping[str, GpuState],
    actuators: Mapping[str, GpuActuator],
    totals: Totals,
    capacity_w: float,
    metered_w: Mapping[str, float],
    rejected_commands: int,
    parts: Iterable[StatePart | None],
    extra: Mapping[str, Any],
    models: Mapping[str, str] | None = None,
) -> NodeSnapshot:
    """The service's tick as a snapshot: the readings' windows, the GPUs' actuation, the totals, each
    part's state block, and ``extra``."""
    blocks = dict(extra)
    for part in parts:
        blocks |= part.state() if part is not None else {}
    windows_open = {name: (bool(w.value) if (w := store.get(name, "window")) else None) for name in out.zones}
    now_s = store.now_s()
    windows = {name: store.window(name, now_s) for name in out.zones}
    starved = any(  # heat is wanted in a zone, and none of its GPUs has work to make it with
        out.zones[z.name].demand_w > 0 and not any(actuators[g].workload.has_work() for g in z.gpus) for z in cfg.zones
    )
    updated = datetime.now(UTC).isoformat(timespec="seconds")
    return build_snapshot(
        out,
        mode=settings.mode,
        zone_modes=dict(settings.zone_modes),
        windows_open=windows_open,
        windows=windows,
        states=states,
        actuation={gid: a.status() for gid, a in actuators.items()},
        workloads={gid: a.workload.status() for gid, a in actuators.items()},
        models=models,
        totals=totals,
        max_power_w=settings.max_power_w if settings.max_power_w is not None else capacity_w,
        metered_w=metered_w,
        metered_gpus=[gid for zone in cfg.zones if zone.name in metered_w for gid in zone.gpus],
        bad_payloads=store.bad_payloads,
        rejected_commands=rejected_commands,
        extra={"updated": updated, "work_starved": starved, **blocks},
    )
