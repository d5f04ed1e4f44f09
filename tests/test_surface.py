"""The inference plant: draw and tokens by requests in flight and cap; the most tokens for a heat."""

from __future__ import annotations

import itertools
import math

import pytest

from heatctl.control.surface import InferenceSurface, LearnedSurface, Limits, prior_surface

LIMITS = Limits(idle_w=12.0, min_limit_w=35.0, max_limit_w=70.0)
DESIGN = [(1, 24.0, 38.0), (2, 45.0, 47.0), (4, 80.0, 58.0), (8, 120.0, 68.0)]  # DESIGN's example plant


def plant(exponent: float = 0.4, rows: list[tuple[int, float, float]] = DESIGN) -> InferenceSurface:
    return InferenceSurface(rows, LIMITS, max_concurrency=8, clock_exponent=exponent)


def test_the_draw_follows_the_batch_first_and_the_cap_second() -> None:
    s = plant()
    assert s.at(1, 70.0) == (38.0, 24.0)  # one request: far below the cap, a lower cap removes no heat
    assert s.at(1, 40.0) == (38.0, 24.0)
    assert s.at(3, 70.0) == pytest.approx((52.5, 62.5))  # between the given points
    draw, tokens = s.at(8, 40.0)  # a cap that binds: the draw is the cap, tokens fall much less
    assert draw == 40.0 and tokens == pytest.approx(120.0 * ((40 - 12) / (68 - 12)) ** 0.4)
    assert s.at(0, 70.0) == (12.0, 0.0)
    assert s.at(20, 70.0) == (68.0, 120.0)  # beyond the last point: saturated


@pytest.mark.parametrize("exponent", [0.2, 0.4, 1.0])
@pytest.mark.parametrize("heat_w", [14.0, 25.0, 36.0, 44.0, 52.0, 61.0, 69.0])
def test_the_choice_is_the_best_of_every_point_and_duty_cycle(exponent: float, heat_w: float) -> None:
    s = plant(exponent)
    chosen = s.choose(heat_w)
    mean_w = LIMITS.idle_w + chosen.share * (chosen.draw_w - LIMITS.idle_w)
    assert mean_w == pytest.approx(min(heat_w, 68.0), abs=0.6)  # the heat asked for, or the most there is
    best = 0.0  # brute force: every batch, every cap in 0.5 W steps, each run for the share that makes the heat
    for n, cap in itertools.product(range(1, 9), [35.0 + 0.5 * k for k in range(71)]):
        draw, tokens = s.at(n, cap)
        if draw >= min(heat_w, 68.0):
            best = max(best, tokens * min((heat_w - LIMITS.idle_w) / (draw - LIMITS.idle_w), 1.0))
    assert chosen.tokens_s * chosen.share >= 0.97 * best


def test_without_limit_control_the_choice_is_the_batch_and_time() -> None:
    s = plant()
    chosen = s.choose(30.0, settable=False)
    assert chosen.cap_w == 70.0 and chosen.in_flight == 8 and 0 < chosen.share < 1  # full batch, part of the time
    thin = s.at(1, 70.0)[1] * (30.0 - 12.0) / (38.0 - 12.0)  # one request, part of the time
    assert chosen.tokens_s * chosen.share > 2 * thin


def test_a_plant_whose_biggest_batch_saturates_is_run_at_a_smaller_one() -> None:
    saturating = [(1, 24.0, 38.0), (2, 45.0, 47.0), (4, 80.0, 58.0), (8, 82.0, 70.0)]  # 8 draws more for little
    chosen = plant(1.0, saturating).choose(58.0)
    assert chosen.in_flight == 4 and chosen.share == pytest.approx(1.0)


