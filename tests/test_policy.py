"""One policy for the service and the simulator: the same inputs give the same decisions, quiet hours
hold in both, and the planner sees the node's cap ahead."""

from __future__ import annotations

import math
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from heatctl.clock import local_minutes
from heatctl.config import SimGpuConfig, parse_config
from heatctl.control.core import GpuState, NodeController
from heatctl.control.efficiency import GpuCaps
from heatctl.control.policy import TickDecision, TickInputs, TickPolicy, cap_outlook, node_cap_w, zones_heat_w
from heatctl.control.safety import Reading, ZoneInputs
from heatctl.gpu.base import GpuReading
from heatctl.gpu.sim import SimGpu
from heatctl.mainheat.cascade import PUSH_K, Cascade
from heatctl.mainheat.kinds import EntityMainHeating, TrvMainHeating
from heatctl.planner.zone import Guidance
from heatctl.service import Service
from heatctl.sim.runner import simulate
from heatctl.sim.scenario import Scenario
from tests.conftest import FakeClock

QUIET_CONFIG = """
node_id: same
mqtt: null
state_dir: {state}
zones:
  - name: room
    temperature: {{topic: t/room}}
    setpoint: {{topic: t/setpoint}}
    outdoor_temperature: {{topic: t/outdoor}}
    gpus: [gpu0]
gpus:
  - {{id: gpu0, backend: sim, workload: {{type: sim}}}}
quiet: {{from: "22:00", to: "06:00", max_power_w: 90}}
"""

START = datetime(2026, 1, 12, 12, 0)  # a Monday noon, UTC


def quiet_scenario(hours: float = 30.0) -> Scenario:
    return Scenario.model_validate(
        {
            "duration_h": hours,
            "step_s": 30.0,
            "start": START,
            "weather": {"constant_c": -2.0},
            "schedule": [{"at": "00:00", "setpoint_c": 21.0}],
            "room": {"model": "1r1c", "r_k_per_w": 0.1, "c_j_per_k": 2.0e6, "initial_c": 20.0},
        }
    )


class ServiceClock(FakeClock):
    def wait(self, event: threading.Event, timeout_s: float) -> bool:
        return event.is_set()


class ReplayGpu(SimGpu):
    """A simulated GPU whose readings are what the simulator's plant drew at each tick."""

    def __init__(self, cfg: SimGpuConfig, clock: FakeClock) -> None:
        super().__init__("gpu0", cfg, time_fn=clock)
        self.state = GpuState()
        self.done = 0.0

    def read(self) -> GpuReading:
        return GpuReading(
            power_w=self.state.power_w, energy_j=None, temperature_c=self.state.temperature_c, power_limit_w=None
        )

    def work_done(self) -> float:
        return self.done


def record_decisions(monkeypatch: pytest.MonkeyPatch) -> list[tuple[TickInputs, TickDecision]]:
    seen: list[tuple[TickInputs, TickDecision]] = []
    decide = TickPolicy.decide

    def recorded(self: TickPolicy, inputs: TickInputs) -> TickDecision:
        decision = decide(self, inputs)
        seen.append((inputs, decision))
        return decision

    monkeypatch.setattr(TickPolicy, "decide", recorded)
    return seen


def test_the_service_and_the_simulator_decide_alike_from_the_same_inputs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = parse_config(QUIET_CONFIG.format(state=tmp_path / "state"))
    scenario = quiet_scenario()
    seen = record_decisions(monkeypatch)
    simulate(scenario, cfg)
    simulated = list(seen)
    seen.clear()
    assert len(simulated) == 30 * 120

    clock = ServiceClock(0.0)
    start_epoch = START.replace(tzinfo=UTC).timestamp()
    wall = {"now": start_epoch}
    gpu = ReplayGpu(scenario.gpu, clock)
    monkeypatch.setenv("TZ", "UTC")
    svc = Service(cfg, clock=clock, gpus={"gpu0": gpu}, wall_fn=lambda: wall["now"])  # type: ignore[arg-type]
    svc.start()
    try:
        last_t = 0.0
        for inputs, expected in simulated:
            zin = inputs.zones["room"]
            assert zin.temperature is not None and zin.setpoint is not None and zin.outdoor is not None
            t = zin.setpoint.at_s
            clock.now_s, wall["now"] = t, start_epoch + t
            state = inputs.gpus["gpu0"]
            gpu.state = state
            gpu.done += (state.work_rate or 0.0) * (t - last_t)
            last_t = t
            svc.store.put("room", "temperature", zin.temperature.value, "t/room")
            svc.store.put("room", "setpoint", zin.setpoint.value, "t/setpoint")
            svc.store.put("room", "outdoor", zin.outdoor.value, "t/outdoor")
            svc.tick()
            got_inputs, got = seen[-1]
            assert got_inputs.local_minute == inputs.local_minute
            mine, sims = got_inputs.gpus["gpu0"], inputs.gpus["gpu0"]
            assert (mine.power_w, mine.temperature_c, mine.fault) == (sims.power_w, sims.temperature_c, sims.fault)
            assert mine.work_rate == pytest.approx(sims.work_rate), t
            assert (got.cap_w, got.quiet) == (expected.cap_w, expected.quiet), t
            ours, theirs = got.node.gpus["gpu0"], expected.node.gpus["gpu0"]
            assert ours.power_limit_w == pytest.approx(theirs.power_limit_w), t
            assert ours.level == pytest.approx(theirs.level), t
            assert got.node.zones["room"].demand_w == pytest.approx(expected.node.zones["room"].demand_w), t
    finally:
        svc.shutdown()
    quiet = [d for _, d in simulated if d.quiet]
    assert len(quiet) == 8 * 120  # 22:00 to 06:00, a tick every 30 s
    assert all(d.node.zones["room"].capacity_w <= 90.0 for d in quiet)


