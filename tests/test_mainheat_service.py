"""Main heating under ``heatctl run``: a zigbee2mqtt-style TRV over real Mosquitto, which is also the
room's thermostat; held back, a person's change kept, given back on exit and after a kill -9."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from heatctl.clock import in_daily_span
from heatctl.commands import SetPreset
from heatctl.config import parse_config
from heatctl.service import Service
from tests.services import Mosquitto, heatctl, wait_until

pytestmark = pytest.mark.integration
TRV = "zigbee2mqtt/office_trv"


class FakeTrv:
    """Like zigbee2mqtt with a TRV: ``<trv>/set`` changes it, and it reports its whole state on ``<trv>``."""

    def __init__(self, port: int, room_c: float, setpoint_c: float) -> None:
        self.state = {"local_temperature": room_c, "occupied_heating_setpoint": setpoint_c, "system_mode": "heat"}
        self.sets: list[float] = []
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self.client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=f"trv-{id(self)}")
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(f"{TRV}/set", qos=1) and self._ready.set()
        self.client.on_message = self._on_set
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        wait_until(self._ready.is_set, 10, "fake TRV connected")

    def _on_set(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        change = json.loads(msg.payload)
        with self._lock:
            self.sets.append(float(change["occupied_heating_setpoint"]))
            self.state.update(change)
            payload = json.dumps(self.state)
        self.client.publish(TRV, payload, qos=1)  # on paho's network thread: never wait here

    def report(self, **change: Any) -> None:
        """Publish the state (after a person turns the knob, pass the change)."""
        with self._lock:
            self.state.update(change)
            payload = json.dumps(self.state)
        self.client.publish(TRV, payload, qos=1).wait_for_publish(5)

    @property
    def setpoint(self) -> float:
        with self._lock:
            return float(self.state["occupied_heating_setpoint"])

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


CONFIG = """
node_id: cascade
state_dir: {state}
mqtt: {{host: 127.0.0.1, port: {port}}}
zones:
  - name: office
    temperature: {{topic: {trv}, json_path: local_temperature}}
    setpoint: {{topic: {trv}, json_path: occupied_heating_setpoint}}
    main_heating: {{trv: {trv}, offset_k: 1.5}}
    gpus: [gpu0]
gpus:
  - {{id: gpu0, backend: sim, workload: {{type: sim}}}}