def test_the_learned_surface_moves_from_the_prior_to_what_it_measures() -> None:
    truth = plant(0.4, [(1, 24.0, 30.0), (2, 45.0, 36.0), (4, 80.0, 50.0), (8, 120.0, 66.0)])
    learned = LearnedSurface(prior_surface(LIMITS, 8))
    for _ in range(40):
        for n in (1, 2, 4, 8):
            draw, tokens = truth.at(n, 70.0)
            learned.observe(n, 70.0, draw, tokens)
    for n in (1, 2, 4, 8):
        assert learned.surface.uncapped(n) == pytest.approx(truth.uncapped(n), rel=0.02)
    before = learned.surface
    learned.observe(8, 40.0, 40.0, truth.at(8, 40.0)[1])  # under a binding cap: no news of the batch's own draw
    assert learned.surface.uncapped(8)[1] == pytest.approx(before.uncapped(8)[1], rel=0.02)
    learned.observe(0, 70.0, 12.0, 0.0)  # idle teaches nothing
    assert learned.samples == 161


def test_the_allocator_runs_the_chosen_point_continuously_for_part_of_the_time_or_idle() -> None:
    from heatctl.config import DutyConfig
    from heatctl.control.allocate import Allocator
    from heatctl.control.efficiency import EfficiencyModel, GpuCaps

    caps = GpuCaps(idle_w=12.0, min_limit_w=35.0, max_limit_w=70.0)
    learned = LearnedSurface(plant())
    alloc = Allocator(EfficiencyModel(caps), DutyConfig(period_s=100.0, min_on_s=10.0, min_off_s=10.0), surface=learned)
    command = alloc.step(0.0, 50.0)  # within reach of the full batch under a cap: continuously, the cap at 50 W
    assert (command.regime, command.level, command.power_limit_w) == ("continuous", 1.0, 50.0)
    assert alloc.step(1.0, 5.0).regime == "idle" and alloc.power_limit_w == 35.0  # no heat: the lowest limit
    on = [alloc.step(2.0 + t, 25.0) for t in range(0, 100, 5)]  # below the lowest cap: duty, the batch full when on
    assert {c.regime for c in on} == {"duty"} and {c.level for c in on} == {0.0, 1.0}
    share = sum(c.level for c in on) / len(on)
    assert share == pytest.approx((25.0 - 12.0) / (35.0 - 12.0), abs=0.1)
    assert all(c.power_limit_w == 35.0 for c in on if c.level)
    alloc.ceiling_w = 40.0  # too hot: the thermal guard's ceiling holds the point under it
    hot = alloc.step(200.0, 60.0)
    assert hot.power_limit_w <= 40.0
    limit_only = Allocator(EfficiencyModel(caps), DutyConfig(), surface=learned, limit_only=True)
    assert limit_only.step(0.0, 50.0).level == 1.0  # a workload heatctl cannot steer: the cap alone, as before
    assert limit_only.step(1.0, 25.0).regime == "continuous"  # no duty cycling either: the lowest cap, all the time


@pytest.mark.parametrize(
    ("heat_w", "in_flight", "cap_w", "share"),
    [
        (15.0, 8, 35.0, 3.0 / 23.0),  # below the lowest cap: the full batch at it, part of the time
        (25.0, 8, 35.0, 13.0 / 23.0),
        (38.0, 8, 38.0, 1.0),  # from the lowest cap up: continuously, the cap at the heat
        (58.0, 8, 58.0, 1.0),
        (68.0, 8, 68.0, 1.0),
        (80.0, 8, 70.0, 1.0),  # more than the card gives: all of it
        (12.0, 0, 35.0, 0.0),  # no heat above idle: idle
    ],
)
def test_the_points_chosen_on_the_design_plant(heat_w: float, in_flight: int, cap_w: float, share: float) -> None:
    chosen = plant().choose(heat_w)
    assert (chosen.in_flight, chosen.cap_w) == (in_flight, pytest.approx(cap_w))
    assert chosen.share == pytest.approx(share, abs=1e-9)