def test_the_simulator_keeps_quiet_hours(tmp_path: Path) -> None:
    cfg = parse_config(QUIET_CONFIG.format(state=tmp_path))
    result = simulate(quiet_scenario(), cfg)
    t = result.series["time_s"]
    hour = (12.0 + t / 3600.0) % 24.0
    quiet = (hour >= 22.0) | (hour < 6.0)
    power = result.series["gpu_power_w"]
    # The room is cold: it would take 300 W. 90 W is below the card's lowest limit (100 W): it duty-cycles.
    assert power[quiet].max() <= 100.0 and power[quiet].mean() <= 90.0 + 1.0
    assert power[~quiet & (t > 3600)].max() > 250.0


def test_the_node_cap_is_the_lowest_of_max_power_quiet_hours_and_a_budget(tmp_path: Path) -> None:
    quiet = parse_config(QUIET_CONFIG.format(state=tmp_path)).quiet
    assert node_cap_w(None, None, 0) is None
    assert node_cap_w(200.0, quiet, 12 * 60) == 200.0
    assert node_cap_w(200.0, quiet, 23 * 60) == 90.0
    assert node_cap_w(None, quiet, 5 * 60 + 59) == 90.0
    assert node_cap_w(None, quiet, 6 * 60) is None
    assert node_cap_w(200.0, quiet, 12 * 60, budget_w=150.0) == 150.0
    assert node_cap_w(50.0, quiet, 23 * 60, budget_w=150.0) == 50.0


def test_local_minutes_follow_the_clock_change() -> None:
    brussels = ZoneInfo("Europe/Brussels")
    before = datetime(2026, 3, 28, 12, 0, tzinfo=brussels).timestamp()  # CET, UTC+1
    after = datetime(2026, 3, 29, 12, 0, tzinfo=brussels).timestamp()  # CEST, UTC+2
    assert local_minutes(np.array([before, after]), brussels).tolist() == [720.0, 720.0]
    assert after - before == 23 * 3600.0


def test_the_planner_sees_quiet_hours_over_its_horizon(tmp_path: Path) -> None:
    quiet = parse_config(QUIET_CONFIG.format(state=tmp_path)).quiet
    day = datetime(2026, 1, 12, tzinfo=UTC).timestamp()
    times = day + np.arange(0, 86400, 3600, dtype=np.float64)
    cap = cap_outlook(quiet, 250.0, UTC, share=0.5)(times)
    assert cap is not None
    assert cap[:6].tolist() == [45.0] * 6 and cap[6:22].tolist() == [125.0] * 16 and cap[22:].tolist() == [45.0] * 2
    assert cap_outlook(None, None, UTC)(times) is None


@pytest.mark.parametrize("controller", ["heatctl", "oracle"])
def test_the_planner_heats_ahead_of_quiet_hours(tmp_path: Path, controller: str) -> None:
    """With quiet hours in the plan, the room is warmer when they begin than without them (the
    learned planner from its second day; the oracle, the same LP with the true room)."""
    planner_cfg = QUIET_CONFIG + "planner: {{objective: energy, store_k: 1.0}}\n"
    quiet_cfg = parse_config(planner_cfg.format(state=tmp_path / "a"))
    no_quiet = planner_cfg.replace('quiet: {{from: "22:00", to: "06:00", max_power_w: 90}}\n', "")
    assert "quiet" not in no_quiet
    plain_cfg = parse_config(no_quiet.format(state=tmp_path / "b"))
    scenario = quiet_scenario(hours=24 * 4)
    with_quiet = simulate(scenario, quiet_cfg, controller=controller)
    without = simulate(scenario, plain_cfg, controller=controller)
    t = with_quiet.series["time_s"]
    at_22 = np.isclose((12.0 + t / 3600.0) % 24.0, 21.9, atol=1e-9) & (t > 2 * 86400)
    assert at_22.any()
    assert (with_quiet.series["room_c"][at_22] > without.series["room_c"][at_22] + 0.2).all()


