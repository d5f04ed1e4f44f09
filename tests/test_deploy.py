"""What deploy/ ships and what systemd sees: notify protocol, restore after a crash, check, dashboard."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from heatctl.config import HouseConfig, parse_config
from heatctl.house.node import NodeHouse
from heatctl.planner.model import RoomModel
from heatctl.publish.influx import snapshot_lines
from heatctl.service import Service
from heatctl.workloads.process import pid_record
from tests.conftest import MINIMAL_YAML, ROOT
from tests.services import FakeNvml, Mosquitto, Probe, free_port, heatctl

DEPLOY = ROOT / "deploy"


def test_dashboard_uses_a_datasource_variable_and_only_fields_heatctl_writes(tmp_path: Path) -> None:
    dash = json.loads((DEPLOY / "grafana" / "heatctl-dashboard.json").read_text())
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "influxdb"
    text = json.dumps(dash)
    uids = set(re.findall(r'"uid": "([^"]*)"', text))
    assert uids == {"${datasource}"}, uids  # no hard-coded datasource uids
    # A zone with main heating (a setpoint topic on a broker that is not there) writes its fields too.
    # So does a planner with a trusted model (what it learned, and the plan for now).
    main = "    main_heating: {topic: heating/office/setpoint/set}\n"
    text = MINIMAL_YAML.replace("    gpus: [gpu0]\n", main + "    gpus: [gpu0]\n") + "planner: {objective: energy}\n"
    model = RoomModel.one_node(ua_w_per_k=14.0, tau_h=20.0).to_json() | {"data_h": 72.0, "fit_rmse_k": 0.1}
    (tmp_path / "planner").mkdir()
    (tmp_path / "planner" / "office.json").write_text(json.dumps({"zone": "office", "model": model, "history": {}}))
    svc = Service(parse_config(text + f"mqtt: {{port: {free_port()}}}\nstate_dir: {tmp_path}\n"))
    svc.start()
    svc.store.put("office", "temperature", 20.0, "t")
    svc.store.put("office", "setpoint", 21.0, "t")
    try:
        svc.tick()
        assert svc.planner is not None
        svc.planner.run_once()
        snap = svc.tick()
        lines = snapshot_lines(snap, "n", {}, 1)
    finally:
        svc.shutdown()
    # A node in a house with a Batch API writes its share and the pool's figures (its house block as
    # NodeHouse makes it, before NATS is reached).
    house = NodeHouse(HouseConfig(budget_w=900.0), "n", pool=True)
    lines += snapshot_lines(dataclasses.replace(snap, extra=snap.extra | house.state()), "n", {}, 2)
    house._loop.close()  # never started
    written = {(ln.split(",")[0], kv.split("=")[0]) for ln in lines for kv in ln.split(" ")[1].split(",")}
    for panel in dash["panels"]:
        assert panel["datasource"]["uid"] == "${datasource}"
        for target in panel["targets"]:
            for measurement, field in re.findall(r'_measurement == "(\w+)".*?_field == "(\w+)"', target["query"], re.S):
                assert (measurement, field) in written, (panel["title"], measurement, field)
            for field in re.findall(r'r\._field == "(\w+)"', target["query"]):
                assert any(f == field for _, f in written), (panel["title"], field)
    titles = " ".join(p["title"] for p in dash["panels"]).lower()
    for needed in (
        "room",
        "setpoint",
        "heat output",
        "limit",
        "gpu temperature",
        "work",
        "reused",
        "reuse factor",
        "main heating",
        "plan",
        "learned",
    ):
        assert needed in titles


def test_systemd_unit_is_notify_with_watchdog_and_restore() -> None:
    unit = (DEPLOY / "systemd" / "heatctl.service").read_text()
    for line in (
        "Type=notify",
        "WatchdogSec=",
        "Restart=on-failure",
        "ProtectSystem=strict",
        "NoNewPrivileges=true",
        "StateDirectory=heatctl",
        "ExecStopPost=/opt/heatctl/bin/heatctl restore",
    ):
        assert line in unit


def test_sd_notify_ready_watchdog_stopping(mosquitto: Mosquitto, tmp_path: Path) -> None:
    sock_path = tmp_path / "notify.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(str(sock_path))
    server.settimeout(20)
    cfg = tmp_path / "heatctl.yaml"
    cfg.write_text(
        MINIMAL_YAML.replace("node_id: test-node", f"node_id: test-node\nstate_dir: {tmp_path / 's'}")
        + f"mqtt: {{host: 127.0.0.1, port: {mosquitto.port}}}\n"
    )
    env = {**os.environ, "NOTIFY_SOCKET": str(sock_path), "WATCHDOG_USEC": "180000000"}
    with (tmp_path / "log").open("ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "heatctl", "run", "-c", str(cfg)], env=env, stderr=log)
    try:
        messages = [server.recv(4096).decode() for _ in range(2)]
        assert messages[0].startswith("READY=1\nSTATUS=1 zone(s), 1 gpu(s)")
        assert messages[1].startswith("WATCHDOG=1\nSTATUS=heat, heat") and "FAIL-SAFE" in messages[1]
        proc.send_signal(signal.SIGTERM)
        while (msg := server.recv(4096).decode()).startswith("WATCHDOG"):
            pass
        assert msg == "STOPPING=1"
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        server.close()


def test_restore_command_after_a_crash_resumes_workload_and_limit(fake_nvml: FakeNvml, tmp_path: Path) -> None:
    fake_nvml.configure(default_limit_w=450)
    state = tmp_path / "state"
    state.mkdir()
    (state / "limits.json").write_text(json.dumps({"GPU-fa4e0000-0000-4000-8000-000000000000": 450.0}))
    fake_nvml.dir.joinpath("limit0").write_text("210\n")
    paused = subprocess.Popen([sys.executable, "-c", "import time\nwhile True: time.sleep(0.05)"])
    try:
        os.kill(paused.pid, signal.SIGSTOP)
        (state / "gpu0-workload.pid").write_text(pid_record(paused.pid))  # as the run that crashed wrote it
        cfg = tmp_path / "heatctl.yaml"
        cfg.write_text(
            MINIMAL_YAML.replace(
                "backend: sim", "backend: nvml\n    workload: {type: process, command: [sleep, '1000']}"
            )
            + f"state_dir: {state}\nmqtt: null\n"
        )
        proc = heatctl("restore", "-c", str(cfg), env=fake_nvml.env())
        assert proc.returncode == 0, proc.stderr
        assert f"workload {paused.pid} resumed" in proc.stdout and "restored 450 W" in proc.stdout
        assert fake_nvml.limit_w() == 450.0
        state_letter = Path(f"/proc/{paused.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        assert state_letter != "T"
    finally:
        paused.kill()
        paused.wait()


def test_check_reports_every_part(fake_nvml: FakeNvml, mosquitto: Mosquitto, probe: Probe, tmp_path: Path) -> None:
    fake_nvml.configure(fault_set_limit="no_permission", name="NVIDIA GeForce RTX 4090")
    probe.publish(
        "z2m/office_trv", json.dumps({"local_temperature": 20.5, "occupied_heating_setpoint": 21}), retain=True
    )
    probe.publish("z2m/window", "garbage", retain=True)
    cfg = tmp_path / "heatctl.yaml"
    cfg.write_text(
        MINIMAL_YAML.replace(
            "backend: sim", "backend: nvml\n    workload: {type: process, command: [no-such-miner]}"
        ).replace("    gpus: [gpu0]", "    window: {topic: z2m/window, json_path: contact}\n    gpus: [gpu0]")
        + f"state_dir: {tmp_path / 's'}\nmqtt: {{host: 127.0.0.1, port: {mosquitto.port}}}\n"
        + "influxdb: {url: 'http://127.0.0.1:9', bucket: b}\n"
    )
    proc = heatctl("check", "-c", str(cfg), env=fake_nvml.env(), timeout=60)
    out = proc.stdout
    assert proc.returncode == 1, out + proc.stderr
    expected_ok = ["config", "state_dir", "mqtt", "office.temperature", "office.setpoint", "gpu gpu0 "]
    for part in expected_ok:
        assert re.search(rf"^ok\s+{re.escape(part)}", out, re.M), (part, out)
    assert "z2m/office_trv: 20.5 °C" in out and "NVIDIA GeForce RTX 4090" in out
    for part, fix in [
        ("office.window", "json_path"),
        ("influxdb", "InfluxDB running"),
        ("gpu gpu0 limit", "run as root"),
        ("gpu gpu0 workload", "full path"),
    ]:
        assert re.search(rf"^FAIL\s+{re.escape(part)}", out, re.M), (part, out)
        assert fix in out


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_log_formats(fmt: str) -> None:
    from tests.services import free_port

    proc = heatctl("--log-format", fmt, "demo", "--duration", "2", "--port", str(free_port()), timeout=60)
    assert proc.returncode == 0, proc.stderr
    logged = [ln for ln in proc.stderr.splitlines() if ln.startswith("{")]
    if fmt == "json":
        entries = [json.loads(ln) for ln in logged]
        assert entries and all({"ts", "level", "logger", "msg"} <= set(e) for e in entries)
        assert any(e["logger"] == "heatctl.demo" and "embedded MQTT broker" in e["msg"] for e in entries)
    else:
        assert not logged and "INFO    heatctl.demo: embedded MQTT broker listening" in proc.stderr


def test_compose_does_not_clash_with_a_broker_that_already_runs() -> None:
    import yaml

    compose = yaml.safe_load((Path(__file__).parent.parent / "deploy" / "docker" / "compose.yaml").read_text())
    services = compose["services"]
    assert services["mosquitto"]["profiles"] == ["broker"]  # started only when asked for
    assert services["mosquitto"]["ports"] == ["${MQTT_PORT:-1883}:1883"]
    assert services["heatctl"]["depends_on"]["mosquitto"]["required"] is False
    assert all("profiles" not in services[name] for name in ("heatctl", "influxdb", "grafana"))
