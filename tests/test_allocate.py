from __future__ import annotations

import pytest

from heatctl.config import DutyConfig
from heatctl.control.allocate import Allocator, DutyCycle
from heatctl.control.efficiency import EfficiencyModel, GpuCaps

CAPS = GpuCaps(idle_w=20.0, min_limit_w=100.0, max_limit_w=300.0)
CURVE = [(100.0, 40.0), (150.0, 62.0), (200.0, 75.0), (250.0, 82.0), (300.0, 86.0)]


def allocator(**duty: float) -> Allocator:
    return Allocator(EfficiencyModel(CAPS, CURVE), DutyConfig(**duty), deadband_w=5.0)


def test_efficient_cap_is_most_work_per_watt_above_idle() -> None:
    assert EfficiencyModel(CAPS, CURVE).efficient_cap_w == 100.0
    # A curve whose work per watt peaks in the middle:
    peaked = [(100.0, 10.0), (150.0, 60.0), (200.0, 70.0), (300.0, 80.0)]
    assert EfficiencyModel(CAPS, peaked).efficient_cap_w == 150.0


def test_above_efficient_cap_runs_continuously_at_a_lower_cap() -> None:
    alloc = allocator()
    cmd = alloc.step(0.0, 180.0)
    assert (cmd.power_limit_w, cmd.level, cmd.regime) == (180.0, 1.0, "continuous")
    # The same heat at full power part of the time would do less work:
    continuous_work = EfficiencyModel(CAPS, CURVE).work_rate(180.0)
    duty_work = (180.0 - 20.0) / (300.0 - 20.0) * 86.0
    assert continuous_work > 1.2 * duty_work


def test_limit_moves_only_beyond_the_deadband() -> None:
    alloc = allocator()
    alloc.step(0.0, 180.0)
    writes = alloc.limit_writes
    assert alloc.step(30.0, 183.0).power_limit_w == 180.0
    assert alloc.step(60.0, 186.0).power_limit_w == 186.0
    assert alloc.limit_writes == writes + 1


def test_below_efficient_cap_duty_cycles_to_the_right_average() -> None:
    alloc = allocator(period_s=300, min_on_s=60, min_off_s=60)
    target_w = 60.0  # half-way between idle (20) and the efficient cap (100)
    powers = []
    for t in range(0, 3000, 10):
        cmd = alloc.step(float(t), target_w)
        assert cmd.power_limit_w == 100.0 and cmd.regime == "duty"
        powers.append(20.0 + cmd.level * 80.0)
    assert sum(powers) / len(powers) == pytest.approx(target_w, rel=0.05)


def test_duty_cycle_honours_minimum_on_and_off_times() -> None:
    duty = DutyCycle(DutyConfig(period_s=300, min_on_s=60, min_off_s=90))
    states = [duty.step(float(t), 0.05) for t in range(0, 7200)]  # 1 s ticks, 5 % on
    runs: list[tuple[bool, int]] = []
    for s in states:
        if runs and runs[-1][0] == s:
            runs[-1] = (s, runs[-1][1] + 1)
        else:
            runs.append((s, 1))
    inner = runs[1:-1]
    assert all(n >= 60 for on, n in inner if on)
    assert all(n >= 90 for on, n in inner if not on)
    assert sum(states) / len(states) == pytest.approx(0.05, abs=0.01)


def test_idle_target_means_no_work_and_the_lowest_cap() -> None:
    alloc = allocator()
    alloc.step(0.0, 200.0)
    writes = alloc.limit_writes
    cmd = alloc.step(30.0, 0.0)
    assert cmd.level == 0.0 and cmd.regime == "idle"
    assert cmd.power_limit_w == CAPS.min_limit_w  # others' load on the GPU adds the least heat
    alloc.step(60.0, 0.0)
    assert alloc.limit_writes == writes + 1


def test_limit_only_follows_the_target_without_duty_cycling() -> None:
    alloc = Allocator(EfficiencyModel(CAPS, CURVE), DutyConfig(), limit_only=True)
    assert alloc.step(0.0, 60.0).power_limit_w == 100.0  # the least it can do
    assert alloc.step(30.0, 170.0).power_limit_w == 170.0
    assert {alloc.step(60.0 + t, 60.0).regime for t in range(0, 900, 30)} == {"continuous"}


