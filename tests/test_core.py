"""The node controller: caps inside the loop, each zone on its own interval, every safety rule with a lever."""

from __future__ import annotations

import pytest

from heatctl.config import ControlConfig, parse_config
from heatctl.control.core import GpuState, NodeController, NodeInputs
from heatctl.control.efficiency import GpuCaps
from heatctl.control.pid import ZoneController
from heatctl.control.safety import Reading, ZoneInputs
from heatctl.sim.room import Room1R1C
from tests.conftest import MINIMAL_YAML, FakeClock

CAPS = GpuCaps(idle_w=20.0, min_limit_w=100.0, max_limit_w=300.0)
TWO_ZONES = """
node_id: two
zones:
  - name: office
    temperature: {topic: a/t}
    setpoint: {topic: a/s}
    gpus: [gpu0]
  - name: den
    temperature: {topic: b/t}
    setpoint: {topic: b/s}
    control: {interval_s: 120}
    gpus: [gpu1]
gpus:
  - {id: gpu0, backend: sim}
  - {id: gpu1, backend: sim}
"""


def zin(now_s: float, temp_c: float, sp_c: float = 21.0) -> ZoneInputs:
    return ZoneInputs(temperature=Reading(value=temp_c, at_s=now_s), setpoint=Reading(value=sp_c, at_s=now_s))


def one_zone(clock: FakeClock, yaml_extra: str = "", caps: GpuCaps = CAPS) -> NodeController:
    return NodeController(parse_config(MINIMAL_YAML + yaml_extra), {"gpu0": caps}, time_fn=clock)


def step(node: NodeController, clock: FakeClock, temp_c: float, **kw: object) -> tuple[float, float]:
    """One tick: (zone demand, gpu0 target)."""
    clock.advance(30.0)
    out = node.step(NodeInputs(mode="heat", zones={"office": zin(clock.now_s, temp_c)}, **kw))  # type: ignore[arg-type]
    return out.zones["office"].demand_w, out.gpus["gpu0"].target_w


def test_max_power_zero_means_no_heat_and_holds_the_integrator(clock: FakeClock) -> None:
    node = one_zone(clock)
    for _ in range(20):
        step(node, clock, 20.8)
    integral_w = node.zones["office"].integral_w
    for _ in range(240):  # 2 h at a cap of 0 with the room below setpoint
        demand_w, target_w = step(node, clock, 20.6, max_power_w=0.0)
        assert demand_w == 0.0 and target_w == 0.0
    assert node.zones["office"].integral_w == pytest.approx(integral_w)


def test_a_node_cap_is_the_pids_limit_so_it_does_not_wind_up(clock: FakeClock) -> None:
    node = one_zone(clock)
    for _ in range(600):  # 5 h far below setpoint, capped at 120 W
        demand_w, target_w = step(node, clock, 18.0, max_power_w=120.0)
        assert demand_w <= 120.0 and target_w <= 120.0
    assert node.zones["office"].integral_w <= 120.0
    # Lifted with the room just above setpoint: nothing wound up to push heat into it.
    demand_w, _ = step(node, clock, 21.3)
    assert demand_w < 120.0


def test_several_zones_share_the_node_cap_inside_their_loops(clock: FakeClock) -> None:
    node = NodeController(parse_config(TWO_ZONES), {"gpu0": CAPS, "gpu1": CAPS}, time_fn=clock)
    for _ in range(400):
        clock.advance(30.0)
        out = node.step(
            NodeInputs(
                mode="heat",
                zones={"office": zin(clock.now_s, 17.0), "den": zin(clock.now_s, 17.0)},
                max_power_w=200.0,
            )
        )
    assert out.zones["office"].capacity_w == out.zones["den"].capacity_w == 100.0
    assert sum(g.target_w for g in out.gpus.values()) <= 200.0 + 1e-9
    assert node.zones["office"].integral_w <= 100.0 and node.zones["den"].integral_w <= 100.0


def test_a_zone_that_may_not_heat_leaves_its_share_of_the_cap_to_the_others(clock: FakeClock) -> None:
    node = NodeController(parse_config(TWO_ZONES), {"gpu0": CAPS, "gpu1": CAPS}, time_fn=clock)
    clock.advance(30.0)
    out = node.step(
        NodeInputs(
            mode="heat",
            zones={"office": zin(clock.now_s, 17.0), "den": ZoneInputs()},  # den: nothing received, fail-safe
            max_power_w=200.0,
        )
    )
    assert out.zones["office"].capacity_w == 200.0 and out.zones["den"].demand_w == 0.0