"""


@pytest.fixture
def trv(mosquitto: Mosquitto) -> Iterator[FakeTrv]:
    device = FakeTrv(mosquitto.port, room_c=20.8, setpoint_c=21.0)
    yield device
    device.close()


def config_text(mosquitto: Mosquitto, tmp_path: Path) -> str:
    return CONFIG.format(state=tmp_path / "state", port=mosquitto.port, trv=TRV)


@contextmanager
def held_back(mosquitto: Mosquitto, trv: FakeTrv, tmp_path: Path) -> Iterator[Service]:
    """A running service whose first tick held the TRV back to target − 1.5; shut down on leaving."""
    svc = Service(parse_config(config_text(mosquitto, tmp_path)))
    svc.start()
    try:
        wait_until(svc.link.connected.is_set, 10, "connected")  # type: ignore[union-attr]
        trv.report()
        wait_until(lambda: svc.store.get("office", "setpoint"), 5, "TRV state")
        snap = svc.tick()
        assert snap.extra["main_heating"]["office"]["stage"] == "held"
        wait_until(lambda: trv.setpoint == 19.5, 5, "TRV held back to target − 1.5")
        yield svc
    finally:
        svc.shutdown()


def test_held_back_a_persons_change_kept_and_given_back_on_exit(
    mosquitto: Mosquitto, trv: FakeTrv, tmp_path: Path
) -> None:
    with held_back(mosquitto, trv, tmp_path) as svc:
        wait_until(lambda: svc.store.get("office", "setpoint").value == 19.5, 5)  # type: ignore[union-attr]
        snap = svc.tick()  # the TRV now reports 19.5 — heatctl's own write, not the user's wish
        assert snap.zones["office"].setpoint_c == 21.0
        assert snap.extra["main_heating"]["office"]["user_setpoint_c"] == 21.0
        # A person turns the knob, in a room already close to it (a rise the GPUs cannot make up
        # would release the radiator at once: test_mainheat).
        trv.report(occupied_heating_setpoint=22.0, local_temperature=21.8)
        wait_until(lambda: svc.store.get("office", "setpoint").value == 22.0, 5)  # type: ignore[union-attr]
        snap = svc.tick()
        assert snap.zones["office"].setpoint_c == 22.0  # their change is the new target
        wait_until(lambda: trv.setpoint == 20.5, 5, "held back below the new target")
        held = json.loads((tmp_path / "state" / "main_heating.json").read_text())
        assert held["office"]["user_setpoint_c"] == 22.0 and held["office"]["steered"] is True
    wait_until(lambda: trv.setpoint == 22.0, 5, f"given back: the person's setpoint, not heatctl's {trv.sets}")
    held = json.loads((tmp_path / "state" / "main_heating.json").read_text())
    assert held["office"]["steered"] is False


def test_a_failsafe_gives_it_back_at_once(mosquitto: Mosquitto, trv: FakeTrv, tmp_path: Path) -> None:
    with held_back(mosquitto, trv, tmp_path) as svc:
        svc.mode = "off"  # heatctl turned off: the house heats as it did before
        snap = svc.tick()
        assert snap.extra["main_heating"]["office"]["stage"] == "given back"
        wait_until(lambda: trv.setpoint == 21.0, 5, "given back")


def test_kill_9_then_restore_gives_the_users_setpoint_back(mosquitto: Mosquitto, trv: FakeTrv, tmp_path: Path) -> None:
    cfg_path = tmp_path / "heatctl.yaml"
    cfg_path.write_text(config_text(mosquitto, tmp_path))
    with (tmp_path / "run.log").open("wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "heatctl", "run", "-c", str(cfg_path)], stderr=log)
        try:
            wait_until(lambda: trv.report() or trv.setpoint == 19.5, 30, "heatctl run held the TRV back")
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
    assert trv.setpoint == 19.5  # nobody gave it back
    from heatctl.check import check_main_heating

    cfg = parse_config(cfg_path.read_text())
    row = check_main_heating(cfg, cfg.zones[0])
    assert row.ok and row.warn and "HELD BACK" in row.detail and f"writes {TRV}/set" in row.detail
    restored = heatctl("restore", "-c", str(cfg_path), timeout=60)
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert "zone office: zigbee2mqtt/office_trv given back at 21.0" in restored.stdout
    wait_until(lambda: trv.setpoint == 21.0, 5, "given back by restore")
    again = heatctl("restore", "-c", str(cfg_path), timeout=60)
    assert "nothing left behind" in again.stdout


PRESET_CONFIG = """
node_id: presets
state_dir: {state}
mqtt: {{host: 127.0.0.1, port: {port}}}
zones:
  - name: office
    temperature: {{topic: room/t}}
    setpoint: {{topic: room/sp}}
    presets: {{comfort: 21, eco: 19, away: 16}}
    gpus: [gpu0]
gpus:
  - {{id: gpu0, backend: sim, workload: {{type: sim}}}}