def test_ceiling_caps_the_limit() -> None:
    alloc = allocator()
    alloc.ceiling_w = 220.0
    assert alloc.step(0.0, 290.0).power_limit_w == 220.0


def test_trim_corrects_a_cap_that_does_not_hold_exactly() -> None:
    alloc = allocator()
    limit_w = alloc.step(0.0, 200.0).power_limit_w
    for t in range(1, 40):
        # This GPU draws 6 % under its cap.
        limit_w = alloc.step(t * 30.0, 200.0, measured_w=0.94 * limit_w).power_limit_w
    assert 0.94 * limit_w == pytest.approx(200.0, rel=0.03)
    assert alloc.step(40 * 30.0, 0.0).regime == "idle" and alloc._trim_w == 0.0  # idle forgets it: learned again
    assert not alloc._continuous


def test_learning_moves_the_efficient_cap() -> None:
    model = EfficiencyModel(CAPS, CURVE)
    for _ in range(30):
        model.observe(100.0, 40.0)  # as the prior says at 100 W
        model.observe(200.0, 140.0)  # but this GPU does far more at 200 W
    assert model.efficient_cap_w == pytest.approx(200.0)
    assert model.work_rate(200.0) == pytest.approx(140.0, rel=0.01)


def test_prior_scale_is_learned_without_distorting_its_shape() -> None:
    """A generic prior in arbitrary units meets a server counting tokens/s."""
    model = EfficiencyModel(CAPS)  # generic shape, 100 units at the top
    before_cap = model.efficient_cap_w
    generic_at = {w: model.work_rate(w) for w in (150.0, 200.0, 250.0)}
    for _ in range(20):
        model.observe(200.0, 15.0 * generic_at[200.0])  # 15× the prior's scale, same shape
    assert model.efficient_cap_w == before_cap  # the visited bin does not look better for its scale
    assert model.work_rate(250.0) == pytest.approx(15.0 * generic_at[250.0], rel=0.01)
    assert model.work_rate(150.0) == pytest.approx(15.0 * generic_at[150.0], rel=0.01)


def test_duty_phases_stretch_to_the_minimum_times() -> None:
    duty = DutyCycle(DutyConfig(period_s=300, min_on_s=60, min_off_s=90))
    assert duty.phases_s(0.5) == (150.0, 150.0)
    on_s, off_s = duty.phases_s(0.1)  # 30 s on would be too short: 60 s on, off stretched to keep 10 %
    assert (on_s, off_s) == (60.0, pytest.approx(540.0))
    on_s, off_s = duty.phases_s(0.8)  # 60 s off would be too short: 90 s off, on stretched to keep 80 %
    assert (on_s, off_s) == (pytest.approx(360.0), 90.0)
    assert duty.phases_s(0.0) == (0.0, float("inf")) and duty.phases_s(1.0) == (float("inf"), 0.0)


def test_duty_switches_exactly_at_the_phase_ends() -> None:
    duty = DutyCycle(DutyConfig(period_s=100, min_on_s=0, min_off_s=0))
    assert duty.step(0.0, 0.3) is True
    assert duty.step(29.9, 0.3) is True and duty.step(30.0, 0.3) is False
    assert duty.step(99.9, 0.3) is False and duty.step(100.0, 0.3) is True


def test_idle_goes_to_the_lowest_limit_even_inside_the_deadband() -> None:
    alloc = allocator()
    assert alloc.step(0.0, 103.0).power_limit_w == 103.0
    idle = alloc.step(30.0, 0.0)
    assert (idle.power_limit_w, idle.level, idle.regime) == (100.0, 0.0, "idle")
    assert alloc.step(60.0, 21.0).regime == "idle"  # within 1 W of idle power: not worth switching on
    assert alloc.step(90.0, 22.0).regime == "duty"


def test_duty_on_phase_writes_the_efficient_cap_even_inside_the_deadband() -> None:
    alloc = allocator(period_s=100, min_on_s=0, min_off_s=0)
    alloc.step(0.0, 102.0)  # continuous at 102 W
    cmd = alloc.step(30.0, 60.0)  # below the efficient cap (100 W): duty, on at 100 W
    assert (cmd.regime, cmd.level, cmd.power_limit_w) == ("duty", 1.0, 100.0)


