"""One budget for a house's heaters: every node computes the same split from the same peers.

Each node says what it wants: ``comfort_w`` (its rooms' loops, below their setpoints), ``due_w``
(batch work its deadlines need now) and ``store_w`` (the planner's heat ahead of need), its
capacity, and its floor (``floor_w``: what its GPUs draw idle, which no share can take away). The
floors are set aside first; the rest goes to comfort, then deadlines, then stored heat; within a
class in proportion to what each wants above its floor, none given more than it wants. A peer silent past
``stale_after_s`` counts at its full capacity in the first class: while the house cannot hear a
heater it must assume it heats flat out, so the fuse holds.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any, NamedTuple

CLASSES = ("comfort_w", "due_w", "store_w")


POWER_FIELDS = ("comfort_w", "due_w", "store_w", "capacity_w", "at_s")


class PeerState(NamedTuple):
    comfort_w: float
    due_w: float
    store_w: float
    capacity_w: float
    at_s: float  # epoch seconds of the report
    # The pool: this node's batch slots, its seconds per request, and its own batches in the pool
    # as (deadline, requests left): every node judges the house's deadlines from the same reports.
    slots: float = 0.0
    s_per_request: float = 0.0
    work: tuple[tuple[float, float], ...] = ()
    floor_w: float = 0.0  # its GPUs idle: drawn whatever its share
    draw_w: float = 0.0  # its GPUs now (behind the house's meter)
    grid_w: float | None = None  # the house's meter as it read it, if fresh (import > 0, export < 0)

    def to_json(self) -> bytes:
        return json.dumps(self._asdict(), separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes) -> PeerState | None:
        """A peer's report, or None when it cannot be read (that peer then counts as silent)."""
        try:
            raw: Any = json.loads(data)
            values = [float(raw[name]) for name in POWER_FIELDS]
            slots, s_per_request = float(raw.get("slots", 0.0)), float(raw.get("s_per_request", 0.0))
            floor_w, draw_w = float(raw.get("floor_w", 0.0)), float(raw.get("draw_w", 0.0))
            grid_w = None if raw.get("grid_w") is None else float(raw["grid_w"])
            work = tuple((float(d), float(n)) for d, n in raw.get("work", ()))
        except (ValueError, TypeError, KeyError, AttributeError):
            return None
        if not all(math.isfinite(v) and v >= 0 for v in (*values[:-1], slots, s_per_request, floor_w, draw_w)):
            return None
        if grid_w is not None and not math.isfinite(grid_w):
            return None
        if not math.isfinite(values[-1]) or not all(math.isfinite(d) and math.isfinite(n) for d, n in work):
            return None
        comfort_w, due_w, store_w, capacity_w, at_s = values
        return cls(comfort_w, due_w, store_w, capacity_w, at_s, slots, s_per_request, work, floor_w, draw_w, grid_w)


def is_live(peer: PeerState | None, now_s: float, stale_after_s: float) -> bool:
    """A peer heard within ``stale_after_s``: the one rule for the split, the pool and the surplus."""
    return peer is not None and now_s - peer.at_s <= stale_after_s


def split(
    budget_w: float, peers: Mapping[str, PeerState | None], now_s: float, stale_after_s: float
) -> dict[str, float]:
    """Each node's share of ``budget_w``: its floor, then comfort, then deadlines, then stored heat."""
    wants: dict[str, list[float]] = {}
    shares = dict.fromkeys(peers, 0.0)
    for node, peer in peers.items():
        if peer is None or not is_live(peer, now_s, stale_after_s):
            capacity = peer.capacity_w if peer is not None else budget_w
            wants[node] = [capacity, 0.0, 0.0]  # silent: flat out, first
        else:
            floor = min(peer.floor_w, peer.capacity_w)
            shares[node] = floor
            cap = peer.capacity_w - floor
            comfort = min(max(peer.comfort_w - floor, 0.0), cap)
            due = min(max(peer.due_w - floor, 0.0), cap - comfort)
            wants[node] = [comfort, due, min(max(peer.store_w - floor, 0.0), cap - comfort - due)]
    left_w = budget_w - sum(shares.values())
    for k in range(len(CLASSES)):
        asked = {node: w[k] for node, w in wants.items() if w[k] > 0}
        total = sum(asked.values())
        if total <= 0 or left_w <= 0:
            continue
        given = min(left_w, total)
        for node, want in asked.items():
            shares[node] += given * want / total
        left_w -= given
    return shares


def pool_work(peers: Mapping[str, PeerState | None], now_s: float, stale_after_s: float) -> list[tuple[float, float]]:
    """The house's batches in the pool as (deadline, seconds of work left with every live node's
    slots busy), earliest first: what ``at_risk`` judges house-wide. A silent node's batches still
    count (their requests wait in the pool); its slots do not."""
    live = [p for p in peers.values() if p is not None and is_live(p, now_s, stale_after_s)]
    slots = sum(p.slots for p in live)
    known = [p for p in peers.values() if p is not None]
    s_per_request = max((p.s_per_request for p in known if p.s_per_request > 0), default=0.0)
    if slots <= 0 or s_per_request <= 0:
        return sorted((d, math.inf) for p in known for d, n in p.work if n > 0)  # nobody to run it: all at risk
    return sorted((d, n * s_per_request / slots) for p in known for d, n in p.work if n > 0)


def surplus_w(peers: Mapping[str, PeerState | None], now_s: float, stale_after_s: float) -> float:
    """Solar export the heaters may add to the budget: what the meter exports plus what the live
    heaters draw now (they are behind the meter). The meter as the heater that saw the least export
    read it; 0 when no live heater has a fresh reading (the safe side: the budget alone)."""
    live = [p for p in peers.values() if p is not None and is_live(p, now_s, stale_after_s)]
    readings = [p.grid_w for p in live if p.grid_w is not None]
    if not readings:
        return 0.0
    return max(0.0, -max(readings) + sum(p.draw_w for p in live))
