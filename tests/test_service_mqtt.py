"""The service against a real Mosquitto broker: inputs, state, commands, discovery, outages."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from heatctl.config import Config, parse_config
from heatctl.service import Service
from tests.services import Mosquitto, Probe, wait_until

pytestmark = pytest.mark.integration

TRV = "zigbee2mqtt/office_trv"
BASE = "heatctl/office-heater"


def config_text(port: int, state_dir: Path, *, interval_s: float = 30, stale_s: float = 900) -> str:
    return f"""
node_id: office-heater
state_dir: {state_dir}
mqtt: {{host: 127.0.0.1, port: {port}, keepalive_s: 5}}
zones:
  - name: office
    temperature: {{topic: {TRV}, json_path: local_temperature, stale_after_s: {stale_s}}}
    setpoint:    {{topic: {TRV}, json_path: occupied_heating_setpoint, stale_after_s: {stale_s}}}
    mode:        {{topic: {TRV}, json_path: system_mode}}
    window:      {{topic: zigbee2mqtt/office_window, json_path: contact, open_when: false}}
    outdoor_temperature: {{topic: tele/garden/SENSOR, json_path: DS18B20.Temperature}}
    power_meter: {{topic: shellyplusplugs-office/status/switch:0, json_path: apower}}
    control: {{interval_s: {interval_s}}}
    gpus: [gpu0]
gpus:
  - id: gpu0
    backend: sim
    workload: {{type: sim}}