def test_a_ceiling_and_fixed_limits_narrow_the_choice() -> None:
    s = plant()
    hot = s.choose(60.0, ceiling_w=45.0)  # the thermal guard's ceiling: nothing above it
    assert hot.draw_w <= 45.0 + 1e-9 and hot.share == pytest.approx(1.0)
    fixed = s.choose(50.0, settable=False)  # the cap cannot move: the full batch uncapped, part of the time
    assert (fixed.in_flight, fixed.cap_w, fixed.draw_w) == (8, 70.0, 68.0)
    assert fixed.share == pytest.approx((50.0 - 12.0) / (68.0 - 12.0))
    assert s.envelope_tokens_s(50.0) == pytest.approx(s.choose(50.0).tokens_s)
    assert s.envelope_tokens_s(50.0, settable=False) == pytest.approx(120.0 * (50.0 - 12.0) / (68.0 - 12.0))


def test_what_is_learned_counts_once_seen_three_times_and_scales_the_rest() -> None:
    learned = LearnedSurface(prior_surface(LIMITS, 8), learn_rate=0.5)
    prior_tps, _prior_draw = learned.prior.uncapped(8)
    for _ in range(2):  # not yet enough to trust: the prior, scaled
        learned.observe(8, 70.0, 40.0, 2 * prior_tps)
    assert learned.surface.uncapped(8)[1] != pytest.approx(40.0, abs=0.5)
    learned.observe(8, 70.0, 40.0, 2 * prior_tps)
    tps, draw = learned.surface.uncapped(8)
    assert draw == pytest.approx(40.0) and tps == pytest.approx(2 * prior_tps, rel=1e-6)  # its own, from three
    # The counts not seen move with the scale the seen ones set: draws above idle and tokens alike.
    unseen_tps, unseen_draw = learned.surface.uncapped(2)
    base_tps, base_draw = learned.prior.uncapped(2)
    assert unseen_draw - LIMITS.idle_w < base_draw - LIMITS.idle_w  # 8 drew less than believed: so does 2
    assert unseen_tps > base_tps  # 8 made more tokens than believed: so does 2


def test_the_controller_builds_the_surface_from_the_config_a_calibration_or_not_at_all() -> None:
    from heatctl.config import InferenceConfig, parse_config
    from heatctl.control.core import NodeController, inference_of
    from heatctl.control.efficiency import GpuCaps
    from heatctl.sim.baselines import CapController

    text = """
mqtt: null
zones: [{name: a, temperature: {topic: t}, setpoint: {topic: s}, gpus: [g, s]}]
gpus:
  - {id: g, backend: sim, workload: {type: openai, url: "http://h:1/v1", model: m, max_concurrency: 6, jobs: /tmp/j}}
  - {id: s, backend: sim, sim: {inference: {max_concurrency: 3}}}
"""
    cfg = parse_config(text)
    assert inference_of(cfg.gpus[0]).max_concurrency == 6  # type: ignore[union-attr]
    assert inference_of(cfg.gpus[1]).max_concurrency == 3  # type: ignore[union-attr]
    caps = {g: GpuCaps(idle_w=12.0, min_limit_w=35.0, max_limit_w=70.0) for g in ("g", "s")}
    ctrl = NodeController(cfg, caps)
    g = ctrl.allocators["g"].surface
    assert g is not None and g.prior.max_concurrency == 6
    assert g.prior.uncapped(6) == prior_surface(LIMITS, 6).uncapped(6)  # the published shape
    measured = InferenceConfig(max_concurrency=6, uncapped=[(1, 10.0, 30.0), (6, 60.0, 66.0)], clock_exponent=0.7)
    calibrated = NodeController(cfg, caps, calibrated={"g": measured}).allocators["g"].surface
    assert calibrated is not None and calibrated.prior.uncapped(6) == (60.0, 66.0)  # this card's own figures
    assert calibrated.prior.clock_exponent == 0.7
    assert all(a.surface is None for a in CapController(cfg, caps).allocators.values())  # the baseline: no batch lever


