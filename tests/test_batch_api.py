"""The Batch API as a user meets it: the official ``openai`` SDK, unmodified, against ``heatctl``'s
service in front of a real llama.cpp server, with the room's thermostat over real Mosquitto."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from pydantic import SecretStr

from heatctl.batch.queue import MARGIN_S
from heatctl.config import parse_config
from heatctl.publish.influx import snapshot_lines
from heatctl.service import Service
from tests.services import Mosquitto, Probe, TinyLLM, free_port, wait_until

pytestmark = pytest.mark.integration
TOKEN = "house-token-of-16-chars"


def chat_lines(n: int, prefix: str = "q", max_tokens: int = 8) -> bytes:
    lines = [
        {
            "custom_id": f"{prefix}{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {
                "model": "tinyllm",
                "messages": [{"role": "user", "content": f"heat {i}"}],
                "max_tokens": max_tokens,
            },
        }
        for i in range(n)
    ]
    return ("\n".join(json.dumps(x) for x in lines) + "\n").encode()


class Node:
    """A running service ticked by the test, and an SDK client pointed at it."""

    def __init__(self, tmp_path: Path, mosquitto: Mosquitto, tinyllm: TinyLLM, extra: str = "", **api: Any) -> None:
        self.port = free_port()
        settings = {"listen": f"127.0.0.1:{self.port}", "token": TOKEN, **api}
        self.cfg = parse_config(f"""{extra}
node_id: batchy
state_dir: {tmp_path / "state"}
mqtt: {{host: 127.0.0.1, port: {mosquitto.port}}}
batch_api: {json.dumps(settings)}
zones:
  - name: office
    temperature: {{topic: room/t}}
    setpoint: {{topic: room/sp}}
    gpus: [gpu0]
gpus:
  - id: gpu0
    backend: sim
    workload: {{type: openai, url: "{tinyllm.url}", model: tinyllm, max_concurrency: 4, request_timeout_s: 30}}
