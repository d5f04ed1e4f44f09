"""Where batch work comes from, as one seam for the control tick and the inference workload.

Today the local batch queue (``batch.queue.BatchQueue``) and the simulator's batches
(``sim.batches.SimWorkSource``) are work sources; a house's shared pool is the next. The tick asks
how urgent the work is (``DueWork``); an inference workload pulls requests from it while its level
allows (``WorkSource``) and hands each back done, or released to run again.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from heatctl.batch.store import QueuedRequest


class DueWork(Protocol):
    """The tick's view: how urgent the work is. Times are the source's own clock."""

    def due_level(self, *, full_speedup: float | None = None) -> float:
        """0; 1 while a deadline needs the GPUs at their efficient cap; 2 (flat out) when planned."""
        ...

    def open_work(self) -> list[tuple[float, float]]:
        """(deadline, seconds of work left at the efficient cap), earliest deadline first."""
        ...


class WorkSource(DueWork, Protocol):
    """The workload's view: requests to pull while heat is wanted (or a deadline needs them)."""

    @property
    def interactive(self) -> int:
        """Interactive requests in flight now: each takes a slot from batch work."""
        ...

    @property
    def heat_wanted(self) -> bool:
        """Whether the rooms want heat now (else only work that is due is handed out)."""
        ...

    def subscribe(self, listener: Callable[[], None]) -> None:
        """Called from any thread when work arrives or interactive requests come and go."""

    def has_work(self) -> bool: ...

    def take(self, gpu_id: str) -> QueuedRequest | None:
        """The most urgent request, now in flight on ``gpu_id`` (None: nothing may run now)."""

    def release(self, req: QueuedRequest) -> None:
        """A request cut off before it finished: it runs again."""

    def complete(self, req: QueuedRequest, ok: bool, result: dict[str, Any], tokens: int, elapsed_s: float) -> None:
        """The request's result, stored durably, then the request is let go."""
