"""The service: wires sources, controller, GPUs, workloads and outputs; the loop; shutdown."""

from __future__ import annotations

import json
import logging
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType
from typing import TYPE_CHECKING, Any, Protocol

from heatctl.accounting import Counters
from heatctl.clock import Clock, RealClock
from heatctl.commands import CommandInbox, bind_commands
from heatctl.config import Config
from heatctl.control.core import GpuState, NodeController, NodeInputs, NodeOutput
from heatctl.control.efficiency import EfficiencyModel, GpuCaps
from heatctl.control.safety import ZoneInputs, fresh
from heatctl.errors import BackendError, ConfigError, HeatctlError
from heatctl.gpu.base import Gpu, GpuReading
from heatctl.gpu.registry import open_gpu, open_workload
from heatctl.mqtt_link import MqttLink
from heatctl.publish.discovery import discovery_messages, removal_topics
from heatctl.publish.mqtt_state import GpuSnapshot, NodeSnapshot, ZoneSnapshot, state_json
from heatctl.sources.mqtt import bind_mqtt_sources, zone_sources
from heatctl.sources.store import ReadingStore
from heatctl.state import StateFile
from heatctl.workloads.base import Workload

if TYPE_CHECKING:
    from heatctl.sources.homeassistant import HomeAssistantPoller

_LOGGER = logging.getLogger(__name__)
PERSIST_EVERY_S = 300.0
MAX_FAILED_TICKS = 5


class Sink(Protocol):
    """An output fed once per tick (InfluxDB); must never block the control thread."""

    def write(self, snap: NodeSnapshot, now_s: float) -> None: ...

    def stats(self) -> dict[str, Any]: ...

    def close(self) -> None: ...


@dataclass
class GpuUnit:
    """One GPU with its workload, as the service drives it."""

    gpu: Gpu
    workload: Workload
    caps: GpuCaps
    applied_limit_w: float | None = None
    last_energy_j: float | None = None
    lost: bool = False