def test_the_controller_learns_from_a_command_held_two_ticks() -> None:
    from heatctl.config import parse_config
    from heatctl.control.core import GpuState, NodeController, NodeInputs
    from heatctl.control.efficiency import GpuCaps
    from heatctl.control.safety import Reading, ZoneInputs
    from tests.conftest import FakeClock

    cfg = parse_config(
        "mqtt: null\nzones: [{name: a, temperature: {topic: t}, setpoint: {topic: s}, gpus: [g]}]\n"
        "gpus: [{id: g, backend: sim, sim: {idle_w: 12, min_limit_w: 35, max_limit_w: 70, inference: {}}}]\n"
    )
    clock = FakeClock()
    ctrl = NodeController(cfg, {"g": GpuCaps(idle_w=12.0, min_limit_w=35.0, max_limit_w=70.0)}, time_fn=clock)
    surface = ctrl.allocators["g"].surface
    assert surface is not None
    truth = plant()
    state = GpuState(power_w=12.0, work_rate=0.0)
    for _ in range(30):
        clock.advance(30.0)
        zone = ZoneInputs(temperature=Reading(17.0, clock()), setpoint=Reading(21.0, clock()))
        out = ctrl.step(NodeInputs(mode="heat", zones={"a": zone}, gpus={"g": state}))
        command = out.gpus["g"]
        draw, tokens = truth.at(round(command.level * 8), command.power_limit_w)
        state = GpuState(power_w=draw, work_rate=tokens)
    assert surface.samples >= 25  # every settled tick taught it
    assert surface.surface.at(8, 70.0)[1] == pytest.approx(truth.at(8, 70.0)[1], rel=0.05)  # its tokens, learned


def test_what_was_learned_survives_a_restart_and_a_damaged_or_foreign_record_is_left_out() -> None:
    import json

    truth = plant(0.4, [(1, 24.0, 30.0), (2, 45.0, 36.0), (4, 80.0, 50.0), (8, 120.0, 66.0)])
    learned = LearnedSurface(prior_surface(LIMITS, 8))
    for _ in range(10):
        for n in (1, 4, 8):
            learned.observe(n, 70.0, *truth.at(n, 70.0))
    saved = json.loads(json.dumps(learned.to_json()))  # as the file holds it
    again = LearnedSurface(prior_surface(LIMITS, 8))
    assert again.restore(saved) is None and again.samples == learned.samples
    for n in range(1, 9):
        assert again.surface.uncapped(n) == pytest.approx(learned.surface.uncapped(n))
    fresh = prior_surface(LIMITS, 8).uncapped(4)
    for bad, why in (
        ({**saved, "max_concurrency": 4}, "for 4 requests in flight"),
        ({**saved, "tps_scale": "many"}, "cannot be read"),
        ({**saved, "draw_scale": 40.0}, "out of range"),
        ({**saved, "seen": {"9": [1.0, 2.0, 3]}}, "out of range"),
        ("garbage", "cannot be read"),
    ):
        other = LearnedSurface(prior_surface(LIMITS, 8))
        problem = other.restore(bad)
        assert problem is not None and why in problem, problem
        assert other.samples == 0 and other.surface.uncapped(4) == fresh  # the prior, as it was


def test_the_service_keeps_what_it_learned_of_the_surface_across_a_restart(tmp_path: object) -> None:
    from pathlib import Path

    from heatctl.calibrate import learned_path
    from heatctl.config import parse_config
    from heatctl.service import Service
    from tests.conftest import FakeClock

    state = Path(str(tmp_path))
    (state / "jobs").mkdir()
    text = f"""
mqtt: null
state_dir: {state}
zones: [{{name: a, temperature: {{topic: t}}, setpoint: {{topic: s}}, gpus: [g]}}]
gpus:
  - id: g
    backend: sim
    workload: {{type: openai, url: "http://127.0.0.1:9/v1", model: m, max_concurrency: 8, jobs: "{state / "jobs"}"}}
"""
    svc = Service(parse_config(text), clock=FakeClock())  # type: ignore[arg-type]
    svc.start()
    surface = svc.controller.allocators["g"].surface  # type: ignore[union-attr]
    assert surface is not None
    for _ in range(5):
        surface.observe(4, 300.0, surface.prior.uncapped(4)[1] * 1.3, surface.prior.uncapped(4)[0] * 0.8)
    learned = surface.surface.uncapped(4)
    svc.shutdown()  # it is saved with the state
    assert learned_path(state, "g", "m").exists()
    svc = Service(parse_config(text), clock=FakeClock())  # type: ignore[arg-type]
    svc.start()
    try:
        again = svc.controller.allocators["g"].surface  # type: ignore[union-attr]
        assert again is not None and again.samples == 5 and again.surface.uncapped(4) == pytest.approx(learned)
    finally:
        svc.shutdown()


