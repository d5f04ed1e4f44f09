"""A homeowner's first week, end to end: zigbee2mqtt devices on the broker Home Assistant uses, a
battery TRV that reports only when asked, a contact that reports once, a fake NVIDIA card;
``init --yes`` → ``check`` → hours of ``run``: no false fail-safe, the TRV held back as the room's
main heating, one heatctl thermostat per room in Home Assistant, no "Invalid state message" in
its log, the money sensors there."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from heatctl.config import load_config
from heatctl.service import Service
from tests.conftest import FakeClock
from tests.services import FakeNvml, HomeAssistant, Probe, heatctl, wait_until
from tests.test_init import CONTACT, COORDINATOR, OUTDOOR, TRV

pytestmark = [pytest.mark.integration, pytest.mark.homeassistant]
DEN_TRV = {**TRV, "friendly_name": "Den TRV", "ieee_address": "0x00158d0001a2b3d9"}
DEN_WINDOW = {**CONTACT, "friendly_name": "den_window", "ieee_address": "0x00158d0001fffff9"}
TOPIC = "zigbee2mqtt/Den TRV"


class BatteryTrv:
    """A zigbee2mqtt TRV that says nothing by itself: it answers ``/get`` and takes ``/set``, as
    zigbee2mqtt relays for a sleepy device, and reports its state after each."""

    def __init__(self, probe: Probe, room_c: float, setpoint_c: float) -> None:
        self.probe = probe
        self.room_c, self.setpoint_c = room_c, setpoint_c
        self.asked = 0
        self.sets: list[float] = []
        for suffix, handler in (("get", self._on_get), ("set", self._on_set)):
            probe.client.message_callback_add(f"{TOPIC}/{suffix}", handler)
            probe.client.subscribe(f"{TOPIC}/{suffix}", qos=1)

    def _report(self) -> None:
        state = {"local_temperature": self.room_c, "occupied_heating_setpoint": self.setpoint_c, "system_mode": "heat"}
        self.probe.client.publish(TOPIC, json.dumps(state | {"battery": 87}), qos=1)

    def _on_get(self, client: object, userdata: object, msg: Any) -> None:
        self.asked += 1
        self._report()

    def _on_set(self, client: object, userdata: object, msg: Any) -> None:
        self.setpoint_c = float(json.loads(msg.payload)["occupied_heating_setpoint"])
        self.sets.append(self.setpoint_c)
        self._report()


def test_init_check_and_hours_of_run_with_a_battery_trv(
    homeassistant: HomeAssistant, fake_nvml: FakeNvml, tmp_path: Path
) -> None:
    ha = homeassistant
    fake_nvml.configure(max_limit_w=300, min_limit_w=100, default_limit_w=300, name="NVIDIA GeForce RTX 4070")
    fake_nvml.set_load(250)
    probe = Probe(ha.broker_port)
    try:
        devices = [COORDINATOR, DEN_TRV, DEN_WINDOW, OUTDOOR]
        probe.publish("zigbee2mqtt/bridge/devices", json.dumps(devices), retain=True)
        trv = BatteryTrv(probe, room_c=20.8, setpoint_c=21.0)
        env = {**fake_nvml.env(), "HEATCTL_STATE_DIR": str(tmp_path / "state")}
        out = tmp_path / "heatctl.yaml"
        init = heatctl("init", "--mqtt", f"127.0.0.1:{ha.broker_port}", "--yes", "--out", str(out), env=env, timeout=60)
        assert init.returncode == 0, init.stderr
        assert "Den TRV is the room's heating too: set up as main_heating" in init.stdout
        check = heatctl("check", "-c", str(out), env=env, timeout=60)
        assert check.returncode == 0, check.stdout + check.stderr
        assert "FAIL" not in check.stdout

        cfg = load_config(out).model_copy(update={"state_dir": str(tmp_path / "state"), "mode": "heat"})
        clock = FakeClock()
        svc = Service(cfg, clock=clock)  # type: ignore[arg-type]
        svc.start()
        try:
            wait_until(lambda: svc.store.get("den_trv", "temperature"), 10, "the TRV's answer at connect")
            probe.publish("zigbee2mqtt/den_window", json.dumps({"contact": True, "battery": 90}))  # closed; then silent
            wait_until(lambda: svc.store.get("den_trv", "window"), 10, "the contact's one report")
            failsafes, windows = [], []
            for _ in range(6 * 120):  # six hours of 30 s ticks, the room steady
                clock.advance(30.0)
                assert svc._asker is not None
                asks = svc._asker.asked[f"{TOPIC}/get"]
                snap = svc.tick()
                failsafes.append(snap.failsafe)
                windows.append(snap.zones["den_trv"].window)
                if svc._asker.asked[f"{TOPIC}/get"] > asks:  # heatctl asked the TRV: its answer, before time moves on
                    wait_until(
                        lambda: (r := svc.store.get("den_trv", "temperature")) and r.at_s == clock(), 5, "answer"
                    )
            assert [f for f in failsafes if f] == []  # no false fail-safe from a battery device
            assert windows[0] == "closed" and windows[-1] == "unknown"  # the contact silent for hours
            main = snap.extra["main_heating"]["den_trv"]
            assert main["stage"] == "held" and trv.sets and trv.sets[-1] == pytest.approx(19.5)  # 21 − 1.5
            assert snap.gpus["gpu0"].power_w and snap.gpus["gpu0"].power_w > 100  # the GPU heats first
        finally:
            svc.shutdown()
        assert trv.setpoint_c == 21.0  # given back on exit

        climates = [e for e in ha.get("/api/states") if e["entity_id"].startswith("climate.heatctl_den_trv")]
        assert [c["entity_id"] for c in climates] == ["climate.heatctl_den_trv_climate"]  # one thermostat per room
        net = ha.state("sensor.heatctl_net_saving")
        assert net is not None and net["attributes"]["device_class"] == "monetary"
        assert net["attributes"]["friendly_name"] == "heatctl Net saving"
        log = ha.log.read_text(errors="replace")
        assert "Invalid state message" not in log
    finally:
        probe.close()
