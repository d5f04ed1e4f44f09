"""The inference plant: draw and tokens by requests in flight and cap; the most tokens for a heat."""

from __future__ import annotations

import itertools

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
