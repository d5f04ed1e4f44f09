"""End to end with a real Home Assistant core: discovery, control from HA, entities as sources.

Home Assistant is installed once into a cached venv (about a minute); skip locally with
``pytest -m 'not homeassistant'``. CI runs these.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from heatctl.config import parse_config
from heatctl.service import Service
from heatctl.sources.homeassistant import probe_homeassistant
from tests.services import FakeNvml, HomeAssistant, Probe, free_port, heatctl, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.homeassistant]
CLIMATE = "climate.heatctl_ha_heater_office_climate"


def mqtt_config(ha: HomeAssistant, state_dir: Path) -> str:
    return f"""
node_id: ha-heater
state_dir: {state_dir}
mqtt: {{host: 127.0.0.1, port: {ha.broker_port}}}
zones:
  - name: office
    temperature: {{topic: ha-test/trv, json_path: local_temperature}}
    setpoint: {{topic: ha-test/trv, json_path: occupied_heating_setpoint}}
    control: {{interval_s: 30}}
    gpus: [gpu0]
gpus: [{{id: gpu0, backend: sim, workload: {{type: sim}}}}]
planner: {{}}
tariff: {{price_per_kwh: 0.30}}
"""


@pytest.fixture
def running(homeassistant: HomeAssistant, tmp_path: Path) -> Iterator[tuple[Service, Probe]]:
    svc = Service(parse_config(mqtt_config(homeassistant, tmp_path)))
    probe = Probe(homeassistant.broker_port)
    svc.start()
    wait_until(svc.link.connected.is_set, 10, "heatctl connected")  # type: ignore[union-attr]
    probe.publish("ha-test/trv", json.dumps({"local_temperature": 19.2, "occupied_heating_setpoint": 21}))
    wait_until(lambda: svc.store.get("office", "setpoint"), 10, "thermostat reading")
    worker = threading.Thread(target=svc.run, daemon=True)
    worker.start()
    yield svc, probe
    svc.stop_event.set()
    svc.inbox.wake.set()
    worker.join(10)
    svc.shutdown()
    probe.close()


def test_entities_appear_in_home_assistant(homeassistant: HomeAssistant, running: tuple[Service, Probe]) -> None:
    ha = homeassistant
    climate = wait_until(
        lambda: (s := ha.state(CLIMATE)) and s["attributes"].get("current_temperature") and s,
        30,
        "climate entity with a temperature",
    )
    assert climate["state"] == "heat"
    assert climate["attributes"]["current_temperature"] == 19.2
    assert climate["attributes"]["temperature"] == 21.0
    assert climate["attributes"]["hvac_modes"] == ["off", "heat"]
    assert climate["attributes"]["hvac_action"] == "heating"
    energy = wait_until(lambda: ha.state("sensor.heatctl_ha_heater_energy_kwh"), 10, "energy sensor")
    assert energy["attributes"]["state_class"] == "total_increasing"
    assert energy["attributes"]["unit_of_measurement"] == "kWh" and energy["attributes"]["device_class"] == "energy"
    power = ha.state("sensor.heatctl_ha_heater_gpu0_power_w")
    assert power is not None and power["attributes"]["unit_of_measurement"] == "W" and float(power["state"]) > 0
    assert ha.state("binary_sensor.heatctl_ha_heater_failsafe")["state"] == "off"  # type: ignore[index]
    number = ha.state("number.heatctl_ha_heater_max_power_w")
    assert number is not None and number["attributes"]["max"] == 300
    devices = ha.post("/api/template", {"template": "{{ device_attr(device_id('" + CLIMATE + "'), 'model') }}"})
    assert devices == "GPU compute heater"
    net = wait_until(lambda: ha.state("sensor.heatctl_ha_heater_net_saving"), 10, "the money view")
    assert net["attributes"]["unit_of_measurement"] == "EUR" and net["attributes"]["device_class"] == "monetary"
    assert net["attributes"]["friendly_name"] == "heatctl ha-heater Net saving"
    # A timestamp with no value yet (no plan in the first minutes) is unavailable, not a warning per state.
    start = wait_until(lambda: ha.state("sensor.heatctl_ha_heater_office_next_heat_start"), 10, "next heat start")
    assert start["state"] == "unavailable"
    svc, _ = running
    ticks = svc.ticks
    for n in range(1, 4):  # a few more states
        svc.inbox.wake.set()
        wait_until(lambda n=n: svc.ticks >= ticks + n, 10, "another state")  # type: ignore[misc]
    log = ha.log.read_text(errors="replace")
    assert "Invalid state message" not in log, [line for line in log.splitlines() if "Invalid state" in line][:3]


def test_home_assistant_controls_heatctl(homeassistant: HomeAssistant, running: tuple[Service, Probe]) -> None:
    ha = homeassistant
    svc, _ = running
    wait_until(lambda: ha.state(CLIMATE), 30, "climate entity")
    ha.post("/api/services/climate/set_hvac_mode", {"entity_id": CLIMATE, "hvac_mode": "off"})
    wait_until(lambda: svc.snapshot and svc.snapshot.zones["office"].mode == "off", 10, "zone off in heatctl")
    assert svc.snapshot is not None and svc.snapshot.gpus["gpu0"].level == 0.0
    wait_until(lambda: ha.state(CLIMATE)["state"] == "off", 10, "HA shows off")  # type: ignore[index]
    ha.post("/api/services/climate/set_hvac_mode", {"entity_id": CLIMATE, "hvac_mode": "heat"})
    ha.post("/api/services/climate/set_temperature", {"entity_id": CLIMATE, "temperature": 22.5})
    wait_until(lambda: svc.snapshot and svc.snapshot.zones["office"].setpoint_c == 22.5, 10, "setpoint from HA")
    ha.post("/api/services/number/set_value", {"entity_id": "number.heatctl_ha_heater_max_power_w", "value": 150})
    wait_until(lambda: svc.max_power_w == 150.0, 10, "max power from HA")
    wait_until(lambda: ha.state(CLIMATE)["attributes"]["temperature"] == 22.5, 10, "HA shows the new target")  # type: ignore[index]


def ha_source_config(ha: HomeAssistant, state_dir: Path, url: str | None = None) -> str:
    return f"""
