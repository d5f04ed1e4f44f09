"""Fail closed, lose nothing: faults injected into the real parts, and what heatctl did.

    .venv/bin/python benchmarks/fail_closed.py

Each row injects one fault into the real component (the service on a fake clock, the batch store
and queue, the ``openai`` workload against a local stand-in server) and prints: the fault, what
heatctl did, the heat it then made, and whether anything was lost. The faults that need the fake
NVIDIA driver, Mosquitto or Home Assistant are in ``benchmarks/faults.py`` and the test suite
(``test_nvml.py``, ``test_mainheat_service.py``, ``test_homeassistant.py``).
"""

from __future__ import annotations

import json
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from faults import Clock  # noqa: E402  (the fault matrix's fake service clock)

from heatctl.batch.queue import BatchQueue  # noqa: E402
from heatctl.batch.store import BatchStore  # noqa: E402
from heatctl.config import BatchApiConfig, OpenAIWorkloadConfig, parse_config  # noqa: E402
from heatctl.service import Service  # noqa: E402
from heatctl.workloads.openai import OpenAIWorkload  # noqa: E402

TOKEN = "fault-injection-token"
CHAT = "/v1/chat/completions"
MINIMAL = """
node_id: faults
mqtt: null
state_dir: {state}
zones: [{{name: office, temperature: {{topic: t}}, setpoint: {{topic: s}}, gpus: [gpu0]}}]
gpus: [{{id: gpu0, backend: sim}}]
"""
Row = tuple[str, str, str, str]


def line(custom_id: str) -> str:
    body = {"model": "m", "messages": [{"role": "user", "content": custom_id}], "max_tokens": 4}
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": CHAT, "body": body})


