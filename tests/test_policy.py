"""The tick's policy alone (``control/policy.py``), with a planner and a work source that say what each
test wants: presets, guidance, work due, the cascade, quiet hours. The same code in ``run`` and
``simulate``: test_policy_sim.py."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from heatctl.clock import local_minutes
from heatctl.config import parse_config
from heatctl.control.core import GpuState, NodeController
from heatctl.control.efficiency import GpuCaps
from heatctl.control.policy import TickInputs, TickPolicy, cap_outlook, node_cap_w, zones_heat_w
from heatctl.control.safety import Reading, ZoneInputs
from heatctl.mainheat.cascade import PUSH_K, Cascade
from heatctl.mainheat.kinds import EntityMainHeating, TrvMainHeating
from heatctl.planner.zone import Guidance
from heatctl.snapshots import shown_targets
from tests.conftest import FakeClock

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
QUIET = 'quiet: {from: "22:00", to: "06:00", max_power_w: 90}\n'
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
    now = inputs(clock, room_c=20.0)
    decision = policy.decide(now)
    assert decision.aim_c["room"] == decision.node.zones["room"].setpoint_c == 21.0 + PUSH_K
    assert shown_targets(decision.node, now.zones).zones["room"].setpoint_c == 21.0  # a person sees the target
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


def test_the_node_cap_is_the_lowest_of_max_power_quiet_hours_and_a_budget() -> None:
    quiet = parse_config(POLICY_CONFIG + QUIET).quiet
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


def test_the_planner_sees_quiet_hours_over_its_horizon() -> None:
    quiet = parse_config(POLICY_CONFIG + QUIET).quiet
    day = datetime(2026, 1, 12, tzinfo=UTC).timestamp()
    times = day + np.arange(0, 86400, 3600, dtype=np.float64)
    cap = cap_outlook(quiet, 250.0, UTC, share=0.5)(times)
    assert cap is not None
    assert cap[:6].tolist() == [45.0] * 6 and cap[6:22].tolist() == [125.0] * 16 and cap[22:].tolist() == [45.0] * 2
    assert cap_outlook(None, None, UTC)(times) is None


# --- every input reaches the decision it is for (what mutation testing asked for) ----------

TWO_ZONES = """
node_id: two
mqtt: null
zones:
  - name: den
    temperature: {topic: d/t}
    setpoint: {topic: d/s}
    gpus: [gpu1]
  - name: room
    temperature: {topic: t}
    setpoint: {topic: s}
    outdoor_temperature: {topic: o}
    gpus: [gpu0]
