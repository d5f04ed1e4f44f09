"""The service: starts, loops and stops. The parts it wires live in modules of their own.

- ``actuation``: each GPU and its workload, commanded and read back
- ``control.core``: zones' demands and GPUs' commands, safety last
- ``accounting``: energy, heat reused, work; ``persistence``: what survives a restart
- ``snapshots``: the tick's immutable value for every output; ``publish.*``: MQTT, InfluxDB

Threads: the control thread runs ``run``/``tick`` and owns every decision and every mutable
part here. Network threads (paho, the Home Assistant poller) only put readings into the
``ReadingStore`` and commands into the ``CommandInbox``, and read immutable snapshots.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import signal
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from types import FrameType
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from heatctl.accounting import Counters, EnergyMeter, heat_wanted
from heatctl.actuation import GpuActuator, Observation
from heatctl.batch.queue import work_for_plan
from heatctl.clock import Clock, RealClock, local_minute, local_zone
from heatctl.commands import (
    CommandInbox,
    SetMaxPower,
    SetMode,
    SetPreset,
    SetSetpoint,
    SetZoneMode,
    bind_commands,
)
from heatctl.config import Config, GpuConfig, OpenAIWorkloadConfig
from heatctl.control.core import GpuState, NodeController, NodeOutput
from heatctl.control.policy import TickDecision, TickInputs, TickPolicy
from heatctl.control.safety import ZoneInputs, fresh
from heatctl.errors import ConfigError, HeatctlError
from heatctl.gpu.base import Gpu
from heatctl.gpu.registry import open_gpu
from heatctl.mqtt_link import MqttLink
from heatctl.persistence import SavedState, ServiceState
from heatctl.prices import known_prices
from heatctl.publish.mqtt_outputs import MqttOutputs
from heatctl.publish.mqtt_state import NodeSnapshot
from heatctl.snapshots import build_snapshot
from heatctl.sources.mqtt import ask_for_readings, bind_mqtt_sources, read_requests, zone_sources
from heatctl.sources.store import ReadingStore
from heatctl.transitions import Transitions
from heatctl.workloads.base import Workload
from heatctl.workloads.registry import WorkloadContext, open_workload

if TYPE_CHECKING:
    from heatctl.batch.api import BatchApiServer
    from heatctl.batch.queue import BatchQueue
    from heatctl.mainheat.steer import Held, ZoneMainHeating
    from heatctl.planner.node import NodePlanner
    from heatctl.sources.homeassistant import HomeAssistantPoller

_LOGGER = logging.getLogger(__name__)
PERSIST_EVERY_S = 300.0
MAX_FAILED_TICKS = 5


class Sink(Protocol):
    """An output fed once per tick (InfluxDB); must never block the control thread."""

    def write(self, snap: NodeSnapshot, now_s: float) -> None: ...

    def stats(self) -> dict[str, Any]: ...

    def close(self) -> None: ...


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
        wall_fn: Callable[[], float] = time.time,
    ) -> None:
        self.cfg = cfg
        self._wall_fn = wall_fn  # epoch seconds: the time of day (quiet hours, tariff periods)
        self._on_tick = on_tick
        self.clock: Clock = clock or RealClock()
        self.state_dir = cfg.resolved_state_dir()
        self._saved = ServiceState(self.state_dir, (z.name for z in cfg.zones))
        self.inbox = CommandInbox()
        self.store = ReadingStore(cfg.zones, self.clock, on_fresh=self.inbox.wake.set)
        self.stop_event = threading.Event()
        self._given_gpus = gpus or {}
        self.actuators: dict[str, GpuActuator] = {}
        self._meters: dict[str, EnergyMeter] = {}
        self.sinks: list[Sink] = list(sinks or [])
        self.link: MqttLink | None = None
        self.outputs: MqttOutputs | None = None
        self.poller: HomeAssistantPoller | None = None
        self.batches: BatchQueue | None = None
        self.main: dict[str, ZoneMainHeating] = {}  # zone → its main heating, when heatctl steers one
        self._held: dict[str, Held] = {}
        self.batch_api: BatchApiServer | None = None
        self.planner: NodePlanner | None = None
        self.controller: NodeController | None = None
        self.snapshot: NodeSnapshot | None = None
        self.mode: str = cfg.mode
        self.zone_modes = {z.name: "heat" for z in cfg.zones}
        self._zone_of = {gid: z.name for z in cfg.zones for gid in z.gpus}
        self.max_power_w: float | None = cfg.max_power_w  # the config's, or what a person commanded
        self._commanded_max_w: float | None = None  # kept across restarts while the config's stays the same
        self.state_problem: str | None = None  # state.json could not be trusted at start
        self.policy: TickPolicy | None = None  # every decision of a tick (after start)
        self._decision: TickDecision | None = None  # the last tick's
        self.counters = Counters()
        self._capacity_w = 0.0
        self._transitions = Transitions(cfg.zones, self.store)
        self._last_tick_s: float | None = None
        self._last_persist_s = 0.0
        self.ticks = 0

    # --- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        """Open GPUs and workloads, restore persisted state, connect MQTT and outputs."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        if self.cfg.batch_api is not None:
            self._open_batches()
        for gcfg in self.cfg.gpus:
            self.actuators[gcfg.id] = GpuActuator(
                gcfg, open_gpu=self._gpu_opener(gcfg), open_workload=self._workload_opener(gcfg), time_fn=self.clock
            )
            self._meters[gcfg.id] = EnergyMeter()
        caps = {gid: a.caps() for gid, a in self.actuators.items()}
        self.controller = NodeController(self.cfg, caps, time_fn=self.clock)
        self._capacity_w = self.node_capacity_w  # read by the network thread (command ranges): one float
        self._restore(self._saved.load())
        for gid, act in self.actuators.items():
            if not act.status().steerable:
                _LOGGER.warning(
                    "gpu %s: heatctl can neither set its power limit nor pause its workload (type none): "
                    "it cannot take heat away from this GPU",
                    gid,
                )
            act.workload.start()
        if self.cfg.mqtt is not None:
            self.link = link = MqttLink(self.cfg.mqtt, self.cfg.node_id)
            bind_mqtt_sources(self.cfg, self.link, self.store)
            requests = read_requests(self.cfg)
            if requests:
                self.link.on_connect(lambda: ask_for_readings(link, requests))
            bind_commands(self.cfg, self.link, self.inbox, lambda: self._capacity_w)
            self.outputs = MqttOutputs(self.cfg, self.link, state_dir=self.state_dir, node_capacity_w=self._capacity_w)
            if self.cfg.planner is not None:
                self._open_planner()  # its forecast topics are subscribed on connect
            self.link.start()
        elif any(src.topic for z in self.cfg.zones for _, src in zone_sources(z)):
            _LOGGER.warning("sources read MQTT topics but there is no 'mqtt:' section: they will never report")
        self._open_main_heating()
        if self.cfg.planner is not None and self.planner is None:
            self._open_planner()
        if self.cfg.homeassistant is not None:
            from heatctl.sources.homeassistant import HomeAssistantPoller

            self.poller = HomeAssistantPoller(self.cfg, self.store, wall_fn=self._wall_fn)
            self.poller.start()
        self.policy = TickPolicy(
            self.cfg,
            self.controller,
            cascades={name: m.cascade for name, m in self.main.items()},
            planner=self.planner,
            work=self.batches,
            runners=self._runners(),
            time_fn=self.clock,
        )
        if self.cfg.influxdb is not None:
            from heatctl.publish.influx import InfluxSink

            self.sinks.append(InfluxSink(self.cfg.influxdb, self.cfg.node_id, state_dir=self.state_dir))

    def _open_batches(self) -> None:
        """The Batch API's store and queue (before the workloads that take from it), and its server."""
        from heatctl.batch.api import BatchApi, BatchApiServer
        from heatctl.batch.queue import BatchQueue
        from heatctl.batch.store import BatchStore

        api_cfg = self.cfg.batch_api
        assert api_cfg is not None
        runners = [g.workload for g in self.cfg.gpus if isinstance(g.workload, OpenAIWorkloadConfig)]
        store = BatchStore(self.state_dir / "batch")
        self.batches = BatchQueue(store, api_cfg, slots=sum(w.max_concurrency for w in runners))
        self.batches.start()
        upstream = runners[0]
        api = BatchApi(
            api_cfg,
            store,
            self.batches,
            upstream=upstream.url,
            upstream_key=upstream.api_key.get_secret_value() if upstream.api_key else None,
        )
        self.batch_api = BatchApiServer(api, api_cfg.host, api_cfg.port)
        self.batch_api.start()

    def _open_planner(self) -> None:
        """Each zone's planner and the forecasts; the planner's thread starts last (it reads the link)."""
        from heatctl.planner.node import NodePlanner

        assert self.controller is not None
        caps = {gid: a.model.caps for gid, a in self.controller.allocators.items()}
        capacity = {z.name: sum(caps[g].max_limit_w for g in z.gpus) for z in self.cfg.zones}
        floor = {z.name: sum(caps[g].idle_w for g in z.gpus) for z in self.cfg.zones}
        link, mqtt_cfg = self.link, self.cfg.mqtt
        plan_topic = f"{mqtt_cfg.base_topic}/{self.cfg.node_id}/plan" if mqtt_cfg is not None else None

        def on_plan(document: dict[str, Any]) -> None:
            if link is not None and plan_topic is not None:
                link.publish(plan_topic, json.dumps(document), retain=True, qos=1)

        factory = None
        if self.cfg.homeassistant is not None:
            from heatctl.sources.homeassistant import make_client

            factory = make_client
        self.planner = NodePlanner(
            self.cfg,
            capacity,
            floor,
            self.state_dir,
            on_plan=on_plan,
            ha_client_factory=factory,
            work_fn=self._work_for_plan,
            max_power_fn=lambda: self.max_power_w,
        )
        if link is not None:
            for topic, handler in self.planner.topic_handlers().items():
                link.subscribe(topic, handler)
        self.planner.start()

    def _open_main_heating(self) -> None:
        """Each zone's main heating, with what a previous run kept of the user's setpoint."""
        from heatctl.mainheat.devices import open_device
        from heatctl.mainheat.steer import Held, ZoneMainHeating, load_held

        zones = [z for z in self.cfg.zones if z.main_heating is not None]
        if not zones:
            return
        self._held = load_held(self.state_dir)
        link = self.link

        def publish(topic: str, payload: str) -> bool:
            if link is None:
                return False
            link.publish(topic, payload, qos=1)
            return True

        def publish_wait(topic: str, payload: str) -> bool:
            return link is not None and link.publish_wait(topic, payload)

        for zone in zones:
            assert zone.main_heating is not None
            held = self._held.setdefault(zone.name, Held())
            device = open_device(zone.main_heating, self.cfg, publish, publish_wait)
            self.main[zone.name] = ZoneMainHeating(zone, device, held, on_change=self._save_held, time_fn=self.clock)

    def _save_held(self) -> None:
        from heatctl.mainheat.steer import save_held

        try:
            save_held(self.state_dir, self._held)
        except OSError as exc:
            _LOGGER.error("cannot keep the main heating's state in %s: %s", self.state_dir, exc)

    def _gpu_opener(self, gcfg: GpuConfig) -> Callable[[], Gpu]:
        given = self._given_gpus.get(gcfg.id)
        return lambda: given or open_gpu(gcfg, state_dir=self.state_dir, time_fn=self.clock)

    def _workload_opener(self, gcfg: GpuConfig) -> Callable[[Gpu | None], Workload]:
        ctx = WorkloadContext(state_dir=self.state_dir, time_fn=self.clock, batches=self.batches)
        return lambda gpu: open_workload(gcfg, gpu, ctx)

    @property
    def node_capacity_w(self) -> float:
        assert self.controller is not None  # after start()
        return sum(a.model.caps.max_limit_w for a in self.controller.allocators.values())

    def run(self) -> None:
        """The control loop, until ``stop_event``; a command wakes it at once."""
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
                    for act in self.actuators.values():
                        act.idle()
                    if failed >= MAX_FAILED_TICKS:
                        raise
                if now_s >= next_tick_s:
                    next_tick_s = max(next_tick_s + interval_s, now_s)
            self.clock.wait(self.inbox.wake, next_tick_s - self.clock())

    def shutdown(self) -> None:
        """Every exit path: main heating given back, workloads to their exit state, GPUs to their limits, offline."""
        self.give_back_main_heating()
        for act in self.actuators.values():
            act.stop()
        if self.batch_api is not None:
            self.batch_api.stop()
        if self.planner is not None:
            self.planner.stop()
        if self.batches is not None:
            self.batches.stop()
            self.batches.store.close()
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
        assert self.controller is not None and self.policy is not None  # after start()
        self._apply_commands()
        now_s = self.clock()
        dt_s = 0.0 if self._last_tick_s is None else now_s - self._last_tick_s
        self._last_tick_s = now_s
        zones = self._main_targets({z: self.store.zone_inputs(z, self.zone_modes[z]) for z in self.zone_modes})
        metered_w = self._metered_w(now_s)
        observed = {gid: act.observe(metered=self._zone_of[gid] in metered_w) for gid, act in self.actuators.items()}
        if any(act.just_opened for act in self.actuators.values()):
            for gid, act in self.actuators.items():
                if act.just_opened:
                    self.controller.set_caps(gid, act.caps())
            self._capacity_w = self.node_capacity_w
            if self.outputs is not None:
                self.outputs.update_capacity(self._capacity_w)
        states = {
            gid: GpuState(
                power_w=o.reading.power_w,
                temperature_c=o.reading.temperature_c,
                work_rate=o.work_rate,
                fault=o.fault,
            )
            for gid, o in observed.items()
        }
        for gid, obs in observed.items():
            self._account(gid, obs, dt_s, zones[self._zone_of[gid]])
        decision = self.policy.decide(self._tick_inputs(zones, states, metered_w))
        self._decision = decision
        for name, main_cmd in decision.main.items():
            self.main[name].apply(main_cmd)
        out = decision.node
        if self.batches is not None:
            self.batches.set_heat_wanted(any(z.demand_w > 0 for z in out.zones.values()))
        for gid, cmd in out.gpus.items():
            self.actuators[gid].apply(cmd)
        self._transitions.update(now_s, out.zones)
        snap = self._snapshot(out, states, metered_w)
        self.snapshot = snap
        if self.outputs is not None:
            self.outputs.publish_state(snap)
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

    def _tick_inputs(
        self, zones: dict[str, ZoneInputs], states: dict[str, GpuState], metered_w: dict[str, float]
    ) -> TickInputs:
        """What the policy decides from: the readings, the GPUs, the commanded cap, the time of day."""
        heat_w: dict[str, float | None] = {}
        for zone in self.cfg.zones:
            gpu_w = [states[g].power_w for g in zone.gpus if g in states]
            measured = [w for w in gpu_w if w is not None]
            heat_w[zone.name] = metered_w.get(zone.name, sum(measured) if len(measured) == len(gpu_w) else None)
        return TickInputs(
            mode=self.mode,
            zones=zones,
            gpus=states,
            local_minute=local_minute(self._wall_fn()),
            max_power_w=self.max_power_w,
            heat_w=heat_w,
            price_per_kwh=self._price_now(),
            user_setpoint_c={n: m.held.user_setpoint_c for n, m in self.main.items()},
            overridden=frozenset(z for z in self.zone_modes if self.store.has_override(z)),
        )

    def _price_now(self) -> float | None:
        """Electricity now (a fixed or time-of-use tariff, else the price forecast), for ``prefer: cheapest``."""
        tariff = self.cfg.tariff
        if tariff is None or not self.main:
            return None
        known = known_prices(tariff, np.array([self._wall_fn()]), local_zone())
        if known is not None:
            return float(known[0])
        return self.planner.price_now() if self.planner is not None else None

    def give_back_main_heating(self) -> None:
        """The user's own setpoint to every main heating heatctl steered; what failed stays for restore."""
        for name, main in self.main.items():
            problem = main.give_back_now()
            if problem is not None:
                _LOGGER.error("zone %s: could not give the main heating back (%s): run heatctl restore", name, problem)
            main.device.close()

    def _main_targets(self, zones: dict[str, ZoneInputs]) -> dict[str, ZoneInputs]:
        """Zones whose thermostat is the main heating itself: the user's setpoint is the target."""
        out = dict(zones)
        for name, main in self.main.items():
            zin = zones[name]
            main.observe(self.store.get(name, "main_setpoint"), zin.setpoint)
            out[name] = dataclasses.replace(zin, setpoint=main.target(zin.setpoint))
        return out

    def _apply_commands(self) -> None:
        for cmd in self.inbox.drain():
            _LOGGER.info("command: %s", cmd)
            match cmd:
                case SetMode(mode):
                    self.mode = mode
                case SetZoneMode(zone, mode) if zone in self.zone_modes:
                    self.zone_modes[zone] = mode
                    if mode == "heat" and self.mode != "heat":
                        _LOGGER.info("zone %s asked to heat while heatctl was off: heatctl on", zone)
                        self.mode = "heat"
                case SetMaxPower(watts):
                    self.max_power_w = self._commanded_max_w = watts
                case SetSetpoint(zone, setpoint_c):
                    self.store.override_setpoint(zone, setpoint_c)
                    if self.policy is not None:
                        self.policy.presets[zone] = "none"
                case SetPreset(zone, preset) if zone in self.zone_modes:
                    self._set_preset(zone, preset)
            self._persist()

    def _runners(self) -> list[str]:
        """The GPUs that run batch work (openai workload)."""
        return [g.id for g in self.cfg.gpus if isinstance(g.workload, OpenAIWorkloadConfig) and g.id in self._zone_of]

    def _work_for_plan(self, zone_name: str) -> tuple[tuple[float, float], ...]:
        """The batch work due, as heat the zone's GPUs make running it flat out: (due by, J above idle) each."""
        if self.batches is None or self.controller is None or self.policy is None:
            return ()
        runners = self._runners()
        allocators = self.controller.allocators
        models = [allocators[g].model for g in runners if self._zone_of[g] == zone_name and g in allocators]
        heat_w = sum(m.caps.max_limit_w - m.caps.idle_w for m in models)  # the zone's runners flat out
        if heat_w <= 0:
            return ()
        return work_for_plan(
            self.batches.open_work(), full_speedup=self.policy.full_speedup(runners), full_heat_w=heat_w
        )

    def _work_starved(self, out: NodeOutput) -> bool:
        """Heat is wanted in a zone, and none of its GPUs has work to make it with."""
        return any(
            out.zones[zone.name].demand_w > 0 and not any(self.actuators[g].workload.has_work() for g in zone.gpus)
            for zone in self.cfg.zones
        )

    def _set_preset(self, zone: str, preset: str) -> None:
        """comfort/eco/away: that target until the thermostat's own setpoint changes; boost: flat out until warm."""
        assert self.policy is not None
        targets = next(z.presets for z in self.cfg.zones if z.name == zone)
        if preset in targets:
            self.store.override_setpoint(zone, targets[preset])
        elif preset == "none":
            self.store.clear_override(zone)
        self.policy.set_preset(zone, preset)

    def _metered_w(self, now_s: float) -> dict[str, float]:
        """Zone → wall-plug meter watts, for zones whose meter reports fresh readings."""
        metered = {}
        for zone in self.cfg.zones:
            meter = self.store.get(zone.name, "power")
            if (
                zone.power_meter is not None
                and meter is not None
                and fresh(meter, now_s, zone.power_meter.stale_after_s)
            ):
                metered[zone.name] = meter.value
        return metered

    def _account(self, gid: str, obs: Observation, dt_s: float, zone: ZoneInputs) -> None:
        """Energy since the last tick; the part above idle counts as reused if the room wanted heat."""
        r = obs.reading
        assert self.controller is not None  # after start()
        idle_w = self.controller.allocators[gid].model.caps.idle_w
        energy_j = self._meters[gid].joules(r.energy_j, r.power_w, dt_s)
        work = (obs.work_rate or 0.0) * dt_s
        plan_target_c = self.planner.warming_c(self._zone_of[gid]) if self.planner is not None else None
        wanted = heat_wanted(zone, plan_target_c)  # the heat since the last tick was made for its target
        self.counters.add(gid, energy_j, energy_j - idle_w * dt_s, wanted, work)
        if self.batches is not None:
            self.batches.charge(gid, energy_j, wanted)

    def _snapshot(self, out: NodeOutput, states: dict[str, GpuState], metered_w: dict[str, float]) -> NodeSnapshot:
        windows = {}
        for name in out.zones:
            window = self.store.get(name, "window")
            windows[name] = bool(window.value) if window else None
        metered_gpus = [gid for zone in self.cfg.zones if zone.name in metered_w for gid in zone.gpus]
        return build_snapshot(
            out,
            mode=self.mode,
            zone_modes=dict(self.zone_modes),
            windows_open=windows,
            states=states,
            actuation={gid: a.status() for gid, a in self.actuators.items()},
            workloads={gid: a.workload.status() for gid, a in self.actuators.items()},
            totals=self.counters.snapshot(),
            max_power_w=self.max_power_w if self.max_power_w is not None else self.node_capacity_w,
            metered_w=metered_w,
            metered_gpus=metered_gpus,
            bad_payloads=self.store.bad_payloads,
            rejected_commands=self.inbox.rejected,
            extra={"updated": datetime.now(UTC).isoformat(timespec="seconds"), "work_starved": self._work_starved(out)}
            | ({"influx": self.sinks[0].stats()} if self.sinks else {})
            | (self._batch_state() if self.batches is not None else {})
            | ({"main_heating": {n: m.status(self.clock()) for n, m in self.main.items()}} if self.main else {})
            | {
                "presets": dict(self.policy.presets) if self.policy is not None else {},
                "quiet": self._decision is not None and self._decision.quiet,
            }
            | ({"planner": self.planner.state()} if self.planner is not None else {})
            | ({"state_damaged": self.state_problem} if self.state_problem else {}),
        )

    def _batch_state(self) -> dict[str, Any]:
        assert self.batches is not None
        api = self.batch_api
        listening = f"http://{api.host}:{api.port}/v1" if api is not None and api.error is None else None
        return {
            "batches": self.batches.summary().to_json(),
            "batches_finished": self.batches.drain_finished(),
            "batch_api": listening or f"error: {api.error if api is not None else 'not started'}",
        }

    def announce(self) -> None:
        """Publish Home Assistant discovery (also done on every connect)."""
        if self.outputs is not None:
            self.outputs.announce()

    # --- persistence --------------------------------------------------------------------

    def _persist(self) -> None:
        integrals = {n: z.integral_w for n, z in self.controller.zones.items()} if self.controller else {}
        self._saved.save(
            SavedState(
                mode=self.mode,
                zone_modes=dict(self.zone_modes),
                max_power_w=self._commanded_max_w,
                config_max_power_w=self.cfg.max_power_w,
                totals=self.counters.snapshot(),
                integrals_w=integrals,
            )
        )

    def _restore(self, saved: SavedState) -> None:
        assert self.controller is not None  # after start()
        self.mode = saved.mode or self.mode
        self.zone_modes.update(saved.zone_modes)
        self.state_problem = saved.damaged
        if saved.max_power_w is not None and saved.config_max_power_w == self.cfg.max_power_w:
            self.max_power_w = self._commanded_max_w = saved.max_power_w
        elif saved.max_power_w is not None:
            _LOGGER.info(
                "max_power_w is %s in the config now (was %s): it replaces the %.0f W set by command",
                self.cfg.max_power_w,
                saved.config_max_power_w,
                saved.max_power_w,
            )
        self.counters = Counters(saved.totals)
        for name, integral_w in saved.integrals_w.items():
            self.controller.zones[name].restore_integral(integral_w)
        if saved.mode is not None:
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
    for gpu in cfg.gpus:
        if gpu.backend == "sim":
            _LOGGER.warning("gpu %s is simulated (backend: sim): heatctl heats nothing on this machine", gpu.id)
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
        _LOGGER.info("stopped: power limits restored, workloads left in their exit state")
    return 0


def _status_line(snap: NodeSnapshot) -> str:
    """One line for systemctl status."""
    heat = f"{snap.heat_w:.0f} W"
    return f"{snap.mode}, heat {heat}" + (f", FAIL-SAFE: {snap.failsafe}" if snap.failsafe else "")
