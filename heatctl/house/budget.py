"""One budget for a house's heaters: every node computes the same split from the same peers.

Each node says what it wants: ``comfort_w`` (its rooms' loops, below their setpoints), ``due_w``
(batch work its deadlines need now) and ``store_w`` (the planner's heat ahead of need), and its
capacity. The budget goes to comfort first, then deadlines, then stored heat; within a class in
proportion to what each wants, none given more than it wants. A peer silent past
``stale_after_s`` counts at its full capacity in the first class: while the house cannot hear a
heater it must assume it heats flat out, so the fuse holds.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any, NamedTuple

CLASSES = ("comfort_w", "due_w", "store_w")


class PeerState(NamedTuple):
    comfort_w: float
    due_w: float
    store_w: float
    capacity_w: float
    at_s: float  # epoch seconds of the report

    def to_json(self) -> bytes:
        return json.dumps(self._asdict(), separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes) -> PeerState | None:
        """A peer's report, or None when it cannot be read (that peer then counts as silent)."""
        try:
            raw: Any = json.loads(data)
            values = [float(raw[name]) for name in cls._fields]
        except (ValueError, TypeError, KeyError):
            return None
        if not all(math.isfinite(v) and v >= 0 for v in values[:-1]) or not math.isfinite(values[-1]):
            return None
        return cls(*values)


def split(
    budget_w: float, peers: Mapping[str, PeerState | None], now_s: float, stale_after_s: float
) -> dict[str, float]:
    """Each node's share of ``budget_w``: comfort, then deadlines, then stored heat."""
    wants: dict[str, list[float]] = {}
    for node, peer in peers.items():
        if peer is None or now_s - peer.at_s > stale_after_s:
            capacity = peer.capacity_w if peer is not None else budget_w
            wants[node] = [capacity, 0.0, 0.0]  # silent: flat out, first
        else:
            cap = peer.capacity_w
            comfort = min(peer.comfort_w, cap)
            due = min(peer.due_w, cap - comfort)
            wants[node] = [comfort, due, min(peer.store_w, cap - comfort - due)]
    shares = dict.fromkeys(peers, 0.0)
    left_w = budget_w
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
