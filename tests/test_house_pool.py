"""One pool of work for a house, on a real ``nats-server -js``: batches run where heat is wanted,
nothing lost or doubled when a node is killed or NATS goes away. The nodes' inference server is the
real llama.cpp test server; batches are made and read with the official ``openai`` SDK."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from heatctl.config import parse_config
from heatctl.service import Service
from tests.conftest import FakeClock
from tests.services import Mosquitto, NatsServer, Probe, StandInServer, TinyLLM, free_port, wait_until

pytestmark = pytest.mark.integration
TOKEN = "house-pool-token-16"
NAMES = ("kitchen", "study", "bedroom")
WARM = dict.fromkeys(NAMES, 22.5)
KITCHEN_COLD = WARM | {"kitchen": 17.0}


def node_config(
    name: str, state_dir: Path, nats_url: str, llm_url: str, port: int, *, mqtt_port: int | None = None
) -> str:
    """A node of the house; its jobs spool (local work, never pooled) in ``state_dir``'s parent."""
    mqtt = f"{{host: 127.0.0.1, port: {mqtt_port}}}" if mqtt_port else "null"
    jobs = state_dir.parent / f"{name}-jobs"
    jobs.mkdir(parents=True, exist_ok=True)
    return f"""
node_id: {name}
mqtt: {mqtt}
state_dir: {state_dir}
batch_api: {{listen: "127.0.0.1:{port}", token: {TOKEN}}}
house: {{nats: "{nats_url}", name: pool-house, budget_w: 900, nodes: 3, publish_every_s: 0.2, stale_after_s: 3,
         ack_wait_s: 2}}
zones:
  - name: room
    temperature: {{topic: {name}/t}}
    setpoint: {{topic: {name}/s}}
    control: {{interval_s: 1}}
    gpus: [gpu0]
gpus:
  - id: gpu0
    backend: sim
    sim: {{idle_w: 20, min_limit_w: 100, max_limit_w: 300}}
    workload: {{type: openai, url: "{llm_url}", model: tinyllm, max_concurrency: 4, request_timeout_s: 30,
               jobs: "{jobs}"}}
"""


def batch_lines(n: int, prefix: str = "q") -> bytes:
    body = {"model": "tinyllm", "max_tokens": 6}
    lines = [
        {
            "custom_id": f"{prefix}{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": body | {"messages": [{"role": "user", "content": f"warm {i}"}]},
        }
        for i in range(n)
    ]
    return ("\n".join(json.dumps(x) for x in lines) + "\n").encode()


def client(port: int) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=TOKEN, max_retries=2)


def submit(port: int, n: int, prefix: str = "q") -> str:
    sdk = client(port)
    uploaded = sdk.files.create(file=("work.jsonl", batch_lines(n, prefix)), purpose="batch")
    return sdk.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h").id


def output_ids(port: int, batch: Any) -> Counter[str]:
    """How often each custom_id is in the batch's output file."""
    text = client(port).files.content(batch.output_file_id).text
    return Counter(json.loads(line)["custom_id"] for line in text.splitlines() if line.strip())


