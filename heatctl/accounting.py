"""Energy, heat reused and work done: integrated every tick on the control thread, persisted.

``Counters`` is the control thread's own; everything else gets ``Totals``, a frozen copy.
Every increment is clamped at zero, so a total never goes down (Home Assistant reads a
decrease of a ``total_increasing`` sensor as a meter reset).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from heatctl.gpu.base import GpuReading

from heatctl.control.safety import ZoneInputs
from heatctl.money import MoneyBook, Spent

J_PER_KWH = 3.6e6
WANTED_BAND_K = 0.5  # heat counts as reused while the room is at most this far above its setpoint
PLAN_WARMING_W = 20.0  # a plan heating this far above the GPUs' idle warms the room for its target


@dataclass(frozen=True, slots=True, kw_only=True)
class Totals:
    """The node's monotonic totals at one moment, in the units their names say."""

    energy_kwh: float = 0.0
    added_kwh: float = 0.0  # above idle: the heat heatctl chose to make
    heat_reused_kwh: float = 0.0
    work_done: float = 0.0
    gpu_energy_kwh: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))
    money: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))  # MoneyBook.to_json()


class PriceNow(NamedTuple):
    """The ledger's side of one tick: the local day, electricity's price and carbon, the replaced
    heat's price, and the model the GPU served (its work then counts as tokens of that model)."""

    day: str
    price_per_kwh: float | None
    heat_price_per_kwh: float | None
    carbon_g_per_kwh: float | None = None
    model: str | None = None


class Counters:
    """The running totals, owned by the control thread."""

    def __init__(self, totals: Totals | None = None) -> None:
        t = totals or Totals()
        self.energy_kwh = t.energy_kwh
        self.added_kwh = t.added_kwh
        self.heat_reused_kwh = t.heat_reused_kwh
        self.work_done = t.work_done
        self._gpu_energy_kwh = dict(t.gpu_energy_kwh)
        self.money = MoneyBook.from_json(t.money)

    def add(
        self, gpu_id: str, energy_j: float, added_j: float, wanted: bool, work: float, *, price: PriceNow | None = None
    ) -> None:
        """One GPU's share of one tick: its energy, the part above idle, whether heat was wanted, its
        work; with ``price``, what the heat was worth and the electricity cost (``money``)."""
        kwh = max(energy_j, 0.0) / J_PER_KWH
        added_kwh = min(max(added_j, 0.0) / J_PER_KWH, kwh)
        self.energy_kwh += kwh
        self._gpu_energy_kwh[gpu_id] = self._gpu_energy_kwh.get(gpu_id, 0.0) + kwh
        self.added_kwh += added_kwh
        if wanted:
            self.heat_reused_kwh += added_kwh
        self.work_done += max(work, 0.0)
        if price is not None:
            reused_kwh = added_kwh if wanted else 0.0
            spent = Spent(
                kwh,
                reused_kwh,
                price.price_per_kwh,
                price.heat_price_per_kwh,
                price.carbon_g_per_kwh,
                price.model,
                max(work, 0.0) if price.model is not None else 0.0,
            )
            self.money.add(price.day, spent)

    def snapshot(self) -> Totals:
        return Totals(
            energy_kwh=self.energy_kwh,
            added_kwh=self.added_kwh,
            heat_reused_kwh=self.heat_reused_kwh,
            work_done=self.work_done,
            gpu_energy_kwh=MappingProxyType(dict(self._gpu_energy_kwh)),
            money=MappingProxyType(self.money.to_json()),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "energy_kwh": self.energy_kwh,
            "added_kwh": self.added_kwh,
            "heat_reused_kwh": self.heat_reused_kwh,
            "work_done": self.work_done,
            "gpu_energy_kwh": dict(self._gpu_energy_kwh),
            "money": self.money.to_json(),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Counters:
        def num(value: object) -> float:
            return float(value) if isinstance(value, int | float) and value >= 0 else 0.0

        gpus = data.get("gpu_energy_kwh", {})
        return cls(
            Totals(
                energy_kwh=num(data.get("energy_kwh")),
                added_kwh=num(data.get("added_kwh")),
                heat_reused_kwh=num(data.get("heat_reused_kwh")),
                work_done=num(data.get("work_done")),
                gpu_energy_kwh={str(k): num(v) for k, v in gpus.items()} if isinstance(gpus, dict) else {},
                money=money if isinstance(money := data.get("money"), dict) else {},
            )
        )


def heat_wanted(zone: ZoneInputs, plan_target_c: float | None = None) -> bool:
    """Whether heat made now is heat the room wants: its thermostat says so, within the band, or the
    planner warms it ahead of a setpoint rise (``plan_target_c``, the target its plan heats for; None
    while the plan lets the room coast — heat run then for a deadline is not wanted)."""
    t, sp = zone.temperature, zone.setpoint
    if t is None or sp is None:
        return False
    wanted_c = max(sp.value, plan_target_c) if plan_target_c is not None else sp.value
    return t.value <= wanted_c + WANTED_BAND_K


class EnergyMeter:
    """One GPU's energy between ticks: the driver's counter where it has one, else power × time."""

    def __init__(self) -> None:
        self._last_j: float | None = None

    def joules(self, energy_j: float | None, power_w: float | None, dt_s: float) -> float:
        previous, self._last_j = self._last_j, energy_j
        if energy_j is not None and previous is not None and energy_j >= previous:
            return energy_j - previous
        # No counter, the first tick, or a counter that restarted (driver re-initialised).
        return (power_w or 0.0) * dt_s


class NodeMeters:
    """Every GPU's energy since the last tick into the node's counters (owned by the control thread)."""

    def __init__(self, gpu_ids: Iterable[str]) -> None:
        self.counters = Counters()
        self._meters = {gid: EnergyMeter() for gid in gpu_ids}

    def add(
        self,
        gpu_id: str,
        reading: GpuReading,
        work_rate: float | None,
        *,
        dt_s: float,
        idle_w: float,
        wanted: bool,
        price: PriceNow | None = None,
    ) -> float:
        """One GPU's tick: its energy (J, returned), the part above idle reused when ``wanted``, its work."""
        joules = self._meters[gpu_id].joules(reading.energy_j, reading.power_w, dt_s)
        self.counters.add(gpu_id, joules, joules - idle_w * dt_s, wanted, (work_rate or 0.0) * dt_s, price=price)
        return joules
