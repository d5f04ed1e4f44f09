"""The main-heating cascade (pure) and the simulator's main heating and baselines."""

from __future__ import annotations

from typing import Any

import pytest

from heatctl.config import Config
from heatctl.mainheat.cascade import GIVEN_BACK, HELD, PUSH_K, RELEASED, Cascade
from heatctl.mainheat.kinds import EntityMainHeating, SwitchMainHeating, TrvMainHeating
from heatctl.sim.report import kpis
from heatctl.sim.runner import simulate
from heatctl.sim.scenario import Scenario

CAP_W = 260.0


def step(c: Cascade, t: float, room: float, target: float = 21.0, demand: float = CAP_W, **kw: Any) -> Any:
    return c.update(
        t,
        room_c=room,
        target_c=target,
        user_c=kw.get("user", 21.0),
        demand_w=demand,
        capacity_w=CAP_W,
        failsafe=kw.get("failsafe"),
        shortfall_in_s=kw.get("shortfall_in_s"),
        reach_c=kw.get("reach_c"),
    )


def test_held_until_the_gpus_fall_behind_long_enough_then_released_then_held_again() -> None:
    c = Cascade(TrvMainHeating(trv="zigbee2mqtt/trv"))
    cmd = step(c, 0, 20.9)
    assert cmd.stage == HELD and cmd.setpoint_c == 19.5 and cmd.gpu_target_c == 21.0  # target − 1.5
    for t in range(60, 20 * 60, 60):  # 0.4 K behind at full power: 0.4 × t ≥ 0.3 × 20 min after 15 min
        cmd = step(c, t, 20.6)
    assert cmd.stage == RELEASED and cmd.setpoint_c == 21.0 and cmd.gpu_target_c == 21.0 + PUSH_K
    start = 20 * 60
    for t in range(start, start + 29 * 60, 60):  # warm from the GPUs alone, but not yet for 30 min
        cmd = step(c, t, 21.35, demand=100.0)
    assert cmd.stage == RELEASED
    t = start + 29 * 60
    cmd = step(c, t + 120, 21.35, demand=100.0)
    assert cmd.stage == HELD and cmd.setpoint_c == 19.5
    assert c.switches_today(t + 120) == 2


def test_a_big_deficit_releases_within_minutes_a_small_one_waits() -> None:
    big, small = Cascade(TrvMainHeating(trv="t")), Cascade(TrvMainHeating(trv="t"))
    for t in range(0, 5 * 60, 30):
        big_cmd, small_cmd = step(big, t, 18.0), step(small, t, 20.65)
    assert big_cmd.stage == RELEASED  # 3 K behind: 3 × 4.5 min > 0.3 × 20 min
    assert small_cmd.stage == HELD
    assert step(small, 400, 20.65, demand=CAP_W * 0.5).stage == HELD  # the GPUs have headroom: no release


def test_a_rise_the_gpus_cannot_make_up_in_time_releases_the_main_heating_at_once() -> None:
    """A morning rise of 1 K in a room the GPUs only just hold: without a model to say otherwise, the
    radiator helps from the first tick (as it would without heatctl), not after minutes of deficit."""
    c = Cascade(TrvMainHeating(trv="t"))  # engage_k 0.3, engage_after_min 20
    assert step(c, 0, 20.0, target=20.0, demand=CAP_W * 0.8).stage == HELD
    cmd = step(c, 30, 20.0, target=21.0)
    assert cmd.stage == RELEASED and cmd.setpoint_c == 21.0 and "rose 1.0 K" in cmd.reason


def test_a_rise_the_learned_model_says_the_gpus_make_up_keeps_the_main_heating_held() -> None:
    asked: list[float] = []

    def reach(seconds: float) -> float:
        asked.append(seconds)
        return 20.8  # within engage_k of 21 after engage_after_min, flat out

    c = Cascade(TrvMainHeating(trv="t"))
    step(c, 0, 20.0, target=20.0, demand=CAP_W * 0.8)
    assert step(c, 30, 20.0, target=21.0, reach_c=reach).stage == HELD
    assert asked == [20 * 60.0]
    short = Cascade(TrvMainHeating(trv="t"))
    step(short, 0, 20.0, target=20.0, demand=CAP_W * 0.8)
    assert step(short, 30, 20.0, target=21.0, reach_c=lambda s: 20.5).stage == RELEASED
    small = Cascade(TrvMainHeating(trv="t"))  # a rise under engage_k waits as before
    step(small, 0, 20.0, target=20.0, demand=CAP_W * 0.8)
    assert step(small, 30, 20.0, target=20.2).stage == HELD


