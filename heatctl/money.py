"""What the heat was worth: the heat reused against the electricity spent, per day and in all.

The heat heatctl made while the room wanted it replaced heat the room's own heating would have
made: at that heating's ``cost_per_kwh_heat``, else the electricity price over its ``cop``, else
the price itself (an electric heater, COP 1). The electricity is every kWh the GPUs drew, at the
price of the moment. Net = heat value − electricity cost; the inference work itself is not priced.
One book for the service and the simulator.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from heatctl.config import ZoneConfig

DAYS_KEPT = 31


def heat_price_per_kwh(zone: ZoneConfig | None, price_per_kwh: float | None) -> float | None:
    """What a kWh of heat from the zone's own heating costs now (None: not known)."""
    main = zone.main_heating if zone is not None else None
    if main is not None and main.cost_per_kwh_heat is not None:
        return main.cost_per_kwh_heat
    if price_per_kwh is None or not math.isfinite(price_per_kwh):
        return None
    cop = main.cop if main is not None and main.cop is not None else 1.0
    return price_per_kwh / cop


@dataclass(slots=True)
class MoneyDay:
    """One day's (or all days') figures. kWh drawn while no price was known are counted apart
    (``unpriced_kwh``): the money covers the rest."""

    electricity_kwh: float = 0.0
    heat_reused_kwh: float = 0.0
    electricity_cost: float = 0.0
    heat_value: float = 0.0
    unpriced_kwh: float = 0.0

    def add(self, energy_kwh: float, reused_kwh: float, price: float | None, heat_price: float | None) -> None:
        self.electricity_kwh += energy_kwh
        self.heat_reused_kwh += reused_kwh
        if price is None or heat_price is None:
            self.unpriced_kwh += energy_kwh
            return
        self.electricity_cost += energy_kwh * price
        self.heat_value += reused_kwh * heat_price

    @property
    def net(self) -> float:
        return self.heat_value - self.electricity_cost

    @property
    def priced(self) -> bool:
        """Some of it had a price (else there is no money to show)."""
        return self.unpriced_kwh < self.electricity_kwh

    def to_json(self) -> dict[str, Any]:
        priced = self.priced
        return {
            "electricity_kwh": round(self.electricity_kwh, 4),
            "heat_reused_kwh": round(self.heat_reused_kwh, 4),
            "electricity_cost": round(self.electricity_cost, 4) if priced else None,
            "heat_value": round(self.heat_value, 4) if priced else None,
            "net": round(self.net, 4) if priced else None,
            "unpriced_kwh": round(self.unpriced_kwh, 4),
        }

    @classmethod
    def from_json(cls, data: Any) -> MoneyDay:
        if not isinstance(data, dict):
            return cls()
        return cls(
            electricity_kwh=_num(data.get("electricity_kwh")),
            heat_reused_kwh=_num(data.get("heat_reused_kwh")),
            electricity_cost=_num(data.get("electricity_cost")),
            heat_value=_num(data.get("heat_value")),
            unpriced_kwh=_num(data.get("unpriced_kwh")),
        )


class MoneyBook:
    """Per local day (the last ``DAYS_KEPT``) and in all; owned by the control thread (or the simulator)."""

    def __init__(self) -> None:
        self.total = MoneyDay()
        self.days: dict[str, MoneyDay] = {}

    def add(
        self, day: str, energy_kwh: float, reused_kwh: float, price: float | None, heat_price: float | None
    ) -> None:
        if day not in self.days:
            self.days[day] = MoneyDay()
            for old in sorted(self.days)[:-DAYS_KEPT]:
                del self.days[old]
        self.days[day].add(energy_kwh, reused_kwh, price, heat_price)
        self.total.add(energy_kwh, reused_kwh, price, heat_price)

    def today(self, day: str) -> MoneyDay:
        return self.days.get(day) or MoneyDay()

    def to_json(self) -> dict[str, Any]:
        return {"total": self.total.to_json(), "days": {d: m.to_json() for d, m in sorted(self.days.items())}}

    @classmethod
    def from_json(cls, data: Any) -> MoneyBook:
        book = cls()
        if isinstance(data, Mapping):
            book.total = MoneyDay.from_json(data.get("total"))
            days = data.get("days")
            if isinstance(days, dict):
                book.days = {str(d): MoneyDay.from_json(m) for d, m in sorted(days.items())[-DAYS_KEPT:]}
        return book


def money_state(book: Any, day: str, currency: str) -> dict[str, Any]:
    """The state's ``money`` block: today and in all (``book``: ``MoneyBook.to_json()``)."""
    days = book.get("days", {}) if isinstance(book, Mapping) else {}
    empty = MoneyDay().to_json()
    return {
        "currency": currency,
        "today": days.get(day, empty) if isinstance(days, Mapping) else empty,
        "total": book.get("total", empty) if isinstance(book, Mapping) else empty,
    }


def _num(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return 0.0
    return float(value)
