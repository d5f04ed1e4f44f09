"""Price sources by kind: each says the same price to the service, its planner and the simulator."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from heatctl.config import parse_config
from heatctl.errors import ConfigError
from heatctl.prices import PRICE_KINDS, forecast_source, is_known, known_prices
from tests.conftest import MINIMAL_YAML

BRUSSELS = ZoneInfo("Europe/Brussels")


def tariff(text: str, tmp_path: Path) -> object:
    return parse_config(MINIMAL_YAML + f"mqtt: null\nstate_dir: {tmp_path}\ntariff: {text}\n").tariff


def test_fixed_and_periods_are_known_ahead_in_local_time(tmp_path: Path) -> None:
    fixed = tariff("{price_per_kwh: 0.3}", tmp_path)
    periods = tariff('{periods: [{from: "22:00", to: "06:00", price_per_kwh: 0.1}], default_per_kwh: 0.35}', tmp_path)
    assert fixed is not None and periods is not None and is_known(fixed) and is_known(periods)
    summer = datetime(2026, 7, 1, tzinfo=BRUSSELS)
    times = np.array([summer.replace(hour=h).timestamp() for h in (5, 6, 21, 22)])
    assert known_prices(fixed, times, BRUSSELS).tolist() == [0.3] * 4
    assert known_prices(periods, times, BRUSSELS).tolist() == [0.1, 0.35, 0.35, 0.1]
    assert known_prices(periods, times, UTC).tolist() == [0.1, 0.1, 0.35, 0.35]  # 06:00 CEST is 04:00 UTC


def test_a_csv_tariff_holds_each_price_until_the_next_row(tmp_path: Path) -> None:
    (tmp_path / "prices.csv").write_text("time,price_per_kwh\n2026-01-05T00:00,0.2\n2026-01-05T01:00,0.4\n")
    csv = tariff("{csv: prices.csv}", tmp_path)
    assert csv is not None and is_known(csv) and forecast_source(csv) is None
    t0 = datetime(2026, 1, 5, tzinfo=UTC).timestamp()
    prices = known_prices(csv, np.array([t0 - 60, t0 + 1800, t0 + 3600, t0 + 86400]), UTC, tmp_path)
    assert prices is not None and prices.tolist() == [0.2, 0.2, 0.4, 0.4]


def test_a_forecast_tariff_arrives_from_its_entity_or_topic(tmp_path: Path) -> None:
    entity = tariff("{entity: sensor.nordpool, poll_interval_s: 600}", tmp_path)
    topic = tariff("{topic: prices/today}", tmp_path)
    assert entity is not None and topic is not None and not is_known(entity)
    assert known_prices(entity, np.array([0.0]), UTC) is None
    src = forecast_source(entity)
    assert src is not None and (src.entity, src.poll_interval_s) == ("sensor.nordpool", 600.0)
    assert (forecast_source(topic) or src).topic == "prices/today"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("{price_per_kwh: 0.3, topic: t}", "give one of 'price_per_kwh', 'periods', 'csv', 'entity', 'topic'"),
        ("{default_per_kwh: 0.3}", "give one of"),
        ("{price_per_kwh: -1}", "tariff.price_per_kwh: input should be greater than or equal to 0"),
        ("{periods: [{from: '25:00', to: '06:00', price_per_kwh: 0.1}]}", "tariff.periods[0].from"),
    ],
)
def test_a_tariff_names_one_kind(tmp_path: Path, text: str, problem: str) -> None:
    with pytest.raises(ConfigError) as exc:
        tariff(text, tmp_path)
    assert any(problem in p for p in exc.value.problems), exc.value.problems


def test_every_kind_is_one_registered_module() -> None:
    assert list(PRICE_KINDS) == ["price_per_kwh", "periods", "csv", "entity", "topic"]
    for key, kind in PRICE_KINDS.items():
        assert key in kind.model.model_fields and (kind.known is None) != (kind.forecast is None)


def test_carbon_sources_are_kinds_too(tmp_path: Path) -> None:
    from heatctl.prices import CARBON_KINDS

    def carbon(text: str) -> Any:
        extra = f"mqtt: null\nstate_dir: {tmp_path}\nplanner: {{objective: carbon}}\ncarbon: {text}\n"
        return parse_config(MINIMAL_YAML + extra).carbon

    assert list(CARBON_KINDS) == ["g_per_kwh", "csv", "entity", "topic"]
    fixed = known_prices(carbon("{g_per_kwh: 180}"), np.array([0.0, 1.0]), UTC)
    assert fixed is not None and fixed.tolist() == [180.0, 180.0]
    rows = "time,g_per_kwh,price_per_kwh\n2026-01-05T00:00,300,0.1\n2026-01-05T12:00,90,0.2\n"
    (tmp_path / "grid.csv").write_text(rows)
    noon = datetime(2026, 1, 5, 12, tzinfo=UTC).timestamp()
    series = known_prices(carbon("{csv: grid.csv}"), np.array([noon - 1, noon]), UTC, tmp_path)
    assert series is not None and series.tolist() == [300.0, 90.0]  # its own column, not the price's
    forecast = carbon("{entity: sensor.co2_signal}")
    source = forecast_source(forecast)
    assert not is_known(forecast) and source is not None and source.entity == "sensor.co2_signal"
    with pytest.raises(ConfigError) as exc:
        carbon("{price_per_kwh: 0.3}")
    assert any("give one of 'g_per_kwh', 'csv', 'entity', 'topic'" in p for p in exc.value.problems)