def test_a_steady_bias_is_trimmed_only_under_a_settled_limit() -> None:
    alloc = allocator()
    alloc.settle_s = 10.0
    assert alloc.step(0.0, 200.0).power_limit_w == 200.0
    assert alloc.step(5.0, 200.0, measured_w=190.0).power_limit_w == 200.0  # not settled yet
    cmd = alloc.step(10.0, 200.0, measured_w=190.0)  # settled: half the 10 W bias is trimmed in
    assert cmd.power_limit_w == 205.0
    alloc.step(20.0, 200.0, measured_w=120.0)  # a 40 % miss is not a loose cap (others' load, idle work)
    assert alloc.step(30.0, 200.0, measured_w=None).power_limit_w == 205.0


def test_a_ceiling_below_the_lowest_limit_is_carried_by_the_level() -> None:
    alloc = allocator(period_s=100, min_on_s=0, min_off_s=0)
    alloc.ceiling_w = 60.0  # the thermal guard: half-way from idle (20) to the lowest limit (100)
    assert alloc.level_cap() == pytest.approx(0.5)
    cmd = alloc.step(0.0, 300.0)
    assert cmd.power_limit_w == 100.0 and cmd.level == pytest.approx(0.5)
    alloc.ceiling_w = 10.0
    assert alloc.level_cap() == 0.0 and alloc.step(100.0, 300.0).level == 0.0


def test_interpolation_is_flat_beyond_the_ends() -> None:
    from heatctl.control.efficiency import interpolate

    points = [(100.0, 10.0), (200.0, 30.0), (300.0, 40.0)]
    assert interpolate(points, 50.0) == 10.0 and interpolate(points, 400.0) == 40.0
    assert interpolate(points, 150.0) == 20.0 and interpolate(points, 300.0) == 40.0


def test_the_generic_prior_scales_with_the_gpu_and_falls_to_zero_at_idle() -> None:
    model = EfficiencyModel(CAPS)  # no prior: the generic shape, 100 units at full power
    assert model.work_rate(300.0) == pytest.approx(100.0)
    assert model.work_rate(150.0) == pytest.approx(72.0)
    assert model.work_rate(20.0) == 0.0 and model.work_rate(60.0) == pytest.approx(47.0 * 40 / 79)


def test_a_bin_is_trusted_after_three_measurements() -> None:
    model = EfficiencyModel(CAPS, CURVE)
    model.observe(200.0, 75.0)  # agrees with the prior: the scale stays 1
    for _ in range(2):
        model.observe(250.0, 50.0)
    at_250 = model.work_rate(250.0)
    model.observe(250.0, 50.0)
    assert model.work_rate(250.0) == pytest.approx(50.0) and at_250 != pytest.approx(50.0)
    model.observe(250.0, 60.0)  # then an exponential average
    assert model.work_rate(250.0) == pytest.approx(51.0)


def test_implausible_measurements_are_ignored() -> None:
    model = EfficiencyModel(CAPS, CURVE)
    for power_w, rate in ((90.0, 40.0), (320.0, 86.0), (200.0, -1.0)):
        model.observe(power_w, rate)
    assert model.samples == 0
    model.observe(310.0, 86.0)  # within a bin above the top: counted in the top bin
    model.observe(200.0, 0.0)  # no work at all is a measurement too
    assert model.samples == 2


def test_the_scale_follows_measurements_gradually() -> None:
    model = EfficiencyModel(CAPS, CURVE)
    model.observe(200.0, 150.0)  # twice the prior: the first sample sets the scale
    assert model.work_rate(150.0) == pytest.approx(124.0)
    model.observe(200.0, 75.0)  # back to the prior's scale: moves 10 % of the way
    assert model.work_rate(150.0) == pytest.approx(62.0 * 1.9)


