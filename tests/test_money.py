"""The money view: heat reused against electricity spent, per day and in all, in the state and status."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from heatctl.config import parse_config
from heatctl.money import MoneyBook, Spent, heat_price_per_kwh
from heatctl.publish.mqtt_state import state_payload
from heatctl.service import Service
from heatctl.status import describe_state
from tests.conftest import MINIMAL_YAML, FakeClock

DAY_S = 86400.0
NOON_S = 1_800_000_000.0 - 8 * 3600.0 + 4 * 3600.0  # some local midday or so; only the date matters


class StepClock(FakeClock):
    def wait(self, event: threading.Event, timeout_s: float) -> bool:
        self.advance(max(timeout_s, 0.0))
        return event.is_set()


def test_the_heat_replaced_is_priced_at_the_main_heatings_cost_else_an_electric_heaters() -> None:
    cfg = parse_config(MINIMAL_YAML + "mqtt: null\n")
    zone = cfg.zones[0]
    assert heat_price_per_kwh(zone, 0.30) == 0.30  # no main heating: an electric heater
    assert heat_price_per_kwh(zone, None) is None
    pump = parse_config(
        MINIMAL_YAML.replace("    gpus: [gpu0]", "    main_heating: {entity: climate.x, cop: 3.0}\n    gpus: [gpu0]")
        + "mqtt: null\nhomeassistant: {url: 'http://127.0.0.1:1', token: t}\n"
    ).zones[0]
    assert heat_price_per_kwh(pump, 0.30) == pytest.approx(0.10)
    gas = parse_config(
        MINIMAL_YAML.replace(
            "    gpus: [gpu0]", "    main_heating: {entity: climate.x, cost_per_kwh_heat: 0.12}\n    gpus: [gpu0]"
        )
        + "mqtt: null\nhomeassistant: {url: 'http://127.0.0.1:1', token: t}\n"
    ).zones[0]
    assert heat_price_per_kwh(gas, None) == 0.12  # known without an electricity price


def test_a_book_keeps_days_and_counts_unpriced_energy_apart() -> None:
    book = MoneyBook()
    book.add("2026-12-01", Spent(1.0, 0.8, 0.30, 0.10, 250.0, "llama", 3_000_000.0))  # a heat pump's 0.10
    book.add("2026-12-01", Spent(0.5, 0.0, None, None))  # no price known for this stretch, nor carbon
    book.add("2026-12-02", Spent(2.0, 2.0, 0.20, 0.20, 100.0, "llama", 5_000_000.0))
    first = book.to_json()["days"]["2026-12-01"]
    assert first["electricity_cost"] == pytest.approx(0.30) and first["heat_value"] == pytest.approx(0.08)
    assert first["net"] == pytest.approx(-0.22) and first["unpriced_kwh"] == 0.5
    assert first["co2_g"] == pytest.approx(250.0) and first["uncarboned_kwh"] == 0.5
    llama = {"tokens": 3_000_000, "kwh": 1.0, "j_per_token": 1.2, "tokens_per_kwh": 3_000_000}
    assert first["models"]["llama"] == llama
    assert book.total.net == pytest.approx(-0.22 + 0.0) and book.total.electricity_kwh == 3.5
    again = MoneyBook.from_json(book.to_json())
    assert again.to_json() == book.to_json()
    for day in range(40):
        book.add(f"2027-{day // 28 + 1:02d}-{day % 28 + 1:02d}", Spent(0.1, 0.1, 0.2, 0.2))
    assert len(book.days) == 42 and "2026-12-01" in book.days  # a season and more is kept
    assert MoneyBook.from_json({"days": "garbage", "total": [1]}).to_json()["total"]["net"] is None


def test_the_service_says_what_the_heat_was_worth_today_and_in_all_and_keeps_it(tmp_path: Path) -> None:
    clock = StepClock()
    wall = [NOON_S]
    text = MINIMAL_YAML + f"mqtt: null\nstate_dir: {tmp_path}\ntariff: {{price_per_kwh: 0.30}}\ncurrency: CHF\n"

    def run(ticks: int) -> dict[str, object]:
        svc = Service(parse_config(text), clock=clock, wall_fn=lambda: wall[0])
        svc.start()
        try:
            for _ in range(ticks):
                clock.advance(60.0)
                wall[0] += 60.0
                svc.store.put("office", "temperature", 18.0, "t")
                svc.store.put("office", "setpoint", 21.0, "s")
                snap = svc.tick()
            return state_payload(snap)
        finally:
            svc.shutdown()

    state = run(120)  # two hours in a cold room
    money = state["money"]
    assert isinstance(money, dict) and money["currency"] == "CHF"
    total = money["total"]
    assert total["electricity_kwh"] == pytest.approx(state["energy_kwh"], rel=1e-3)
    assert total["heat_reused_kwh"] == pytest.approx(state["heat_reused_kwh"], rel=1e-3)
    assert total["electricity_cost"] == pytest.approx(0.30 * total["electricity_kwh"], rel=1e-3)
    assert total["heat_value"] == pytest.approx(0.30 * total["heat_reused_kwh"], rel=1e-3)  # an electric heater's
    assert total["net"] < 0  # idle draw is electricity that replaced no heat
    assert money["today"] == total
    shown = describe_state(state, node_id="test-node", online=True)
    assert f"money today: heat worth {total['heat_value']:.2f} CHF replaced" in shown
    wall[0] += DAY_S  # the next day, after a restart: today starts at 0, the total goes on
    state = run(10)
    money = state["money"]
    assert money["today"]["electricity_kwh"] < money["total"]["electricity_kwh"]
    assert money["total"]["electricity_kwh"] > total["electricity_kwh"]


def test_without_a_price_the_money_is_not_made_up(tmp_path: Path) -> None:
    clock = StepClock()
    svc = Service(parse_config(MINIMAL_YAML + f"mqtt: null\nstate_dir: {tmp_path}\n"), clock=clock)
    svc.start()
    try:
        for _ in range(5):
            clock.advance(60.0)
            svc.store.put("office", "temperature", 18.0, "t")
            svc.store.put("office", "setpoint", 21.0, "s")
            state = state_payload(svc.tick())
    finally:
        svc.shutdown()
    assert state["money"]["total"]["net"] is None and state["money"]["total"]["unpriced_kwh"] > 0
    assert "no electricity price known (set tariff: price_per_kwh)" in describe_state(state, node_id="n", online=True)