def test_work_that_must_run_runs_at_the_surfaces_most_tokens_per_joule() -> None:
    from heatctl.config import parse_config
    from heatctl.control.core import NodeController
    from heatctl.control.efficiency import GpuCaps

    surface = plant()
    best = surface.most_efficient()
    every = [surface.at(n, cap) for n in range(1, 9) for cap in range(35, 71)]
    assert best.tokens_s / best.draw_w == pytest.approx(max(t / d for d, t in every), rel=1e-3)
    assert best.in_flight == 8  # tokens per joule rise with the batch
    cfg = parse_config(
        "mqtt: null\nzones: [{name: a, temperature: {topic: t}, setpoint: {topic: s}, gpus: [g]}]\n"
        "gpus: [{id: g, backend: sim, sim: {idle_w: 12, min_limit_w: 35, max_limit_w: 70, "
        "inference: {max_concurrency: 8, uncapped: [[1, 24, 38], [2, 45, 47], [4, 80, 58], [8, 120, 68]]}}}]\n"
    )
    ctrl = NodeController(cfg, {"g": GpuCaps(idle_w=12.0, min_limit_w=35.0, max_limit_w=70.0)})
    assert ctrl._due_w("g", 1.0, None) == pytest.approx(best.draw_w)  # due work: that point's heat


def test_the_allocators_idle_command_in_full_and_the_duty_cycle_off_with_it() -> None:
    from heatctl.config import DutyConfig
    from heatctl.control.allocate import Allocator, GpuCommand
    from heatctl.control.efficiency import EfficiencyModel, GpuCaps

    caps = GpuCaps(idle_w=12.0, min_limit_w=35.0, max_limit_w=70.0)
    alloc = Allocator(
        EfficiencyModel(caps),
        DutyConfig(period_s=100.0, min_on_s=10.0, min_off_s=10.0),
        surface=LearnedSurface(plant()),
    )
    assert alloc.step(0.0, 38.0).regime == "continuous" and alloc.power_limit_w == 38.0 and alloc._continuous
    idle = alloc.step(1.0, -5.0)  # less than nothing is nothing; the lowest limit however close (inside the deadband)
    assert idle == GpuCommand(target_w=0.0, power_limit_w=35.0, level=0.0, regime="idle")
    assert not alloc._continuous and not alloc._duty.on
    assert alloc.step(2.0, 11.0) == GpuCommand(target_w=11.0, power_limit_w=35.0, level=0.0, regime="idle")
    steady = alloc.step(3.0, 50.0)
    assert steady == GpuCommand(target_w=50.0, power_limit_w=50.0, level=1.0, regime="continuous") and alloc._continuous
    duty = alloc.step(4.0, 25.0)  # below the lowest cap: part of the time
    assert duty.regime == "duty" and duty.target_w == 25.0 and alloc._continuous is False