"""


@pytest.fixture
def preset_service(mosquitto: Mosquitto, tmp_path: Path) -> Iterator[Service]:
    svc = Service(parse_config(PRESET_CONFIG.format(state=tmp_path / "state", port=mosquitto.port)))
    svc.start()
    wait_until(svc.link.connected.is_set, 10, "connected")  # type: ignore[union-attr]
    yield svc
    svc.shutdown()


def command(svc: Service, probe: Any, topic: str, payload: str) -> None:
    queued, rejected = svc.inbox.queue.qsize(), svc.inbox.rejected
    probe.publish(f"heatctl/presets/{topic}", payload)
    wait_until(lambda: (svc.inbox.queue.qsize(), svc.inbox.rejected) != (queued, rejected), 5, f"command {topic}")


def room(svc: Service, probe: Any, temperature_c: float, setpoint_c: float) -> None:
    probe.publish("room/t", str(temperature_c))
    probe.publish("room/sp", str(setpoint_c))

    def arrived() -> bool:
        t, sp = svc.store.get("office", "temperature"), svc.store.get("office", "setpoint")
        return t is not None and sp is not None and (t.value, sp.value) == (temperature_c, setpoint_c)

    wait_until(arrived, 5, "room readings")


def test_presets_boost_and_the_node_switch_from_home_assistant(preset_service: Service, probe: Any) -> None:
    svc = preset_service
    room(svc, probe, 20.0, 21.0)
    command(svc, probe, "office/preset/set", "eco")
    snap = svc.tick()
    assert snap.zones["office"].setpoint_c == 19.0 and snap.extra["presets"]["office"] == "eco"
    assert snap.zones["office"].demand_w == 0.0  # 20 °C is warm enough for eco
    room(svc, probe, 20.0, 22.0)  # the thermostat's own setpoint changes: the preset ends
    snap = svc.tick()
    assert snap.zones["office"].setpoint_c == 22.0 and snap.extra["presets"]["office"] == "none"
    command(svc, probe, "office/preset/set", "boost")
    snap = svc.tick()
    assert snap.extra["presets"]["office"] == "boost"
    assert snap.zones["office"].setpoint_c == 22.0  # boost shows the real target ...
    assert snap.gpus["gpu0"].level == 1.0 and snap.gpus["gpu0"].power_limit_w == svc.node_capacity_w  # flat out
    room(svc, probe, 22.1, 22.0)
    assert svc.tick().extra["presets"]["office"] == "none"  # ... until the room is warm
    command(svc, probe, "office/preset/set", "sauna")
    assert svc.inbox.rejected == 1
    command(svc, probe, "mode/set", "off")  # the node off (its switch in Home Assistant) ...
    assert svc.tick().mode == "off"
    command(svc, probe, "office/mode/set", "heat")  # ... and the room's climate entity set to heat turns it on
    assert svc.tick().mode == "heat"


def test_quiet_hours_cap_the_node(mosquitto: Mosquitto, probe: Any, tmp_path: Path) -> None:
    from heatctl.config import QuietConfig

    night = QuietConfig.model_validate({"from": "22:00", "to": "07:00", "max_power_w": 120})
    assert in_daily_span(night, 23 * 60) and in_daily_span(night, 6 * 60 + 59)
    assert not in_daily_span(night, 7 * 60) and not in_daily_span(night, 12 * 60)
    always = "quiet: {from: '00:00', to: '23:59', max_power_w: 120}\n"
    svc = Service(parse_config(PRESET_CONFIG.format(state=tmp_path / "s", port=mosquitto.port) + always))
    svc.start()
    try:
        wait_until(svc.link.connected.is_set, 10, "connected")  # type: ignore[union-attr]
        room(svc, probe, 17.0, 21.0)  # cold: it would run flat out
        snap = svc.tick()
        assert snap.extra["quiet"] is True
        assert snap.gpus["gpu0"].power_limit_w <= 120.0
    finally:
        svc.shutdown()


def test_boost_releases_the_main_heating_at_once(mosquitto: Mosquitto, trv: FakeTrv, tmp_path: Path) -> None:
    with held_back(mosquitto, trv, tmp_path) as svc:
        svc.inbox.put(SetPreset("office", "boost"))
        snap = svc.tick()
        assert snap.extra["main_heating"]["office"]["stage"] == "released"
        wait_until(lambda: trv.setpoint == 21.0, 5, "the radiator helps at once")
        assert snap.gpus["gpu0"].level == 1.0


def test_a_damaged_record_never_takes_the_held_back_value_for_the_users(
    mosquitto: Mosquitto, trv: FakeTrv, tmp_path: Path
) -> None:
    """Killed with the TRV held back to 19.5 and main_heating.json torn: heatctl does not know the user's
    21 °C, so it leaves the TRV alone and says so, until a person sets it; restore says the same."""
    state = tmp_path / "state"
    state.mkdir()
    (state / "main_heating.json").write_text('{"office": {"user_setpoint_c": 2')  # torn, no previous copy
    trv.report(occupied_heating_setpoint=19.5)  # where the killed run left it
    cfg_path = tmp_path / "heatctl.yaml"
    cfg_path.write_text(config_text(mosquitto, tmp_path))
    restored = heatctl("restore", "-c", str(cfg_path), timeout=60)
    assert "the user's setpoint unknown: set it there" in restored.stdout
    svc = Service(parse_config(cfg_path.read_text()))
    svc.start()
    try:
        wait_until(svc.link.connected.is_set, 10, "connected")  # type: ignore[union-attr]
        trv.report()
        wait_until(lambda: svc.store.get("office", "main_setpoint"), 5, "TRV state")
        for _ in range(3):
            main = svc.tick().extra["main_heating"]["office"]
        assert main["uncertain"] is True and main["user_setpoint_c"] is None
        assert trv.sets == []  # not steered: 19.5 may be heatctl's own value
        trv.report(occupied_heating_setpoint=21.5, local_temperature=21.4)  # a person sets it; the room is close
        reported = lambda: svc.store.get("office", "main_setpoint")  # noqa: E731
        wait_until(lambda: (r := reported()) is not None and r.value == 21.5, 5, "the person's setpoint")
        svc.tick()
        main = svc.tick().extra["main_heating"]["office"]
        assert main["uncertain"] is False and main["user_setpoint_c"] == 21.5
        wait_until(lambda: trv.setpoint == 20.0, 5, "held back below the person's setpoint")
    finally:
        svc.shutdown()
    wait_until(lambda: trv.setpoint == 21.5, 5, "given back at the person's setpoint")
