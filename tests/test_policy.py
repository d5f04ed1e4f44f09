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