class House:
    """Three nodes in one process, ticked by the test; their house threads and workers run in real time."""

    def __init__(self, tmp_path: Path, nats_url: str, llm_url: str, names: tuple[str, ...] = NAMES) -> None:
        self.clock = FakeClock()
        self.ports = {name: free_port() for name in names}
        self.nodes = {
            name: Service(
                parse_config(node_config(name, tmp_path / name, nats_url, llm_url, self.ports[name])),
                clock=self.clock,  # type: ignore[arg-type]
            )
            for name in names
        }
        for svc in self.nodes.values():
            svc.start()
        wait_until(lambda: all(self.pool_open(s) for s in self.nodes.values()), 30, "every node at the pool")

    @staticmethod
    def pool_open(svc: Service) -> bool:
        return svc.house is not None and svc.house.pool is not None and svc.house.pool._house is not None

    def tick(self, rooms_c: dict[str, float]) -> None:
        self.clock.advance(2.0)
        for name, svc in self.nodes.items():
            svc.store.put("room", "temperature", rooms_c.get(name, 22.5), "t")
            svc.store.put("room", "setpoint", 21.0, "s")
            svc.tick()

    def until(self, port: int, batch_id: str, rooms_c: dict[str, float], timeout_s: float = 120) -> Any:
        sdk = client(port)

        def done() -> Any:
            self.tick(rooms_c)
            batch = sdk.batches.retrieve(batch_id)
            return batch if batch.status in ("completed", "failed", "expired", "cancelled") else None

        return wait_until(done, timeout_s, f"batch {batch_id} to end")

    def until_completed(
        self, port: int, batch_id: str, rooms_c: dict[str, float], count: int, *, what: str, timeout_s: float = 60
    ) -> None:
        """Tick until ``count`` of the batch's requests are done (the nodes work in real time meanwhile)."""
        sdk = client(port)
        wait_until(
            lambda: self.tick(rooms_c) or sdk.batches.retrieve(batch_id).request_counts.completed >= count,
            timeout_s,
            what,
        )

    def stop(self) -> None:
        for svc in self.nodes.values():
            svc.shutdown()


@pytest.fixture
def house(nats_server: NatsServer, tinyllm: TinyLLM, tmp_path: Path) -> Iterator[House]:
    h = House(tmp_path, nats_server.url, tinyllm.url)
    yield h
    h.stop()


def test_a_batch_made_in_a_warm_room_runs_on_the_cold_rooms_node(house: House) -> None:
    house.tick(KITCHEN_COLD)
    batch_id = submit(house.ports["study"], 24)  # made on a node whose room is warm
    batch = house.until(house.ports["study"], batch_id, KITCHEN_COLD)
    assert batch.status == "completed" and batch.request_counts.completed == 24
    counts = output_ids(house.ports["study"], batch)
    assert counts == Counter({f"q{i}": 1 for i in range(24)})  # every custom_id once
    by_node = batch.model_dump()["heat"]["by_node"]
    assert by_node.get("kitchen", 0) >= 0.8 * 24, by_node  # the heat went where it was wanted
    assert batch.model_dump()["heat"]["energy_kwh"] > 0  # the kitchen's energy, sent to the batch's node
    assert batch.model_dump()["heat"]["heat_reused_share"] == 1.0  # all of it made where heat was wanted
    state = house.nodes["kitchen"].snapshot.extra["house"]  # type: ignore[union-attr]
    assert state["pool"]["done_here"] >= 0.8 * 24 and state["pool"]["waiting"] == 0, state
    # Home Assistant's sensors read the share and the pool from the published state.
    shown = home_assistant_sensors(house.nodes["kitchen"])
    assert shown["house_pool_done_here"] == str(state["pool"]["done_here"]) and shown["house_connected"] == "ON"
    assert float(shown["house_share_w"]) == state["share_w"] and shown["house_budget_w"] == "900.0"
    from heatctl.check import check_house

    row = check_house(house.nodes["kitchen"].cfg)
    assert row.ok and "pool heatctl_pool-house_work: 0 waiting" in row.detail, row.detail


def home_assistant_sensors(svc: Service) -> dict[str, str]:
    """The node's house sensors as Home Assistant renders them (its value templates, in Jinja)."""
    import jinja2

    from heatctl.config import MqttConfig
    from heatctl.publish.discovery import discovery_messages
    from heatctl.publish.mqtt_state import state_json

    assert svc.snapshot is not None
    value_json = json.loads(state_json(svc.snapshot))
    shown = {}
    cfg = svc.cfg.model_copy(update={"mqtt": MqttConfig()})  # the sensors it would announce with a broker
    for topic, payload in discovery_messages(cfg, node_max_w=300.0).items():
        key = topic.split("/")[-2].removeprefix(f"{svc.cfg.node_id}_")
        if key.startswith("house_"):
            shown[key] = jinja2.Template(payload["value_template"]).render(value_json=value_json)
    return shown


