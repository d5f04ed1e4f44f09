"""Batch work in the simulator: batches arrive with a deadline, the GPU's work pays them off.

The same deadline rule as the service (``heatctl.batch.queue.at_risk``) decides when a batch
must run whatever the room wants; the controller then runs the GPU at its most efficient cap.
Each step's work goes to the open batches earliest deadline first, and each batch is charged
the GPU's energy in proportion to the work it got; that energy is heat reused when the room
wanted heat (the service's rule, ``accounting.WANTED_BAND_K``).
"""

from __future__ import annotations

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

    def due(self, t: float, full_rate: float, *, flat_rate: float | None = None) -> float:
        """1 while a deadline needs the GPU now (``full_rate``: work per second at the efficient cap).
        ``flat_rate``: the plan makes the work's heat in time at full power, this much work per
        second: the service's planned rule (``BatchQueue.due_level``)."""
        rate = flat_rate if flat_rate is not None else full_rate
        work = [(b.deadline_s, b.left / max(rate, 1e-9)) for b in self.open_at(t)]
        if not at_risk(t, work, planned=flat_rate is not None):
            return 0.0
        return FLAT_OUT if flat_rate is not None else 1.0

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
