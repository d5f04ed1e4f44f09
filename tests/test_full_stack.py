"""The deployment path end to end: MQTT thermostat → heatctl → NVML (fake driver) + llama.cpp batch jobs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from heatctl.config import parse_config
from heatctl.service import Service
from heatctl.workloads.openai import OpenAIWorkload
from tests.services import FakeNvml, Mosquitto, Probe, TinyLLM, wait_until

pytestmark = pytest.mark.integration


def test_heat_demand_runs_jobs_window_stops_them(
    fake_nvml: FakeNvml, mosquitto: Mosquitto, probe: Probe, tinyllm: TinyLLM, tmp_path: Path
) -> None:
    fake_nvml.configure(min_limit_w=100, max_limit_w=350, default_limit_w=350, idle_w=30)
    fake_nvml.set_load(400)
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    with (jobs / "batch.jsonl").open("w") as fh:
        for i in range(200):
            fh.write(
                json.dumps({"id": f"j{i}", "messages": [{"role": "user", "content": f"q{i}"}], "max_tokens": 32}) + "\n"
            )
    cfg = parse_config(f"""
node_id: stack
state_dir: {tmp_path / "state"}
mqtt: {{host: 127.0.0.1, port: {mosquitto.port}}}
zones:
  - name: office
    temperature: {{topic: z2m/trv, json_path: local_temperature}}
    setpoint: {{topic: z2m/trv, json_path: occupied_heating_setpoint}}
    window: {{topic: z2m/window, json_path: contact, open_when: false}}
    gpus: [gpu0]
gpus:
  - id: gpu0
    backend: nvml
    workload: {{type: openai, url: "{tinyllm.url}", model: tinyllm, jobs: "{jobs}", max_concurrency: 2}}
""")
    svc = Service(cfg)
    svc.start()
    workload: OpenAIWorkload = svc.actuators["gpu0"].workload  # type: ignore[assignment]
    try:
        wait_until(svc.link.connected.is_set, 10, "connected")  # type: ignore[union-attr]
        probe.publish("z2m/trv", json.dumps({"local_temperature": 17.5, "occupied_heating_setpoint": 21}))
        probe.publish("z2m/window", json.dumps({"contact": True}))
        wait_until(lambda: svc.store.get("office", "window"), 5, "inputs")
        snap = svc.tick()
        assert snap.failsafe is None and snap.gpus["gpu0"].level == 1.0
        assert fake_nvml.limit_w() == 350.0  # cold room: full power
        wait_until(lambda: workload.counters.done >= 4, 60, "jobs running while heat is wanted")
        probe.publish("z2m/window", json.dumps({"contact": False}))
        wait_until(lambda: svc.tick().failsafe == "office: window open", 5, "window fail-safe")
        assert fake_nvml.limit_w() == 100.0  # no heat wanted: the lowest cap
        wait_until(lambda: workload.counters.in_flight == 0, 5, "requests stopped")
        done = workload.counters.done
        svc.tick()
        assert workload.counters.done == done  # nothing new started while the window is open
    finally:
        svc.shutdown()
    assert fake_nvml.limit_w() == 350.0  # restored on shutdown
    results = [json.loads(line) for line in (jobs / "batch.results.jsonl").read_text().splitlines()]
    assert len(results) == done and all(r["status"] == "ok" for r in results)