def test_a_faulted_gpu_takes_its_capacity_out_of_the_zone(clock: FakeClock) -> None:
    node = one_zone(clock)
    _, target_w = step(node, clock, 18.0, gpus={"gpu0": GpuState(fault="gpu lost")})
    out_zone = node.zones["office"]
    assert target_w == 0.0 and out_zone.capacity_w == 0.0


def test_each_zone_steps_on_its_own_interval(clock: FakeClock) -> None:
    node = NodeController(parse_config(TWO_ZONES), {"gpu0": CAPS, "gpu1": CAPS}, time_fn=clock)
    den_changes = office_changes = 0
    last = (None, None)
    for k in range(40):  # ticks every 30 s; the den's interval is 120 s
        clock.advance(30.0)
        temp = 20.9 + 0.001 * k  # a new reading every tick, demand in range
        out = node.step(
            NodeInputs(mode="heat", zones={"office": zin(clock.now_s, temp), "den": zin(clock.now_s, temp)})
        )
        now = (out.zones["office"].demand_w, out.zones["den"].demand_w)
        office_changes += now[0] != last[0]
        den_changes += now[1] != last[1]
        last = now
    assert office_changes == 40 and den_changes == 10


def test_a_command_right_after_a_tick_does_not_kick_the_derivative(clock: FakeClock) -> None:
    zc = ZoneController(ControlConfig(kp=200, ki=0.4, kd=20_000), capacity_w=300.0, time_fn=clock)
    for _ in range(50):
        clock.advance(30.0)
        steady = zc.update(20.9, 21.0).demand_w
    clock.advance(0.05)  # a command woke the loop; the thermostat just reported 0.1 K more
    assert zc.update(21.0, 21.0).demand_w == steady
    clock.advance(0.05)  # a setpoint command: the PID steps, but with dt floored
    changed = zc.update(21.0, 21.5)
    assert abs(changed.d_w) <= 20_000 * 0.1 / ControlConfig().dt_floor_s + 1e-6


def test_too_hot_without_limit_control_lowers_the_level(clock: FakeClock) -> None:
    fixed = GpuCaps(idle_w=20.0, min_limit_w=300.0, max_limit_w=300.0)  # the driver keeps 300 W
    node = one_zone(clock, caps=fixed)
    levels = []
    for _ in range(120):  # an hour of a cold room on a GPU above max_temp_c
        step(node, clock, 17.0, gpus={"gpu0": GpuState(power_w=300.0, temperature_c=95.0)})
        levels.append(node._last["gpu0"].level)
    assert levels[0] < 1.0  # the guard acts at once
    assert max(levels[-20:]) < 0.5  # and keeps lowering the workload while it stays hot
    for _ in range(400):  # cool again: back to full work
        step(node, clock, 17.0, gpus={"gpu0": GpuState(power_w=150.0, temperature_c=60.0)})
    assert node._last["gpu0"].level == 1.0


def test_too_hot_at_the_lowest_limit_lowers_the_level_too(clock: FakeClock) -> None:
    node = one_zone(clock)
    for _ in range(200):
        step(node, clock, 17.0, gpus={"gpu0": GpuState(power_w=100.0, temperature_c=95.0)})
    last = node._last["gpu0"]
    assert last.power_limit_w == 100.0 and last.level < 1.0


def test_lifting_a_zero_cap_with_the_room_at_setpoint_does_not_overshoot(clock: FakeClock) -> None:
    """2 h at a cap of 0 W, the room brought back to setpoint by the house's radiator, then lifted."""
    integral_at_lift_w, overshoot_k = cap_zero_then_lift(clock)
    assert overshoot_k <= 0.2
    assert integral_at_lift_w < 150.0  # held near the ~100 W the room needs, not wound up towards 300 W