"""


def make_config(port: int, state_dir: Path, **kw: float) -> Config:
    return parse_config(config_text(port, state_dir, **kw))


@pytest.fixture
def service(mosquitto: Mosquitto, tmp_path: Path) -> Iterator[Service]:
    svc = Service(make_config(mosquitto.port, tmp_path / "state"))
    svc.start()
    assert svc.link is not None
    wait_until(svc.link.connected.is_set, 10, "service connected")
    yield svc
    svc.shutdown()


def trv(probe: Probe, temp: float, setpoint: float = 21.0, mode: str = "heat") -> None:
    probe.publish(
        TRV,
        json.dumps(
            {"local_temperature": temp, "occupied_heating_setpoint": setpoint, "system_mode": mode, "battery": 80}
        ),
    )


def tick_until(svc: Service, predicate: object, what: str) -> object:
    return wait_until(lambda: (snap := svc.tick()) and predicate(snap) and snap, 10, what)  # type: ignore[operator]


def test_state_follows_thermostat_and_heats(service: Service, probe: Probe) -> None:
    wait_until(lambda: probe.on(f"{BASE}/availability")[-1:] == [b"online"], 5, "online, retained")
    snap = service.tick()
    assert snap.failsafe == "office: temperature stale"  # nothing received since boot
    trv(probe, 18.5, 21.0)
    probe.publish("tele/garden/SENSOR", json.dumps({"DS18B20": {"Temperature": 4.5}, "TempUnit": "C"}))
    wait_until(lambda: service.store.get("office", "outdoor"), 5, "outdoor reading")
    snap = tick_until(service, lambda s: s.failsafe is None, "heating")  # type: ignore[assignment]
    state = probe.wait_json(f"{BASE}/state", lambda d: d["failsafe"] is None)
    assert state["zones"]["office"]["temperature_c"] == 18.5
    assert state["zones"]["office"]["setpoint_c"] == 21.0
    assert state["zones"]["office"]["demand_w"] > 0
    assert state["gpus"]["gpu0"]["level"] == 1.0
    assert {"mode", "failsafe", "heat_w", "energy_kwh", "zones", "gpus"} <= set(state)
    assert {"power_w", "power_limit_w", "temperature_c", "level", "work_rate"} <= set(state["gpus"]["gpu0"])
    # A wall-plug meter measures the true heat output: it replaces the GPU's own reading.
    probe.publish("shellyplusplugs-office/status/switch:0", json.dumps({"id": 0, "apower": 287.5, "output": True}))
    wait_until(lambda: service.store.get("office", "power"), 5, "meter reading")
    assert service.tick().heat_w == 287.5
    state = probe.wait_json(f"{BASE}/state", lambda d: d["heat_w"] == 287.5)
    assert state["metered_gpus"] == ["gpu0"]


def test_window_and_thermostat_off_stop_heat(service: Service, probe: Probe) -> None:
    trv(probe, 18.0)
    tick_until(service, lambda s: s.gpus["gpu0"].level == 1.0, "heating")
    probe.publish("zigbee2mqtt/office_window", json.dumps({"contact": False}))
    snap = tick_until(service, lambda s: s.failsafe == "office: window open", "window fail-safe")
    assert snap.gpus["gpu0"].level == 0.0  # type: ignore[attr-defined]
    probe.publish("zigbee2mqtt/office_window", json.dumps({"contact": True}))
    trv(probe, 18.0, mode="off")
    snap = tick_until(service, lambda s: s.failsafe is None and s.zones["office"].demand_w == 0, "thermostat off")
    assert snap.gpus["gpu0"].level == 0.0  # type: ignore[attr-defined]


def test_bad_payloads_are_counted_and_never_fatal(service: Service, probe: Probe) -> None:
    trv(probe, 19.0)
    wait_until(lambda: service.store.get("office", "temperature"), 5, "first reading")
    bad = [
        b"{not json",
        json.dumps({"local_temperature": "NaN"}).encode(),
        b'{"local_temperature": 99}',
        b"\xff\xfe garbage",
        b"x" * 1_000_000,
        json.dumps({"local_temperature": [1, 2]}).encode(),
    ]
    for payload in bad:
        probe.publish(TRV, payload)
    # Each bad TRV payload fails for temperature, setpoint and mode: three bindings share the topic.
    wait_until(lambda: service.store.bad_payloads >= 3 * len(bad), 10, "bad payloads counted")
    assert service.store.get("office", "temperature").value == 19.0  # type: ignore[union-attr]
    snap = service.tick()
    state = probe.wait_json(f"{BASE}/state", lambda d: d["bad_payloads"] >= 18)
    assert snap.zones["office"].temperature_c == 19.0 and state["zones"]["office"]["temperature_c"] == 19.0


def test_commands_take_effect_and_bad_ones_are_rejected(service: Service, probe: Probe) -> None:
    trv(probe, 18.0)
    wait_until(lambda: service.store.get("office", "setpoint"), 5, "thermostat reading")
    worker = threading.Thread(target=service.run, daemon=True)
    worker.start()
    try:
        probe.wait_json(f"{BASE}/state", lambda d: d["gpus"]["gpu0"]["level"] == 1.0)
        # The loop ticks every 30 s: a reply within seconds proves the command woke it.
        probe.publish(f"{BASE}/mode/set", "off")
        state = probe.wait_json(f"{BASE}/state", lambda d: d["mode"] == "off", timeout_s=5)
        assert state["gpus"]["gpu0"]["level"] == 0.0
        probe.publish(f"{BASE}/mode/set", "heat")
        probe.publish(f"{BASE}/max_power_w/set", "150")
        state = probe.wait_json(f"{BASE}/state", lambda d: d["max_power_w"] == 150.0, timeout_s=5)
        assert state["gpus"]["gpu0"]["power_limit_w"] == pytest.approx(150.0)
        probe.publish(f"{BASE}/office/setpoint/set", "23.5")
        probe.wait_json(f"{BASE}/state", lambda d: d["zones"]["office"]["setpoint_c"] == 23.5, timeout_s=5)
        trv(probe, 18.0, setpoint=21.0)  # the thermostat repeats its setpoint: the override holds
        probe.publish(f"{BASE}/office/mode/set", "heat")
        probe.wait_json(f"{BASE}/state", lambda d: d["zones"]["office"]["setpoint_c"] == 23.5, timeout_s=5)
        trv(probe, 18.0, setpoint=20.0)  # someone turns the thermostat: it wins again
        probe.publish(f"{BASE}/office/mode/set", "heat")
        probe.wait_json(f"{BASE}/state", lambda d: d["zones"]["office"]["setpoint_c"] == 20.0, timeout_s=5)
        for topic, payload in [
            ("mode/set", "cool"),
            ("max_power_w/set", "lots"),
            ("max_power_w/set", "-5"),
            ("office/setpoint/set", "90"),
            ("office/setpoint/set", "nan"),
        ]:
            probe.publish(f"{BASE}/{topic}", payload)
        wait_until(lambda: service.inbox.rejected == 5, 5, "rejected commands")
        probe.publish(f"{BASE}/office/mode/set", "heat")
        state = probe.wait_json(f"{BASE}/state", lambda d: d["rejected_commands"] == 5, timeout_s=5)
        assert state["mode"] == "heat" and state["max_power_w"] == 150.0
    finally:
        service.stop_event.set()
        service.inbox.wake.set()
        worker.join(5)


def test_discovery_gives_home_assistant_what_it_needs(service: Service, probe: Probe, mosquitto: Mosquitto) -> None:
    prefix = "homeassistant"
    wait_until(lambda: probe.on(f"{prefix}/binary_sensor/office-heater/failsafe/config"), 5, "discovery")
    late = Probe(mosquitto.port, (f"{prefix}/#",))  # what Home Assistant finds when it starts later: retained
    try:
        announced = {t for t, p, _ in probe.messages if t.startswith(prefix) and p}
        wait_until(lambda: {t for t, p, retain in late.messages if p and retain} == announced, 5, "all retained")
        configs = {t: json.loads(p) for t, p, retain in late.messages if p and retain}
    finally:
        late.close()
    climate = configs[f"{prefix}/climate/office-heater/office_climate/config"]
    assert climate["modes"] == ["off", "heat"]
    assert climate["mode_command_topic"] == f"{BASE}/office/mode/set"
    assert climate["temperature_command_topic"] == f"{BASE}/office/setpoint/set"
    from heatctl.commands import CommandError, parse_command

    assert (climate["min_temp"], climate["max_temp"]) == (5.0, 30.0)  # what heatctl itself takes
    assert parse_command("setpoint:office", b"30", 1000.0).setpoint_c == 30.0  # type: ignore[attr-defined]
    with pytest.raises(CommandError):
        parse_command("setpoint:office", b"30.5", 1000.0)
    for key in ("current_temperature_topic", "temperature_state_topic", "mode_state_topic"):
        assert climate[key] == f"{BASE}/state"
    energy = configs[f"{prefix}/sensor/office-heater/energy_kwh/config"]
    assert (energy["device_class"], energy["state_class"], energy["unit_of_measurement"]) == (
        "energy",
        "total_increasing",
        "kWh",
    )
    power = configs[f"{prefix}/sensor/office-heater/gpu0_power_w/config"]
    assert (power["device_class"], power["unit_of_measurement"]) == ("power", "W")
    temp = configs[f"{prefix}/sensor/office-heater/gpu0_temperature_c/config"]
    assert (temp["device_class"], temp["unit_of_measurement"]) == ("temperature", "°C")
    number = configs[f"{prefix}/number/office-heater/max_power_w/config"]
    assert number["command_topic"] == f"{BASE}/max_power_w/set" and number["max"] == 300
    failsafe = configs[f"{prefix}/binary_sensor/office-heater/failsafe/config"]
    assert failsafe["device_class"] == "problem"
    net = configs[f"{prefix}/sensor/office-heater/net_saving/config"]  # the money view, for the energy dashboard
    assert (net["device_class"], net["state_class"], net["unit_of_measurement"]) == ("monetary", "total", "EUR")
    ids = [c["unique_id"] for c in configs.values()]
    assert len(ids) == len(set(ids))
    for c in configs.values():
        assert c["availability_topic"] == f"{BASE}/availability"
        assert c["device"]["identifiers"] == ["heatctl_office-heater"]
    assert {"heat_w", "heat_reused_kwh", "work_done", "gpu0_work_rate", "gpu0_efficiency"} <= {
        t.split("/")[3] for t in configs
    }
    # Home Assistant restarts: it says online, heatctl announces again.
    probe.clear()
    probe.publish(f"{prefix}/status", "online")
    wait_until(lambda: probe.on(f"{prefix}/climate/office-heater/office_climate/config"), 5, "re-announce")


def test_removed_zone_entities_are_removed(mosquitto: Mosquitto, probe: Probe, tmp_path: Path) -> None:
    two_zones = config_text(mosquitto.port, tmp_path / "state").replace(
        "gpus:\n  - id: gpu0",
        "  - name: den\n    temperature: {topic: den/t}\n    setpoint: {topic: den/s}\n    gpus: [gpu1]\n"
        "gpus:\n  - id: gpu1\n    backend: sim\n  - id: gpu0",
    )
    first = Service(parse_config(two_zones))
    first.start()
    den = "homeassistant/climate/office-heater/den_climate/config"
    wait_until(lambda: probe.on(den), 5, "den announced")
    first.shutdown()
    probe.clear()
    second = Service(make_config(mosquitto.port, tmp_path / "state"))
    second.start()
    try:
        wait_until(lambda: b"" in probe.on(den), 5, "den removed with an empty retained config")
    finally:
        second.shutdown()


def test_broker_restart_fails_safe_then_recovers(
    mosquitto: Mosquitto, probe: Probe, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    svc = Service(make_config(mosquitto.port, tmp_path / "state", interval_s=0.1, stale_s=2.0))
    svc.start()
    wait_until(svc.link.connected.is_set, 10, "service connected")  # type: ignore[union-attr]
    worker = threading.Thread(target=svc.run, daemon=True)
    worker.start()
    try:
        trv(probe, 18.0)
        wait_until(lambda: svc.snapshot and svc.snapshot.failsafe is None, 5, "heating")
        probe.close()
        mosquitto.stop()
        # The control loop keeps going without the broker, and fails safe once inputs are stale.
        ticks = svc.ticks
        snap = wait_until(lambda: svc.snapshot if svc.snapshot and svc.snapshot.failsafe else None, 5, "stale")
        assert snap.failsafe == "office: temperature stale" and snap.gpus["gpu0"].level == 0.0
        wait_until(lambda: svc.ticks > ticks + 10, 5, "ticks while the broker is down")
        wait_until(
            lambda: any("cannot reach the MQTT broker" in r.getMessage() for r in caplog.records),
            10,
            "the outage logged",
        )
        connects = svc.link.connects  # type: ignore[union-attr]
        mosquitto.start()
        again = Probe(mosquitto.port)
        try:
            wait_until(lambda: svc.link.connects > connects, 40, "reconnect")  # type: ignore[union-attr]
            wait_until(
                lambda: again.on("homeassistant/climate/office-heater/office_climate/config"),
                5,
                "re-announced after reconnect",
            )
            trv(again, 18.0)
            again.wait_json(f"{BASE}/state", lambda d: d["failsafe"] is None and d["gpus"]["gpu0"]["level"] == 1)
            assert again.on(f"{BASE}/availability")[-1] == b"online"
        finally:
            again.close()
    finally:
        svc.stop_event.set()
        svc.inbox.wake.set()
        worker.join(5)
        svc.shutdown()


def test_cli_run_lwt_on_kill9_and_clean_sigterm(mosquitto: Mosquitto, probe: Probe, tmp_path: Path) -> None:
    cfg = tmp_path / "heatctl.yaml"
    cfg.write_text(config_text(mosquitto.port, tmp_path / "state"))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    log = tmp_path / "heatctl.log"

    def start() -> subprocess.Popen[bytes]:
        probe.clear()
        with log.open("ab") as err:
            proc = subprocess.Popen([sys.executable, "-m", "heatctl", "run", "-c", str(cfg)], env=env, stderr=err)
        wait_until(lambda: probe.on(f"{BASE}/availability")[-1:] == [b"online"], 20, "online")
        return proc

    proc = start()
    proc.kill()  # SIGKILL: no goodbye; the broker publishes the last will
    proc.wait()
    wait_until(lambda: probe.on(f"{BASE}/availability")[-1:] == [b"offline"], 20, "last will")

    proc = start()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 0, log.read_text()
    assert "received SIGTERM, stopping" in log.read_text()
    assert probe.on(f"{BASE}/availability")[-1] == b"offline"


def test_status_tells_a_person_what_the_service_does(
    service: Service, probe: Probe, capsys: pytest.CaptureFixture[str]
) -> None:
    from heatctl.status import run_status

    trv(probe, 19.0)
    tick_until(service, lambda s: s.zones["office"].demand_w > 0, "heating")
    probe.wait_json(f"{BASE}/state", lambda d: d["zones"]["office"]["demand_w"] > 0)
    assert run_status(service.cfg, follow=False) == 0
    out = capsys.readouterr().out
    assert "heatctl office-heater: online, heating;" in out
    assert "zone office: 19.0 °C → 21.0 °C, asks" in out and "s ago)" in out
    assert "gpu gpu0:" in out and "work level 1.00" in out
    probe.publish("zigbee2mqtt/office_window", json.dumps({"contact": False}))
    tick_until(service, lambda s: s.zones["office"].window_open, "window open")
    probe.wait_json(f"{BASE}/state", lambda d: d["zones"]["office"]["window_open"] is True)
    assert run_status(service.cfg, follow=False) == 0
    out = capsys.readouterr().out
    assert "online, in fail-safe, no heat;" in out and "window open  FAIL-SAFE: window open" in out


def test_status_without_a_running_service_says_so(mosquitto: Mosquitto, tmp_path: Path) -> None:
    from heatctl.status import run_status

    cfg = make_config(mosquitto.port, tmp_path / "state")
    assert run_status(cfg, follow=False, wait_s=0.5) == 1


class Zigbee2MqttTrv:
    """Answers ``<device>/get`` the way zigbee2mqtt does: the device's state on its own topic, not retained."""

    def __init__(self, probe: Probe, temp: float) -> None:
        self.asked: list[dict[str, str]] = []
        self._probe = probe
        self._temp = temp
        probe.client.message_callback_add(f"{TRV}/get", self._on_get)
        probe.client.subscribe(f"{TRV}/get", qos=1)

    def _on_get(self, client: object, userdata: object, msg: Any) -> None:
        self.asked.append(json.loads(msg.payload))
        state = {"local_temperature": self._temp, "occupied_heating_setpoint": 21.0, "system_mode": "heat"}
        self._probe.client.publish(TRV, json.dumps(state), qos=1)