def test_a_limit_that_moved_must_settle_again_before_the_next_trim() -> None:
    """The trim's own write restarts the settle time: a reading taken before the GPU settled under the
    new limit does not move it again."""
    alloc = allocator()
    alloc.settle_s = 10.0
    alloc.step(0.0, 200.0)
    assert alloc.step(10.0, 200.0, measured_w=190.0).power_limit_w == 205.0  # settled: trimmed, written at 10 s
    assert alloc.step(15.0, 200.0, measured_w=185.0).power_limit_w == 205.0  # 5 s under 205 W: not settled
    assert alloc.step(20.0, 200.0, measured_w=185.0).power_limit_w == 212.5  # settled again: half of 20 − 5 more


def test_the_settle_time_starts_when_the_gpu_is_loaded() -> None:
    alloc = allocator(period_s=100, min_on_s=0, min_off_s=0)
    alloc.settle_s = 10.0
    alloc.step(0.0, 60.0)  # duty cycling: not continuous
    alloc.step(50.0, 200.0)  # loaded now: the settle time starts here, not at 0
    assert alloc.step(55.0, 200.0, measured_w=190.0).power_limit_w == 200.0
    assert alloc.step(60.0, 200.0, measured_w=190.0).power_limit_w == 205.0


def test_close_means_within_a_thousandth() -> None:
    from heatctl.control.efficiency import _close

    assert _close(100.0, 100.1) and not _close(100.0, 100.2)
    assert _close(0.0, 0.0) and _close(1e-13, 0.0) and not _close(1e-11, 0.0)
    assert not _close(-1.0, 1.0) and _close(200.0, 199.85)


def test_below_the_lowest_limit_the_rate_is_the_scaled_prior() -> None:
    model = EfficiencyModel(CAPS, CURVE)
    assert model.work_rate(60.0) == pytest.approx(40.0 * (60.0 - 20.0) / (100.0 - 20.0))  # to zero at idle
    for _ in range(4):
        model.observe(200.0, 150.0)  # twice the prior's 75
    assert model.work_rate(60.0) == pytest.approx(2 * 40.0 * 0.5, rel=0.05)
    assert model.work_rate(100.0) == pytest.approx(80.0, rel=0.05)  # at the limit: the scaled prior too


def test_a_reading_below_the_lowest_limit_is_not_learned_unless_the_limit_is_fixed() -> None:
    model = EfficiencyModel(CAPS, CURVE)
    model.observe(95.0, 30.0)
    assert model.samples == 0
    fixed = EfficiencyModel(GpuCaps(idle_w=20.0, min_limit_w=200.0, max_limit_w=200.0), CURVE)
    fixed.observe(195.0, 70.0)
    assert fixed.samples == 1
    fixed.observe(185.0, 70.0)  # further off than a bin: not at the fixed limit
    assert fixed.samples == 1
    assert EfficiencyModel(CAPS, CURVE).work_rate(300.0) == 86.0


def test_the_first_sample_of_a_bin_is_taken_whole_then_averaged() -> None:
    model = EfficiencyModel(CAPS, CURVE, learn_rate=0.5)
    for rate in (100.0, 100.0, 100.0):
        model.observe(200.0, rate)
    assert model.work_rate(200.0) == pytest.approx(100.0)  # three samples: its own value
    model.observe(200.0, 120.0)
    assert model.work_rate(200.0) == pytest.approx(110.0)


def test_the_efficient_cap_moves_when_measurements_say_so() -> None:
    model = EfficiencyModel(CAPS, CURVE)
    assert model.efficient_cap_w == 100.0
    for _ in range(30):  # a card that does far better at 200 W than its prior says
        model.observe(200.0, 400.0)
        model.observe(100.0, 40.0)
    assert model.efficient_cap_w == 200.0
    linear = EfficiencyModel(CAPS, [(100.0, 40.0), (300.0, 140.0)])  # 0.5 work/J above idle at both ends
    assert linear.efficient_cap_w == 100.0  # of equals, the first (the lowest cap)


def test_a_duty_cycle_starts_off_and_only_a_fraction_above_zero_turns_it_on() -> None:
    cycle = DutyCycle(DutyConfig(period_s=100, min_on_s=0, min_off_s=0))
    assert cycle.on is False
    assert cycle.step(0.0, 0.0) is False
    assert cycle.step(200.0, 0.01) is True
