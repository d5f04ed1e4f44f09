"""``heatctl init``: from what zigbee2mqtt, Home Assistant and NVML report to a config that ``check`` passes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from heatctl.config import parse_config
from heatctl.init import from_home_assistant, from_zigbee2mqtt, render, zone_name
from tests.services import FakeNvml, Mosquitto, Probe
from tests.test_cli import heatctl

pytestmark = pytest.mark.integration

TRV = {
    "ieee_address": "0x00158d0001a2b3c4",
    "type": "EndDevice",
    "friendly_name": "Living room TRV",
    "definition": {
        "vendor": "Danfoss",
        "model": "014G2461",
        "exposes": [
            {
                "type": "climate",
                "features": [
                    {"type": "numeric", "name": "local_temperature", "property": "local_temperature"},
                    {"type": "numeric", "name": "occupied_heating_setpoint", "property": "occupied_heating_setpoint"},
                    {"type": "enum", "name": "system_mode", "property": "system_mode"},
                ],
            },
            {"type": "numeric", "name": "battery", "property": "battery"},
        ],
    },
}
CONTACT = {
    "ieee_address": "0x00158d0001ffffff",
    "type": "EndDevice",
    "friendly_name": "living_window",
    "definition": {
        "vendor": "Aqara",
        "model": "MCCGQ11LM",
        "exposes": [{"type": "binary", "name": "contact", "property": "contact", "value_on": False}],
    },
}
OUTDOOR = {
    "ieee_address": "0x00158d0001eeeeee",
    "type": "EndDevice",
    "friendly_name": "Garden sensor",
    "definition": {
        "vendor": "Aqara",
        "model": "WSDCGQ11LM",
        "exposes": [
            {"type": "numeric", "name": "temperature", "property": "temperature"},
            {"type": "numeric", "name": "humidity", "property": "humidity"},
        ],
    },
}
INDOOR = {**OUTDOOR, "friendly_name": "Hall sensor", "ieee_address": "0x00158d0001dddddd"}
COORDINATOR = {"ieee_address": "0x00124b0000000000", "type": "Coordinator", "friendly_name": "Coordinator"}


def test_zigbee2mqtt_devices_become_thermostats_and_contacts() -> None:
    found = from_zigbee2mqtt(
        [COORDINATOR, TRV, CONTACT, OUTDOOR, INDOOR, {"friendly_name": "bulb", "definition": None}]
    )
    (trv,) = found.thermostats
    assert trv.main == {"trv": "zigbee2mqtt/Living room TRV"}  # the TRV is the room's radiator too
    (outdoor,) = found.outdoor  # the garden sensor, not the hall's
    assert outdoor.source == {"topic": "zigbee2mqtt/Garden sensor", "json_path": "temperature"}
    assert trv.name == "living_room_trv" and "Danfoss" in trv.label
    assert trv.source == {"topic": "zigbee2mqtt/Living room TRV", "json_path": "local_temperature"}
    assert trv.setpoint["json_path"] == "occupied_heating_setpoint" and trv.mode is not None
    assert found.windows[0].source == {"topic": "zigbee2mqtt/living_window", "json_path": "contact", "open_when": False}


def test_home_assistant_states_become_thermostats_windows_and_weather() -> None:
    found = from_home_assistant(
        [
            {
                "entity_id": "climate.office",
                "attributes": {"current_temperature": 20.1, "friendly_name": "Office", "supported_features": 385},
            },
            {"entity_id": "climate.shown_only", "attributes": {"current_temperature": 19.0}},  # cannot be set
            {"entity_id": "climate.heatctl_x_climate", "attributes": {"current_temperature": 20.0}},  # heatctl's own
            {"entity_id": "binary_sensor.office_window", "attributes": {"device_class": "window"}},
            {"entity_id": "binary_sensor.motion", "attributes": {"device_class": "motion"}},
            {"entity_id": "weather.home", "attributes": {"temperature": 4.0}},
            {"entity_id": "sensor.hall_temperature", "attributes": {"device_class": "temperature"}},
            {
                "entity_id": "sensor.0x00158d_temperature",
                "attributes": {"device_class": "temperature", "friendly_name": "Outdoor temperature"},
            },
        ]
    )
    assert [t.name for t in found.thermostats] == ["office", "shown_only"]
    assert found.thermostats[0].main == {"entity": "climate.office"}
    assert found.thermostats[1].main is None  # heatctl could not hold it back: not its main heating
    assert [w.source for w in found.windows] == [{"entity": "binary_sensor.office_window"}]
    assert [o.source for o in found.outdoor] == [  # a sensor outside first, then the forecast
        {"entity": "sensor.0x00158d_temperature"},
        {"entity": "weather.home", "attribute": "temperature"},
    ]


def test_zone_names_are_what_the_config_allows() -> None:
    assert zone_name("Büro 1 (oben)") == "b_ro_1_oben" and zone_name("***") == "room"


def test_rendered_config_without_a_gpu_or_server_still_validates() -> None:
    from heatctl.config import parse_config
    from heatctl.init import Choices

    found = from_zigbee2mqtt([TRV])
    text = render(
        Choices(found.thermostats[0], None, None, None, None, "off", ("localhost", 1883), None, None),
        state_dir="/var/lib/heatctl",
    )
    cfg = parse_config(text)
    assert cfg.mode == "off" and cfg.gpus[0].backend == "nvml" and cfg.gpus[0].workload.type == "none"
    assert "# window:" in text  # the person sees where a window contact would go


def test_init_from_zigbee2mqtt_and_nvml_writes_a_config_that_check_passes(
    mosquitto: Mosquitto, probe: Probe, fake_nvml: FakeNvml, tmp_path: Path
) -> None:
    fake_nvml.configure(max_limit_w=350, min_limit_w=100, default_limit_w=350, name="NVIDIA GeForce RTX 4070")
    probe.publish("zigbee2mqtt/bridge/devices", json.dumps([COORDINATOR, TRV, CONTACT, OUTDOOR]), retain=True)
    probe.publish("zigbee2mqtt/Garden sensor", json.dumps({"temperature": 4.5, "humidity": 80}), retain=True)
    state = {"local_temperature": 20.4, "occupied_heating_setpoint": 21, "system_mode": "heat"}
    probe.publish("zigbee2mqtt/Living room TRV", json.dumps(state), retain=True)
    probe.publish("zigbee2mqtt/living_window", json.dumps({"contact": True}), retain=True)
    env = {**fake_nvml.env(), "HEATCTL_STATE_DIR": str(tmp_path / "state")}
    out = tmp_path / "heatctl.yaml"
    init = heatctl("init", "--mqtt", f"127.0.0.1:{mosquitto.port}", "--yes", "--out", str(out), env=env, cwd=tmp_path)
    assert init.returncode == 0, init.stderr
    assert f"wrote {out}" in init.stdout and f"next: heatctl check -c {out}" in init.stdout
    text = out.read_text()
    assert "name: living_room_trv" in text and "NVIDIA GeForce RTX 4070" in text
    assert "max_power_w: 210" in text  # 60 % of 350 W, a careful start
    assert "is the room's heating too: set up as main_heating" in init.stdout
    from heatctl.config import load_config

    zone = load_config(out).zones[0]
    assert zone.main_heating is not None and getattr(zone.main_heating, "trv", None) == "zigbee2mqtt/Living room TRV"
    assert zone.outdoor_temperature is not None and zone.outdoor_temperature.topic == "zigbee2mqtt/Garden sensor"
    check = heatctl("check", "-c", str(out), env=env, cwd=tmp_path)
    assert check.returncode == 0, check.stdout + check.stderr
    rows = {line.split()[1]: " ".join(line.split()[2:]) for line in check.stdout.splitlines() if line.strip()}
    assert rows["living_room_trv.temperature"] == "zigbee2mqtt/Living room TRV: 20.4 °C"
    assert "living_room_trv.window" in check.stdout
    assert rows["living_room_trv.outdoor"] == "zigbee2mqtt/Garden sensor: 4.5 °C"
    assert "heatctl writes zigbee2mqtt/Living room TRV/set" in check.stdout  # the TRV, steered as main heating


def test_init_refuses_to_overwrite_and_needs_a_source(tmp_path: Path) -> None:
    import os

    out = tmp_path / "heatctl.yaml"
    out.write_text("keep me\n")
    proc = heatctl("init", "--mqtt", "127.0.0.1:1", "--yes", "--out", str(out), env=dict(os.environ), cwd=tmp_path)
    assert proc.returncode == 2 and "exists" in proc.stderr and out.read_text() == "keep me\n"
    proc = heatctl("init", "--yes", "--out", str(tmp_path / "new.yaml"), env=dict(os.environ), cwd=tmp_path)
    assert proc.returncode == 2 and "give --mqtt" in proc.stderr
    proc = heatctl("init", "--out", str(tmp_path / "new.yaml"), "--mqtt", "x", env=dict(os.environ), cwd=tmp_path)
    assert proc.returncode == 2 and "no terminal to ask in: add --yes" in proc.stderr  # no tty in tests


def test_init_asks_for_the_broker_and_which_thermostat_in_a_terminal(
    mosquitto: Mosquitto, probe: Probe, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from heatctl.init import run_init

    other = {**TRV, "friendly_name": "Bedroom TRV"}
    probe.publish("zigbee2mqtt/bridge/devices", json.dumps([COORDINATOR, TRV, other, CONTACT]), retain=True)
    # broker, no HA, 2nd TRV, no window, GPU; a house: its NATS server, the budget
    answers = iter([f"127.0.0.1:{mosquitto.port}", "", "2", "0", "1", "nats://192.168.1.10:4222", "900"])
    asked: list[str] = []

    def ask(prompt: str) -> str:
        asked.append(prompt)
        return next(answers)

    out = tmp_path / "heatctl.yaml"
    code = run_init(
        ha_url=None,
        ha_token=None,
        mqtt=None,
        mqtt_username=None,
        mqtt_password=None,
        out=out,
        yes=False,
        mode="off",
        ask=ask,
    )
    assert code == 0
    text = out.read_text()
    assert "name: bedroom_trv" in text and "window:" not in text.replace("# window:", "") and 'mode: "off"' in text
    assert asked[0].startswith("MQTT broker") and "which one?" in asked[2]
    cfg = parse_config(text)
    assert cfg.house is not None and cfg.house.nats == "nats://192.168.1.10:4222" and cfg.house.budget_w == 900.0
    assert cfg.node_id != "heatctl"  # the machine's own name: the house's heaters each need their own
    assert "1. Living room TRV" in capsys.readouterr().out
