"""Energy, heat reused and work done: integrated every tick, persisted across restarts."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

J_PER_KWH = 3.6e6


@dataclass
class Counters:
    """Monotonic totals of the node (and per GPU energy), in the units their names say."""

    energy_kwh: float = 0.0
    added_kwh: float = 0.0  # above idle: the heat heatctl chose to make
    heat_reused_kwh: float = 0.0
    work_done: float = 0.0
    gpu_energy_kwh: dict[str, float] = field(default_factory=dict)

    def add(self, gpu_id: str, energy_j: float, added_j: float, wanted: bool, work: float) -> None:
        """One GPU's share of one tick: its energy, the part above idle, and whether heat was wanted."""
        kwh = energy_j / J_PER_KWH
        self.energy_kwh += kwh
        self.gpu_energy_kwh[gpu_id] = self.gpu_energy_kwh.get(gpu_id, 0.0) + kwh
        self.added_kwh += added_j / J_PER_KWH
        if wanted:
            self.heat_reused_kwh += added_j / J_PER_KWH
        self.work_done += work

    def to_json(self) -> dict[str, Any]:
        return {
            "energy_kwh": self.energy_kwh,
            "added_kwh": self.added_kwh,
            "heat_reused_kwh": self.heat_reused_kwh,
            "work_done": self.work_done,
            "gpu_energy_kwh": dict(self.gpu_energy_kwh),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Counters:
        def num(key: str) -> float:
            value = data.get(key, 0.0)
            return float(value) if isinstance(value, int | float) and value >= 0 else 0.0

        gpus = data.get("gpu_energy_kwh", {})
        return cls(
            energy_kwh=num("energy_kwh"),
            added_kwh=num("added_kwh"),
            heat_reused_kwh=num("heat_reused_kwh"),
            work_done=num("work_done"),
            gpu_energy_kwh={str(k): float(v) for k, v in gpus.items() if isinstance(v, int | float)}
            if isinstance(gpus, dict)
            else {},
        )