node_id: ha-sources
state_dir: {state_dir}
mqtt: null
homeassistant: {{url: "{url or ha.url}", token: "{ha.token}", poll_interval_s: 0.2}}
zones:
  - name: living
    temperature: {{entity: climate.living_room}}
    setpoint: {{entity: climate.living_room}}
    mode: {{entity: climate.living_room}}
    outdoor_temperature: {{entity: sensor.outdoor_temperature, stale_after_s: 3600}}
    window: {{entity: binary_sensor.living_window}}
    gpus: [gpu0]
gpus: [{{id: gpu0, backend: sim}}]
"""


def test_entities_as_sources(homeassistant: HomeAssistant, tmp_path: Path) -> None:
    ha = homeassistant
    ha.post(
        "/api/states/climate.living_room",
        {
            "state": "heat",
            "attributes": {"current_temperature": 19.5, "temperature": 21.0, "hvac_modes": ["off", "heat"]},
        },
    )
    ha.post("/api/states/sensor.outdoor_temperature", {"state": "3.5", "attributes": {"unit_of_measurement": "°C"}})
    ha.post("/api/states/binary_sensor.living_window", {"state": "off"})
    svc = Service(parse_config(ha_source_config(ha, tmp_path)))
    svc.start()
    try:
        wait_until(lambda: svc.store.get("living", "outdoor"), 10, "readings from Home Assistant")
        snap = svc.tick()
        zone = snap.zones["living"]
        assert (zone.temperature_c, zone.setpoint_c, zone.failsafe) == (19.5, 21.0, None)
        assert svc.store.get("living", "outdoor").value == 3.5  # type: ignore[union-attr]
        assert zone.demand_w > 0
        ha.post("/api/states/binary_sensor.living_window", {"state": "on"})
        wait_until(lambda: svc.tick().failsafe == "living: window open", 10, "window open from HA")
        ha.post("/api/states/binary_sensor.living_window", {"state": "off"})
        ha.post(
            "/api/states/climate.living_room",
            {"state": "off", "attributes": {"current_temperature": 19.5, "temperature": 21.0}},
        )
        wait_until(lambda: (s := svc.tick()).failsafe is None and s.zones["living"].demand_w == 0, 10, "HA mode off")
        polls = svc.poller.polls  # type: ignore[union-attr]
        ha.post("/api/states/sensor.outdoor_temperature", {"state": "unavailable"})
        wait_until(lambda: svc.poller.polls > polls + 3, 10, "more polls")  # type: ignore[union-attr]
        assert svc.store.get("living", "outdoor").value == 3.5  # type: ignore[union-attr]  # unavailable: no new reading
        assert svc.store.bad_payloads == 0
        rows = {part: (ok, detail) for part, ok, detail, _ in probe_homeassistant(svc.cfg)}
        assert rows["homeassistant"][0] and rows["living.temperature"] == (True, "climate.living_room: 19.5 °C")
        assert rows["living.outdoor"] == (False, "sensor.outdoor_temperature is 'unavailable'")
    finally:
        svc.shutdown()


def test_an_entity_home_assistant_does_not_know_misses_alone(homeassistant: HomeAssistant, tmp_path: Path) -> None:
    """A renamed optional outdoor sensor (404) leaves the room's own readings flowing: no fail-safe."""
    ha = homeassistant
    ha.post(
        "/api/states/climate.living_room",
        {"state": "heat", "attributes": {"current_temperature": 19.0, "temperature": 21.0}},
    )
    ha.post("/api/states/binary_sensor.living_window", {"state": "off"})
    text = ha_source_config(ha, tmp_path).replace("sensor.outdoor_temperature", "sensor.renamed_outdoor_sensor")
    svc = Service(parse_config(text))
    svc.start()
    try:
        wait_until(lambda: svc.poller is not None and svc.poller.polls >= 2, 10, "two polls")
        snap = svc.tick()
        assert snap.zones["living"].temperature_c == 19.0 and snap.zones["living"].failsafe is None
        assert svc.store.get("living", "outdoor") is None and svc.poller.last_error is None  # type: ignore[union-attr]
    finally:
        svc.shutdown()