def wait_for(done: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if done():
            return True
        time.sleep(0.05)
    return done()


@contextmanager
def stand_in_server(answer: bool) -> Iterator[str]:
    """A local OpenAI-compatible stand-in: answers every chat request at once, or never."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if not answer:
                time.sleep(5.0)  # holds the request longer than the workload waits
                return
            body = {"choices": [{"message": {"content": "warm"}, "finish_reason": "stop"}]}
            data = json.dumps(body | {"usage": {"completion_tokens": 3, "prompt_tokens": 5}}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()


def service_heat(state: Path, room_c: float = 18.0) -> tuple[str, float, str]:
    """Start the service with what is in ``state``; two ticks in a cold room: (mode, GPU W, damage said)."""
    clock = Clock()
    svc = Service(parse_config(MINIMAL.format(state=state)), clock=clock)  # type: ignore[arg-type]
    svc.start()
    try:
        snap = None
        for _ in range(3):
            clock.now_s += 30.0
            svc.store.put("office", "temperature", room_c, "t")
            svc.store.put("office", "setpoint", 21.0, "s")
            snap = svc.tick()
        assert snap is not None
        return snap.mode, snap.gpus["gpu0"].target_w, str(snap.extra.get("state_damaged", ""))
    finally:
        svc.shutdown()


def damaged_state_json(work: Path) -> Row:
    state = work / "state-json"
    state.mkdir()
    (state / "state.json").write_text('{"mode": "of')  # torn mid-write, no previous copy
    mode, heat_w, said = service_heat(state)
    did = f"started with mode {mode}; said: {'damaged' in said}"
    return "state.json torn, no copy", did, f"{heat_w:.0f} W in a cold room", "its energy counters (from 0 again)"


def damaged_state_json_with_copy(work: Path) -> Row:
    state = work / "state-copy"
    state.mkdir()
    service_heat(state)  # a run saved its state, and its previous copy at the next save
    service_heat(state)
    (state / "state.json").write_bytes(b"\x00" * 32)
    mode, heat_w, said = service_heat(state)
    did = f"read the previous copy: mode {mode}; said: {'previous copy' in said}"
    return "state.json torn, copy kept", did, f"{heat_w:.0f} W in a cold room", "nothing"


def poison_batch(work: Path) -> Row:
    store = BatchStore(work / "poison")
    queue = BatchQueue(store, BatchApiConfig(token=TOKEN), slots=1)  # type: ignore[arg-type]
    try:
        bad = store.add_file("bad.jsonl", "batch", [("[" * 50_000 + "]" * 50_000 + "\n").encode()])
        good = store.add_file("good.jsonl", "batch", [(line("g0") + "\n" + line("g1") + "\n").encode()])
        poison = store.create_batch(bad.id, CHAT, "24h", 86400, {})
        fine = store.create_batch(good.id, CHAT, "24h", 86400, {})
        queue.start()
        statuses = [(store.get_batch(str(b["id"])) or {}).get("status") for b in (poison, fine)]
        did = f"poison batch {statuses[0]}, the other {statuses[1]}; the queue started"
        return "a 50,000-deep JSON line", did, "no effect on heat", f"nothing: {queue.summary().requests_left} queued"
    finally:
        queue.stop()
        store.close()


def damaged_batch_db(work: Path) -> Row:
    root = work / "db"
    store = BatchStore(root)
    record = store.add_file("in.jsonl", "batch", [(line("a") + "\n").encode()])
    store.create_batch(record.id, CHAT, "24h", 86400, {})
    store.close()
    for side in ("-wal", "-shm"):
        (root / f"batch.db{side}").unlink(missing_ok=True)
    (root / "batch.db").write_bytes(b"")
    again = BatchStore(root)
    try:
        kept = sorted(p.name for p in root.glob("batch.db.damaged-*"))
        return (
            "batch.db cut to 0 bytes",
            "moved aside, said in the log and the state; a new store",
            "no effect on heat",
            f"kept for a person: {kept[0] if kept else 'NOTHING'}",
        )
    finally:
        again.close()


def full_disk(work: Path) -> Row:
    from heatctl.workloads.spool import JobSpool

    spool = work / "jobs"
    spool.mkdir()
    with (spool / "work.jsonl").open("w") as fh:
        for i in range(6):
            fh.write(json.dumps({"id": f"j{i}", "messages": [{"role": "user", "content": "hi"}]}) + "\n")
    full = threading.Event()
    full.set()
    complete = JobSpool.complete

    def disk(self: JobSpool, job: object, result: dict[str, object]) -> None:
        if full.is_set():
            raise OSError(28, "No space left on device")
        complete(self, job, result)  # type: ignore[arg-type]

    JobSpool.complete = disk  # type: ignore[method-assign]
    try:
        with stand_in_server(answer=True) as url:
            cfg = OpenAIWorkloadConfig(type="openai", url=url, model="m", jobs=str(spool), max_concurrency=2)
            w = OpenAIWorkload("gpu0", cfg, state_dir=work)
            w.start()
            w.set_level(1.0)
            faulted = wait_for(lambda: w.fault() is not None, 20)
            full.clear()
            stored = wait_for(
                lambda: (
                    len((spool / "work.results.jsonl").read_text().splitlines()) == 6
                    if (spool / "work.results.jsonl").exists()
                    else False
                ),
                30,
            )
            alive = all(t.is_alive() for t in w._workers)
            w.stop()
        ids = [json.loads(x)["id"] for x in (spool / "work.results.jsonl").read_text().splitlines()]
        did = f"fault shown: {faulted}; workers alive: {alive}; retried until stored: {stored}"
        lost = f"{6 - len(set(ids))} lost, {len(ids) - len(set(ids))} duplicated"
        return "results cannot be written (disk full)", did, "no new work while faulted (GPU idles)", lost
    finally:
        JobSpool.complete = complete  # type: ignore[method-assign]


def slow_request(work: Path) -> Row:
    store = BatchStore(work / "slow")
    queue = BatchQueue(store, BatchApiConfig(token=TOKEN), slots=1)  # type: ignore[arg-type]
    try:
        with stand_in_server(answer=False) as url:
            record = store.add_file("in.jsonl", "batch", [(line("slow") + "\n").encode()])
            batch = store.create_batch(record.id, CHAT, "24h", 86400, {})
            queue.start()
            cfg = OpenAIWorkloadConfig(type="openai", url=url, model="m", request_timeout_s=0.5, max_attempts=2)
            w = OpenAIWorkload("gpu0", cfg, state_dir=work, batches=queue)
            w.start()
            w.set_level(1.0)

            def counts() -> dict[str, int]:
                return dict((store.get_batch(str(batch["id"])) or {}).get("request_counts", {}))

            failed = wait_for(lambda: counts().get("failed") == 1, 20)
            w.stop()
        return (
            "a request slower than request_timeout_s",
            f"sent {cfg.max_attempts} times, then recorded failed: {failed}",
            "heat while it ran, then none for it",
            "nothing (its error line is in the batch's error file)",
        )
    finally:
        queue.stop()
        store.close()


def connection_flood(work: Path) -> Row:
    import socket
    import urllib.request

    from heatctl.batch.api import BatchApi, BatchApiServer
    from tests.services import free_port

    store = BatchStore(work / "flood")
    cfg = BatchApiConfig(token=TOKEN, max_connections=64)  # type: ignore[arg-type]
    queue = BatchQueue(store, cfg, slots=1)
    port = free_port()
    server = BatchApiServer(BatchApi(cfg, store, queue), "127.0.0.1", port, max_connections=cfg.max_connections)
    server.start()
    idle = []
    try:
        for _ in range(300):  # slow clients that never send a request
            idle.append(socket.create_connection(("127.0.0.1", port)))
        wait_for(lambda: server.refused_connections >= 300 - cfg.max_connections - 1, 10)
        refused = server.refused_connections
        for sock in idle:
            sock.close()
        request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/batches")
        request.add_header("Authorization", f"Bearer {TOKEN}")
        ok = wait_for(lambda: urllib.request.urlopen(request, timeout=5).status == 200, 10)
        return (
            f"300 idle connections, max_connections {cfg.max_connections}",
            f"held {300 - refused}, answered {refused} with 503; after them the API answers: {ok}",
            "heat control untouched (its own thread)",
            "nothing",
        )
    finally:
        server.stop()
        queue.stop()
        store.close()


def retained_of_unknown_age(work: Path) -> Row:
    from heatctl.sources.mqtt import _handler
    from heatctl.sources.store import ReadingStore

    clock = Clock()
    cfg = parse_config(MINIMAL.format(state=work))
    store = ReadingStore(cfg.zones, clock)
    zone = cfg.zones[0]
    handle = _handler(store, "office", "temperature", zone.temperature, lambda: 1_800_000_000.0)
    handle("t", b"17.0", True)  # kept by the broker since some time; the payload does not say when
    inputs = store.zone_inputs("office")
    from heatctl.control.safety import fresh

    shown = inputs.temperature.value if inputs.temperature else None
    trusted = fresh(inputs.temperature, clock.now_s, inputs.temperature_stale_s)
    return (
        "a retained temperature of unknown age",
        f"kept {shown} °C to show, trusted: {trusted}; fresh at the first live message",
        "none until then (fail-safe: temperature stale)",
        "nothing",
    )


def main() -> int:
    faults = (
        damaged_state_json,
        damaged_state_json_with_copy,
        poison_batch,
        damaged_batch_db,
        full_disk,
        slow_request,
        connection_flood,
        retained_of_unknown_age,
    )
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="heatctl-faults-") as tmp:
        for fault in faults:
            work = Path(tmp) / fault.__name__
            work.mkdir()
            rows.append(fault(work))
    headers = ("fault", "what heatctl did", "heat", "anything lost")
    widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(4)]
    for r in [headers, tuple("-" * w for w in widths), *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