""")
        self.svc: Service | None = None
        self.client = openai.OpenAI(base_url=f"http://127.0.0.1:{self.port}/v1", api_key=TOKEN, max_retries=0)

    def start(self) -> Service:
        self.svc = Service(self.cfg)
        self.svc.start()
        wait_until(self.svc.link.connected.is_set, 10, "connected")  # type: ignore[union-attr]
        return self.svc

    def stop(self) -> None:
        if self.svc is not None:
            self.svc.shutdown()
            self.svc = None

    def room(self, probe: Probe, temperature_c: float, setpoint_c: float) -> None:
        assert self.svc is not None
        probe.publish("room/t", str(temperature_c))
        probe.publish("room/sp", str(setpoint_c))
        store = self.svc.store

        def arrived() -> bool:
            t, sp = store.get("office", "temperature"), store.get("office", "setpoint")
            return t is not None and sp is not None and (t.value, sp.value) == (temperature_c, setpoint_c)

        wait_until(arrived, 5, "room readings")

    def until(self, batch_id: str, statuses: tuple[str, ...], timeout_s: float = 90, on_tick: Any = None) -> Any:
        """Tick the service (as its loop would) until the batch reaches one of ``statuses``."""

        def done() -> Any:
            assert self.svc is not None
            snap = self.svc.tick()
            if on_tick is not None:
                on_tick(snap)
            batch = self.client.batches.retrieve(batch_id)
            return batch if batch.status in statuses else None

        return wait_until(done, timeout_s, f"batch {batch_id} {statuses}")


@pytest.fixture
def node(tmp_path: Path, mosquitto: Mosquitto, tinyllm: TinyLLM) -> Iterator[Node]:
    n = Node(tmp_path, mosquitto, tinyllm)
    yield n
    n.stop()


def test_the_official_sdk_uploads_creates_polls_and_downloads(node: Node, probe: Probe) -> None:
    svc = node.start()
    node.room(probe, 18.0, 21.0)  # a cold room: heat wanted, batch work runs
    uploaded = node.client.files.create(file=("work.jsonl", chat_lines(12)), purpose="batch")
    assert uploaded.purpose == "batch" and uploaded.bytes > 0 and uploaded.filename == "work.jsonl"
    assert node.client.files.retrieve(uploaded.id).id == uploaded.id
    batch = node.client.batches.create(
        input_file_id=uploaded.id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        metadata={"who": "test"},
    )
    assert batch.status == "validating" and batch.metadata == {"who": "test"}
    assert batch.expires_at == batch.created_at + 86400
    ticks: list[Any] = []
    done = node.until(batch.id, ("completed",), on_tick=ticks.append)
    assert done.request_counts.total == 12 and done.request_counts.completed == 12 and done.request_counts.failed == 0
    assert done.in_progress_at and done.finalizing_at and done.completed_at and done.error_file_id is None
    lines = [json.loads(x) for x in node.client.files.content(done.output_file_id).text.splitlines()]
    assert sorted(x["custom_id"] for x in lines) == sorted(f"q{i}" for i in range(12))
    for x in lines:
        assert x["error"] is None and x["response"]["status_code"] == 200
        body = x["response"]["body"]
        assert body["object"] == "chat.completion" and body["usage"]["completion_tokens"] > 0
        assert isinstance(body["choices"][0]["message"]["content"], str)
    heat = (done.model_extra or {})["heat"]
    assert heat["energy_kwh"] > 0 and heat["heat_reused_share"] == 1.0 and heat["j_per_token"] > 0
    page = node.client.batches.list(limit=5)
    assert [b.id for b in page.data] == [batch.id] and not page.has_more
    state = svc.tick()
    assert state.extra["batches"]["requests_left"] == 0 and state.extra["work_starved"] is True  # cold, no work
    finished = [b for snap in ticks for b in snap.extra["batches_finished"]] + list(state.extra["batches_finished"])
    assert [b["id"] for b in finished] == [batch.id]
    points = [p for snap in [*ticks, state] for p in snapshot_lines(snap, "batchy", {}, 0) if p.startswith("batch,")]
    assert len(points) == 1 and f"batch={batch.id}" in points[0] and "j_per_token=" in points[0]
    published = probe.wait_json("heatctl/batchy/state", lambda m: m["batches"]["requests_left"] == 0)
    assert published["work_starved"] is True and "batches_finished" not in published
    discovery = {t for t, _, _ in probe.messages if t.startswith("homeassistant/")}
    for object_id in ("batch_requests_left", "next_batch_deadline", "work_starved"):
        assert any(object_id in t for t in discovery), (object_id, discovery)
    assert node.client.files.delete(uploaded.id).deleted
    with pytest.raises(openai.NotFoundError):
        node.client.files.retrieve(uploaded.id)


def test_bad_input_gets_the_errors_the_openai_api_gives(node: Node, probe: Probe, tmp_path: Path) -> None:
    node.start()
    node.room(probe, 18.0, 21.0)
    wrong = openai.OpenAI(base_url=node.client.base_url, api_key="not-the-token", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        wrong.batches.list()
    with pytest.raises(openai.NotFoundError):
        node.client.batches.retrieve("batch_nope")
    good = node.client.files.create(file=("a.jsonl", chat_lines(2)), purpose="batch")
    with pytest.raises(openai.BadRequestError) as bad_window:
        node.client.batches.create(input_file_id=good.id, endpoint="/v1/chat/completions", completion_window="1h")  # type: ignore[arg-type]
    assert bad_window.value.body["param"] == "completion_window"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError):
        node.client.batches.create(input_file_id="file-nope", endpoint="/v1/chat/completions", completion_window="24h")
    broken = chat_lines(2) + b"{not json\n" + chat_lines(1)  # q0 again: a duplicate custom_id too
    bad_file = node.client.files.create(file=("b.jsonl", broken), purpose="batch")
    failed = node.client.batches.create(
        input_file_id=bad_file.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    failed = node.until(failed.id, ("failed",), 10)
    assert [(e.code, e.line) for e in failed.errors.data] == [("invalid_json_line", 3), ("duplicate_custom_id", 4)]
    # A request the local server rejects: recorded in the error file with the server's status and body.
    rejected = (
        chat_lines(1, "ok")
        + json.dumps(
            {"custom_id": "bad", "method": "POST", "url": "/v1/chat/completions", "body": {"messages": "not a list"}}
        ).encode()
        + b"\n"
    )
    mixed = node.client.files.create(file=("c.jsonl", rejected), purpose="batch")
    batch = node.client.batches.create(input_file_id=mixed.id, endpoint="/v1/chat/completions", completion_window="24h")
    done = node.until(batch.id, ("completed",))
    assert done.request_counts.completed == 1 and done.request_counts.failed == 1
    errors = [json.loads(x) for x in node.client.files.content(done.error_file_id).text.splitlines()]
    assert errors[0]["custom_id"] == "bad" and 400 <= errors[0]["response"]["status_code"] < 500
    assert "error" in errors[0]["response"]["body"]


def test_an_oversize_upload_is_refused_and_nothing_kept(tmp_path: Path, mosquitto: Mosquitto, tinyllm: TinyLLM) -> None:
    node = Node(tmp_path, mosquitto, tinyllm, max_file_mb=0.001)  # about 1 kB
    node.start()
    try:
        with pytest.raises(openai.APIStatusError) as too_big:
            node.client.files.create(file=("big.jsonl", chat_lines(40)), purpose="batch")
        assert too_big.value.status_code == 413
        assert node.client.files.list().data == []
        files = tmp_path / "state" / "batch" / "files"
        assert list(files.iterdir()) == []  # streamed to disk, and the partial file removed
        assert node.client.files.create(file=("ok.jsonl", chat_lines(1)), purpose="batch").bytes < 1024
    finally:
        node.stop()


def test_cancel_stops_a_batch_and_keeps_what_was_done(node: Node, probe: Probe) -> None:
    node.start()
    node.room(probe, 22.0, 20.0)  # warm: no heat wanted, the batch waits
    f = node.client.files.create(file=("w.jsonl", chat_lines(5)), purpose="batch")
    batch = node.client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")
    node.until(batch.id, ("in_progress",), 10)
    cancelling = node.client.batches.cancel(batch.id)
    assert cancelling.status == "cancelling" and cancelling.cancelling_at
    done = node.until(batch.id, ("cancelled",), 10)
    assert done.request_counts.completed == 0 and done.cancelled_at
    errors = [json.loads(x) for x in node.client.files.content(done.error_file_id).text.splitlines()]
    assert {e["error"]["code"] for e in errors} == {"batch_cancelled"} and len(errors) == 5
    with pytest.raises(openai.APIStatusError) as again:
        node.client.batches.cancel(batch.id)
    assert again.value.status_code == 409


def test_no_heat_wanted_waits_but_a_deadline_runs_it_anyway(
    tmp_path: Path, mosquitto: Mosquitto, tinyllm: TinyLLM, probe: Probe
) -> None:
    node = Node(tmp_path, mosquitto, tinyllm, completion_windows=["24h", "15m"])
    svc = node.start()
    try:
        node.room(probe, 22.0, 20.0)  # warm room
        relaxed = node.client.files.create(file=("r.jsonl", chat_lines(3, "r")), purpose="batch")
        waiting = node.client.batches.create(
            input_file_id=relaxed.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        node.until(waiting.id, ("in_progress",), 10)
        for _ in range(5):
            snap = svc.tick()
        assert snap.gpus["gpu0"].level == 0.0 and not snap.extra["batches"]["due"]
        assert node.client.batches.retrieve(waiting.id).request_counts.completed == 0
        urgent = node.client.files.create(file=("u.jsonl", chat_lines(3, "u")), purpose="batch")
        due = node.client.batches.create(
            input_file_id=urgent.id, endpoint="/v1/chat/completions", completion_window="15m"
        )
        done = node.until(due.id, ("completed",))
        assert done.request_counts.completed == 3
        assert (done.model_extra or {})["heat"]["heat_reused_share"] == 0.0  # nobody wanted that heat
        for _ in range(20):  # the GPU still runs at the due level until the next tick sees no due work
            snap = svc.tick()
        relaxed_now = node.client.batches.retrieve(waiting.id)
        assert relaxed_now.status == "in_progress" and relaxed_now.request_counts.completed == 0  # still waits
        for _ in range(3):
            snap = svc.tick()
        assert snap.gpus["gpu0"].level == 0.0 and not snap.extra["batches"]["due"]
        assert snap.extra["work_starved"] is False
    finally:
        node.stop()


def test_a_restart_mid_batch_loses_nothing_and_redoes_nothing(node: Node, probe: Probe) -> None:
    svc = node.start()
    node.room(probe, 18.0, 21.0)
    f = node.client.files.create(file=("w.jsonl", chat_lines(30, max_tokens=16)), purpose="batch")
    batch = node.client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")
    wait_until(
        lambda: svc.tick() and node.client.batches.retrieve(batch.id).request_counts.completed >= 5, 60, "some done"
    )
    node.stop()  # requests in flight are cut off and go back to the queue
    svc = node.start()
    node.room(probe, 18.0, 21.0)
    done = node.until(batch.id, ("completed",))
    lines = [json.loads(x) for x in node.client.files.content(done.output_file_id).text.splitlines()]
    ids = [x["custom_id"] for x in lines]
    assert sorted(ids) == sorted(f"q{i}" for i in range(30)) and len(set(ids)) == 30
    assert done.request_counts.completed == 30


def test_interactive_requests_pass_through_and_take_a_batch_slot(node: Node, probe: Probe) -> None:
    svc = node.start()
    node.room(probe, 18.0, 21.0)
    answer = node.client.chat.completions.create(
        model="tinyllm", messages=[{"role": "user", "content": "hello"}], max_tokens=4
    )
    assert answer.choices[0].message.content is not None and answer.usage and answer.usage.completion_tokens > 0
    stream = node.client.chat.completions.create(
        model="tinyllm", messages=[{"role": "user", "content": "hi"}], max_tokens=4, stream=True
    )
    assert sum(1 for _ in stream) >= 1
    assert [m.id for m in node.client.models.list().data]
    queue = svc.batches
    assert queue is not None
    wait_until(lambda: queue.interactive == 0, 5, "each request released its slot")
    for _ in range(4):  # four people chatting: all four batch slots yield to them
        queue.interactive_started()
    f = node.client.files.create(file=("w.jsonl", chat_lines(2)), purpose="batch")
    batch = node.client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")
    node.until(batch.id, ("in_progress",), 10)
    workload = svc.actuators["gpu0"].workload
    for _ in range(20):
        assert svc.tick().gpus["gpu0"].level == 1.0
    assert workload.effective_level() == 0.0 and queue.summary().requests_left == 2
    queue.interactive_ended()  # one of them is done: one slot for the batch
    done = node.until(batch.id, ("completed",))
    assert done.request_counts.completed == 2


def test_check_reaches_the_api_and_knows_a_wrong_token(node: Node) -> None:
    from heatctl.check import check_batch_api

    api = node.cfg.batch_api
    assert api is not None
    stopped = check_batch_api(api)
    assert stopped.ok and stopped.warn and "not running" in stopped.detail
    node.start()
    running = check_batch_api(api)
    assert running.ok and not running.warn and "answers" in running.detail
    wrong = check_batch_api(api.model_copy(update={"token": SecretStr("nope")}))
    assert not wrong.ok and "token" in wrong.detail


def test_garbage_gets_openai_shaped_errors_and_the_service_goes_on(node: Node, probe: Probe) -> None:
    import urllib.error
    import urllib.request

    svc = node.start()
    base = f"http://127.0.0.1:{node.port}"

    def call(method: str, path: str, body: bytes | None, content_type: str = "application/json") -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": content_type}
        try:
            with urllib.request.urlopen(urllib.request.Request(base + path, body, headers, method=method)) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    for method, path, body, ctype, status in [
        ("POST", "/v1/batches", b"not json", "application/json", 400),
        ("POST", "/v1/batches", b"[1]", "application/json", 400),
        ("POST", "/v1/batches", json.dumps({"input_file_id": 1}).encode(), "application/json", 400),
        ("POST", "/v1/files", b"plain", "text/plain", 400),
        ("GET", "/v1/nothing", None, "application/json", 404),
        ("DELETE", "/v1/batches", None, "application/json", 405),
        ("GET", "/v1/batches?limit=many", None, "application/json", 400),
    ]:
        got, payload = call(method, path, body, ctype)
        assert got == status, (method, path, got, payload)
        assert set(payload["error"]) == {"message", "type", "param", "code"} and payload["error"]["message"]
    node.room(probe, 18.0, 21.0)
    assert svc.tick().failsafe is None  # the control loop never noticed


def test_an_embeddings_batch_gets_an_answer_or_the_servers_error_for_every_line(node: Node, probe: Probe) -> None:
    node.start()
    node.room(probe, 18.0, 21.0)
    body = "\n".join(
        json.dumps({"custom_id": f"e{i}", "method": "POST", "url": "/v1/embeddings", "body": {"input": f"text {i}"}})
        for i in range(3)
    )
    f = node.client.files.create(file=("e.jsonl", body.encode()), purpose="batch")
    batch = node.client.batches.create(input_file_id=f.id, endpoint="/v1/embeddings", completion_window="24h")
    done = node.until(batch.id, ("completed",))
    seen = []
    for file_id in (done.output_file_id, done.error_file_id):
        if file_id:
            for raw in node.client.files.content(file_id).text.splitlines():
                entry = json.loads(raw)
                seen.append(entry["custom_id"])
                status = entry["response"]["status_code"]
                assert (status == 200) == (file_id == done.output_file_id)
    assert sorted(seen) == ["e0", "e1", "e2"]
    assert done.request_counts.completed + done.request_counts.failed == 3


def test_an_address_in_use_is_reported_and_control_goes_on(node: Node, probe: Probe) -> None:
    import socket

    with socket.create_server(("127.0.0.1", node.port)):
        svc = node.start()
        assert svc.batch_api is not None and svc.batch_api.error
        node.room(probe, 18.0, 21.0)
        snap = svc.tick()
        assert snap.failsafe is None and snap.gpus["gpu0"].level == 1.0
        assert str(snap.extra["batch_api"]).startswith("error:")


def test_with_the_planner_a_batch_becomes_heat_in_the_plan_and_the_deadline_rule_waits(
    tmp_path: Path, mosquitto: Mosquitto, tinyllm: TinyLLM, probe: Probe
) -> None:
    """The service tells the planner the work due (as heat, flat out); a plan that makes it before
    the deadline covers it, and the deadline rule leaves the timing to the plan."""
    from heatctl.planner.model import RoomModel

    planner_dir = tmp_path / "state" / "planner"
    planner_dir.mkdir(parents=True)
    model = RoomModel.one_node(ua_w_per_k=14.0, tau_h=20.0).to_json() | {"data_h": 72.0, "fit_rmse_k": 0.1}
    (planner_dir / "office.json").write_text(json.dumps({"zone": "office", "model": model, "history": {}}))
    node = Node(tmp_path, mosquitto, tinyllm, extra="planner: {objective: energy, horizon_h: 24}")
    try:
        svc = node.start()
        assert svc.planner is not None and svc.batches is not None
        node.room(probe, 22.0, 20.0)  # warm: no heat wanted now, none sent to the batch
        svc.batches.set_heat_wanted(False)
        f = node.client.files.create(file=("w.jsonl", chat_lines(30)), purpose="batch")
        batch = node.client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")
        wait_until(lambda: svc.batches is not None and svc.batches.open_work(), 10, "the batch queued")
        svc.tick()
        assert svc.policy is not None
        work = svc.policy.work_for_plan("office")
        assert len(work) == 1 and work[0][1] > 0  # due by its deadline less the margin, as heat
        assert work[0][0] == pytest.approx(batch.expires_at - MARGIN_S, abs=2)
        svc.planner.run_once()
        zone = svc.planner.zones["office"]
        assert zone.status == "active" and zone.plan is not None and zone.plan.work_heat > 0
        assert zone.covers_work()  # a day to make it in
        assert svc.tick() is not None and svc._decision is not None and svc._decision.work_due == {}  # the plan runs it
    finally:
        node.stop()
