"""The payloads people actually have, and the ones that must never reach the controller."""

from __future__ import annotations

import json

import pytest

from heatctl.config import SourceConfig
from heatctl.sources.extract import PayloadError, Role, extract, reported_age_s

Z2M_TRV = json.dumps(
    {
        "local_temperature": 19.5,
        "occupied_heating_setpoint": 21,
        "current_heating_setpoint": 20.5,
        "system_mode": "heat",
        "battery": 87,
        "linkquality": 120,
    }
)
TASMOTA = json.dumps(
    {
        "Time": "2026-01-05T10:00:00",
        "DS18B20": {"Id": "031697792DBB", "Temperature": 19.4},
        "AM2301": {"Temperature": 20.1, "Humidity": 45.2},
        "TempUnit": "C",
    }
)
SHELLY_GEN2 = json.dumps(
    {
        "id": 0,
        "source": "init",
        "output": True,
        "apower": 183.4,
        "voltage": 231.2,
        "current": 0.81,
        "aenergy": {"total": 1234.5, "by_minute": [2990.1, 3001.2, 2994.0]},
        "temperature": {"tC": 41.2},
    }
)


def src(**kw: object) -> SourceConfig:
    return SourceConfig(topic="t", **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("payload", "source", "role", "expected"),
    [
        # zigbee2mqtt radiator valve
        (Z2M_TRV, src(json_path="local_temperature"), "temperature", 19.5),
        (Z2M_TRV, src(json_path="occupied_heating_setpoint"), "setpoint", 21.0),
        (Z2M_TRV, src(json_path="current_heating_setpoint"), "setpoint", 20.5),
        (Z2M_TRV, src(json_path="system_mode"), "mode", 1.0),
        (json.dumps({"system_mode": "off"}), src(json_path="system_mode"), "mode", 0.0),
        # zigbee2mqtt contact sensor: contact false means open
        (
            json.dumps({"contact": False, "battery": 100}),
            src(json_path="contact", open_when=False),
            "window",
            1.0,
        ),
        (json.dumps({"contact": True}), src(json_path="contact", open_when=False), "window", 0.0),
        # Tasmota tele/<name>/SENSOR, nested
        (TASMOTA, src(json_path="DS18B20.Temperature"), "temperature", 19.4),
        (TASMOTA, src(value_template="{{ value_json.AM2301.Temperature }}"), "temperature", 20.1),
        # Shelly plug power: Gen1 plain number, Gen2 JSON
        ("183.25", src(), "power", 183.25),
        (SHELLY_GEN2, src(json_path="apower"), "power", 183.4),
        (SHELLY_GEN2, src(json_path="aenergy.by_minute.1"), "power", 3001.2),
        # Home Assistant mqtt_statestream: plain states and JSON-encoded attributes
        ("3.4", src(), "outdoor", 3.4),
        ('"21.5"', src(value_template="{{ value_json | float }}"), "setpoint", 21.5),
        ("heat", src(), "mode", 1.0),
        ("on", src(), "window", 1.0),
        ("off", src(), "window", 0.0),
        # Fahrenheit and kW
        ("68", src(unit="F"), "temperature", 20.0),
        ("0.25", src(unit="kW"), "power", 250.0),
    ],
)
def test_real_payloads(payload: str, source: SourceConfig, role: Role, expected: float) -> None:
    assert extract(payload.encode(), source, role) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("payload", "source", "role", "reason"),
    [
        (b"{not json", src(json_path="x"), "temperature", "not JSON"),
        (
            b'{"local_temperature": "warm"}',
            src(json_path="local_temperature"),
            "temperature",
            "expected a number",
        ),
        (
            b'{"local_temperature": true}',
            src(json_path="local_temperature"),
            "temperature",
            "expected a number",
        ),
        (
            b'{"local_temperature": null}',
            src(json_path="local_temperature"),
            "temperature",
            "expected a number",
        ),
        (b'{"other": 1}', src(json_path="local_temperature"), "temperature", "no 'local_temperature'"),
        (b"NaN", src(), "temperature", "finite"),
        (b'{"t": NaN}', src(json_path="t"), "temperature", "finite"),
        (b"inf", src(), "temperature", "finite"),
        (b"-Infinity", src(), "setpoint", "finite"),
        (b"85", src(), "temperature", "outside the valid range [-30, 60]"),
        (b"40", src(), "setpoint", "outside the valid range [5, 35]"),
        (b"25", src(valid_range=(10, 20)), "temperature", "outside the valid range [10, 20]"),
        (b"x" * 1_000_000, src(), "temperature", "larger than"),
        ("21,5 °C".encode("latin-1"), src(), "temperature", "not UTF-8"),
        (b"ajar", src(json_path=None), "window", "expected open/closed"),
        (b'{"contact": "maybe"}', src(json_path="contact", open_when=False), "window", "expected true or false"),
        (b'{"contact": null}', src(json_path="contact", open_when=False), "window", "expected true or false"),
        (b"unavailable", src(json_path=None, open_when="on"), "window", "does not know"),
        (b"unknown", src(json_path=None, open_when="open"), "window", "does not know"),
        (b"turbo", src(), "mode", "unknown thermostat mode"),
        (b"{}", src(value_template="{{ value_json.x.y }}"), "temperature", "value_template failed"),
        (b"1", src(value_template="{{ ''.__class__.__mro__ }}"), "temperature", ""),
    ],
)
def test_bad_payloads_are_rejected_with_a_reason(payload: bytes, source: SourceConfig, role: Role, reason: str) -> None:
    with pytest.raises(PayloadError) as info:
        extract(payload, source, role)
    assert reason in str(info.value)


