"""Work rate versus power cap: a prior curve, refined from what the GPU actually does."""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass

RERANK_EVERY = 20  # samples that each moved little still re-rank the caps this often

# Typical shape of GPU throughput versus power cap, as fractions of (max cap, max work):
# most work per joule well below the maximum cap (+10–30 % work per kWh at 60–80 %).
GENERIC_SHAPE: tuple[tuple[float, float], ...] = (
    (0.33, 0.47),
    (0.5, 0.72),
    (0.67, 0.87),
    (0.83, 0.95),
    (1.0, 1.0),
)


@dataclass(frozen=True, slots=True, kw_only=True)
class GpuCaps:
    """What the allocator must know about a GPU's power."""

    idle_w: float
    min_limit_w: float
    max_limit_w: float


class Curve:
    """Piecewise-linear through sorted points, flat beyond the ends."""

    __slots__ = ("xs", "ys")

    def __init__(self, points: Sequence[tuple[float, float]]) -> None:
        self.xs = [float(p[0]) for p in points]
        self.ys = [float(p[1]) for p in points]

    def __call__(self, x: float) -> float:
        xs, ys = self.xs, self.ys
        i = bisect.bisect_left(xs, x)
        if i == 0:
            return ys[0]
        if i == len(xs):
            return ys[-1]
        x0, y0 = xs[i - 1], ys[i - 1]
        return y0 + (ys[i] - y0) * (x - x0) / (xs[i] - x0)


def interpolate(points: Sequence[tuple[float, float]], x: float) -> float:
    """Piecewise-linear through sorted points, flat beyond the ends."""
    return Curve(points)(x)


BIN_W_FIXED = 10.0  # a card whose limit cannot be set: readings this close to its one limit count there


class EfficiencyModel:
    """Work rate at each power cap: starts from a prior curve, learns from measurements.

    The prior gives the *shape* of the curve; its scale is learned from every measurement
    (a prior in "units" and a server counting tokens/s then agree). The range of caps is cut
    into bins of ``bin_w``; a bin measured often enough uses its own exponential average,
    the others the scaled prior. ``efficient_cap_w`` is the cap that gives the most work per
    watt above idle, the best place to be on when duty-cycling.
    """

    MIN_SAMPLES = 3

    def __init__(
        self,
        caps: GpuCaps,
        prior: Sequence[tuple[float, float]] | None = None,
        *,
        bin_w: float = 10.0,
        learn_rate: float = 0.1,
    ) -> None:
        self.caps = caps
        if prior is None:
            prior = [(f * caps.max_limit_w, w * 100.0) for f, w in GENERIC_SHAPE]
        points = sorted((float(w), float(r)) for w, r in prior)
        # Below the first point, work falls linearly to zero at idle power.
        if points[0][0] > caps.idle_w:
            points.insert(0, (caps.idle_w, 0.0))
        self._prior = Curve(points)
        n_bins = round((caps.max_limit_w - caps.min_limit_w) / bin_w)
        self._bin_w = (caps.max_limit_w - caps.min_limit_w) / n_bins if n_bins else 0.0
        self._caps_w = [caps.min_limit_w + i * self._bin_w for i in range(n_bins + 1)]
        self._prior_rates = [self._prior(c) for c in self._caps_w]
        self._learned = [0.0] * len(self._caps_w)
        self._counts = [0] * len(self._caps_w)
        self._scale = 1.0
        self._learn_rate = learn_rate
        self.samples = 0
        self._unranked = 0  # samples since the caps were last ranked
        self._efficient_cap_w = self._best_cap()

    def _rate(self, i: int) -> float:
        if self._counts[i] >= self.MIN_SAMPLES:
            return self._learned[i]
        return self._prior_rates[i] * self._scale

    def work_rate(self, cap_w: float) -> float:
        """Expected work per second at full level under this cap."""
        if cap_w < self.caps.min_limit_w:
            return self._prior(cap_w) * self._scale
        rates = [self._rate(i) for i in range(len(self._caps_w))]
        return interpolate(list(zip(self._caps_w, rates, strict=True)), cap_w)

    @property
    def efficient_cap_w(self) -> float:
        return self._efficient_cap_w

    def observe(self, power_w: float, work_rate: float) -> None:
        """Learn from a measurement taken at full level with the cap binding."""
        slack_w = self._bin_w or BIN_W_FIXED  # a fixed limit: a reading a little below it is still at it
        low_w = self.caps.min_limit_w - (0.0 if self._bin_w else slack_w)
        if not low_w <= power_w <= self.caps.max_limit_w + slack_w or work_rate < 0:
            return
        # A card whose limit cannot be set (min = max) has one bin, of no width.
        i = min(round((power_w - self.caps.min_limit_w) / self._bin_w), len(self._caps_w) - 1) if self._bin_w else 0
        prior_here = self._prior(power_w)
        scale, rate = self._scale, self._rate(i)
        if prior_here > 0:
            ratio = work_rate / prior_here
            self._scale = ratio if self.samples == 0 else self._scale + self._learn_rate * (ratio - self._scale)
        n = self._counts[i]
        self._learned[i] = work_rate if n == 0 else self._learned[i] + self._learn_rate * (work_rate - self._learned[i])
        self._counts[i] = n + 1
        self.samples += 1
        self._unranked += 1
        settled = n > self.MIN_SAMPLES and _close(self._scale, scale) and _close(self._rate(i), rate)
        if not settled or self._unranked >= RERANK_EVERY:  # a sample that confirms what is known moves no cap
            self._efficient_cap_w = self._best_cap()
            self._unranked = 0

    def _best_cap(self) -> float:
        """The cap with the most work per watt above idle (the first of equals)."""
        idle_w = self.caps.idle_w
        best_i, best = 0, -math.inf
        for i, cap_w in enumerate(self._caps_w):
            per_watt = self._rate(i) / max(cap_w - idle_w, 1e-9)
            if per_watt > best:
                best_i, best = i, per_watt
        return self._caps_w[best_i]


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= 1e-3 * max(abs(a), abs(b), 1e-9)