def cap_zero_then_lift(clock: FakeClock) -> tuple[float, float]:
    """(integral at the lift in W, largest room − setpoint after it in K) on a light room needing ~100 W."""
    node = one_zone(clock)
    room = Room1R1C(c_j_per_k=5.0e5, r_k_per_w=0.05, initial_c=21.0)  # 20 W/K, τ ≈ 7 h
    outdoor_c, radiator_on, integral_w, peak_c = 16.0, False, 0.0, -100.0
    for k in range(int(14 * 3600 / 30)):
        hour = k / 120
        cap_w = 0.0 if 6.0 <= hour < 8.0 else None  # 06:00–08:00: max_power_w 0
        clock.advance(30.0)
        out = node.step(
            NodeInputs(mode="heat", zones={"office": zin(clock.now_s, round(room.air_c, 1))}, max_power_w=cap_w)
        )
        radiator_w = 0.0
        if 7.67 <= hour < 8.0:  # the radiator's own thermostat brings the room back to 21 °C
            radiator_on = room.air_c < 20.95 or (radiator_on and room.air_c <= 21.05)
            radiator_w = 1000.0 if radiator_on else 0.0
        room.step(30.0, max(out.gpus["gpu0"].target_w, 20.0) + radiator_w, outdoor_c)
        if k == 8 * 120:
            integral_w = node.zones["office"].integral_w
        if hour >= 8.0:
            peak_c = max(peak_c, room.air_c)
    return integral_w, peak_c - 21.0


def test_outputs_carry_the_zones_readings_and_the_reasons(clock: FakeClock) -> None:
    node = one_zone(clock)
    clock.advance(30.0)
    out = node.step(NodeInputs(mode="heat", zones={"office": zin(clock.now_s, 20.4, 21.5)}))
    z = out.zones["office"]
    assert (out.mode, z.temperature_c, z.setpoint_c, z.failsafe, out.failsafe) == ("heat", 20.4, 21.5, None, None)
    clock.advance(30.0)
    out = node.step(
        NodeInputs(
            mode="heat",
            zones={"office": ZoneInputs(temperature=Reading(value=27.0, at_s=clock.now_s))},
            gpus={"gpu0": GpuState(fault="gpu lost")},
        )
    )
    assert out.zones["office"].failsafe == "setpoint stale" and out.zones["office"].setpoint_c is None
    assert out.failsafe == "gpu0: gpu lost; office: setpoint stale"
    assert out.gpus["gpu0"].regime == "idle" and out.gpus["gpu0"].level == 0.0


def test_a_fresh_outdoor_reading_feeds_forward_a_stale_one_does_not(clock: FakeClock) -> None:
    node = NodeController(
        parse_config(
            MINIMAL_YAML.replace(
                "    gpus: [gpu0]\n", "    control: {ua_w_per_k: 10, kp: 0, ki: 0}\n    gpus: [gpu0]\n"
            )
        ),
        {"gpu0": CAPS},
        time_fn=clock,
    )

    def demand(outdoor_at_s: float) -> float:
        clock.advance(30.0)
        z = ZoneInputs(
            temperature=Reading(value=21.0, at_s=clock.now_s),
            setpoint=Reading(value=21.0, at_s=clock.now_s),
            outdoor=Reading(value=1.0, at_s=outdoor_at_s),
            outdoor_stale_s=3600.0,
        )
        return node.step(NodeInputs(mode="heat", zones={"office": z})).zones["office"].demand_w

    assert demand(clock.now_s) == pytest.approx(200.0)  # 10 W/K × 20 K
    assert demand(clock.now_s - 7200.0) == 0.0


def test_a_workload_heatctl_cannot_steer_gets_the_limit_as_the_only_lever(clock: FakeClock) -> None:
    node = NodeController(
        parse_config(MINIMAL_YAML.replace("    backend: sim\n", "    backend: sim\n    workload: {type: none}\n")),
        {"gpu0": CAPS},
        time_fn=clock,
    )
    clock.advance(30.0)
    out = node.step(NodeInputs(mode="heat", zones={"office": zin(clock.now_s, 20.9)}))
    cmd = out.gpus["gpu0"]
    assert cmd.regime == "continuous" and cmd.level == 1.0 and cmd.power_limit_w == 100.0  # no duty cycling


