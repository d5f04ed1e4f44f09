"""The planner under ``heatctl run``'s service, over real Mosquitto: a price forecast on a topic, the
plan published retained, the state saying what the planner does, a broken forecast left out."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from heatctl.cli import main
from heatctl.config import parse_config
from heatctl.planner.model import RoomModel
from heatctl.publish.discovery import discovery_messages
from heatctl.publish.influx import snapshot_lines
from heatctl.service import Service
from tests.services import Mosquitto, Probe, wait_until

pytestmark = pytest.mark.integration

CONFIG = """
node_id: planny
state_dir: {state}
mqtt: {{host: 127.0.0.1, port: {port}}}
planner: {{enabled: true, objective: cost, horizon_h: 24}}
tariff: {{topic: energy/prices}}
zones:
  - name: office
    temperature: {{topic: room/t}}
    setpoint: {{topic: room/sp}}
    gpus: [gpu0]
gpus:
  - {{id: gpu0, backend: sim, workload: {{type: sim}}}}
"""


def prices(start_h: float = 0.0) -> bytes:
    from datetime import UTC, datetime, timedelta

    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    points = [
        {"start": (now + timedelta(hours=h + start_h)).isoformat(), "price": 0.1 if h % 24 < 6 else 0.4}
        for h in range(-1, 36)
    ]
    return json.dumps(points).encode()


def test_the_service_plans_with_a_forecast_from_mqtt_and_publishes_the_plan(
    tmp_path: Path, mosquitto: Mosquitto, caplog: pytest.LogCaptureFixture
) -> None:
    state = tmp_path / "state"
    model = RoomModel.one_node(ua_w_per_k=14.0, tau_h=20.0).to_json() | {"data_h": 72.0, "fit_rmse_k": 0.1}
    (state / "planner").mkdir(parents=True)
    (state / "planner" / "office.json").write_text(json.dumps({"zone": "office", "model": model, "history": {}}))
    config_path = tmp_path / "heatctl.yaml"
    config_path.write_text(CONFIG.format(state=state, port=mosquitto.port))
    cfg = parse_config(config_path.read_text())
    probe = Probe(mosquitto.port, ("heatctl/planny/#",))
    svc = Service(cfg)
    svc.start()
    try:
        assert svc.planner is not None
        wait_until(svc.link.connected.is_set, 10, "connected")  # type: ignore[union-attr]
        # Retained, as thermostats publish their state: the service may subscribe a moment after connecting.
        probe.publish("room/t", "20.0", retain=True)
        probe.publish("room/sp", "21.0", retain=True)
        probe.publish("energy/prices", prices(), retain=True)
        wait_until(lambda: svc.store.get("office", "setpoint") is not None, 5, "readings")
        wait_until(lambda: svc.planner.price_now() is not None, 5, "the price forecast")  # type: ignore[union-attr]
        svc.tick()
        svc.planner.run_once()
        snap = svc.tick()
        planner = snap.extra["planner"]
        assert planner["status"] == "active", planner
        zone = planner["zones"]["office"]
        assert zone["model"]["trusted"] and zone["planned_kwh_24h"] > 0 and zone["planned_cost_24h"] > 0
        assert zone["target_c"] >= 21.0 - 0.3 and zone["plan_w"] is not None  # what the loop is told now
        point = next(p for p in snapshot_lines(snap, "planny", {}, 0) if p.startswith("zone,"))
        assert "planner_status=2" in point and "model_ua_w_per_k=14" in point and "plan_w=" in point
        sensors = discovery_messages(cfg, node_max_w=300.0)
        for object_id in ("office_next_heat_start", "office_planned_kwh_24h", "office_heat_loss", "planner_status"):
            assert f"homeassistant/sensor/planny/{object_id}/config" in sensors, object_id
        assert "homeassistant/binary_sensor/planny/office_model_trusted/config" in sensors

        def active_plan() -> dict | None:
            plans = [json.loads(p) for p in probe.on("heatctl/planny/plan")]
            return next((p for p in reversed(plans) if p["status"] == "active"), None)

        plan = wait_until(active_plan, 5, "the active plan on MQTT")
        assert {s["price"] for s in plan["steps"]} == {0.1, 0.4} and len(plan["steps"]) == 96
        late = Probe(mosquitto.port, ("heatctl/planny/plan",))  # retained: a late subscriber gets it
        wait_until(lambda: late.on("heatctl/planny/plan"), 5, "the retained plan")
        late.client.loop_stop()
        # A broken forecast is logged and left out; the last good one stays.
        with caplog.at_level(logging.WARNING):
            probe.publish("energy/prices", b'[{"start": "soon", "price": 1}]')
            wait_until(lambda: "left out" in caplog.text, 5, "the broken forecast logged")
        assert svc.planner.price_now() in (0.1, 0.4)
    finally:
        svc.shutdown()
        probe.client.loop_stop()
    # What the user sees from the shell.
    assert main(["plan", "-c", str(config_path)]) == 0
    assert main(["model", "-c", str(config_path)]) == 0
    chart = tmp_path / "plan.png"
    assert main(["plan", "-c", str(config_path), "--plot", str(chart)]) == 0 and chart.stat().st_size > 10_000


def test_plan_plot_without_a_plan_says_so_and_draws_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        f"state_dir: {tmp_path}\nmqtt: null\nplanner: {{}}\n"
        "zones: [{name: a, temperature: {topic: t}, setpoint: {topic: s}, gpus: [g]}]\n"
        "gpus: [{id: g, backend: sim}]\n"
    )
    chart = tmp_path / "plan.png"
    assert main(["plan", "-c", str(path), "--plot", str(chart)]) == 1
    assert "no plan to draw yet" in capsys.readouterr().err and not chart.exists()


def test_a_bad_planner_config_lists_its_problems(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        "planner: {objective: carbon, horizon_h: 500}\n"
        "zones: [{name: a, temperature: {topic: t}, setpoint: {topic: s}, gpus: [g],"
        " schedule: [{days: someday, at: '25:00', setpoint_c: 21}]}]\n"
        "gpus: [{id: g, backend: sim}]\n"
    )
    assert main(["check", "-c", str(path)]) == 2
