"""Batch work in the simulator: batches arrive with a deadline, the GPU's work pays them off.

The service's own deadline rule (``heatctl.batch.queue.at_risk``) decides when a batch
must run whatever the room wants; the controller then runs the GPU at its most efficient cap.
Each step's work goes to the open batches earliest deadline first, and each batch is charged
the GPU's energy in proportion to the work it got; that energy is heat reused when the room
wanted heat (the service's rule, ``accounting.WANTED_BAND_K``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from heatctl.batch.queue import FLAT_OUT, at_risk


@dataclass(slots=True)
class SimBatch:
    arrival_s: float
    deadline_s: float
    work: float  # in the GPU's work units
    left: float
    energy_j: float = 0.0
    reused_j: float = 0.0
    done_s: float | None = None

    @property
    def on_time(self) -> bool:
        return self.done_s is not None and self.done_s <= self.deadline_s


class SimBatches:
    def __init__(self, batches: list[SimBatch]) -> None:
        self.batches = sorted(batches, key=lambda b: b.arrival_s)

    def open_at(self, t: float) -> list[SimBatch]:
        """Arrived, not finished, earliest deadline first."""
        return sorted((b for b in self.batches if b.arrival_s <= t and b.done_s is None), key=lambda b: b.deadline_s)

    def run(self, t: float, step_s: float, work: float, energy_j: float, *, heat_wanted: bool) -> float:
        """Pay the step's work into the open batches; the share of the work they took."""
        total, left = work, work
        wanted = heat_wanted
        for batch in self.open_at(t):
            if left <= 0:
                break
            took = min(batch.left, left)
            batch.left -= took
            left -= took
            share_j = energy_j * took / total
            batch.energy_j += share_j
            batch.reused_j += share_j if wanted else 0.0
            if batch.left <= 1e-9:
                batch.done_s = t + step_s * (1 - left / total) if total > 0 else t
        return (total - left) / total if total > 0 else 0.0

    def kpis(self, end_s: float) -> dict[str, float]:
        closed = [b for b in self.batches if b.done_s is not None or b.deadline_s <= end_s]
        energy = sum(b.energy_j for b in self.batches)
        return {
            "batches": float(len(closed)),
            "batches_on_time": float(sum(b.on_time for b in closed)),
            "batch_kwh": energy / 3.6e6,
            "batch_heat_reused_share": sum(b.reused_j for b in self.batches) / energy if energy > 0 else float("nan"),
        }


class SimWorkSource:
    """The simulator's batches as the tick's ``worksource.DueWork`` (like the service's ``BatchQueue``): the
    work left in seconds at the rate the GPUs do it at their efficient caps, in run seconds."""

    def __init__(self, batches: SimBatches, time_fn: Callable[[], float], efficient_rate: Callable[[], float]) -> None:
        self.batches = batches
        self._time_fn = time_fn
        self._rate = efficient_rate

    def open_work(self) -> list[tuple[float, float]]:
        rate = max(self._rate(), 1e-9)
        return [(b.deadline_s, b.left / rate) for b in self.batches.open_at(self._time_fn())]

    def due_level(self, *, full_speedup: float | None = None) -> float:
        speedup = full_speedup or 1.0
        work = [(d, s / speedup) for d, s in self.open_work()]
        if not at_risk(self._time_fn(), work, planned=full_speedup is not None):
            return 0.0
        return FLAT_OUT if full_speedup is not None else 1.0