def test_a_shortfall_the_plan_foresees_releases_the_main_heating_before_the_room_is_cold() -> None:
    c = Cascade(TrvMainHeating(trv="t"))  # engage_after_min 20
    assert step(c, 0, 21.0, shortfall_in_s=2 * 3600.0).stage == HELD  # hours away: the GPUs go on alone
    cmd = step(c, 60, 21.0, shortfall_in_s=15 * 60.0)  # on target now, behind in 15 min whatever the GPUs do
    assert cmd.stage == RELEASED and cmd.setpoint_c == 21.0 and "the plan" in cmd.reason
    for t in range(120, 60 * 60, 60):  # warm from the GPUs alone, but the plan still sees the shortfall
        cmd = step(c, t, 21.4, demand=100.0, shortfall_in_s=10 * 60.0)
    assert cmd.stage == RELEASED and "the plan" in cmd.reason
    for t in range(3600, 3600 + 32 * 60, 60):  # the plan no longer sees one: held back after hold_after_min
        cmd = step(c, t, 21.4, demand=100.0)
    assert cmd.stage == HELD


def test_any_failsafe_gives_the_users_setpoint_back_and_good_inputs_take_it_again() -> None:
    c = Cascade(TrvMainHeating(trv="t", offset_k=2.0))
    assert step(c, 0, 20.0).stage == HELD
    cmd = step(c, 60, 20.0, user=22.5, failsafe="office: window open")
    assert (cmd.stage, cmd.setpoint_c, cmd.reason) == (GIVEN_BACK, 22.5, "office: window open")
    cmd = c.update(120, room_c=None, target_c=21.0, user_c=22.5, demand_w=0, capacity_w=CAP_W, failsafe=None)
    assert cmd.stage == GIVEN_BACK and cmd.setpoint_c == 22.5
    assert step(c, 180, 20.0).stage == HELD


def test_an_on_off_heater_keeps_its_minimum_times_and_is_given_back_on() -> None:
    c = Cascade(SwitchMainHeating(switch={"entity": "switch.heater", "min_on_min": 10, "min_off_min": 10}))
    assert step(c, 0, 21.0).on is False  # held: off
    for t in range(0, 3 * 60, 30):
        cmd = step(c, t, 17.0)
    assert cmd.stage == RELEASED and cmd.on is True
    assert step(c, 240, 21.4, demand=0).on is True  # warm, but on for less than 10 min
    assert step(c, 800, 21.4, demand=0).on is False
    assert step(c, 830, 17.0).on is False  # cold again, but off for less than 10 min
    assert step(c, 1500, 17.0).on is True
    assert step(c, 1530, 17.0, failsafe="heatctl off").on is True  # give_back: on (its own thermostat rules)


def test_switches_are_bounded_per_day_staying_released() -> None:
    c = Cascade(TrvMainHeating(trv="t", engage_after_min=0.0, hold_after_min=0.0, max_switches_per_day=4))
    t = 0.0
    stages = []
    for _ in range(10):
        stages.append(step(c, t, 19.0).stage)  # behind: released at once
        t += 60
        step(c, t, 19.0)
        stages.append(step(c, t + 1, 21.5, demand=0).stage)  # warm: held at once, while the budget lasts
        t += 60
    assert c.switches_today(t) == 3 and stages[-1] == RELEASED  # r, h, r: a 4th (hold) would leave no release
    assert step(c, t + 86400, 21.5, demand=0).stage == HELD  # a day later the budget is back


def scenario(**kw: Any) -> Scenario:
    base: dict[str, Any] = {
        "duration_h": 48,
        "step_s": 60,
        "weather": {"constant_c": 0.0},
        "room": {"model": "1r1c", "c_j_per_k": 3.0e6, "r_k_per_w": 0.06, "initial_c": 20.5},
        "schedule": [{"at": "00:00", "setpoint_c": 21.0}],
        "gpu": {"max_limit_w": 260, "work_at_w": [[100, 40], [260, 84]]},
        "main_heating": {"power_w": 1000, "hysteresis_k": 0.3, "min_cycle_min": 10},
    }
    return Scenario.model_validate(base | kw)


def config(main_heating: dict[str, Any] | None, **top: Any) -> Config:
    zone: dict[str, Any] = {"name": "room", "temperature": {"topic": "t"}, "setpoint": {"topic": "s"}, "gpus": ["gpu0"]}
    if main_heating is not None:
        zone["main_heating"] = main_heating
    return Config.model_validate({"mqtt": None, "zones": [zone], "gpus": [{"id": "gpu0", "backend": "sim"}], **top})