def test_a_dead_sensor_behind_home_assistant_goes_stale_by_its_own_age(
    homeassistant: HomeAssistant, tmp_path: Path
) -> None:
    """HA answers 200 with the last value of a sensor that stopped reporting: its age, not the poll's, counts."""
    ha = homeassistant
    ha.post(
        "/api/states/climate.living_room",
        {"state": "heat", "attributes": {"current_temperature": 18.0, "temperature": 21.0}},
    )
    two_days_on = lambda: time.time() + 2 * 86400.0  # noqa: E731  # as if the sensor fell silent two days ago
    svc = Service(parse_config(ha_source_config(ha, tmp_path)), wall_fn=two_days_on)
    svc.start()
    try:
        wait_until(lambda: svc.poller is not None and svc.poller.polls >= 2, 10, "two polls")
        snap = svc.tick()
        assert snap.zones["living"].failsafe == "temperature stale" and snap.zones["living"].demand_w == 0
        assert all(g.level == 0.0 for g in snap.gpus.values())
    finally:
        svc.shutdown()


def test_home_assistant_down_never_blocks_control(homeassistant: HomeAssistant, tmp_path: Path) -> None:
    cfg = parse_config(ha_source_config(homeassistant, tmp_path, url=f"http://127.0.0.1:{free_port()}"))
    svc = Service(cfg)
    svc.start()
    try:
        wait_until(lambda: svc.poller and svc.poller.last_error, 10, "poll failure noticed")
        snaps = [svc.tick() for _ in range(5)]
        assert all(s.failsafe == "living: temperature stale" for s in snaps)
        assert all(g.level == 0.0 for s in snaps for g in s.gpus.values())
        rows = probe_homeassistant(cfg)
        assert rows[0][1] is False and "long-lived access token" in rows[0][3]
    finally:
        svc.shutdown()