# --- the policy alone, with a planner and a work source that say what the test wants ---------

POLICY_CONFIG = """
node_id: unit
mqtt: null
zones:
  - name: room
    temperature: {topic: t}
    setpoint: {topic: s}
    outdoor_temperature: {topic: o}
    presets: {eco: 18}
    gpus: [gpu0]
gpus: [{id: gpu0, backend: sim}]
"""
CAPS = GpuCaps(idle_w=20.0, min_limit_w=100.0, max_limit_w=300.0)


class StubPlanner:
    def __init__(self, guidance: Guidance | None = None, covers: bool = False) -> None:
        self.guidance = guidance
        self.covers = covers
        self.records: list[dict[str, Any]] = []

    def record(self, zone: str, **readings: Any) -> Guidance | None:
        self.records.append(readings)
        return self.guidance if readings["valid"] else None

    def shortfall_in_s(self, zone: str) -> float | None:
        return None

    def covers_work(self, zone: str) -> bool:
        return self.covers

    def reach_c(self, zone: str, room_c: float, outdoor_c: float, heat_w: float, seconds: float) -> float | None:
        return None


class StubWork:
    def __init__(self, level: float) -> None:
        self.level = level
        self.asked: list[float | None] = []

    def due_level(self, *, full_speedup: float | None = None) -> float:
        self.asked.append(full_speedup)
        return self.level

    def open_work(self) -> list[tuple[float, float]]:
        return [(1000.0, 60.0)]


def unit_policy(clock: FakeClock, extra: str = "", **parts: Any) -> TickPolicy:
    cfg = parse_config(POLICY_CONFIG + extra)
    controller = NodeController(cfg, {"gpu0": CAPS}, time_fn=clock)
    return TickPolicy(cfg, controller, time_fn=clock, **parts)


def inputs(clock: FakeClock, room_c: float = 20.0, setpoint_c: float = 21.0, **kw: Any) -> TickInputs:
    zone = ZoneInputs(
        temperature=Reading(value=room_c, at_s=clock.now_s),
        setpoint=Reading(value=setpoint_c, at_s=clock.now_s),
        outdoor=Reading(value=3.0, at_s=clock.now_s),
        window_open=kw.pop("window", None),
    )
    base: dict[str, Any] = {
        "mode": "heat",
        "zones": {"room": zone},
        "gpus": {"gpu0": GpuState(power_w=150.0, work_rate=60.0)},
        "local_minute": 12 * 60,
        "max_power_w": None,
        "heat_w": {"room": 150.0},
    }
    return TickInputs(**(base | kw))


def test_boost_aims_high_until_the_room_is_warm_and_a_preset_ends_with_its_target() -> None:
    clock = FakeClock(100.0)
    policy = unit_policy(clock)
    policy.set_preset("room", "boost")
    decision = policy.decide(inputs(clock, room_c=20.0))
    assert decision.aim_c["room"] == 21.0 + PUSH_K and decision.node.zones["room"].setpoint_c == 21.0
    assert policy.state()["presets"] == {"room": "boost"}
    policy.decide(inputs(clock, room_c=21.0))  # warm: boost is done
    assert policy.presets["room"] == "none"
    policy.set_preset("room", "eco")
    policy.decide(inputs(clock, setpoint_c=18.0, overridden=frozenset({"room"})))
    assert policy.presets["room"] == "eco"
    policy.decide(inputs(clock, setpoint_c=21.0))  # the thermostat's own setpoint took over again
    assert policy.presets["room"] == "none"


def test_the_plans_guidance_is_the_loops_target_and_feed_forward_only_while_it_may_learn() -> None:
    clock = FakeClock(100.0)
    planner = StubPlanner(Guidance(target_c=21.6, feedforward_w=180.0, warming=True))
    policy = unit_policy(clock, planner=planner)
    decision = policy.decide(inputs(clock))
    assert decision.aim_c["room"] == 21.6 and decision.guidance["room"] == planner.guidance
    assert planner.records[-1] == {
        "room_c": 20.0,
        "setpoint_c": 21.0,
        "heat_w": 150.0,
        "outdoor_c": 3.0,
        "valid": True,
    }
    for unfit in (
        inputs(clock, window=Reading(value=1.0, at_s=clock.now_s)),  # a window open: fail-safe
        inputs(clock, mode="off"),
        inputs(clock, heat_w={"room": None}),  # its heat not measured
    ):
        decision = policy.decide(unfit)
        assert not planner.records[-1]["valid"] and decision.guidance["room"] is None
    policy.set_preset("room", "boost")
    policy.decide(inputs(clock))
    assert not planner.records[-1]["valid"]  # boost: flat out, nothing to learn