def test_a_zigbee2mqtt_trv_is_asked_for_a_reading_at_start(mosquitto: Mosquitto, probe: Probe, tmp_path: Path) -> None:
    device = Zigbee2MqttTrv(probe, 19.5)
    svc = Service(make_config(mosquitto.port, tmp_path / "state"))
    svc.start()
    try:
        wait_until(lambda: svc.store.get("office", "temperature"), 10, "the TRV's answer to /get")
        assert device.asked[0] == {"local_temperature": "", "occupied_heating_setpoint": "", "system_mode": ""}
        snap = svc.tick()
        assert snap.zones["office"].temperature_c == 19.5 and snap.zones["office"].failsafe is None
    finally:
        svc.shutdown()


def test_check_asks_a_zigbee2mqtt_trv_too(mosquitto: Mosquitto, probe: Probe, tmp_path: Path) -> None:
    from heatctl.check import check_mqtt

    Zigbee2MqttTrv(probe, 20.5)
    rows = {r.part: r for r in check_mqtt(make_config(mosquitto.port, tmp_path / "state"))}
    assert rows["office.temperature"].ok and "20.5 °C" in rows["office.temperature"].detail
    assert rows["office.setpoint"].ok


def test_the_first_reading_wakes_the_loop_instead_of_a_whole_interval_in_fail_safe(
    service: Service, probe: Probe
) -> None:
    worker = threading.Thread(target=service.run, daemon=True)
    worker.start()
    try:
        probe.wait_json(f"{BASE}/state", lambda d: d["failsafe"] == "office: temperature stale")
        trv(probe, 19.0)  # the loop ticks every 30 s: an answer within seconds proves the reading woke it
        state = probe.wait_json(f"{BASE}/state", lambda d: d["failsafe"] is None, timeout_s=5)
        assert state["zones"]["office"]["demand_w"] > 0
    finally:
        service.stop_event.set()
        service.inbox.wake.set()
        worker.join(10)


