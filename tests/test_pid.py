from __future__ import annotations

import pytest

from heatctl.config import ControlConfig
from heatctl.control.pid import ZoneController
from tests.conftest import FakeClock


def make(clock: FakeClock, **cfg: float) -> ZoneController:
    return ZoneController(ControlConfig(**cfg), capacity_w=300.0, time_fn=clock)


def run(zc: ZoneController, clock: FakeClock, temp_c: float, sp_c: float, steps: int, **kw: float) -> float:
    demand = 0.0
    for _ in range(steps):
        clock.advance(30.0)
        demand = zc.update(temp_c, sp_c, **kw).demand_w
    return demand


def test_cold_room_gets_full_power_warm_room_none(clock: FakeClock) -> None:
    zc = make(clock)
    assert zc.update(15.0, 21.0).demand_w == 300.0
    clock.advance(30)
    assert zc.update(25.0, 21.0).demand_w == 0.0


def test_integrator_does_not_wind_up_while_saturated(clock: FakeClock) -> None:
    zc = make(clock, kp=100, ki=0.2)
    run(zc, clock, 15.0, 21.0, steps=2000)  # 17 h far below setpoint, demand pinned at capacity
    # Conditional integration: only the first (unsaturated) step integrated, 0.2 W/(K·s) × 6 K × 30 s.
    # Clamping alone would have let the integral climb to the 300 W limit.
    assert zc.integral_w == pytest.approx(36.0)
    # Once the room is just above setpoint the demand drops at once, with nothing to unwind.
    clock.advance(30)
    assert zc.update(21.3, 21.0).demand_w < 10.0


def test_warm_night_leaves_no_negative_integral(clock: FakeClock) -> None:
    zc = make(clock, kp=100, ki=0.2, ua_w_per_k=14)
    run(zc, clock, 20.0, 17.0, steps=600, outdoor_c=0.0)  # 5 h: 3 K too warm after a setback
    # Back at setpoint: the feed-forward alone must not be cancelled by a wound-down integral.
    clock.advance(30)
    demand = zc.update(17.0, 17.0, outdoor_c=0.0)
    assert demand.ff_w == pytest.approx(14 * 17)
    assert demand.demand_w > 0.8 * demand.ff_w


def test_feed_forward_anti_windup_holds(clock: FakeClock) -> None:
    zc = make(clock, kp=100, ki=0.2, ua_w_per_k=14)
    run(zc, clock, 10.0, 21.0, steps=1000, outdoor_c=-10.0)  # ff alone = 434 W > capacity
    assert zc.integral_w <= 1e-6  # limits shifted by the (capped) feed-forward: 300 − 300
    # The weather turns mild: demand follows at once, nothing wound up to unwind.
    clock.advance(30)
    demand = zc.update(21.0, 21.0, outdoor_c=11.0)
    assert demand.demand_w == pytest.approx(14 * 10, abs=1.0)


def test_dt_is_capped_after_a_gap(clock: FakeClock) -> None:
    zc = make(clock, kp=0.0, ki=1.0)
    zc.update(20.0, 21.0)
    before = zc.integral_w
    clock.advance(6 * 3600)  # an outage of 6 h
    zc.update(20.0, 21.0)
    # 1 K error over at most 3 × 30 s, not over 6 h
    assert zc.integral_w - before == pytest.approx(90.0)


def test_hold_then_resume_is_bumpless(clock: FakeClock) -> None:
    zc = make(clock)
    steady = run(zc, clock, 20.9, 21.0, steps=200)
    held = zc.hold()
    assert held.demand_w == 0.0
    clock.advance(1800)  # window open for 30 min: integrator frozen, no integration of the gap
    resumed = zc.update(20.9, 21.0).demand_w
    assert resumed == pytest.approx(steady, abs=0.2 * 0.4 * 30 + 1e-6)


def test_a_lower_capacity_clamps_the_integral(clock: FakeClock) -> None:
    zc = make(clock)
    run(zc, clock, 20.8, 21.0, steps=400)
    assert zc.integral_w > 150.0
    zc.capacity_w = 100.0
    clock.advance(30)
    demand = zc.update(20.8, 21.0)
    assert demand.demand_w <= 100.0 and zc.integral_w <= 100.0


def test_an_early_call_returns_the_last_demand_within_the_new_capacity(clock: FakeClock) -> None:
    zc = make(clock)
    steady = run(zc, clock, 20.0, 21.0, steps=3)
    clock.advance(1.0)
    assert zc.update(20.5, 21.0).demand_w == steady  # not due: no PID step on a fresh reading
    zc.capacity_w = 50.0
    assert zc.update(20.5, 21.0).demand_w == 50.0


def test_integrator_persists_across_restart(clock: FakeClock) -> None:
    zc = make(clock)
    run(zc, clock, 20.8, 21.0, steps=100)
    saved = zc.integral_w
    fresh = make(clock)
    fresh.restore_integral(saved)
    clock.advance(30)
    assert fresh.update(21.0, 21.0).i_w == pytest.approx(saved)


def test_the_integral_grows_by_ki_error_dt_each_step(clock: FakeClock) -> None:
    zc = make(clock, kp=0.0, ki=0.5)
    first = zc.update(20.0, 21.0)  # first step: dt is one interval
    assert first.i_w == pytest.approx(0.5 * 1.0 * 30.0) and first.p_w == 0.0
    clock.advance(30.0)
    assert zc.update(20.0, 21.0).i_w == pytest.approx(30.0)
    clock.advance(27.0)  # due at 90 % of the interval, with the dt that really passed
    assert zc.update(20.0, 21.0).i_w == pytest.approx(43.5)


def test_terms_are_reported(clock: FakeClock) -> None:
    zc = make(clock, kp=100.0, ki=0.1, ua_w_per_k=5.0)
    d = zc.update(20.5, 21.0, outdoor_c=1.0)
    assert d.p_w == pytest.approx(50.0) and d.i_w == pytest.approx(1.5) and d.ff_w == pytest.approx(100.0)
    assert d.demand_w == pytest.approx(151.5)


def test_after_a_hold_a_small_error_integrates_again(clock: FakeClock) -> None:
    zc = make(clock, kp=0.0, ki=1.0)
    zc.hold()
    clock.advance(30.0)
    assert zc.update(20.5, 21.0).i_w == pytest.approx(15.0)  # 0.5 K below: not "saturated low"


def test_saturated_high_stops_integrating_only_while_the_error_pushes_up(clock: FakeClock) -> None:
    zc = make(clock, kp=100.0, ki=0.2)
    zc.capacity_w = 10.0
    assert zc.update(20.5, 21.0).i_w == pytest.approx(3.0)  # 0.5 K below; P alone saturates the 10 W
    clock.advance(30.0)
    assert zc.update(20.5, 21.0).i_w == pytest.approx(3.0)  # saturated high, error up: frozen
    clock.advance(30.0)
    assert zc.update(21.2, 21.0).i_w == pytest.approx(1.8)  # above setpoint: integrates down at once


def test_restore_while_running_takes_the_restored_value(clock: FakeClock) -> None:
    zc = make(clock, kp=0.0, ki=0.0)
    zc.update(21.0, 21.0)
    zc.restore_integral(80.0)
    assert zc.integral_w == 80.0
    clock.advance(30.0)
    assert zc.update(21.0, 21.0).demand_w == pytest.approx(80.0)
