"""The service: wires the parts, runs the loop, stops. Every decision of a tick is ``control.policy``'s
(the code ``simulate`` runs too); the parts live in modules of their own (``actuation``, ``settings``,
``accounting``, ``snapshots``, ``mainheat.node``, ``batch.node``, ``planner.node``, ``publish``).

Threads: the control thread runs ``run``/``tick`` and owns every decision and every mutable part
here. Network threads (paho, the Home Assistant poller) only put readings into the
``ReadingStore`` and commands into the ``CommandInbox``, and read immutable snapshots.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from heatctl.accounting import Counters, NodeMeters, PriceNow, heat_wanted
from heatctl.actuation import GpuActuator, open_actuators
from heatctl.batch.node import batch_runners
from heatctl.calibrate import calibrations
from heatctl.clock import Clock, RealClock, local_day, local_minute
from heatctl.commands import CommandInbox, bind_commands
from heatctl.config import Config
from heatctl.control.core import GpuState, NodeController, NodeOutput
from heatctl.control.policy import TickDecision, TickInputs, TickPolicy, house_wants, node_cap_w, zones_heat_w
from heatctl.control.safety import ZoneInputs
from heatctl.errors import plain
from heatctl.gpu.base import Gpu
from heatctl.house.node import NodeHouse
from heatctl.locks import state_dir_lock
from heatctl.mainheat.node import NodeMainHeating
from heatctl.money import heat_price_per_kwh, money_state, served_models
from heatctl.mqtt_link import MqttLink
from heatctl.prices import carbon_now, price_now
from heatctl.publish import Sink
from heatctl.publish.mqtt_outputs import MqttOutputs
from heatctl.publish.mqtt_state import NodeSnapshot
from heatctl.settings import NodeSettings
from heatctl.snapshots import node_snapshot, shown_targets
from heatctl.sources.mqtt import FreshnessAsker, bind_mqtt_sources, zone_sources
from heatctl.sources.store import ReadingStore
from heatctl.transitions import Transitions
from heatctl.workloads.registry import WorkloadContext

if TYPE_CHECKING:
    from heatctl.batch.api import BatchApiServer
    from heatctl.batch.node import NodeBatches
    from heatctl.batch.queue import BatchQueue
    from heatctl.house.work import PooledWork
    from heatctl.planner.node import NodePlanner
    from heatctl.sources.homeassistant import HomeAssistantPoller

_LOGGER = logging.getLogger(__name__)
PERSIST_EVERY_S = 300.0
MAX_FAILED_TICKS = 5


class Service:
    """Everything ``heatctl run`` does, with the clocks and the parts injectable for tests and the demo."""

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
        self._wall_fn = wall_fn  # epoch seconds: the time of day (quiet hours, tariff periods), data ages
        self._on_tick = on_tick
        self.clock: Clock = clock or RealClock()
        self.state_dir = cfg.resolved_state_dir()
        self.settings = NodeSettings(cfg, self.state_dir)
        self._instance = state_dir_lock(self.state_dir)
        self.inbox = CommandInbox()
        self.store = ReadingStore(cfg.zones, self.clock, on_fresh=self.inbox.wake.set)
        self.stop_event = threading.Event()
        self._given_gpus = gpus or {}
        self.actuators: dict[str, GpuActuator] = {}
        self.meters = NodeMeters(g.id for g in cfg.gpus)
        self.sinks: list[Sink] = list(sinks or [])
        self.link: MqttLink | None = None
        self.outputs: MqttOutputs | None = None
        self.poller: HomeAssistantPoller | None = None
        self.node_batches: NodeBatches | None = None
        self.main: NodeMainHeating | None = None
        self.house: NodeHouse | None = None  # one budget (and with a Batch API one pool) with the house's heaters
        self.work: BatchQueue | PooledWork | None = None  # where the workloads take batch work from
        self.planner: NodePlanner | None = None
        self.controller: NodeController | None = None
        self.policy: TickPolicy | None = None  # every decision of a tick (after start)
        self._decision: TickDecision | None = None  # the last tick's
        self.snapshot: NodeSnapshot | None = None
        self._zone_of = {gid: z.name for z in cfg.zones for gid in z.gpus}
        self._zone_cfg = {z.name: z for z in cfg.zones}
        self._models = served_models(cfg)
        self._capacity_w = 0.0
        self._transitions = Transitions(cfg.zones, self.store)
        self._asker: FreshnessAsker | None = None
        self._last_tick_s: float | None = None
        self._last_persist_s = 0.0
        self.ticks = 0

    mode = property(lambda self: self.settings.mode, lambda self, v: setattr(self.settings, "mode", v))
    zone_modes = property(lambda self: self.settings.zone_modes)
    max_power_w = property(lambda self: self.settings.max_power_w)
    counters = property(lambda self: self.meters.counters)
    node_capacity_w = property(lambda self: self.controller.capacity_w if self.controller else 0.0)
    batches: BatchQueue | None = property(lambda self: self.node_batches.queue if self.node_batches else None)  # type: ignore[assignment]
    batch_api: BatchApiServer | None = property(lambda self: self.node_batches.server if self.node_batches else None)  # type: ignore[assignment]

    def start(self) -> None:
        """Open GPUs and workloads, restore persisted state, connect MQTT and outputs."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._instance.acquire(f"node {self.cfg.node_id}")  # InstanceConflict: another heatctl has it
        if self.cfg.house is not None:  # with a Batch API, the house's pool before the queue that feeds it
            pooled = self.cfg.batch_api is not None
            self.house = NodeHouse(self.cfg.house, self.cfg.node_id, pool=pooled, wall_fn=self._wall_fn)
            self.house.start()
        if self.cfg.batch_api is not None:
            from heatctl.batch.node import NodeBatches

            pool = self.house.pool if self.house is not None else None
            self.node_batches = NodeBatches(self.cfg, self.state_dir, pool=pool)  # before the workloads that take
            self.work = self.node_batches.queue
            if self.house is not None:
                from heatctl.house.work import PooledWork

                self.work = PooledWork(self.node_batches.queue, self.house, wall_fn=self._wall_fn)
        ctx = WorkloadContext(state_dir=self.state_dir, time_fn=self.clock, batches=self.work)
        self.actuators = open_actuators(self.cfg, ctx, self._given_gpus)
        self.controller = NodeController(
            self.cfg,
            {g: a.caps() for g, a in self.actuators.items()},
            calibrated=calibrations(self.cfg, self.state_dir),
            time_fn=self.clock,
        )
        self._capacity_w = self.node_capacity_w  # read by the network thread (command ranges): one float
        self._restore()
        self._restore_surfaces()
        for act in self.actuators.values():
            act.start()
        if self.cfg.mqtt is not None:
            self.link = MqttLink(self.cfg.mqtt, self.cfg.node_id)
            bind_mqtt_sources(self.cfg, self.link, self.store, self._wall_fn)  # and asks devices to report
            self._asker = FreshnessAsker(self.cfg, self.link, self.store)  # ... and again before they go stale
            bind_commands(self.cfg, self.link, self.inbox, lambda: self._capacity_w)
            self._bind_house_meter(self.link)
            self.outputs = MqttOutputs(self.cfg, self.link, state_dir=self.state_dir, node_capacity_w=self._capacity_w)
            self._open_planner()  # its forecast topics are subscribed before the link connects
            self.link.start()
        elif any(src.topic for z in self.cfg.zones for _, src in zone_sources(z)):
            _LOGGER.warning("sources read MQTT topics but there is no 'mqtt:' section: they will never report")
        if any(z.main_heating is not None for z in self.cfg.zones):
            self.main = NodeMainHeating(self.cfg, self.state_dir, self.link, self.clock)
        self._open_planner()
        if self.cfg.homeassistant is not None:
            from heatctl.sources.homeassistant import HomeAssistantPoller

            self.poller = HomeAssistantPoller(self.cfg, self.store, wall_fn=self._wall_fn)
            self.poller.start()
        self.policy = TickPolicy(
            self.cfg,
            self.controller,
            cascades=self.main.cascades if self.main is not None else {},
            planner=self.planner,
            work=self.work,
            runners=batch_runners(self.cfg),
            time_fn=self.clock,
        )
        if self.cfg.influxdb is not None:
            from heatctl.publish.influx import InfluxSink

            self.sinks.append(InfluxSink(self.cfg.influxdb, self.cfg.node_id, state_dir=self.state_dir))

    def _open_planner(self) -> None:
        if self.cfg.planner is not None and self.planner is None and self.controller is not None:
            from heatctl.planner.node import open_node_planner

            self.planner = open_node_planner(
                self.cfg,
                {gid: a.model.caps for gid, a in self.controller.allocators.items()},
                self.state_dir,
                self.link,
                work_fn=lambda zone: self.policy.work_for_plan(zone) if self.policy is not None else (),
                max_power_fn=self._planned_cap_w,
            )

    def _bind_house_meter(self, link: MqttLink) -> None:
        """The house's meter (``house.grid_power``): its readings to the house, for the solar surplus."""
        house, grid = self.house, self.cfg.house.grid_power if self.cfg.house else None
        if house is None or grid is None or grid.topic is None:
            return
        from heatctl.sources.extract import PayloadError, extract

        said: list[str] = []

        def on_grid(topic: str, payload: bytes) -> None:
            try:
                house.put_grid_w(extract(payload, grid, "grid"))
            except PayloadError as exc:  # no surplus from it: the budget alone (said once a problem)
                if [str(exc)] != said:
                    _LOGGER.warning("house meter %s: %s; no solar surplus from it", topic, exc)
                    said[:] = [str(exc)]

        link.subscribe(grid.topic, on_grid)

    def _planned_cap_w(self) -> float | None:
        """The node's cap as the planner sees it ahead: ``max_power_w``, and in a house its share now."""
        return node_cap_w(self.settings.max_power_w, None, 0, self.house.share_w() if self.house else None)

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
        """Every exit path: main heating given back, workloads to their exit state, GPUs to their limits, offline.
        A service refused at start (another heatctl has its state_dir) touches nothing."""
        if not self._instance.held:
            return
        if self.main is not None:
            self.main.give_back()
        for part in (*self.actuators.values(), self.planner, self.node_batches, self.house):
            if part is not None:
                part.stop()
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
        self._instance.release()

    def tick(self) -> NodeSnapshot:
        assert self.controller is not None and self.policy is not None  # after start()
        for command in self.inbox.drain():
            self.settings.apply(command, self.store, self.policy)
            self._persist()
        now_s = self.clock()
        dt_s = 0.0 if self._last_tick_s is None else now_s - self._last_tick_s
        self._last_tick_s = now_s
        zones = {z: self.store.zone_inputs(z, m) for z, m in self.settings.zone_modes.items()}
        if self.main is not None:
            zones = self.main.targets(zones, self.store)
        metered_w = self.store.metered_w(now_s)
        observed = {gid: act.observe(metered=self._zone_of[gid] in metered_w) for gid, act in self.actuators.items()}
        for gid in (opened := [g for g, act in self.actuators.items() if act.just_opened]):
            self.controller.set_caps(gid, self.actuators[gid].caps())  # a GPU opened late: its real limits
        if opened:
            self._capacity_w = self.node_capacity_w
            if self.outputs is not None:
                self.outputs.update_capacity(self._capacity_w)
        states = {gid: obs.state for gid, obs in observed.items()}
        wall_s = self._wall_fn()
        price = price_now(self.cfg.tariff, wall_s, self.planner)
        carbon = carbon_now(self.cfg.carbon, wall_s, self.planner)
        day = local_day(wall_s)
        for gid, obs in observed.items():  # the heat since the last tick, made for the target (or the plan's)
            wanted = heat_wanted(zones[z := self._zone_of[gid]], self.planner.warming_c(z) if self.planner else None)
            idle_w = self.controller.allocators[gid].model.caps.idle_w
            worth = PriceNow(day, price, heat_price_per_kwh(self._zone_cfg[z], price), carbon, self._models.get(gid))
            energy_j = self.meters.add(
                gid, obs.reading, obs.work_rate, dt_s=dt_s, idle_w=idle_w, wanted=wanted, price=worth
            )
            if self.batches is not None:
                self.batches.charge(gid, energy_j, wanted, price=price, carbon=carbon)
        decision = self._decision = self.policy.decide(self._tick_inputs(zones, states, metered_w, wall_s, price))
        if self.house is not None:
            comfort_w, due_w = house_wants(decision, self.node_capacity_w)
            queue = self.batches
            self.house.report(
                comfort_w=comfort_w,
                due_w=due_w,
                store_w=0.0,
                capacity_w=self.node_capacity_w,
                slots=queue.slots if queue is not None else 0,
                s_per_request=queue.s_per_request if queue is not None else 0.0,
                work=queue.pool_work() if queue is not None else (),
                floor_w=self.controller.floor_w,
                draw_w=sum(s.power_w or 0.0 for s in states.values()),
            )
        if self.main is not None:
            self.main.apply(decision.main)
        out = decision.node
        if self.work is not None:  # heatctl off or in fail-safe: interactive passthrough waits too
            off = None if self.settings.mode == "heat" and not out.failsafe else out.failsafe or "heatctl is off"
            self.work.set_heat_wanted(any(z.demand_w > 0 for z in out.zones.values()), off_reason=off)
        for gid, cmd in out.gpus.items():
            self.actuators[gid].apply(cmd)
        self._transitions.update(now_s, out.zones)
        if self._asker is not None:
            self._asker.tick(now_s)
        snap = self.snapshot = self._snapshot(shown_targets(out, zones), states, metered_w, day)
        for sink in ([self.outputs] if self.outputs is not None else []) + self.sinks:
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
        self,
        zones: dict[str, ZoneInputs],
        states: dict[str, GpuState],
        metered_w: dict[str, float],
        wall_s: float,
        price: float | None,
    ) -> TickInputs:
        """What the policy decides from: the readings, the GPUs, the commanded cap, the time of day
        (``wall_s``) and the electricity's price now (the tick reads both once)."""
        return TickInputs(
            mode=self.settings.mode,
            zones=zones,
            gpus=states,
            local_minute=local_minute(wall_s),
            max_power_w=self.settings.max_power_w,
            budget_w=self.house.share_w() if self.house is not None else None,
            heat_w=zones_heat_w(self.cfg, states, metered_w),
            price_per_kwh=price if self.main is not None else None,
            user_setpoint_c=self.main.user_setpoints_c() if self.main is not None else {},
            overridden=frozenset(z for z in self.settings.zone_modes if self.store.has_override(z)),
        )

    def _snapshot(
        self, out: NodeOutput, states: dict[str, GpuState], metered_w: dict[str, float], day: str
    ) -> NodeSnapshot:
        return node_snapshot(
            out,
            cfg=self.cfg,
            settings=self.settings,
            store=self.store,
            states=states,
            actuators=self.actuators,
            totals=(totals := self.meters.counters.snapshot()),
            capacity_w=self.node_capacity_w,
            metered_w=metered_w,
            rejected_commands=self.inbox.rejected,
            parts=(self.node_batches, self.main, self.planner, self.policy, self.house),
            extra=({"influx": self.sinks[0].stats()} if self.sinks else {})
            | self._damaged()
            | {"money": money_state(totals.money, day, self.cfg.currency)},
            models=self._models,
        )

    def _damaged(self) -> dict[str, str]:
        """State files found damaged at start, and the safe side taken (for the state and Home Assistant)."""
        store = self.node_batches.store.damaged if self.node_batches is not None else None
        problems = [p for p in (self.settings.problem, store, *(a.state_problem for a in self.actuators.values())) if p]
        return {"state_damaged": "; ".join(problems)} if problems else {}

    def _persist(self) -> None:
        self.settings.save(self.meters.counters.snapshot(), self.controller.integrals_w() if self.controller else {})
        self._persist_surfaces()

    def _persist_surfaces(self) -> None:
        """What each LLM server's allocator learned of its surface, beside its calibration."""
        from heatctl.calibrate import save_learned

        for gpu in self.cfg.gpus:
            allocator = self.controller.allocators.get(gpu.id) if self.controller else None
            learned = allocator.surface if allocator is not None else None
            if learned is not None and learned.samples > 0:
                try:
                    save_learned(self.state_dir, gpu, learned.to_json())
                except OSError as exc:  # a full disk: learned again next time, control goes on
                    _LOGGER.error("gpu %s: what was learned of its surface cannot be saved: %s", gpu.id, plain(exc))

    def _restore_surfaces(self) -> None:
        from heatctl.calibrate import load_learned

        assert self.controller is not None
        for gpu in self.cfg.gpus:
            allocator = self.controller.allocators.get(gpu.id)
            if allocator is None or allocator.surface is None or (data := load_learned(self.state_dir, gpu)) is None:
                continue
            problem = allocator.surface.restore(data)
            if problem is None:
                _LOGGER.info(
                    "gpu %s: its surface as learned before (%d measurements)", gpu.id, allocator.surface.samples
                )
            else:
                _LOGGER.warning("gpu %s: what was learned of its surface is left out: %s", gpu.id, problem)

    def _restore(self) -> None:
        saved = self.settings.restore()
        self.meters.counters = Counters(saved.totals)
        if self.controller is not None:
            self.controller.restore_integrals(saved.integrals_w)