class Service:
    """Everything ``heatctl run`` does, with the clock and the parts injectable for tests and the demo."""

    def __init__(
        self,
        cfg: Config,
        *,
        clock: Clock | None = None,
        gpus: dict[str, Gpu] | None = None,
        sinks: list[Sink] | None = None,
        on_tick: Callable[[NodeSnapshot], None] | None = None,
    ) -> None:
        self.cfg = cfg
        self._on_tick = on_tick
        self.clock: Clock = clock or RealClock()
        self.state_dir = cfg.resolved_state_dir()
        self._state_file = StateFile(self.state_dir / "state.json")
        self._discovery_file = StateFile(self.state_dir / "discovery.json")
        self.store = ReadingStore(cfg.zones, self.clock)
        self.inbox = CommandInbox()
        self.stop_event = threading.Event()
        self._given_gpus = gpus or {}
        self.units: dict[str, GpuUnit] = {}
        self.sinks: list[Sink] = list(sinks or [])
        self.link: MqttLink | None = None
        self.poller: HomeAssistantPoller | None = None
        self.controller: NodeController | None = None
        self.snapshot: NodeSnapshot | None = None
        self.mode: str = cfg.mode
        self.zone_modes = {z.name: "heat" for z in cfg.zones}
        self._zone_of = {gid: z.name for z in cfg.zones for gid in z.gpus}
        self.max_power_w: float | None = cfg.max_power_w
        self.counters = Counters()
        self._last_tick_s: float | None = None
        self._last_persist_s = 0.0
        self._publish_lock = threading.Lock()
        self.ticks = 0

    # --- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        """Open GPUs and workloads, restore persisted state, connect MQTT and outputs."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        saved = self._state_file.load()
        for gcfg in self.cfg.gpus:
            gpu = self._given_gpus.get(gcfg.id) or open_gpu(gcfg, state_dir=self.state_dir, time_fn=self.clock)
            workload = open_workload(gcfg, gpu, state_dir=self.state_dir, time_fn=self.clock)
            self.units[gcfg.id] = GpuUnit(gpu=gpu, workload=workload, caps=self._caps(gcfg.id, gpu))
        models = {gid: EfficiencyModel(u.caps, self.cfg.gpu(gid).work_at_w) for gid, u in self.units.items()}
        self.controller = NodeController(
            self.cfg, {gid: u.caps for gid, u in self.units.items()}, models=models, time_fn=self.clock
        )
        self._restore(saved)
        for unit in self.units.values():
            unit.workload.start()
        if self.cfg.mqtt is not None:
            self.link = MqttLink(self.cfg.mqtt, self.cfg.node_id)
            bind_mqtt_sources(self.cfg, self.link, self.store)
            bind_commands(self.cfg, self.link, self.inbox, self.node_capacity_w)
            if self.cfg.mqtt.discovery:
                self.link.subscribe(f"{self.cfg.mqtt.discovery_prefix}/status", self._on_ha_status)
                self.link.on_connect(self.announce)
            self.link.on_connect(self._publish_last_state)
            self.link.start()
        elif any(src.topic for z in self.cfg.zones for _, src in zone_sources(z)):
            _LOGGER.warning("sources read MQTT topics but there is no 'mqtt:' section: they will never report")
        if self.cfg.homeassistant is not None:
            from heatctl.sources.homeassistant import HomeAssistantPoller

            self.poller = HomeAssistantPoller(self.cfg, self.store)
            self.poller.start()
        if self.cfg.influxdb is not None:
            from heatctl.publish.influx import InfluxSink

            self.sinks.append(InfluxSink(self.cfg.influxdb, self.cfg.node_id, state_dir=self.state_dir))

    @property
    def node_capacity_w(self) -> float:
        return sum(u.caps.max_limit_w for u in self.units.values())

    def _caps(self, gpu_id: str, gpu: Gpu) -> GpuCaps:
        gcfg = self.cfg.gpu(gpu_id)
        low_w, high_w = gpu.limits_w()
        if gcfg.max_power_w is not None:
            high_w = max(min(high_w, gcfg.max_power_w), low_w)
        if not gpu.can_set_limit:
            # No cap control: heat is steered by duty-cycling the workload at the fixed limit.
            fixed_w = gpu.read().power_limit_w or high_w
            low_w = high_w = min(fixed_w, high_w)
        idle_w = gcfg.idle_w if gcfg.idle_w is not None else gpu.idle_w()
        return GpuCaps(idle_w=min(idle_w, low_w * 0.9), min_limit_w=low_w, max_limit_w=high_w)

    def run(self) -> None:
        """The control loop, until ``stop_event``; a command wakes it at once."""
        assert self.controller is not None
        interval_s = min(z.control.interval_s for z in self.cfg.zones)
        next_tick_s = self.clock()
        failed = 0
        while not self.stop_event.is_set():
            now_s = self.clock()
            if now_s >= next_tick_s or self.inbox.wake.is_set():
                self.inbox.wake.clear()
                try:
                    self.tick()
                    failed = 0
                except Exception:
                    # A bug must not leave the GPU heating: idle everything, retry, give up after a few.
                    failed += 1
                    _LOGGER.exception("control tick failed (%d in a row); GPUs to idle", failed)
                    self._idle_all()
                    if failed >= MAX_FAILED_TICKS:
                        raise
                if now_s >= next_tick_s:
                    next_tick_s = max(next_tick_s + interval_s, now_s)
            self.clock.wait(self.inbox.wake, next_tick_s - self.clock())

    def _idle_all(self) -> None:
        for gid, unit in self.units.items():
            try:
                unit.workload.set_level(0.0)
                if unit.gpu.can_set_limit:
                    unit.applied_limit_w = unit.gpu.set_power_limit(unit.caps.min_limit_w)
            except Exception:
                _LOGGER.exception("gpu %s: cannot idle it", gid)

    def shutdown(self) -> None:
        """Every exit path: workloads to their exit state, GPUs to their original limits, offline."""
        for gid, unit in self.units.items():
            try:
                unit.workload.stop()
            except Exception:
                _LOGGER.exception("gpu %s: stopping the workload failed", gid)
            try:
                unit.gpu.restore()
            except Exception:
                _LOGGER.exception("gpu %s: restoring the power limit failed", gid)
        self._persist()
        if self.poller is not None:
            self.poller.stop()
        for sink in self.sinks:
            try:
                sink.close()
            except Exception:
                _LOGGER.exception("closing an output failed")
        if self.link is not None:
            self.link.stop()

    # --- one tick -----------------------------------------------------------------------

    def tick(self) -> NodeSnapshot:
        assert self.controller is not None
        self._apply_commands()
        now_s = self.clock()
        dt_s = 0.0 if self._last_tick_s is None else now_s - self._last_tick_s
        self._last_tick_s = now_s
        zones = {z: self.store.zone_inputs(z, self.zone_modes[z]) for z in self.zone_modes}
        states = {gid: self._read(gid, unit, dt_s, zones[self._zone_of[gid]]) for gid, unit in self.units.items()}
        inputs = NodeInputs(
            mode=self.mode,
            zones=zones,
            gpus=states,
            max_power_w=self.max_power_w,
        )
        out = self.controller.step(inputs)
        self._apply(out)
        snap = self._snapshot(out, states)
        self.snapshot = snap
        self._publish(snap)
        for sink in self.sinks:
            try:
                sink.write(snap, now_s)
            except Exception:  # an output must never stop control
                _LOGGER.exception("output failed")
        if self._on_tick is not None:
            self._on_tick(snap)
        if now_s - self._last_persist_s >= PERSIST_EVERY_S:
            self._persist()
            self._last_persist_s = now_s
        self.ticks += 1
        return snap

    def _apply_commands(self) -> None:
        for cmd in self.inbox.drain():
            _LOGGER.info("command: %s %s%s", cmd.kind, cmd.value, f" (zone {cmd.zone})" if cmd.zone else "")
            if cmd.kind == "mode":
                self.mode = str(cmd.value)
            elif cmd.kind == "zone_mode" and cmd.zone in self.zone_modes:
                self.zone_modes[cmd.zone] = str(cmd.value)
            elif cmd.kind == "max_power_w":
                self.max_power_w = float(cmd.value) if cmd.value is not None else None
            elif cmd.kind == "setpoint" and cmd.zone is not None:
                self.store.override_setpoint(cmd.zone, float(cmd.value or 0.0))
            self._persist()

    def _read(self, gid: str, unit: GpuUnit, dt_s: float, zone: ZoneInputs) -> GpuState:
        try:
            reading = unit.gpu.read()
        except BackendError as exc:
            if not unit.lost:
                _LOGGER.error("gpu %s: %s; failing safe and retrying", gid, exc)
            unit.lost = True
            unit.applied_limit_w = None
            return GpuState(lost=True)
        if unit.lost:
            _LOGGER.info("gpu %s is back", gid)
            unit.lost = False
        if reading.lost:
            unit.lost = True
            return GpuState(lost=True)
        work_rate = unit.workload.work_rate()
        wanted = (
            zone.temperature is not None
            and zone.setpoint is not None
            and zone.temperature.value <= zone.setpoint.value + 0.5
        )
        self._account(gid, unit, reading, dt_s, work_rate, wanted=wanted)
        return GpuState(power_w=reading.power_w, temperature_c=reading.temperature_c, work_rate=work_rate)

    def _account(
        self, gid: str, unit: GpuUnit, reading: GpuReading, dt_s: float, work_rate: float | None, *, wanted: bool
    ) -> None:
        """Energy since the last tick (the driver's counter, else power × dt); heat counts as reused if wanted."""
        if reading.energy_j is not None and unit.last_energy_j is not None:
            energy_j = max(reading.energy_j - unit.last_energy_j, 0.0)
        else:
            energy_j = (reading.power_w or 0.0) * dt_s
        unit.last_energy_j = reading.energy_j
        added_j = max(energy_j - unit.caps.idle_w * dt_s, 0.0)
        self.counters.add(gid, energy_j, added_j, wanted, (work_rate or 0.0) * dt_s)

    def _apply(self, out: NodeOutput) -> None:
        for gid, cmd in out.gpus.items():
            unit = self.units[gid]
            if unit.lost:
                continue
            if unit.gpu.can_set_limit and cmd.power_limit_w != unit.applied_limit_w:
                try:
                    unit.applied_limit_w = unit.gpu.set_power_limit(cmd.power_limit_w)
                except BackendError as exc:
                    _LOGGER.error("gpu %s: %s", gid, exc)
            try:
                unit.workload.set_level(cmd.level)
            except HeatctlError as exc:
                _LOGGER.error("gpu %s workload: %s", gid, exc)

    def _snapshot(self, out: NodeOutput, states: dict[str, GpuState]) -> NodeSnapshot:
        zones = {}
        for name, z in out.zones.items():
            window = self.store.get(name, "window")
            zones[name] = ZoneSnapshot(
                temperature_c=z.temperature_c,
                setpoint_c=z.setpoint_c,
                demand_w=z.demand_w,
                mode=self.zone_modes[name],
                failsafe=z.failsafe,
                window_open=bool(window.value) if window else None,
                pid_p=z.demand.p_w,
                pid_i=z.demand.i_w,
                pid_d=z.demand.d_w,
            )
        gpus = {}
        for gid, cmd in out.gpus.items():
            unit, state = self.units[gid], states[gid]
            gpus[gid] = GpuSnapshot(
                power_w=state.power_w,
                power_limit_w=unit.applied_limit_w if unit.applied_limit_w is not None else cmd.power_limit_w,
                temperature_c=state.temperature_c,
                level=cmd.level,
                work_rate=state.work_rate,
                target_w=cmd.target_w,
                regime=cmd.regime,
                limit_control=unit.gpu.can_set_limit,
                workload=unit.workload.status(),
            )
        metered: dict[str, float] = {}
        metered_gpus: list[str] = []
        for zone in self.cfg.zones:
            meter = self.store.get(zone.name, "power")
            if zone.power_meter is not None and fresh(meter, self.clock(), zone.power_meter.stale_after_s):
                assert meter is not None
                metered[zone.name] = meter.value
                metered_gpus += zone.gpus
        extra: dict[str, Any] = {"metered_gpus": metered_gpus} if metered_gpus else {}
        if self.sinks:
            extra["influx"] = self.sinks[0].stats()
        return NodeSnapshot(
            mode=self.mode,
            failsafe=out.failsafe,
            max_power_w=self.max_power_w if self.max_power_w is not None else self.node_capacity_w,
            zones=zones,
            gpus=gpus,
            counters=self.counters,
            bad_payloads=self.store.bad_payloads,
            rejected_commands=self.inbox.rejected,
            metered_w=metered,
            extra=extra,
        )

    # --- MQTT outputs -------------------------------------------------------------------

    def _state_topic(self) -> str:
        assert self.cfg.mqtt is not None
        return f"{self.cfg.mqtt.base_topic}/{self.cfg.node_id}/state"

    def _publish(self, snap: NodeSnapshot) -> None:
        if self.link is not None:
            self.link.publish(self._state_topic(), state_json(snap), retain=True)

    def _publish_last_state(self) -> None:
        # Network thread, after a reconnect: re-send the last state so subscribers see it at once.
        if self.snapshot is not None:
            self._publish(self.snapshot)

    def announce(self) -> None:
        """Publish Home Assistant discovery; remove entities of zones no longer configured."""
        if self.link is None:
            return
        messages = discovery_messages(self.cfg, node_max_w=self.node_capacity_w)
        with self._publish_lock:
            previous = self._discovery_file.load().get("topics", [])
            for topic in removal_topics(list(previous), messages):
                self.link.publish(topic, b"", retain=True, qos=1)
            for topic, payload in messages.items():
                self.link.publish(topic, json.dumps(payload), retain=True, qos=1)
            self._discovery_file.save({"topics": sorted(messages)})
        _LOGGER.info("announced %d Home Assistant entities", len(messages))

    def _on_ha_status(self, topic: str, payload: bytes) -> None:
        # Network thread: Home Assistant restarted; announce again and re-send state.
        if payload.strip().lower() == b"online":
            self.announce()
            self._publish_last_state()

    # --- persistence --------------------------------------------------------------------

    def _persist(self) -> None:
        data: dict[str, Any] = {
            "mode": self.mode,
            "zone_modes": self.zone_modes,
            "max_power_w": self.max_power_w,
            "counters": self.counters.to_json(),
        }
        if self.controller is not None:
            data["integrals_w"] = {n: z.integral_w for n, z in self.controller.zones.items()}
        try:
            self._state_file.save(data)
        except OSError as exc:
            _LOGGER.error("cannot save state to %s: %s", self._state_file.path, exc)

    def _restore(self, saved: dict[str, Any]) -> None:
        assert self.controller is not None
        if saved.get("mode") in ("heat", "off"):
            self.mode = saved["mode"]
        for name, mode in (saved.get("zone_modes") or {}).items():
            if name in self.zone_modes and mode in ("heat", "off"):
                self.zone_modes[name] = mode
        if isinstance(saved.get("max_power_w"), int | float):
            self.max_power_w = float(saved["max_power_w"])
        self.counters = Counters.from_json(saved.get("counters") or {})
        for name, integral in (saved.get("integrals_w") or {}).items():
            if name in self.controller.zones and isinstance(integral, int | float):
                self.controller.zones[name].restore_integral(float(integral))
        if saved:
            _LOGGER.info("restored state: mode %s, energy %.3f kWh", self.mode, self.counters.energy_kwh)


