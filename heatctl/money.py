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
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from heatctl.config import Config, ZoneConfig

DAYS_KEPT = 400  # a heating season and more: heatctl report reads them


def served_models(cfg: Config) -> dict[str, str]:
    """GPU → the LLM it serves (an openai workload's model, or a simulated server's): its work is tokens."""
    models = {}
    for g in cfg.gpus:
        model = getattr(g.workload, "model", None)
        if isinstance(model, str) and (g.workload.type == "openai" or g.sim.inference is not None):
            models[g.id] = model
    return models


def heat_price_per_kwh(zone: ZoneConfig | None, price_per_kwh: float | None) -> float | None:
    """What a kWh of heat from the zone's own heating costs now (None: not known)."""
    main = zone.main_heating if zone is not None else None
    if main is not None and main.cost_per_kwh_heat is not None:
        return main.cost_per_kwh_heat
    if price_per_kwh is None or not math.isfinite(price_per_kwh):
        return None
    cop = main.cop if main is not None and main.cop is not None else 1.0
    return price_per_kwh / cop


class Spent(NamedTuple):  # a value made for every GPU every tick: a named tuple is cheap to build
    """One GPU's tick, as the ledger counts it."""

    energy_kwh: float
    reused_kwh: float
    price: float | None  # electricity per kWh now (None: not known)
    heat_price: float | None  # the replaced heat per kWh now
    carbon_g_per_kwh: float | None = None
    model: str | None = None  # what it served (an LLM workload), for tokens and J/token per model
    tokens: float = 0.0


@dataclass(slots=True)
class MoneyDay:
    """One day's (or all days') figures. kWh drawn while no price was known are counted apart
    (``unpriced_kwh``): the money covers the rest; so for carbon (``uncarboned_kwh``)."""

    electricity_kwh: float = 0.0
    heat_reused_kwh: float = 0.0
    electricity_cost: float = 0.0
    heat_value: float = 0.0
    unpriced_kwh: float = 0.0
    co2_g: float = 0.0
    uncarboned_kwh: float = 0.0
    models: dict[str, list[float]] = field(default_factory=dict)  # model → [tokens, kWh]

    def add(self, spent: Spent) -> None:
        self.electricity_kwh += spent.energy_kwh
        self.heat_reused_kwh += spent.reused_kwh
        if spent.carbon_g_per_kwh is None:
            self.uncarboned_kwh += spent.energy_kwh
        else:
            self.co2_g += spent.energy_kwh * spent.carbon_g_per_kwh
        if spent.model is not None:
            tokens_kwh = self.models.setdefault(spent.model, [0.0, 0.0])
            tokens_kwh[0] += spent.tokens
            tokens_kwh[1] += spent.energy_kwh
        if spent.price is None or spent.heat_price is None:
            self.unpriced_kwh += spent.energy_kwh
            return
        self.electricity_cost += spent.energy_kwh * spent.price
        self.heat_value += spent.reused_kwh * spent.heat_price

    def merge(self, other: MoneyDay) -> None:
        """Add another day's figures to these (a period's total)."""
        self.electricity_kwh += other.electricity_kwh
        self.heat_reused_kwh += other.heat_reused_kwh
        self.electricity_cost += other.electricity_cost
        self.heat_value += other.heat_value
        self.unpriced_kwh += other.unpriced_kwh
        self.co2_g += other.co2_g
        self.uncarboned_kwh += other.uncarboned_kwh
        for model, (tokens, kwh) in other.models.items():
            mine = self.models.setdefault(model, [0.0, 0.0])
            mine[0] += tokens
            mine[1] += kwh

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
            "co2_g": round(self.co2_g, 1) if self.uncarboned_kwh < self.electricity_kwh else None,
            "uncarboned_kwh": round(self.uncarboned_kwh, 4),
            "models": {
                name: {
                    "tokens": round(tokens),
                    "kwh": round(kwh, 4),
                    "j_per_token": round(kwh * 3.6e6 / tokens, 4) if tokens > 0 else None,
                    "tokens_per_kwh": round(tokens / kwh) if kwh > 0 else None,
                }
                for name, (tokens, kwh) in sorted(self.models.items())
            },
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
            co2_g=_num(data.get("co2_g")),
            uncarboned_kwh=_num(data.get("uncarboned_kwh", data.get("electricity_kwh"))),
            models={
                str(name): [_num(m.get("tokens")), _num(m.get("kwh"))]
                for name, m in (data.get("models") or {}).items()
                if isinstance(m, dict)
            }
            if isinstance(data.get("models"), dict)
            else {},
        )


class MoneyBook:
    """Per local day (the last ``DAYS_KEPT``) and in all; owned by the control thread (or the simulator)."""

    def __init__(self) -> None:
        self.total = MoneyDay()
        self.days: dict[str, MoneyDay] = {}

    def add(self, day: str, spent: Spent) -> None:
        if day not in self.days:
            self.days[day] = MoneyDay()
            for old in sorted(self.days)[:-DAYS_KEPT]:
                del self.days[old]
        self.days[day].add(spent)
        self.total.add(spent)

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