def test_with_no_room_wanting_heat_the_pool_waits_then_a_deadline_runs_it_house_wide(house: House) -> None:
    batch_id = submit(house.ports["bedroom"], 6)

    def pool_seen_waiting() -> bool:
        house.tick(WARM)
        return house.nodes["kitchen"].snapshot.extra["house"]["pool"]["waiting"] == 6  # type: ignore[union-attr]

    wait_until(pool_seen_waiting, 20, "the kitchen seeing the batch wait in the pool")
    end = time.monotonic() + 3.0
    while time.monotonic() < end:  # every room warm: nobody pulls
        house.tick(WARM)
    assert client(house.ports["bedroom"]).batches.retrieve(batch_id).request_counts.completed == 0
    # The batch's deadline near: the house judges it at risk, and every node pulls, warm or not.
    queue = house.nodes["bedroom"].batches
    assert queue is not None
    queue.store._db.execute("UPDATE batches SET expires_at = ? WHERE id = ?", (int(time.time()) + 600, batch_id))
    with queue._lock:
        queue._deadline[batch_id] = int(time.time()) + 600
    batch = house.until(house.ports["bedroom"], batch_id, WARM)
    assert batch.status == "completed" and batch.request_counts.completed == 6
    assert batch.model_dump()["heat"]["heat_reused_share"] == 0.0  # no room wanted it: not counted as heat reused


def test_nats_down_rooms_stay_controlled_and_the_pool_resumes_with_nothing_lost(
    house: House, nats_server: NatsServer
) -> None:
    house.tick(KITCHEN_COLD)
    port = house.ports["study"]
    batch_id = submit(port, 40)
    house.until_completed(port, batch_id, KITCHEN_COLD, 4, what="the pool running")
    kitchen_jobs = house.nodes["kitchen"].cfg.gpus[0].workload.jobs  # type: ignore[union-attr]
    local = [{"id": f"j{i}", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 6} for i in range(3000)]
    (Path(kitchen_jobs) / "local.jsonl").write_text("".join(json.dumps(j) + "\n" for j in local))
    spool = house.nodes["kitchen"].actuators["gpu0"].workload.spool  # type: ignore[attr-defined]
    assert spool.scan() == 3000  # as its scanner would within RESCAN_S
    workload = house.nodes["kitchen"].actuators["gpu0"].workload
    nats_server.stop()
    done_before, outage_end = workload.counters.done, time.monotonic() + 60.0  # type: ignore[attr-defined]
    pace = threading.Event()
    while time.monotonic() < outage_end:  # NATS away a minute: every node decides, local work heats the kitchen
        pace.wait(0.05)
        house.tick(KITCHEN_COLD)
        kitchen, study = house.nodes["kitchen"].snapshot, house.nodes["study"].snapshot
        assert kitchen is not None and study is not None
        assert kitchen.zones["room"].demand_w > 0 and study.zones["room"].demand_w == 0.0  # each room decided
    assert all(s.house is not None and not s.house.connected for s in house.nodes.values())
    assert workload.counters.done >= done_before + 20  # type: ignore[attr-defined]  # the jobs spool ran meanwhile
    nats_server.start()
    batch = house.until(port, batch_id, KITCHEN_COLD, timeout_s=180)
    assert batch.status == "completed" and batch.request_counts.completed == 40
    assert output_ids(port, batch) == Counter({f"q{i}": 1 for i in range(40)})