def run_at_fixed_demand(clock: FakeClock, under: float) -> tuple[NodeController, float, float]:
    """A P-only zone asking a steady 160 W; the GPU draws ``under`` (a fraction) below its limit."""
    node = NodeController(
        parse_config(MINIMAL_YAML.replace("    gpus: [gpu0]\n", "    control: {ki: 0}\n    gpus: [gpu0]\n")),
        {"gpu0": CAPS},
        time_fn=clock,
    )
    limit_w = target_w = 0.0
    for _ in range(30):
        clock.advance(30.0)
        state = GpuState(power_w=limit_w * (1 - under) if limit_w else None, work_rate=70.0, temperature_c=50.0)
        out = node.step(NodeInputs(mode="heat", zones={"office": zin(clock.now_s, 20.2)}, gpus={"gpu0": state}))
        limit_w, target_w = out.gpus["gpu0"].power_limit_w, out.gpus["gpu0"].target_w
    return node, limit_w, target_w


def test_measured_power_under_the_limit_trims_it(clock: FakeClock) -> None:
    _, limit_w, target_w = run_at_fixed_demand(clock, under=0.04)
    assert target_w == pytest.approx(160.0) and limit_w > target_w + 5.0


def test_work_is_learned_where_the_cap_binds_at_full_level(clock: FakeClock) -> None:
    node, _, _ = run_at_fixed_demand(clock, under=0.01)
    assert node.allocators["gpu0"].model.samples >= 25
    node, _, _ = run_at_fixed_demand(FakeClock(), under=0.10)  # the cap does not bind: nothing learned
    assert node.allocators["gpu0"].model.samples == 0


def test_given_efficiency_models_are_used(clock: FakeClock) -> None:
    from heatctl.control.efficiency import EfficiencyModel

    model = EfficiencyModel(CAPS, [(100.0, 10.0), (200.0, 90.0), (300.0, 100.0)])
    node = NodeController(parse_config(MINIMAL_YAML), {"gpu0": CAPS}, models={"gpu0": model}, time_fn=clock)
    assert node.allocators["gpu0"].model is model and model.efficient_cap_w == 200.0


def test_a_gpu_whose_limit_cannot_be_set_learns_at_its_one_limit_without_failing(clock: FakeClock) -> None:
    """min = max (many GeForce and laptop cards): readings at that limit are learned, never a division by 0."""
    fixed = GpuCaps(idle_w=20.0, min_limit_w=200.0, max_limit_w=200.0)
    node = one_zone(clock, caps=fixed)
    model = node.allocators["gpu0"].model
    for _ in range(20):  # a cold room: full level, drawing the fixed limit
        demand_w, _ = step(node, clock, 18.0, gpus={"gpu0": GpuState(power_w=200.0, work_rate=50.0)})
        assert demand_w > 0
    assert model.samples > 0 and model.work_rate(200.0) == pytest.approx(50.0)
    step(node, clock, 18.0, gpus={"gpu0": GpuState(power_w=195.0, work_rate=49.0)})  # a little under: still there
    assert model.efficient_cap_w == 200.0


def two_gpus(clock: FakeClock) -> NodeController:
    return NodeController(parse_config(TWO_ZONES), {"gpu0": CAPS, "gpu1": CAPS}, time_fn=clock)


def test_work_due_is_heat_at_the_efficient_cap_then_up_to_flat_out_within_the_nodes_cap(clock: FakeClock) -> None:
    node = one_zone(clock)
    eff = node.allocators["gpu0"].model.efficient_cap_w
    assert 20.0 < eff < 300.0
    assert node._due_w("gpu0", 0.5, None) == pytest.approx(20.0 + 0.5 * (eff - 20.0))
    assert node._due_w("gpu0", 1.0, None) == pytest.approx(eff)
    assert node._due_w("gpu0", 1.5, None) == pytest.approx(eff + 0.5 * (300.0 - eff))
    assert node._due_w("gpu0", 2.0, None) == node._due_w("gpu0", 3.0, None) == pytest.approx(300.0)
    assert node._due_w("gpu0", 2.0, 150.0) == pytest.approx(150.0)  # within the node's cap
    both = two_gpus(clock)
    assert both._due_w("gpu0", 2.0, 200.0) == pytest.approx(100.0)  # its share of the node's cap