def test_a_retained_reading_of_unknown_age_is_not_fresh_but_one_with_last_seen_is(
    mosquitto: Mosquitto, probe: Probe, tmp_path: Path
) -> None:
    """One staleness rule for every source: the data's own age. A retained message was kept by the
    broker from some time ago; without a ``last_seen`` it is of unknown age and never holds the heat on."""
    probe.publish(TRV, json.dumps({"local_temperature": 18.0, "occupied_heating_setpoint": 21.0}), retain=True)
    wall_s = 1_800_000_000.0
    svc = Service(make_config(mosquitto.port, tmp_path / "state"), wall_fn=lambda: wall_s)
    svc.start()
    try:
        wait_until(lambda: svc.store.get("office", "temperature"), 10, "the retained reading")
        snap = svc.tick()
        assert snap.zones["office"].temperature_c == 18.0  # shown
        assert snap.failsafe == "office: temperature stale"  # but not trusted: no heat on it
        # The same device, republished with zigbee2mqtt's last_seen of 2 minutes ago: fresh.
        two_min_ago = "2027-01-15T07:58:00+00:00"  # wall_s is 2027-01-15T08:00:00Z
        payload = {"local_temperature": 18.5, "occupied_heating_setpoint": 21.0, "last_seen": two_min_ago}
        probe.publish(TRV, json.dumps(payload), retain=True)
        snap = tick_until(svc, lambda s: s.zones["office"].temperature_c == 18.5, "the live reading")
        assert snap.failsafe is None and snap.zones["office"].demand_w > 0
        # Last seen two days ago (a dead device whose last state zigbee2mqtt still serves): stale.
        payload["last_seen"] = int((wall_s - 2 * 86400) * 1000)  # epoch milliseconds, the other format
        payload["local_temperature"] = 18.7
        probe.publish(TRV, json.dumps(payload))
        snap = tick_until(svc, lambda s: s.zones["office"].temperature_c == 18.7, "the old reading")
        assert snap.failsafe == "office: temperature stale"
    finally:
        svc.shutdown()


