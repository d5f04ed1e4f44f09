from __future__ import annotations

import pytest

from heatctl.config import ControlConfig, parse_config
from heatctl.control.core import GpuState, NodeController, NodeInputs
from heatctl.control.efficiency import GpuCaps
from heatctl.control.safety import Reading, ThermalGuard, ZoneInputs, zone_failsafe, zone_wants_no_heat
from tests.conftest import MINIMAL_YAML, FakeClock

CFG = ControlConfig()
CAPS = {"gpu0": GpuCaps(idle_w=20.0, min_limit_w=100.0, max_limit_w=300.0)}


def zone(now_s: float, temp_c: float = 19.0, sp_c: float = 21.0, **kw: Reading | None) -> ZoneInputs:
    return ZoneInputs(
        temperature=kw.pop("temperature", Reading(value=temp_c, at_s=now_s)),
        setpoint=kw.pop("setpoint", Reading(value=sp_c, at_s=now_s)),
        **kw,  # type: ignore[arg-type]
    )


def test_nothing_received_since_boot_is_stale() -> None:
    assert zone_failsafe(0.0, ZoneInputs(), CFG) == "temperature stale"
    assert zone_failsafe(0.0, zone(0.0, setpoint=None), CFG) == "setpoint stale"


def test_old_reading_is_stale_fresh_one_is_not() -> None:
    z = zone(0.0)
    assert zone_failsafe(900.0, z, CFG) is None
    assert zone_failsafe(901.0, z, CFG) == "temperature stale"


def test_window_and_max_room_temperature() -> None:
    assert zone_failsafe(0.0, zone(0.0, window_open=Reading(value=1.0, at_s=0.0)), CFG) == "window open"
    assert zone_failsafe(0.0, zone(0.0, window_open=Reading(value=0.0, at_s=0.0)), CFG) is None
    assert zone_failsafe(0.0, zone(0.0, temp_c=26.5), CFG) == "room above max_room_c"


def test_thermal_guard_lowers_then_recovers_per_second() -> None:
    guard = ThermalGuard(83.0, 20.0, 300.0, down_w_per_s=0.5, up_w_per_s=0.2)
    assert guard.update(0.0, 84.0, 250.0) == 249.5  # starts from the draw, acts at once
    assert guard.update(30.0, 85.0, 260.0) == 234.5  # 0.5 W/s for 30 s
    assert guard.update(60.0, 81.0, 230.0) == 234.5  # hold inside the 3 K band
    assert guard.update(160.0, 70.0, 200.0) == 254.5  # 0.2 W/s for 100 s
    guard.update(1000.0, 70.0, 200.0)
    assert guard.ceiling_w == 300.0 and not guard.derating


def test_thermal_guard_rate_does_not_depend_on_how_often_it_is_asked() -> None:
    every_30_s, with_extra_ticks = ThermalGuard(83.0, 20.0, 300.0), ThermalGuard(83.0, 20.0, 300.0)
    for t in (0.0, 30.0, 60.0):
        every_30_s.update(t, 90.0, 300.0)
    for t in (0.0, 0.1, 0.2, 30.0, 30.05, 60.0):  # commands trigger extra ticks
        with_extra_ticks.update(t, 90.0, 300.0)
    assert with_extra_ticks.ceiling_w == pytest.approx(every_30_s.ceiling_w)


def test_thermal_guard_may_go_below_the_lowest_limit_to_idle() -> None:
    guard = ThermalGuard(83.0, 20.0, 300.0)
    guard.update(0.0, 95.0, 300.0)
    guard.update(3600.0, 95.0, 300.0)
    assert guard.ceiling_w == 20.0


@pytest.fixture
def node(clock: FakeClock) -> NodeController:
    return NodeController(parse_config(MINIMAL_YAML), CAPS, time_fn=clock)


def inputs(clock: FakeClock, mode: str = "heat", **zkw: Reading | None) -> NodeInputs:
    return NodeInputs(mode=mode, zones={"office": zone(clock.now_s, temp_c=18.0, **zkw)})