def run_service(cfg: Config, *, on_ready: Callable[[Service], None] | None = None) -> int:
    """``heatctl run``: start, loop until SIGTERM/SIGINT, and always shut down cleanly."""
    from heatctl.systemd import Notifier

    notifier = Notifier()
    service = Service(cfg, on_tick=lambda snap: notifier.watchdog(_status_line(snap)))

    def stop(signum: int, frame: FrameType | None) -> None:
        _LOGGER.info("received %s, stopping", signal.Signals(signum).name)
        service.stop_event.set()
        service.inbox.wake.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        service.start()
        _LOGGER.info(
            "heatctl %s running: %d zone(s), %d gpu(s), state in %s",
            cfg.node_id,
            len(cfg.zones),
            len(cfg.gpus),
            service.state_dir,
        )
        notifier.ready(f"{len(cfg.zones)} zone(s), {len(cfg.gpus)} gpu(s)")
        if on_ready is not None:
            on_ready(service)
        service.run()
    except ConfigError:
        raise
    except HeatctlError as exc:
        _LOGGER.error("%s", exc)
        return 1
    finally:
        notifier.stopping()
        service.shutdown()
    return 0


def _status_line(snap: NodeSnapshot) -> str:
    """One line for systemctl status."""
    heat = f"{snap.heat_w:.0f} W"
    return f"{snap.mode}, heat {heat}" + (f", FAIL-SAFE: {snap.failsafe}" if snap.failsafe else "")