def test_templates_run_in_a_sandbox() -> None:
    evil = src(value_template="{{ cycler.__init__.__globals__.os.system('true') }}")
    with pytest.raises(PayloadError) as info:
        extract(b"1", evil, "temperature")
    assert "value_template failed" in str(info.value)


def test_a_deeply_nested_payload_is_a_bad_payload_not_a_traceback() -> None:
    source = SourceConfig(topic="z2m/trv", json_path="local_temperature")
    for payload in (b"[" * 5000 + b"]" * 5000, b'{"a":' * 100 + b"1" + b"}" * 100):  # within 64 KiB
        with pytest.raises(PayloadError, match="nested deeper than 64"):
            extract(payload, source, "temperature")


def test_a_deeply_nested_forecast_is_left_out_with_a_reason() -> None:
    from heatctl.planner.series import ForecastError, parse_payload

    with pytest.raises(ForecastError, match="nested deeper"):
        parse_payload(b"[" * 5000 + b"]" * 5000, (-10.0, 100.0))


@pytest.mark.parametrize(
    ("payload", "age_s"),
    [
        (b'{"temperature": 20, "last_seen": "2027-01-15T07:59:00Z"}', 60.0),
        (b'{"temperature": 20, "last_seen": "2027-01-15T08:59:30+01:00"}', 30.0),
        (b'{"temperature": 20, "last_seen": 1800000000000}', 0.0),
        (b'{"temperature": 20, "last_seen": 1799999990000}', 10.0),
        (b'{"temperature": 20, "last_seen": "2027-01-15T08:00:10Z"}', 0.0),  # a clock ahead is not negative
        (b'{"temperature": 20}', None),
        (b"20.5", None),
        (b'{"temperature": 20, "last_seen": "yesterday"}', None),
        (b'{"temperature": 20, "last_seen": true}', None),
        (b'{"temperature": 20, "last_seen": 1e400}', None),
        (b'["last_seen"]', None),
    ],
)
def test_the_age_a_payload_reports(payload: bytes, age_s: float | None) -> None:
    assert reported_age_s(payload, 1_800_000_000.0) == age_s


@pytest.mark.parametrize(
    ("payload", "open_when", "expected"),
    [
        (b'{"contact": false}', False, 1.0),  # zigbee2mqtt: no contact = open
        (b'{"contact": true}', False, 0.0),
        (b"on", "on", 1.0),  # a Home Assistant binary_sensor
        (b"off", "on", 0.0),
        (b"OPEN", "open", 1.0),
        (b"closed", "open", 0.0),
        (b"1", 1, 1.0),
        (b"0", 1, 0.0),
    ],
)
def test_a_window_reads_open_or_closed_only_from_a_plain_state(
    payload: bytes, open_when: object, expected: float
) -> None:
    assert (
        extract(payload, src(json_path="contact" if payload.startswith(b"{") else None, open_when=open_when), "window")
        == expected
    )


def test_a_source_stuck_on_garbage_is_logged_once_a_minute_with_a_count(caplog: pytest.LogCaptureFixture) -> None:
    from heatctl.config import parse_config
    from heatctl.sources.store import ReadingStore
    from tests.conftest import MINIMAL_YAML, FakeClock

    clock = FakeClock()
    store = ReadingStore(parse_config(MINIMAL_YAML + "mqtt: null\n").zones, clock)
    with caplog.at_level("WARNING", logger="heatctl.sources.store"):
        for _ in range(600):  # one a second for ten minutes
            clock.advance(1.0)
            store.reject("t (office temperature)", b"garbage", "expected a number")
    lines = [r.getMessage() for r in caplog.records]
    assert store.bad_payloads == 600
    assert 3 + 9 <= len(lines) <= 3 + 10, len(lines)  # the first three, then one a minute
    assert "(63 so far, 59 since the last said)" in lines[3]