gpus: [{id: gpu0, backend: sim}, {id: gpu1, backend: sim}]
"""


class RecordingPlanner(StubPlanner):
    """Says what each call asked: which zone, with what."""

    def __init__(self, reach: float | None = None, shortfall_s: float | None = None, **kw: Any) -> None:
        super().__init__(**kw)
        self.reach, self.shortfall_s = reach, shortfall_s
        self.calls: list[tuple[str, Any]] = []

    def record(self, zone: str, **readings: Any) -> Guidance | None:
        self.calls.append(("record", zone))
        return super().record(zone, **readings)

    def shortfall_in_s(self, zone: str) -> float | None:
        self.calls.append(("shortfall", zone))
        return self.shortfall_s

    def covers_work(self, zone: str) -> bool:
        self.calls.append(("covers", zone))
        return self.covers

    def reach_c(self, zone: str, room_c: float, outdoor_c: float, heat_w: float, seconds: float) -> float | None:
        self.calls.append(("reach", (zone, room_c, outdoor_c, heat_w, seconds)))
        return self.reach


def test_the_cap_ahead_is_the_nodes_in_the_houses_wall_time() -> None:
    quiet = parse_config(POLICY_CONFIG + QUIET).quiet
    brussels = ZoneInfo("Europe/Brussels")
    at = np.array([datetime(2026, 1, 12, 22, 30, tzinfo=brussels).timestamp()])  # 21:30 UTC
    in_brussels = cap_outlook(quiet, 250.0, brussels)(at)
    assert in_brussels is not None and in_brussels.dtype == np.float64 and in_brussels.tolist() == [90.0]
    assert (cap_outlook(quiet, 250.0, UTC)(at) or np.array([])).tolist() == [250.0]
    assert (cap_outlook(None, 250.0, UTC)(at) or np.array([])).tolist() == [250.0]
    assert (cap_outlook(quiet, None, UTC)(at) or np.array([])).tolist() == [math.inf]


def test_a_fresh_policy_has_no_presets_and_no_quiet() -> None:
    policy = unit_policy(FakeClock(0.0))
    assert policy.state() == {"presets": {"room": "none"}, "quiet": False}


def test_boost_releases_the_main_heating_at_once_and_only_boost_does() -> None:
    clock = FakeClock(100.0)
    cascade = Cascade(TrvMainHeating(trv="z/trv"))
    policy = unit_policy(clock, cascades={"room": cascade})
    policy.decide(inputs(clock, room_c=20.9))  # held
    policy.set_preset("room", "eco")
    assert cascade.stage == "held"
    policy.set_preset("room", "boost")
    assert cascade.stage == "released" and cascade.switches_total == 1
    policy.decide(inputs(clock, zones={}))  # no readings this tick: the preset stays
    assert policy.presets["room"] == "boost"


def test_a_budget_caps_the_node_and_is_not_quiet_hours() -> None:
    clock = FakeClock(100.0)
    policy = unit_policy(clock, QUIET)
    decision = policy.decide(inputs(clock, room_c=15.0, local_minute=23 * 60, max_power_w=250.0, budget_w=60.0))
    assert (decision.cap_w, decision.quiet) == (60.0, False)
    assert decision.node.gpus["gpu0"].target_w <= 60.0
    clock.advance(30.0)
    day = policy.decide(inputs(clock, room_c=15.0, budget_w=120.0))
    assert day.cap_w == 120.0 and day.node.gpus["gpu0"].target_w == pytest.approx(120.0)


def test_what_the_controller_gets_is_what_the_tick_said() -> None:
    clock = FakeClock(100.0)
    policy = unit_policy(clock)
    cold = policy.decide(inputs(clock, room_c=15.0))
    assert cold.node.gpus["gpu0"].level > 0
    clock.advance(30.0)
    off = policy.decide(inputs(clock, room_c=15.0, mode="off"))
    assert off.node.gpus["gpu0"].level == 0.0 and off.node.mode == "off"
    clock.advance(30.0)
    faulted = policy.decide(inputs(clock, room_c=15.0, gpus={"gpu0": GpuState(fault="lost")}))
    assert faulted.node.gpus["gpu0"].level == 0.0 and "lost" in (faulted.node.failsafe or "")
    clock.advance(30.0)
    warm_due = unit_policy(clock, work=StubWork(1.0), runners=["gpu0"]).decide(inputs(clock, room_c=21.4))
    assert warm_due.node.gpus["gpu0"].target_w > CAPS.idle_w  # work due runs in a warm room


def test_the_plans_feed_forward_reaches_the_loop() -> None:
    clock = FakeClock(100.0)
    plain = unit_policy(clock).decide(inputs(clock, room_c=21.0))
    guided = unit_policy(clock, planner=StubPlanner(Guidance(target_c=21.0, feedforward_w=250.0)))
    with_ff = guided.decide(inputs(clock, room_c=21.0))
    assert with_ff.node.zones["room"].demand_w > plain.node.zones["room"].demand_w + 100.0


def test_a_zone_without_a_target_aims_at_nothing_and_the_next_zone_is_still_decided() -> None:
    clock = FakeClock(100.0)
    cfg = parse_config(TWO_ZONES)
    policy = TickPolicy(cfg, NodeController(cfg, {"gpu0": CAPS, "gpu1": CAPS}, time_fn=clock), time_fn=clock)
    room = inputs(clock).zones["room"]
    decision = policy.decide(inputs(clock, zones={"den": ZoneInputs(), "room": room}))
    assert decision.aim_c == {"den": None, "room": 21.0}


def test_a_released_main_heating_pushes_the_gpus_unless_the_room_is_already_warm() -> None:
    clock = FakeClock(100.0)
    cascade = Cascade(TrvMainHeating(trv="z/trv"))
    policy = unit_policy(clock, cascades={"room": cascade})
    policy.decide(inputs(clock, room_c=20.9))  # held
    policy.set_preset("room", "boost")  # released
    policy.presets["room"] = "none"  # ... and no boost aim of its own
    assert policy.decide(inputs(clock, room_c=20.0)).aim_c["room"] == 21.0 + PUSH_K
    assert policy.decide(inputs(clock, room_c=21.9)).aim_c["room"] == 21.0  # warm: no push


def test_the_planner_is_asked_for_this_zone_with_fresh_readings_only() -> None:
    clock = FakeClock(100.0)
    planner = RecordingPlanner()
    policy = unit_policy(clock, planner=planner)
    stale = inputs(clock)
    stale_outdoor = stale.zones["room"]._replace(
        outdoor=Reading(value=3.0, at_s=clock.now_s - 7200.0), outdoor_stale_s=3600.0
    )
    policy.decide(stale._replace(zones={"room": stale_outdoor}))
    assert planner.records[-1]["outdoor_c"] is None and ("record", "room") in planner.calls
    policy.decide(inputs(clock, zones={}))  # no readings at all: asked, told nothing is valid
    assert planner.records[-1] == {
        "room_c": None,
        "setpoint_c": None,
        "heat_w": 150.0,
        "outdoor_c": None,
        "valid": False,
    }


def test_while_the_main_heating_helps_the_planner_learns_nothing() -> None:
    clock = FakeClock(100.0)
    planner = RecordingPlanner()
    cascade = Cascade(TrvMainHeating(trv="z/trv"))
    policy = unit_policy(clock, planner=planner, cascades={"room": cascade})
    policy.decide(inputs(clock))
    assert planner.records[-1]["valid"]  # held: the GPUs' heat alone
    cascade.boost(clock.now_s)
    policy.decide(inputs(clock))
    assert not planner.records[-1]["valid"]


def test_the_cascade_is_told_the_plans_shortfall_and_the_room_the_gpus_reach() -> None:
    clock = FakeClock(100.0)
    planner = RecordingPlanner(reach=20.0, shortfall_s=3 * 3600.0)
    policy = unit_policy(clock, planner=planner, cascades={"room": Cascade(TrvMainHeating(trv="z/trv"))})
    policy.decide(inputs(clock, room_c=20.0, setpoint_c=20.0))
    held = policy.decide(inputs(clock, room_c=20.0, setpoint_c=21.0))  # a 1 K rise; the model says 20.0 in 20 min
    assert held.main["room"].stage == "released" and "rose 1.0 K" in held.main["room"].reason
    reach = [args for call, args in planner.calls if call == "reach"]
    assert reach[-1][:3] == ("room", 20.0, 3.0) and reach[-1][3] == pytest.approx(300.0) and reach[-1][4] == 1200.0
    assert ("shortfall", "room") in planner.calls
    soon = RecordingPlanner(shortfall_s=600.0)
    foreseen = unit_policy(clock, planner=soon, cascades={"room": Cascade(TrvMainHeating(trv="z/trv"))})
    assert "the plan" in foreseen.decide(inputs(clock, room_c=21.0)).main["room"].reason


def test_the_room_reached_is_asked_only_when_it_can_be_told() -> None:
    clock = FakeClock(100.0)
    planner = RecordingPlanner(reach=20.9)
    cascades = {"room": Cascade(TrvMainHeating(trv="z/trv"))}
    policy = unit_policy(clock, planner=planner, cascades=cascades)
    zone = parse_config(POLICY_CONFIG).zones[0]
    now = inputs(clock).zones["room"]
    assert policy._reach_c(zone, now, 300.0, 60.0) == 20.9
    silent = now._replace(outdoor=Reading(value=3.0, at_s=clock.now_s - 7200.0), outdoor_stale_s=3600.0)
    assert policy._reach_c(zone, silent, 300.0, 60.0) is None  # its outdoor sensor went quiet: no telling
    assert policy._reach_c(zone, now._replace(temperature=None), 300.0, 60.0) is None
    no_sensor = parse_config(TWO_ZONES).zones[0]  # den: no outdoor sensor, the model learned without one
    assert policy._reach_c(no_sensor, now._replace(outdoor=None), 300.0, 60.0) == 20.9
    assert planner.calls[-1] == ("reach", ("den", 20.0, 0.0, 300.0, 60.0))
    assert unit_policy(clock)._reach_c(zone, now, 300.0, 60.0) is None  # no planner


def test_the_main_heating_gets_the_users_setpoint_or_the_zones_target_back() -> None:
    clock = FakeClock(100.0)
    policy = unit_policy(clock, cascades={"room": Cascade(TrvMainHeating(trv="z/trv"))})
    fallback = policy.decide(inputs(clock, mode="off"))
    assert fallback.main["room"].setpoint_c == 21.0  # no user setpoint known: the zone's target
    window = policy.decide(inputs(clock, window=Reading(value=1.0, at_s=clock.now_s), user_setpoint_c={"room": 20.5}))
    assert (window.main["room"].stage, window.main["room"].setpoint_c) == ("given back", 20.5)
    assert "window open" in window.main["room"].reason


def test_work_due_asks_whether_the_runners_own_zone_is_planned() -> None:
    clock = FakeClock(100.0)
    planner = RecordingPlanner(covers=True)
    work = StubWork(0.0)
    unit_policy(clock, planner=planner, work=work, runners=["gpu0"]).decide(inputs(clock))
    assert ("covers", "room") in planner.calls
    idle = StubWork(1.0)
    assert unit_policy(clock, work=idle).decide(inputs(clock)).work_due == {} and idle.asked == []


def test_speedup_and_work_per_kwh_are_the_learned_curves() -> None:
    clock = FakeClock(100.0)
    policy = unit_policy(clock)
    model = policy.controller.allocators["gpu0"].model
    efficient = model.work_rate(model.efficient_cap_w)
    assert policy.full_speedup(["gpu0"]) == pytest.approx(max(model.work_rate(300.0) / efficient, 1.0))
    assert policy.full_speedup([]) == 1.0
    per_kwh = efficient / model.efficient_cap_w * 3.6e6
    assert policy.work_per_kwh(["gpu0"]) == pytest.approx(per_kwh)
    assert policy.work_per_kwh(["gpu0", "gpu0"]) == pytest.approx(per_kwh)  # a mean, not a sum


def test_the_work_for_the_plan_is_the_zones_own_runners() -> None:
    clock = FakeClock(100.0)
    cfg = parse_config(TWO_ZONES)
    controller = NodeController(cfg, {"gpu0": CAPS, "gpu1": CAPS}, time_fn=clock)
    policy = TickPolicy(cfg, controller, time_fn=clock, work=StubWork(0.0), runners=["gpu0"])
    assert policy.work_for_plan("den") == ()  # its GPU runs no batch work
    assert len(policy.work_for_plan("room")) == 1


def test_what_a_node_asks_of_the_house_from_its_tick() -> None:
    from heatctl.control.core import NodeOutput, ZoneOutput
    from heatctl.control.pid import ZoneDemand
    from heatctl.control.policy import TickDecision, house_wants

    def decision(
        zones: dict[str, tuple[float | None, float | None, float, str | None]], cap_w: float | None, due: float = 0.0
    ) -> TickDecision:
        out = {n: ZoneOutput(t, s, ZoneDemand(demand_w=d), f) for n, (t, s, d, f) in zones.items()}
        return TickDecision(NodeOutput("heat", None, out, {}), cap_w, False, {}, {}, {}, {"gpu0": due})

    assert house_wants(decision({"a": (20.0, 21.0, 120.0, None)}, None), 300.0) == (120.0, 0.0)  # its rooms' demand
    assert house_wants(decision({"a": (20.0, 21.0, 120.0, None), "b": (19.0, 21.0, 60.0, None)}, 500.0), 300.0) == (
        180.0,
        0.0,
    )
    # Held at its share (the cap): it would take more, so it asks for all it can give.
    assert house_wants(decision({"a": (20.0, 21.0, 149.5, None)}, 150.0), 300.0) == (300.0, 0.0)
    assert house_wants(decision({"a": (20.0, 21.0, 148.0, None)}, 150.0), 300.0) == (148.0, 0.0)  # not at it
    assert house_wants(decision({"a": (20.0, 21.0, 149.0, None)}, 150.0), 300.0) == (300.0, 0.0)  # within 1 W of it
    assert house_wants(decision({"a": (21.5, 21.0, 0.5, None)}, 1.0), 300.0) == (300.0, 0.0)  # any heat held at it
    assert house_wants(decision({"a": (20.0, 21.0, 0.0, None)}, 0.0), 300.0) == (300.0, 0.0)  # a cap of 0, room cold
    assert house_wants(decision({"a": (21.0, 21.0, 0.0, None)}, 0.0), 300.0) == (0.0, 0.0)  # at its setpoint
    assert house_wants(decision({"a": (20.0, 21.0, 0.0, "temperature stale")}, 0.0), 300.0) == (0.0, 0.0)  # fail-safe
    assert house_wants(decision({"a": (None, 21.0, 0.0, None)}, 0.0), 300.0) == (0.0, 0.0)  # no reading
    assert house_wants(decision({"a": (20.0, None, 0.0, None)}, 0.0), 300.0) == (0.0, 0.0)  # no setpoint
    assert house_wants(decision({"a": (22.0, 21.0, 400.0, None)}, None), 300.0) == (300.0, 0.0)  # never above capacity
    assert house_wants(decision({"a": (22.0, 21.0, 0.0, None)}, None, due=1.0), 300.0) == (0.0, 300.0)  # work due