def test_init_from_home_assistant_writes_a_config_that_check_passes(
    homeassistant: HomeAssistant, fake_nvml: FakeNvml, tmp_path: Path
) -> None:

    ha = homeassistant
    ha.post(
        "/api/states/climate.study",
        {"state": "heat", "attributes": {"current_temperature": 19.0, "temperature": 20.5, "friendly_name": "Study"}},
    )
    ha.post("/api/states/binary_sensor.study_window", {"state": "off", "attributes": {"device_class": "window"}})
    ha.post("/api/states/weather.home", {"state": "cloudy", "attributes": {"temperature": 6.5}})
    env = {**fake_nvml.env(), "HEATCTL_STATE_DIR": str(tmp_path / "state")}
    out = tmp_path / "heatctl.yaml"
    init = heatctl("init", "--ha", ha.url, "--ha-token", ha.token, "--yes", "--out", str(out), env=env, timeout=60)
    assert init.returncode == 0, init.stderr
    text = out.read_text()
    # --yes takes the first thermostat Home Assistant lists (other tests may have made some too).
    assert 'temperature: {entity: "climate.' in text
    assert "weather." in text and "binary_sensor.study_window" in text  # the first weather entity HA lists
    assert ha.token not in text and ha.token in (tmp_path / "secrets.yaml").read_text()  # the token is a secret
    check = heatctl("check", "-c", str(out), env=env, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "temperature" in check.stdout and "°C" in check.stdout, check.stdout


class MqttRadiator:
    """A radiator thermostat that Home Assistant knows as an MQTT climate entity (climate.radiator):
    HA's climate.set_temperature reaches it on ``rad/temp/set``; it reports on ``rad/temp``."""

    def __init__(self, ha: HomeAssistant) -> None:
        self.probe = Probe(ha.broker_port, ("rad/temp/set",))
        discovery = {
            "name": "Radiator",
            "unique_id": "heatctl_test_radiator",
            "modes": ["off", "heat"],
            "mode_state_topic": "rad/mode",
            "mode_command_topic": "rad/mode/set",
            "temperature_command_topic": "rad/temp/set",
            "temperature_state_topic": "rad/temp",
            "current_temperature_topic": "rad/current",
            "min_temp": 5,
            "max_temp": 30,
            "temp_step": 0.5,
        }
        self.probe.publish("homeassistant/climate/heatctl_test_radiator/config", json.dumps(discovery), retain=True)
        self.report(setpoint_c=21.0, room_c=20.5)
        wait_until(lambda: (ha.state("climate.radiator") or {}).get("attributes", {}).get("temperature") == 21.0, 30)
        self._seen = 0

    def report(self, setpoint_c: float, room_c: float = 20.5) -> None:
        self.probe.publish("rad/mode", "heat", retain=True)
        self.probe.publish("rad/current", str(room_c), retain=True)
        self.probe.publish("rad/temp", str(setpoint_c), retain=True)

    def echo(self) -> float | None:
        """Apply what Home Assistant sent, as the device would; the last setpoint it got."""
        sets = self.probe.on("rad/temp/set")
        for payload in sets[self._seen :]:
            self.report(float(payload))
        self._seen = len(sets)
        return float(sets[-1]) if sets else None

    def close(self) -> None:
        self.probe.clear()
        self.probe.close()


def radiator_config(ha: HomeAssistant, state_dir: Path) -> str:
    return f"""
node_id: ha-radiator
state_dir: {state_dir}
mqtt: null
homeassistant: {{url: "{ha.url}", token: "{ha.token}", poll_interval_s: 0.2}}
zones:
  - name: living
    temperature: {{entity: climate.radiator}}
    setpoint: {{entity: climate.radiator}}
    main_heating: {{entity: climate.radiator, offset_k: 2.0}}
    gpus: [gpu0]
gpus: [{{id: gpu0, backend: sim, workload: {{type: sim}}}}]
"""


def test_a_home_assistant_climate_entity_is_held_back_and_given_back(
    homeassistant: HomeAssistant, tmp_path: Path
) -> None:
    from heatctl.check import check_main_heating

    radiator = MqttRadiator(homeassistant)
    cfg = parse_config(radiator_config(homeassistant, tmp_path))
    row = check_main_heating(cfg, cfg.zones[0])
    assert row.ok and "heatctl may steer climate.radiator (climate.set_temperature)" in row.detail, row
    assert "also the zone's thermostat" in row.detail
    missing = parse_config(
        radiator_config(homeassistant, tmp_path).replace(
            "main_heating: {entity: climate.radiator", "main_heating: {entity: climate.nothing"
        )
    )
    assert not check_main_heating(missing, missing.zones[0]).ok
    svc = Service(cfg)
    svc.start()
    try:
        wait_until(lambda: svc.store.get("living", "main_setpoint"), 10, "the radiator's setpoint read")
        svc.tick()
        wait_until(lambda: radiator.echo() == 19.0, 15, "climate.set_temperature 19.0 (21 − 2)")
        wait_until(lambda: svc.store.get("living", "setpoint").value == 19.0, 10)  # type: ignore[union-attr]
        snap = svc.tick()
        assert snap.zones["living"].setpoint_c == 21.0  # heatctl's own write is not the user's wish
        assert snap.extra["main_heating"]["living"]["stage"] == "held"
    finally:
        svc.shutdown()
    wait_until(lambda: radiator.echo() == 21.0, 15, "given back on exit")

    def home_assistant_shows_21() -> bool:  # HA takes the device's report a moment after the device has it
        state = homeassistant.state("climate.radiator")
        return state is not None and state["attributes"]["temperature"] == 21.0

    wait_until(home_assistant_shows_21, 10, "Home Assistant shows the user's 21 °C again")
    radiator.close()


def test_kill_9_then_restore_gives_a_home_assistant_climate_entity_back(
    homeassistant: HomeAssistant, tmp_path: Path
) -> None:
    radiator = MqttRadiator(homeassistant)
    cfg_path = tmp_path / "heatctl.yaml"
    cfg_path.write_text(radiator_config(homeassistant, tmp_path / "state"))
    with (tmp_path / "run.log").open("wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "heatctl", "run", "-c", str(cfg_path)], stderr=log)
        try:
            wait_until(lambda: radiator.echo() == 19.0, 60, "heatctl run held the radiator back")
        finally:
            proc.kill()
            proc.wait(10)
    restored = heatctl("restore", "-c", str(cfg_path), timeout=60)
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert "zone living: climate.radiator given back at 21.0" in restored.stdout
    wait_until(lambda: radiator.echo() == 21.0, 15, "given back by restore")
    radiator.close()


def planner_config(ha: HomeAssistant, state_dir: Path) -> str:
    return f"""
node_id: ha-planner
state_dir: {state_dir}
mqtt: {{host: 127.0.0.1, port: {ha.broker_port}}}
homeassistant: {{url: "{ha.url}", token: "{ha.token}"}}
planner: {{objective: cost, horizon_h: 24}}
tariff: {{entity: sensor.nordpool_kwh_nl_eur}}
weather_forecast: {{entity: weather.forecast_home}}
zones:
  - name: office
    temperature: {{topic: ha-planner/t}}
    setpoint: {{topic: ha-planner/sp}}
    gpus: [gpu0]
gpus: [{{id: gpu0, backend: sim, workload: {{type: sim}}}}]
"""


def test_the_planner_takes_prices_and_the_weather_forecast_from_home_assistant(
    homeassistant: HomeAssistant, tmp_path: Path
) -> None:
    """A Nord Pool-style price entity and a real weather entity (``weather.get_forecasts``) feed the
    plan; what the planner learned and plans shows up as Home Assistant entities."""
    from datetime import UTC, datetime, timedelta

    from heatctl.planner.model import RoomModel

    ha = homeassistant
    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)

    def price(h: int) -> float:
        return 0.05 if h % 24 < 6 else 0.35

    raw = [
        {"start": (hour + timedelta(hours=h)).isoformat(), "end": (hour + timedelta(hours=h + 1)).isoformat()}
        | {"value": price(h)}
        for h in range(-2, 36)
    ]
    nordpool = {"unit_of_measurement": "EUR/kWh", "raw_today": raw[:24], "raw_tomorrow": raw[24:]}
    ha.post("/api/states/sensor.nordpool_kwh_nl_eur", {"state": "0.05", "attributes": nordpool})
    hourly = [
        {"datetime": (hour + timedelta(hours=h)).isoformat(), "temperature": 8.0 + 0.25 * h, "condition": "cloudy"}
        for h in range(0, 36)
    ]
    ha.post("/api/states/sensor.test_hourly_forecast", {"state": "ok", "attributes": {"forecast": hourly}})
    state = tmp_path / "state"
    (state / "planner").mkdir(parents=True)
    model = RoomModel.one_node(ua_w_per_k=14.0, tau_h=20.0).to_json() | {"data_h": 72.0, "fit_rmse_k": 0.1}
    (state / "planner" / "office.json").write_text(json.dumps({"zone": "office", "model": model, "history": {}}))

    svc = Service(parse_config(planner_config(ha, state)))
    probe = Probe(ha.broker_port, ("heatctl/ha-planner/plan",))
    svc.start()
    try:
        planner = svc.planner
        assert planner is not None
        wait_until(svc.link.connected.is_set, 10, "connected")  # type: ignore[union-attr]
        # Retained, as thermostats publish their state: the service may subscribe a moment after connecting.
        probe.publish("ha-planner/t", "20.0", retain=True)
        probe.publish("ha-planner/sp", "21.0", retain=True)
        wait_until(lambda: svc.store.get("office", "setpoint") is not None, 10, "readings")
        wait_until(lambda: planner.price_now() is not None, 30, "the price entity read")
        svc.tick()
        planner.run_once()  # plan now rather than at the thread's next round
        plans = lambda: [json.loads(p) for p in probe.on("heatctl/ha-planner/plan")]  # noqa: E731
        plan = wait_until(lambda: next((d for d in reversed(plans()) if d["status"] == "active"), None), 10, "a plan")
        steps = plan["steps"]
        assert {s["price"] for s in steps} == {0.05, 0.35}
        cheap = [s["heat_w"] for s in steps if s["price"] == 0.05]
        dear = [s["heat_w"] for s in steps if s["price"] == 0.35]
        assert sum(cheap) / len(cheap) > sum(dear) / len(dear)  # the heat is made while it is cheap
        for s in steps[:72]:  # the weather entity's hourly forecast, as HA gave it, for each step's middle
            mid = datetime.fromisoformat(s["start"]) + timedelta(minutes=7.5)  # the start is given to the second
            hours = {int((mid + timedelta(seconds=d) - hour).total_seconds() // 3600) for d in (0, 1)}
            assert any(s["outdoor_c"] == pytest.approx(hourly[h]["temperature"], abs=0.06) for h in hours), s
        svc.tick()  # the state with the plan: Home Assistant's entities follow
        node = "sensor.heatctl_ha_planner"
        wait_until(lambda: (s := ha.state(f"{node}_planner_status")) and s["state"] == "active", 30, "planner entity")
        assert float(ha.state(f"{node}_office_planned_kwh_24h")["state"]) > 0  # type: ignore[index]
        assert float(ha.state(f"{node}_office_heat_loss")["state"]) == 14.0  # type: ignore[index]
        assert ha.state(f"{node}_office_heat_loss")["attributes"]["unit_of_measurement"] == "W/K"  # type: ignore[index]
        assert ha.state("binary_sensor.heatctl_ha_planner_office_model_trusted")["state"] == "on"  # type: ignore[index]
        start = wait_until(  # its own topic and availability: a moment after the state
            lambda: (st := ha.state(f"{node}_office_next_heat_start")) and st["state"] != "unavailable" and st,
            10,
            "the next heat start",
        )
        assert start["attributes"]["device_class"] == "timestamp"
        assert datetime.fromisoformat(start["state"]) >= hour
    finally:
        svc.shutdown()
        probe.close()


def test_a_room_is_learned_in_the_first_hour_from_home_assistants_recorder(
    homeassistant: HomeAssistant, tmp_path: Path
) -> None:
    """Day one: two weeks of the room in Home Assistant's recorder (written there by the test: a
    PC's plug, the room, the outdoor sensor, the setpoint) and the planner is active at once."""
    from heatctl.planner.show import model_text
    from tests.test_seed import recorded_room

    ha = homeassistant
    now = time.time()
    renamed = {
        "sensor.office_temperature": "sensor.seed_room_temperature",
        "sensor.outdoor_temperature": "sensor.seed_outdoor_temperature",
        "sensor.pc_power": "sensor.seed_pc_power",
        "climate.office": "sensor.seed_setpoint",
    }
    recorded = recorded_room(14.0, end_s=now - 60.0)
    history = {
        renamed[entity]: [(at_s, attrs.get("temperature", state)) for at_s, state, attrs in rows]
        for entity, rows in recorded.items()
    }
    history["sensor.seed_setpoint"] = [(at_s, str(sp)) for at_s, sp in history["sensor.seed_setpoint"]]
    ha.record_history(history)
    for entity, changes in history.items():  # and what they say now
        ha.post(f"/api/states/{entity}", {"state": changes[-1][1]})
    cfg = parse_config(f"""
node_id: ha-seed
state_dir: {tmp_path}
mqtt: null
homeassistant: {{url: "{ha.url}", token: "{ha.token}", poll_interval_s: 0.2}}
planner: {{}}
zones:
  - name: office
    temperature: {{entity: sensor.seed_room_temperature}}
    setpoint: {{entity: sensor.seed_setpoint}}
    outdoor_temperature: {{entity: sensor.seed_outdoor_temperature}}
    power_meter: {{entity: sensor.seed_pc_power}}
    gpus: [gpu0]
gpus: [{{id: gpu0, backend: sim}}]
""")
    svc = Service(cfg)
    svc.start()
    try:
        assert svc.planner is not None
        planner = svc.planner.zones["office"]
        wait_until(lambda: planner.history_source is not None, 60, "the history from Home Assistant")
        assert planner.history_source.startswith("Home Assistant's recorder: ")
        assert planner.history.valid_hours() > 100
        wait_until(lambda: svc.tick().failsafe is None, 30, "the room's readings")  # the sensors now
        svc.planner.run_once()
        assert planner.status == "active", planner.reason
    finally:
        svc.shutdown()
    text = model_text(cfg)
    assert "learned from Home Assistant's recorder" in text and "trusted" in text, text