def test_cold_room_heats(node: NodeController, clock: FakeClock) -> None:
    out = node.step(inputs(clock))
    assert out.failsafe is None
    assert out.gpus["gpu0"].level == 1.0 and out.gpus["gpu0"].power_limit_w == 300.0


@pytest.mark.parametrize(
    ("kw", "mode", "reason"),
    [
        ({"temperature": None}, "heat", "office: temperature stale"),
        ({"window_open": Reading(value=1.0, at_s=0.0)}, "heat", "office: window open"),
        ({}, "off", None),
        ({"thermostat_on": Reading(value=0.0, at_s=0.0)}, "heat", None),
    ],
)
def test_no_heat_when_unsafe_or_off(
    node: NodeController, clock: FakeClock, kw: dict[str, Reading | None], mode: str, reason: str | None
) -> None:
    out = node.step(inputs(clock, mode=mode, **kw))
    assert out.gpus["gpu0"].level == 0.0
    assert out.zones["office"].demand_w == 0.0
    assert out.failsafe == reason


def test_lost_gpu_fails_safe(node: NodeController, clock: FakeClock) -> None:
    out = node.step(NodeInputs(mode="heat", zones=inputs(clock).zones, gpus={"gpu0": GpuState(fault="gpu lost")}))
    assert out.gpus["gpu0"].level == 0.0 and out.failsafe == "gpu0: gpu lost"


def test_hot_gpu_gets_a_lower_limit(node: NodeController, clock: FakeClock) -> None:
    hot = {"gpu0": GpuState(power_w=300.0, temperature_c=90.0)}
    for _ in range(5):
        clock.advance(30)
        out = node.step(NodeInputs(mode="heat", zones=inputs(clock).zones, gpus=hot))
    assert out.gpus["gpu0"].power_limit_w <= 250.0


def test_node_max_power_scales_targets(node: NodeController, clock: FakeClock) -> None:
    out = node.step(NodeInputs(mode="heat", zones=inputs(clock).zones, max_power_w=150.0))
    assert out.gpus["gpu0"].power_limit_w == pytest.approx(150.0)


def test_the_zones_own_mode_off_means_no_heat() -> None:
    assert zone_wants_no_heat(ZoneInputs(mode="off"))
    assert not zone_wants_no_heat(ZoneInputs(mode="heat"))
    assert zone_wants_no_heat(ZoneInputs(thermostat_on=Reading(value=0.0, at_s=0.0)))
    assert not zone_wants_no_heat(ZoneInputs(thermostat_on=Reading(value=1.0, at_s=0.0)))


def test_max_room_c_itself_is_still_allowed() -> None:
    assert zone_failsafe(0.0, zone(0.0, temp_c=26.0), CFG) is None


def test_thermal_guard_defaults_per_second() -> None:
    guard = ThermalGuard(83.0, 20.0, 300.0)
    guard.update(0.0, 83.0, 300.0)  # at the limit counts as too hot
    assert guard.update(30.0, 84.0, 300.0) == pytest.approx(300.0 - 0.5 - 15.0)
    guard.update(60.0, 80.0, 200.0)  # exactly 3 K below: not yet recovering
    assert guard.ceiling_w == pytest.approx(284.5)
    assert guard.update(110.0, 79.0, 200.0) == pytest.approx(284.5 + 0.2 * 50)


def test_thermal_guard_without_a_power_reading_lowers_from_its_own_ceiling() -> None:
    """No power reading (a card that gives none): the ceiling falls from where it is, at the same rate."""
    guard = ThermalGuard(83.0, 20.0, 300.0, down_w_per_s=0.5, up_w_per_s=0.2)
    assert guard.update(0.0, 90.0, None) == 299.5  # acts at once, from the ceiling
    assert guard.update(10.0, 90.0, None) == 294.5
    assert guard.update(20.0, None, None) == 294.5  # no temperature either: it holds
    assert guard.derating
    assert guard.update(30.0, 90.0, 250.0) == pytest.approx(245.0)  # a reading below the ceiling: from the draw
