"""A node's work source in a house: its own queue first (the jobs it runs alone), then the house's pool.

The inference workers and the tick see one ``WorkSource`` as without a house. Requests pulled from
the pool are charged to their batch while they run here (``BatchQueue.track``); their results go
back through the pool. The pool may be pulled while this node's room wants heat, or while the
house's deadlines need the work: the same ``at_risk`` rule as one node's queue, judged over every
node's pooled batches and the house's slots.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from heatctl.batch.queue import FLAT_OUT, at_risk
from heatctl.house.pool import PooledRequest

if TYPE_CHECKING:
    from heatctl.batch.queue import BatchQueue
    from heatctl.batch.store import QueuedRequest
    from heatctl.house.node import NodeHouse


class PooledWork:
    def __init__(self, queue: BatchQueue, house: NodeHouse, *, wall_fn: Callable[[], float] = time.time) -> None:
        assert house.pool is not None
        self.queue = queue
        self.house = house
        self.link = house.pool
        self._wall_fn = wall_fn
        self._due = False

    @property
    def interactive(self) -> int:
        return self.queue.interactive

    @property
    def heat_wanted(self) -> bool:
        return self.queue.heat_wanted

    def subscribe(self, listener: Callable[[], None]) -> None:
        self.queue.subscribe(listener)
        self.link.subscribe(listener)

    def has_work(self) -> bool:
        return self.queue.has_work() or self.link.has_work()

    def set_heat_wanted(self, wanted: bool, *, off_reason: str | None = None) -> None:
        """This node's rooms want heat (or not): the pool is pulled while they do, or while it is due."""
        self.queue.set_heat_wanted(wanted, off_reason=off_reason)
        self.link.set_allowed((wanted or self._due) and off_reason is None)

    def take(self, gpu_id: str) -> QueuedRequest | None:
        req = self.queue.take(gpu_id)
        if req is not None:
            return req
        pooled = self.link.take()
        if pooled is not None:
            self.queue.track(pooled, gpu_id)
        return pooled

    def release(self, req: QueuedRequest) -> None:
        if isinstance(req, PooledRequest):
            self.queue.untrack(req)
            self.link.release(req)
        else:
            self.queue.release(req)

    def complete(self, req: QueuedRequest, ok: bool, result: dict[str, Any], tokens: int, elapsed_s: float) -> None:
        if isinstance(req, PooledRequest):
            self.link.complete(req, ok, result, tokens, elapsed_s)  # raises if this node's store fails: retried
            self.queue.untrack(req)
        else:
            self.queue.complete(req, ok, result, tokens, elapsed_s)

    # --- DueWork -------------------------------------------------------------------------------

    def due_level(self, *, full_speedup: float | None = None) -> float:
        """The node's own batches' rule, and the house's over the pool: every node runs pooled work
        while some pooled batch would otherwise miss its deadline."""
        local = self.queue.due_level(full_speedup=full_speedup)
        speedup = full_speedup or 1.0
        work = [(d, s / speedup) for d, s in self.house.pool_work()]
        self._due = at_risk(self._wall_fn(), work, planned=full_speedup is not None) > 0
        house = (FLAT_OUT if full_speedup is not None else 1.0) if self._due else 0.0
        return max(local, house)

    def open_work(self) -> list[tuple[float, float]]:
        """This node's own batches, and its part of the pool's: with every live node's slots busy,
        each node's seconds of work equal the house's."""
        return sorted(self.queue.open_work() + self.house.pool_work())