def test_what_the_learned_surface_takes_from_a_measurement_exactly() -> None:
    prior = plant(0.7)
    learned = LearnedSurface(prior)
    for ignored in ((0, 70.0, 50.0, 10.0), (4, 70.0, math.nan, 10.0), (4, 70.0, 50.0, -1.0), (4, 70.0, 12.0, 10.0)):
        learned.observe(*ignored)  # no batch, no reading, negative tokens, the idle draw: nothing learned
    assert learned.samples == 0 and learned.surface is prior
    _tps4, draw4 = prior.uncapped(4)
    learned.observe(4, 70.0, 48.0, 0.0)  # unbound (48 < 70 − 3): the draw teaches, zero tokens still count
    assert learned.samples == 1
    assert learned._draw_scale == pytest.approx(1.0 + 0.1 * ((48.0 - 12.0) / (draw4 - 12.0) - 1.0))
    assert learned._tps_scale == pytest.approx(0.9)  # 0 of the expected tokens: a tenth of the way down
    learned.observe(4, 70.0, 52.0, 60.0)
    assert learned._seen[4][:2] == pytest.approx((0.0 + 0.1 * 60.0, 48.0 + 0.1 * 4.0))  # the running average
    draw_scale = learned._draw_scale
    learned.observe(8, 40.0, 37.0, 50.0)  # at the cap less 3 W: bound, so the draw says nothing of the batch
    assert learned._draw_scale == draw_scale and 8 not in learned._seen
    tps1, draw1 = prior.uncapped(1)  # not seen: the prior, scaled
    assert learned.surface.uncapped(1) == pytest.approx((tps1 * learned._tps_scale, 12.0 + (draw1 - 12.0) * draw_scale))
    assert learned.surface.clock_exponent == 0.7  # the rebuilt surface keeps the prior's clock exponent


def test_a_fresh_learned_surface_is_the_prior_until_it_measures_otherwise() -> None:
    prior = plant()
    learned = LearnedSurface(prior)
    tps, draw = prior.uncapped(4)
    learned.observe(4, 70.0, draw, tps)  # exactly as expected: nothing moves
    assert all(learned.surface.uncapped(n) == pytest.approx(prior.uncapped(n)) for n in range(1, 9))


def test_restoring_takes_the_edges_of_the_ranges_and_says_why_not_exactly() -> None:
    fresh = LearnedSurface(plant())
    edge = {"max_concurrency": 8, "tps_scale": 0.2, "draw_scale": 5.0, "samples": 0, "seen": {"2": [0.0, 40.0, 3]}}
    assert fresh.restore(edge) is None and fresh.samples == 0 and fresh._seen == {2: (0.0, 40.0, 3)}
    assert LearnedSurface(plant()).restore({**edge, "draw_scale": 5.5}) == "its figures are out of range"
    assert LearnedSurface(plant()).restore({**edge, "seen": {"2": [-1.0, 40.0, 3]}}) == "its figures are out of range"
    problem = LearnedSurface(plant()).restore({**edge, "samples": "x"})
    assert problem is not None and problem.startswith("it cannot be read (ValueError:")


def test_the_frontier_is_every_batch_at_every_cap_step_worked_out_once_per_ceiling() -> None:
    from heatctl.control.surface import CAP_STEP_W

    surface = plant()
    draws, points = surface._frontier_for(True, 50.0)
    assert surface._frontier_for(True, 50.0)[1] is points  # cached: the same list, not worked out again
    caps = [35.0 + k * CAP_STEP_W for k in range(int(15.0 / CAP_STEP_W) + 1)] + [50.0]
    expected = sorted(surface.at(n, cap)[0] for n in range(1, 9) for cap in caps if surface.at(n, cap)[0] <= 50.5)
    assert draws == pytest.approx(expected)  # every batch 1…8 at every step from the lowest limit to the ceiling
    assert max(draws) <= 50.5 and min(draws) > 12.0
    assert len(surface._frontier_for(False, 70.0)[0]) == 8  # limits not settable: each batch at the top limit
    assert surface.choose(12.5).in_flight > 0 and surface.choose(12.0).in_flight == 0  # just above idle: some work


def test_a_surface_that_never_draws_above_idle_has_only_idle_to_offer() -> None:
    from heatctl.control.surface import OperatingPoint

    flat = InferenceSurface([(1, 5.0, 10.0)], LIMITS, max_concurrency=1)  # draws no more than idle
    idle = OperatingPoint(0, 35.0, 12.0, 0.0, 0.0)
    assert flat.most_efficient() == idle and flat.choose(50.0) == idle
