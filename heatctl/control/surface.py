"""An LLM server's plant: draw and tokens/s by requests in flight and power cap, and the operating
point with the most tokens per joule for a heat target.

A GPU serving an LLM draws what its batch asks first and what its cap allows second: at one
request in flight decode is memory bound and draws well below the cap; tokens/s grow steeply
with the batch. Under a cap below the uncapped draw, tokens/s × ((cap − idle)/(draw − idle))^e.

For a heat target H (the mean draw over time) every operating point p — requests in flight n
and a cap — with draw(p) ≥ H can make it by running a share (H − idle)/(draw(p) − idle) of the
time and idling the rest (duty cycling; a share of 1 is running continuously at a cap of H).
Its tokens/s are then e(p)·(H − idle) with e(p) = tokens/s ÷ (draw − idle): the best choice is
the point with the most tokens per joule above idle among those that can make H. The same
``InferenceSurface`` is the simulator's true plant and the allocator's knowledge of it (a prior
refined from what it measures: ``LearnedSurface``).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

CAP_STEP_W = 5.0  # the caps considered between the driver's minimum and maximum
CONTINUOUS_PREFERENCE = 0.99  # running continuously wins unless duty cycling is this much better


@dataclass(frozen=True, slots=True)
class OperatingPoint:
    in_flight: int
    cap_w: float
    draw_w: float
    tokens_s: float
    share: float = 1.0  # of the time it runs; the rest idles (duty cycling)


@dataclass(frozen=True, slots=True)
class Limits:
    idle_w: float
    min_limit_w: float
    max_limit_w: float


class InferenceSurface:
    """Draw and tokens/s by (requests in flight, cap): linear between the given in-flight points,
    saturated beyond the last; zero requests is idle."""

    def __init__(
        self,
        uncapped: Sequence[tuple[int, float, float]],
        limits: Limits,
        *,
        max_concurrency: int,
        clock_exponent: float = 0.4,
    ) -> None:
        rows = sorted((int(n), float(t), float(d)) for n, t, d in uncapped)
        self.limits = limits
        self.max_concurrency = max_concurrency
        self.clock_exponent = clock_exponent
        self._ns = [0.0] + [float(r[0]) for r in rows]
        self._tps = [0.0] + [r[1] for r in rows]
        self._draw = [limits.idle_w] + [max(r[2], limits.idle_w) for r in rows]
        self._frontier: dict[tuple[bool, float], tuple[list[float], list[OperatingPoint]]] = {}

    def uncapped(self, n: float) -> tuple[float, float]:
        """(tokens/s, draw W) with ``n`` requests in flight and no cap in the way."""
        ns = self._ns
        if n >= ns[-1]:
            return self._tps[-1], self._draw[-1]
        i = max(bisect.bisect_right(ns, n), 1)
        f = (n - ns[i - 1]) / (ns[i] - ns[i - 1])
        return (
            self._tps[i - 1] + f * (self._tps[i] - self._tps[i - 1]),
            self._draw[i - 1] + f * (self._draw[i] - self._draw[i - 1]),
        )

    def at(self, n: float, cap_w: float) -> tuple[float, float]:
        """(draw W, tokens/s) with ``n`` requests in flight under ``cap_w``."""
        lim = self.limits
        if n <= 0:
            return lim.idle_w, 0.0
        tps, draw = self.uncapped(n)
        cap = min(max(cap_w, lim.min_limit_w), lim.max_limit_w)
        if draw <= cap:
            return draw, tps
        ratio = max(cap - lim.idle_w, 0.0) / max(draw - lim.idle_w, 1e-9)
        return cap, tps * ratio**self.clock_exponent

    def choose(self, heat_w: float, *, ceiling_w: float | None = None, settable: bool = True) -> OperatingPoint:
        """The most tokens for a mean draw of ``heat_w``: a point and the share of time it runs."""
        lim = self.limits
        top_w = lim.max_limit_w if ceiling_w is None else min(ceiling_w, lim.max_limit_w)
        above_idle = heat_w - lim.idle_w
        draws, points = self._frontier_for(settable, top_w)
        if above_idle <= 0.0 or not points:
            return OperatingPoint(0, lim.min_limit_w, lim.idle_w, 0.0, 0.0)  # idle
        # The best point that can make the heat (its draw at least the target): the running best
        # from the top down, so the first point at or above the target holds the best of them all.
        best = points[min(bisect.bisect_left(draws, heat_w), len(points) - 1)]
        exact = self._continuous(heat_w, top_w) if settable else None
        if exact is not None and _per_watt(exact, lim.idle_w) >= CONTINUOUS_PREFERENCE * _per_watt(best, lim.idle_w):
            return exact
        share = min(above_idle / max(best.draw_w - lim.idle_w, 1e-9), 1.0)
        return OperatingPoint(best.in_flight, best.cap_w, best.draw_w, best.tokens_s, share)

    def _continuous(self, heat_w: float, top_w: float) -> OperatingPoint | None:
        """Running all the time with the cap at the target: the best batch whose draw reaches it."""
        lim = self.limits
        if not lim.min_limit_w <= heat_w <= top_w:
            return None
        best: OperatingPoint | None = None
        for n in range(1, self.max_concurrency + 1):
            _tps, draw = self.uncapped(n)
            if draw < heat_w - 0.5:
                continue
            draw_w, tokens_s = self.at(n, heat_w)
            if best is None or tokens_s > best.tokens_s:
                best = OperatingPoint(n, heat_w, draw_w, tokens_s)
        return best

    def _frontier_for(self, settable: bool, top_w: float) -> tuple[list[float], list[OperatingPoint]]:
        """Points sorted by draw, each carrying the best tokens per joule above idle among those
        that draw at least as much (computed once per ceiling)."""
        key = (settable, round(top_w))
        cached = self._frontier.get(key)
        if cached is not None:
            return cached
        lim = self.limits
        if settable:
            caps = [lim.min_limit_w + k * CAP_STEP_W for k in range(int((top_w - lim.min_limit_w) / CAP_STEP_W) + 1)]
            caps.append(top_w)
        else:
            caps = [lim.max_limit_w]
        candidates = []
        for n in range(1, self.max_concurrency + 1):
            for cap in caps:
                draw_w, tokens_s = self.at(n, cap)
                if draw_w <= top_w + 0.5 and draw_w > lim.idle_w:
                    candidates.append(OperatingPoint(n, cap, draw_w, tokens_s))
        candidates.sort(key=lambda p: p.draw_w)
        best: list[OperatingPoint] = []
        for p in reversed(candidates):
            if not best or _per_watt(p, lim.idle_w) > _per_watt(best[-1], lim.idle_w) * (1 + 1e-9):
                best.append(p)
            else:
                best.append(best[-1])
        best.reverse()
        result = ([p.draw_w for p in candidates], best)
        self._frontier[key] = result
        return result

    def most_efficient(self, *, settable: bool = True) -> OperatingPoint:
        """The point with the most tokens per joule of its whole draw (idle included): where work that
        must be done, whatever the room wants, runs (its deadline's rule)."""
        _draws, points = self._frontier_for(settable, self.limits.max_limit_w)
        idle = OperatingPoint(0, self.limits.min_limit_w, self.limits.idle_w, 0.0, 0.0)
        return max(points, key=lambda p: p.tokens_s / p.draw_w, default=idle)

    def envelope_tokens_s(self, heat_w: float, *, settable: bool = True) -> float:
        """The most tokens/s any choice could make at a mean draw of ``heat_w`` (the upper concave
        envelope of tokens/s over draw, with idle): the benchmark's yardstick."""
        point = self.choose(heat_w, settable=settable)
        return point.tokens_s * point.share


def _per_watt(p: OperatingPoint, idle_w: float) -> float:
    return p.tokens_s / max(p.draw_w - idle_w, 1e-9)


# The shape the published measurements give (DESIGN "Inference plant"): by the share of the most
# requests in flight, tokens/s as a share of the most, and the draw above idle as a share of the
# card's range above idle. The allocator starts from it before it has measured anything.
PUBLISHED_SHAPE: tuple[tuple[float, float, float], ...] = (
    (0.125, 0.20, 0.45),
    (0.25, 0.375, 0.60),
    (0.5, 0.667, 0.79),
    (1.0, 1.0, 0.97),
)


def prior_surface(limits: Limits, max_concurrency: int, clock_exponent: float = 0.4) -> InferenceSurface:
    """The published shape on this card: before calibration, what the allocator believes."""
    span_w = limits.max_limit_w - limits.idle_w
    rows = {}
    for n_share, tps_share, draw_share in PUBLISHED_SHAPE:
        n = max(round(n_share * max_concurrency), 1)
        rows[n] = (n, 100.0 * tps_share, limits.idle_w + draw_share * span_w)
    return InferenceSurface(list(rows.values()), limits, max_concurrency=max_concurrency, clock_exponent=clock_exponent)


class LearnedSurface:
    """The allocator's surface: a prior, refined from measurements.

    Where the cap did not bind, a measurement is the batch's uncapped draw and tokens/s: each
    in-flight count keeps its own average once seen a few times, and moves the scale of the
    prior's draw (above idle) and tokens/s for the counts not seen yet. ``surface`` is rebuilt
    when what is known moved by more than a percent.
    """

    MIN_SAMPLES = 3

    def __init__(self, prior: InferenceSurface, *, learn_rate: float = 0.1) -> None:
        self.prior = prior
        self._learn_rate = learn_rate
        self._seen: dict[int, tuple[float, float, int]] = {}  # n → (tokens/s, draw W, samples)
        self._tps_scale = 1.0
        self._draw_scale = 1.0
        self.samples = 0
        self.surface = prior

    def observe(self, in_flight: int, cap_w: float, draw_w: float, tokens_s: float) -> None:
        """One steady measurement at ``in_flight`` requests under ``cap_w``."""
        lim = self.prior.limits
        if in_flight < 1 or tokens_s < 0 or not math.isfinite(draw_w) or draw_w <= lim.idle_w:
            return
        self.samples += 1
        _expected_draw, expected_tps = self.surface.at(in_flight, cap_w)
        if expected_tps > 0:
            ratio = tokens_s / expected_tps
            self._tps_scale *= 1.0 + self._learn_rate * (ratio - 1.0)
        if draw_w >= cap_w - 3.0:
            self._rebuild_if_moved()
            return  # the cap bound: the draw says nothing of the batch's own
        _prior_tps, prior_draw = self.prior.uncapped(in_flight)
        if prior_draw > lim.idle_w:
            ratio = (draw_w - lim.idle_w) / (prior_draw - lim.idle_w)
            self._draw_scale += self._learn_rate * (ratio - self._draw_scale)
        tps, draw, count = self._seen.get(in_flight, (tokens_s, draw_w, 0))
        if count:
            tps += self._learn_rate * (tokens_s - tps)
            draw += self._learn_rate * (draw_w - draw)
        self._seen[in_flight] = (tps, draw, count + 1)
        self._rebuild_if_moved()

    def to_json(self) -> dict[str, Any]:
        """What was learned (kept in state_dir across restarts, beside the calibration)."""
        return {
            "max_concurrency": self.prior.max_concurrency,
            "tps_scale": self._tps_scale,
            "draw_scale": self._draw_scale,
            "samples": self.samples,
            "seen": {str(n): list(v) for n, v in sorted(self._seen.items())},
        }

    def restore(self, data: Any) -> str | None:
        """Take up what an earlier run learned; why not (it is then left out, the prior as it was), or None."""
        try:
            if int(data["max_concurrency"]) != self.prior.max_concurrency:
                return (
                    f"it was learned for {data['max_concurrency']} requests in flight, not {self.prior.max_concurrency}"
                )
            tps_scale, draw_scale, samples = float(data["tps_scale"]), float(data["draw_scale"]), int(data["samples"])
            seen = {int(n): (float(t), float(d), int(c)) for n, (t, d, c) in data["seen"].items()}
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            return f"it cannot be read ({type(exc).__name__}: {exc})"
        values = [tps_scale, draw_scale, *(x for v in seen.values() for x in v)]
        in_range = all(1 <= n <= self.prior.max_concurrency for n in seen) and all(
            0.2 <= scale <= 5.0 for scale in (tps_scale, draw_scale)
        )
        if not all(math.isfinite(v) and v >= 0 for v in values) or not in_range:
            return "its figures are out of range"
        self._tps_scale, self._draw_scale, self.samples, self._seen = tps_scale, draw_scale, max(samples, 0), seen
        self._rebuild_if_moved()
        return None

    def _rebuild_if_moved(self) -> None:
        lim = self.prior.limits
        rows = []
        for n in range(1, self.prior.max_concurrency + 1):
            tps, draw, count = self._seen.get(n, (0.0, 0.0, 0))
            if count < self.MIN_SAMPLES:
                prior_tps, prior_draw = self.prior.uncapped(n)
                tps, draw = prior_tps * self._tps_scale, lim.idle_w + (prior_draw - lim.idle_w) * self._draw_scale
            rows.append((n, tps, draw))
        current = [(n, *self.surface.uncapped(n)) for n in range(1, self.prior.max_concurrency + 1)]
        moved = any(
            abs(t - ct) > 0.01 * max(ct, 1e-9) or abs(d - cd) > 0.01 * max(cd, 1e-9)
            for (_, t, d), (_, ct, cd) in zip(rows, current, strict=True)
        )
        if moved:
            self.surface = InferenceSurface(
                rows, lim, max_concurrency=self.prior.max_concurrency, clock_exponent=self.prior.clock_exponent
            )