@pytest.mark.parametrize(
    ("case", "due"),
    [("due", 1.0), ("nothing due", 0.0), ("mode off", 1.0), ("window open", 1.0), ("gpu lost", 1.0)],
)
def test_work_due_runs_in_a_warm_room_but_never_against_safety(clock: FakeClock, case: str, due: float) -> None:
    node = one_zone(clock)
    clock.advance(30.0)
    zone = zin(clock.now_s, 21.5)  # warm: no heat wanted
    if case == "window open":
        zone = ZoneInputs(
            temperature=zone.temperature, setpoint=zone.setpoint, window_open=Reading(value=1.0, at_s=clock.now_s)
        )
    gpus = {"gpu0": GpuState(fault="lost")} if case == "gpu lost" else {}
    out = node.step(
        NodeInputs(
            mode="off" if case == "mode off" else "heat",
            zones={"office": zone},
            gpus=gpus,
            work_due={"gpu0": due},
            max_power_w=250.0,
        )
    )
    target = out.gpus["gpu0"].target_w
    if case == "due":
        assert target == pytest.approx(node._due_w("gpu0", 1.0, 250.0)) and target > 20.0
    else:
        assert target == 0.0


def test_a_faulted_gpus_capacity_comes_back_when_it_recovers(clock: FakeClock) -> None:
    node = two_gpus(clock)
    zones = {"office": zin(clock.now_s, 17.0), "den": zin(clock.now_s, 17.0)}
    clock.advance(30.0)
    zones = {"office": zin(clock.now_s, 17.0), "den": zin(clock.now_s, 17.0)}
    healthy = node.step(NodeInputs(mode="heat", zones=zones))
    faulted = node.step(NodeInputs(mode="heat", zones=zones, gpus={"gpu1": GpuState(fault="lost")}))
    again = node.step(NodeInputs(mode="heat", zones=zones))
    assert healthy.zones["den"].capacity_w == again.zones["den"].capacity_w == 300.0
    assert faulted.zones["den"].capacity_w == 0.0 and faulted.gpus["gpu1"].level == 0.0


def test_integrators_come_back_for_known_zones_only(clock: FakeClock) -> None:
    node = one_zone(clock)
    node.restore_integrals({"office": 123.0, "gone": 50.0})
    assert node.integrals_w() == {"office": pytest.approx(123.0)}
    assert node.capacity_w == 300.0


def test_the_curve_is_learned_only_where_the_cap_binds(clock: FakeClock) -> None:
    node = one_zone(clock)
    model = node.allocators["gpu0"].model
    cold = {"office": zin(clock.now_s, 15.0)}
    clock.advance(30.0)
    cold = {"office": zin(clock.now_s, 15.0)}
    cmd = node.step(NodeInputs(mode="heat", zones=cold)).gpus["gpu0"]
    assert cmd.level == 1.0
    limit = cmd.power_limit_w
    clock.advance(30.0)
    cold = {"office": zin(clock.now_s, 15.0)}
    node.step(NodeInputs(mode="heat", zones=cold, gpus={"gpu0": GpuState(power_w=limit * 0.97, work_rate=50.0)}))
    assert model.samples == 1  # 3 % under the cap: it binds
    clock.advance(30.0)
    cold = {"office": zin(clock.now_s, 15.0)}
    node.step(NodeInputs(mode="heat", zones=cold, gpus={"gpu0": GpuState(power_w=limit * 0.9, work_rate=50.0)}))
    assert model.samples == 1  # 10 % under: the GPU is not at its cap, nothing learned


def test_the_node_cap_binds_the_gpus_limit_not_only_its_target(clock: FakeClock) -> None:
    # A GPU whose cap holds loosely (it draws under its limit) teaches the allocator a trim that lifts
    # the limit above the target; a node cap (a house's share) must still bound the limit, and a cap
    # below the lowest settable limit leaves the GPU at less than full batch.
    node = one_zone(clock)
    loose = {"gpu0": GpuState(power_w=140.0, temperature_c=50.0)}
    for _ in range(40):  # continuous at 150 W, drawing 140: the trim learns +10 W
        step(node, clock, 18.0, max_power_w=150.0, gpus=loose)
    clock.advance(30.0)
    out = node.step(NodeInputs(mode="heat", zones={"office": zin(clock.now_s, 18.0)}, max_power_w=150.0, gpus=loose))
    assert out.gpus["gpu0"].power_limit_w <= 150.0
    out = node.step(NodeInputs(mode="heat", zones={"office": zin(clock.now_s, 18.0)}, max_power_w=60.0, gpus=loose))
    command = out.gpus["gpu0"]
    assert command.power_limit_w == 100.0 and command.level <= 0.5  # at most 60 W: idle 20 + 0.5 × 80