def test_a_trv_that_reports_only_on_change_is_asked_before_it_goes_stale(
    mosquitto: Mosquitto, probe: Probe, tmp_path: Path
) -> None:
    """A battery TRV at a steady temperature says nothing: without asking, the zone went stale after
    900 s and the heat was cut exactly while the room was held steady."""
    from tests.conftest import FakeClock

    device = Zigbee2MqttTrv(probe, 20.5)  # answers <device>/get, never reports by itself
    clock = FakeClock()
    svc = Service(make_config(mosquitto.port, tmp_path / "state", stale_s=900), clock=clock)  # type: ignore[arg-type]
    svc.start()
    try:
        wait_until(lambda: svc.store.get("office", "temperature"), 10, "the answer to the ask at connect")
        failsafes = []
        for _ in range(120):  # an hour of 30 s ticks, the room steady
            clock.advance(30.0)
            snap = svc.tick()
            failsafes.append(snap.failsafe)
            if svc._asker is not None and svc._asker.asked[f"{TRV}/get"] == len(device.asked):  # asked, not answered
                answered = lambda: (r := svc.store.get("office", "temperature")) is not None and r.at_s == clock()  # noqa: E731
                wait_until(answered, 5, "the TRV's answer")
        assert failsafes.count(None) == len(failsafes), [f for f in failsafes if f]
        # Asked at connect, then each time the answer is half of stale_after_s (450 s) old: 1 + 7.
        assert 7 <= len(device.asked) <= 9, len(device.asked)
    finally:
        svc.shutdown()