def test_work_due_goes_to_the_runners_and_a_plan_that_covers_it_asks_flat_out() -> None:
    clock = FakeClock(100.0)
    work = StubWork(1.0)
    policy = unit_policy(clock, work=work, runners=["gpu0", "elsewhere"])
    assert policy.runners == ["gpu0"]  # a GPU in no zone runs nothing
    assert policy.decide(inputs(clock, room_c=22.0)).work_due == {"gpu0": 1.0}
    assert work.asked == [None]
    covered = unit_policy(clock, work=work, runners=["gpu0"], planner=StubPlanner(covers=True))
    covered.decide(inputs(clock))
    assert work.asked[-1] == pytest.approx(covered.full_speedup(["gpu0"])) and work.asked[-1] > 1.0
    idle = unit_policy(clock, work=StubWork(0.0), runners=["gpu0"])
    assert idle.decide(inputs(clock)).work_due == {}
    assert unit_policy(clock, work=work).decide(inputs(clock)).work_due == {}  # no runners, no work due


def test_the_work_for_the_plan_is_heat_at_full_power() -> None:
    clock = FakeClock(100.0)
    policy = unit_policy(clock, work=StubWork(0.0), runners=["gpu0"])
    ((due_s, heat_j),) = policy.work_for_plan("room")
    speedup = policy.full_speedup(["gpu0"])
    assert heat_j == pytest.approx(60.0 / speedup * (300.0 - 20.0)) and due_s < 1000.0
    assert unit_policy(clock).work_for_plan("room") == ()


def test_the_main_heating_is_given_back_when_heatctl_is_off_or_a_gpu_is_lost() -> None:
    clock = FakeClock(100.0)
    extra = ""
    policy = unit_policy(clock, extra, cascades={"room": Cascade(TrvMainHeating(trv="z/trv"))})
    assert policy.decide(inputs(clock)).main["room"].stage == "held"
    off = policy.decide(inputs(clock, mode="off", user_setpoint_c={"room": 20.5}))
    assert (off.main["room"].stage, off.main["room"].reason, off.main["room"].setpoint_c) == (
        "given back",
        "heatctl off",
        20.5,
    )
    lost = policy.decide(inputs(clock, gpus={"gpu0": GpuState(fault="lost")}))
    assert lost.main["room"].stage == "given back" and lost.main["room"].reason == "gpu gpu0: lost"


def test_the_main_heating_goes_first_when_its_heat_is_cheaper() -> None:
    clock = FakeClock(100.0)
    cheap = Cascade(EntityMainHeating(entity="climate.hp", prefer="cheapest", cop=4.0))
    policy = unit_policy(clock, 'homeassistant: {url: "http://ha", token: t}\n', cascades={"room": cheap})
    assert policy.decide(inputs(clock, price_per_kwh=0.30)).main["room"].stage == "main first"
    assert policy.decide(inputs(clock, price_per_kwh=None)).main["room"].stage == "held"  # price unknown: GPU first
    assert policy.decide(inputs(clock, price_per_kwh=math.nan)).main["room"].stage == "held"
    assert policy.work_per_kwh(["gpu0"]) > 0 and policy.work_per_kwh([]) == 0.0


def test_quiet_hours_are_said_in_the_decision_and_the_state() -> None:
    clock = FakeClock(100.0)
    policy = unit_policy(clock, 'quiet: {from: "22:00", to: "06:00", max_power_w: 90}\n')
    night = policy.decide(inputs(clock, local_minute=23 * 60, max_power_w=250.0))
    assert (night.cap_w, night.quiet, policy.state()["quiet"]) == (90.0, True, True)
    day = policy.decide(inputs(clock, local_minute=12 * 60, max_power_w=250.0))
    assert (day.cap_w, day.quiet, policy.state()["quiet"]) == (250.0, False, False)
    tight = policy.decide(inputs(clock, local_minute=23 * 60, max_power_w=60.0))
    assert (tight.cap_w, tight.quiet) == (60.0, False)  # a lower cap than quiet hours': not quiet's doing


def test_each_zones_heat_is_its_meter_else_its_gpus() -> None:
    cfg = parse_config(POLICY_CONFIG)
    gpus = {"gpu0": GpuState(power_w=120.0)}
    assert zones_heat_w(cfg, gpus, {}) == {"room": 120.0}
    assert zones_heat_w(cfg, gpus, {"room": 131.0}) == {"room": 131.0}
    assert zones_heat_w(cfg, {"gpu0": GpuState()}, {}) == {"room": None}