@pytest.mark.parametrize("kind", [{"trv": "zigbee2mqtt/trv"}, {"switch": {"topic": "cmnd/heater/POWER"}}])
def test_the_simulated_cascade_lets_the_gpu_go_first_beside_the_baselines(kind: dict[str, Any]) -> None:
    scen = scenario()  # 21 K × 16.7 W/K = 350 W: more than the GPU's 260 W
    cfg = config(kind)
    main_only = kpis(simulate(scen, cfg, controller="main-only"))
    side = kpis(simulate(scen, cfg, controller="side-by-side"))
    result = simulate(scen, cfg, controller="heatctl")
    steered = kpis(result)
    assert main_only["energy_kwh"] < 1.2  # the GPU idles (20 W)
    assert steered["gpu_heat_share"] > side["gpu_heat_share"] > main_only["gpu_heat_share"]
    assert steered["main_kwh"] < side["main_kwh"] < main_only["main_kwh"]
    assert steered["discomfort_kh"] <= main_only["discomfort_kh"] + 0.2
    assert steered["main_switches_per_day"] <= 12
    assert result.main_switches is not None and result.main_switches >= 1  # it did release the radiator
    main_w = result.series["main_w"]
    gpu_w = result.series["gpu_power_w"]
    on = main_w > 0
    assert (gpu_w[on] >= 250).mean() > 0.95  # the radiator runs only while the GPU is flat out


def test_a_room_the_gpu_can_hold_never_needs_the_main_heating() -> None:
    room = {"model": "1r1c", "c_j_per_k": 3.0e6, "r_k_per_w": 0.06, "initial_c": 21.0}
    result = simulate(scenario(weather={"constant_c": 10.0}, room=room), config({"trv": "t"}))
    k = kpis(result)
    assert k["main_kwh"] == 0.0 and k["gpu_heat_share"] == 1.0
    assert result.main_switches == 0


def test_cheapest_source_first_by_price_cop_and_the_value_of_work() -> None:
    from heatctl.mainheat.cascade import MAIN_FIRST, main_is_cheaper

    heat_pump = EntityMainHeating(entity="climate.hp", prefer="cheapest", cop=3.0)
    gas = EntityMainHeating(entity="climate.boiler", prefer="cheapest", cost_per_kwh_heat=0.12)
    assert main_is_cheaper(heat_pump, 0.30, work_per_kwh=1e6, work_value=0.0)  # 0.10 against 0.30
    assert not main_is_cheaper(heat_pump, 0.30, work_per_kwh=1e6, work_value=2.5e-7)  # work worth 0.25/kWh
    assert not main_is_cheaper(gas, 0.08, work_per_kwh=1e6, work_value=0.0)  # cheap power beats gas
    assert main_is_cheaper(gas, 0.30, work_per_kwh=1e6, work_value=0.0)
    c = Cascade(heat_pump)
    cmd = c.update(
        0, room_c=20.9, target_c=21.0, user_c=21.0, demand_w=0, capacity_w=CAP_W, failsafe=None, main_cheaper=True
    )
    assert cmd.stage == MAIN_FIRST and cmd.setpoint_c == 21.0 and cmd.gpu_target_c == 21.0 - 1.5
    cmd = c.update(60, room_c=20.9, target_c=21.0, user_c=21.0, demand_w=0, capacity_w=CAP_W, failsafe=None)
    assert cmd.stage == HELD and cmd.setpoint_c == 19.5  # the GPUs' turn again


def test_the_simulated_cheapest_source_follows_a_day_night_tariff() -> None:
    tariff = {"periods": [{"from": "07:00", "to": "23:00", "price_per_kwh": 0.40}], "default_per_kwh": 0.10}
    scen = scenario(duration_h=72, tariff=tariff, weather={"constant_c": 8.0})  # 217 W: the GPU alone could
    main = {"trv": "t", "prefer": "cheapest", "cop": 3.0}
    # Work worth 1e-7 a unit, ~1.4e6 units/kWh at the efficient cap: 0.14 a kWh in the GPU's favour.
    cfg = config(main, tariff={"price_per_kwh": 0.3}, work_value_per_unit=1e-7)  # the scenario's tariff rules
    result = simulate(scen, cfg)
    s = result.series
    hour = (s["time_s"] / 3600) % 24
    day, night = (hour >= 8) & (hour < 22), (hour < 6)
    assert s["main_w"][day].mean() > 3 * s["main_w"][night].mean()  # the heat pump by day (0.13 < 0.40 − 0.14)
    assert s["gpu_power_w"][night].mean() > 2 * s["gpu_power_w"][day].mean()  # the GPU by night (0.10 − 0.14 < 0.03)
    assert kpis(result)["discomfort_kh"] < 3.0