def test_a_node_killed_mid_batch_loses_no_request_and_doubles_none(
    nats_server: NatsServer, tinyllm: TinyLLM, mosquitto: Mosquitto, tmp_path: Path
) -> None:
    # The kitchen's heatctl is a process of its own (killed with SIGKILL); its room reads MQTT.
    kitchen_cfg = tmp_path / "kitchen.yaml"
    kitchen_cfg.write_text(
        node_config(
            "kitchen", tmp_path / "kitchen", nats_server.url, tinyllm.url, free_port(), mqtt_port=mosquitto.port
        )
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    log = (tmp_path / "kitchen.log").open("wb")
    kitchen = subprocess.Popen(
        [sys.executable, "-m", "heatctl", "run", "-c", str(kitchen_cfg)], stdout=log, stderr=log, env=env
    )
    house = House(tmp_path, nats_server.url, tinyllm.url, names=("study",))
    probe = Probe(mosquitto.port)
    try:
        port = house.ports["study"]
        batch_id = submit(port, 30)
        sdk = client(port)
        last = [0.0]

        def kitchen_ran_some() -> bool:
            if time.monotonic() - last[0] > 0.5:  # the kitchen's thermostat, reporting live
                probe.publish("kitchen/t", "17.0")
                probe.publish("kitchen/s", "21.0")
                last[0] = time.monotonic()
            house.tick(WARM)  # the study warm: only the kitchen runs the pool
            return sdk.batches.retrieve(batch_id).request_counts.completed >= 5

        wait_until(kitchen_ran_some, 90, "the kitchen's node running the pool")
        kitchen.send_signal(signal.SIGKILL)  # mid-batch: requests in flight there, never acked
        kitchen.wait(10)
        batch = house.until(port, batch_id, {"study": 17.0}, timeout_s=180)  # the study now cold: it takes the rest
        assert batch.status == "completed" and batch.request_counts.completed == 30
        assert output_ids(port, batch) == Counter({f"q{i}": 1 for i in range(30)})
        by_node = batch.model_dump()["heat"]["by_node"]
        assert by_node.get("kitchen", 0) >= 5 and by_node.get("study", 0) > 0 and sum(by_node.values()) == 30
    finally:
        if kitchen.poll() is None:
            kitchen.kill()
            kitchen.wait(10)
        probe.close()
        house.stop()
        log.close()


def test_the_batchs_own_node_down_while_others_run_it_collects_every_result_when_back(
    house: House, nats_server: NatsServer, tinyllm: TinyLLM, tmp_path: Path
) -> None:
    port = house.ports["study"]
    batch_id = submit(port, 30)
    house.until_completed(port, batch_id, KITCHEN_COLD, 3, what="the kitchen running the study's batch")
    house.nodes["study"].shutdown()  # the batch's node goes away; the kitchen runs on
    del house.nodes["study"]

    def pool_drained() -> bool:
        house.tick(KITCHEN_COLD)
        return house.nodes["kitchen"].snapshot.extra["house"]["pool"]["waiting"] == 0  # type: ignore[union-attr]

    wait_until(pool_drained, 120, "the kitchen running the rest")
    # The study back: the results the kitchen stored for it while it was away are recorded now.
    cfg = parse_config(node_config("study", tmp_path / "study", nats_server.url, tinyllm.url, port))
    house.nodes["study"] = Service(cfg, clock=house.clock)  # type: ignore[arg-type]
    house.nodes["study"].start()
    batch = house.until(port, batch_id, KITCHEN_COLD, timeout_s=60)  # the 120 s energy fallback never needed
    assert batch.status == "completed" and batch.request_counts.completed == 30
    assert output_ids(port, batch) == Counter({f"q{i}": 1 for i in range(30)})
    assert batch.model_dump()["heat"]["by_node"].get("kitchen", 0) >= 27


def test_a_request_longer_than_the_ack_deadline_is_kept_alive_and_runs_once(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    # ack_wait_s is 2 s; each request takes 5 s at the server. Without progress acks every request
    # would be handed out again after 2 s and run two or three times.
    server = StandInServer(delay_s=5.0)
    house = House(tmp_path, nats_server.url, server.url, names=("kitchen",))
    try:
        port = house.ports["kitchen"]
        batch = house.until(port, submit(port, 4), {"kitchen": 17.0}, timeout_s=60)
        assert batch.status == "completed" and batch.request_counts.completed == 4
        assert server.seen == Counter({f"warm {i}": 1 for i in range(4)}), server.seen  # each ran once
    finally:
        house.stop()
        server.close()
