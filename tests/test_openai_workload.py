"""``type: openai`` against a real llama.cpp server doing real inference on the CPU."""

from __future__ import annotations

import itertools
import json
import threading
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from heatctl.config import OpenAIWorkloadConfig
from heatctl.workloads.openai import OpenAIWorkload
from tests.services import TinyLLM, wait_until

pytestmark = pytest.mark.integration


def write_jobs(spool: Path, name: str, n: int, max_tokens: int = 16, start: int = 0) -> None:
    spool.mkdir(parents=True, exist_ok=True)
    with (spool / f"{name}.jsonl").open("a") as fh:
        for i in range(start, start + n):
            job = {
                "id": f"{name}-{i}",
                "messages": [{"role": "user", "content": f"Tell me about heat {i}"}],
                "max_tokens": max_tokens,
                "temperature": 0.7,
                "seed": i,
            }
            fh.write(json.dumps(job) + "\n")


def results(spool: Path) -> list[dict[str, Any]]:
    out = []
    for path in sorted(spool.glob("*.results.jsonl")):
        out += [json.loads(line) for line in path.read_text().splitlines()]
    return out


@pytest.fixture
def made() -> Iterator[list[OpenAIWorkload]]:
    workloads: list[OpenAIWorkload] = []
    yield workloads
    for w in workloads:
        w.stop()


def workload(made: list[OpenAIWorkload], server: TinyLLM, spool: Path, **cfg: Any) -> OpenAIWorkload:
    settings = {
        "type": "openai",
        "url": server.url,
        "model": "tinyllm",
        "jobs": str(spool),
        "max_concurrency": 4,
        "request_timeout_s": 30,
        **cfg,
    }
    w = OpenAIWorkload("gpu0", OpenAIWorkloadConfig(**settings), state_dir=spool.parent)
    made.append(w)
    return w


def test_jobs_complete_with_usage_and_a_work_rate(tinyllm: TinyLLM, tmp_path: Path, made: list[OpenAIWorkload]) -> None:
    spool = tmp_path / "jobs"
    write_jobs(spool, "batch", 8, max_tokens=24)
    (spool / "prompts.jsonl").write_text(json.dumps({"id": "p0", "prompt": "The radiator", "max_tokens": 12}) + "\n")
    w = workload(made, tinyllm, spool)
    w.start()
    w.work_rate()
    w.set_level(1.0)
    wait_until(lambda: w.counters.done == 9, 60, "all jobs done")
    rate = w.work_rate()
    assert rate is not None and rate > 0
    by_id = {r["id"]: r for r in results(spool)}
    assert set(by_id) == {f"batch-{i}" for i in range(8)} | {"p0"}
    assert all(r["status"] == "ok" for r in by_id.values())
    assert by_id["batch-3"]["usage"]["completion_tokens"] == 24  # streamed, with usage in the last chunk
    assert by_id["p0"]["usage"]["completion_tokens"] == 12 and by_id["p0"]["text"]
    assert w.counters.tokens == 8 * 24 + 12
    assert "9 done" in w.status()


def test_level_sets_concurrency_and_zero_cuts_off_at_once(
    tinyllm: TinyLLM, tmp_path: Path, made: list[OpenAIWorkload]
) -> None:
    spool = tmp_path / "jobs"
    write_jobs(spool, "long", 12, max_tokens=400)
    w = workload(made, tinyllm, spool)
    samples: list[int] = []
    sampling = threading.Event()

    def sample() -> None:  # the work counter as Home Assistant would see it: it must never go down
        while not sampling.is_set():
            samples.append(w.counters.tokens)
            sampling.wait(0.005)

    sampler = threading.Thread(target=sample)
    sampler.start()
    w.start()
    w.set_level(1.0)
    wait_until(lambda: w.counters.in_flight == 4, 20, "four requests in flight at level 1")
    w.set_level(0.5)
    wait_until(lambda: w.counters.in_flight <= 2, 10, "two at level 0.5")
    w.set_level(0.0)
    wait_until(lambda: w.counters.in_flight == 0, 5, "none at level 0")
    assert w.counters.preempted >= 1
    done = w.counters.done
    w.set_level(1.0)
    wait_until(lambda: w.counters.done == 12, 120, "all jobs done after resuming")
    assert done < 12
    ids = Counter(r["id"] for r in results(spool))
    assert set(ids) == {f"long-{i}" for i in range(12)} and set(ids.values()) == {1}  # none lost, none twice
    sampling.set()
    sampler.join()
    assert all(b >= a for a, b in itertools.pairwise(samples))  # cut-off requests never take work back
    assert w.counters.tokens == sum(r["usage"]["completion_tokens"] for r in results(spool))
    assert (
        w.spool is not None and w.spool._pending == set()
    )  # finished jobs are forgotten: memory does not grow with the spool's history


def test_server_dies_and_comes_back(tinyllm: TinyLLM, tmp_path: Path, made: list[OpenAIWorkload]) -> None:
    spool = tmp_path / "jobs"
    write_jobs(spool, "outage", 8, max_tokens=64)
    w = workload(made, tinyllm, spool, max_attempts=10, max_concurrency=2)
    w.start()
    w.set_level(1.0)
    wait_until(lambda: w.counters.done >= 1, 30, "first result")
    tinyllm.stop()
    wait_until(lambda: w.counters.retries >= 1, 20, "retries while the server is down")
    tinyllm.start()
    wait_until(lambda: w.counters.done == 8, 120, "all jobs done after the server came back")
    assert w.counters.failed == 0
    assert all(r["status"] == "ok" for r in results(spool))


def test_resume_after_restart_neither_redoes_nor_loses(
    tinyllm: TinyLLM, tmp_path: Path, made: list[OpenAIWorkload]
) -> None:
    spool = tmp_path / "jobs"
    write_jobs(spool, "resume", 12, max_tokens=48)
    first = workload(made, tinyllm, spool, max_concurrency=2)
    first.start()
    first.set_level(1.0)
    wait_until(lambda: first.counters.done >= 3, 60, "some jobs done")
    first.stop()
    done_before = {r["id"] for r in results(spool)}
    assert 3 <= len(done_before) < 12
    second = workload(made, tinyllm, spool)
    second.start()
    second.set_level(1.0)
    # A result is written before it is counted (durable first): wait until nothing is in flight.
    wait_until(lambda: len(results(spool)) == 12 and second.counters.in_flight == 0, 120, "the rest done")
    ids = Counter(r["id"] for r in results(spool))
    assert set(ids.values()) == {1} and len(ids) == 12
    assert second.counters.done == 12 - len(done_before)


def test_bad_jobs_are_recorded_as_failed_not_retried(
    tinyllm: TinyLLM, tmp_path: Path, made: list[OpenAIWorkload]
) -> None:
    spool = tmp_path / "jobs"
    spool.mkdir()
    huge = "heat " * 6000  # far beyond the model's 4096-token context: HTTP 400
    (spool / "bad.jsonl").write_text(
        "{not json\n"
        + json.dumps({"id": "no-body", "max_tokens": 4})
        + "\n"
        + json.dumps({"id": "too-long", "messages": [{"role": "user", "content": huge}], "max_tokens": 4})
        + "\n"
        + json.dumps({"id": "fine", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4})
        + "\n"
        + json.dumps({"id": "fine", "messages": [{"role": "user", "content": "again"}], "max_tokens": 4})
        + "\n"
    )
    w = workload(made, tinyllm, spool)
    w.start()
    w.set_level(1.0)
    wait_until(lambda: w.counters.done + w.counters.failed == 5, 60, "all five settled")
    by_id = {r["id"]: r for r in results(spool)}
    assert by_id["fine"]["status"] == "ok"
    assert by_id["bad.jsonl:1"]["status"] == "failed" and "not JSON" in by_id["bad.jsonl:1"]["error"]
    assert by_id["no-body"]["status"] == "failed"
    assert by_id["too-long"]["status"] == "failed" and "HTTP 400" in by_id["too-long"]["error"]
    assert by_id["too-long"]["attempts"] == 1
    assert by_id["bad.jsonl:5"]["status"] == "failed"  # a duplicate id: said, under its own place, not run
    assert by_id["bad.jsonl:5"]["error"] == "id 'fine' is used again (first at line 4): not run"


def test_interactive_requests_beside_the_jobs(tinyllm: TinyLLM, tmp_path: Path, made: list[OpenAIWorkload]) -> None:
    spool = tmp_path / "jobs"
    write_jobs(spool, "batch", 10, max_tokens=64)
    w = workload(made, tinyllm, spool, max_concurrency=2)
    w.start()
    w.set_level(1.0)
    answers: list[int] = []

    def interactive(i: int) -> None:
        body = {"model": "tinyllm", "messages": [{"role": "user", "content": f"interactive {i}"}], "max_tokens": 32}
        req = urllib.request.Request(
            f"{tinyllm.url}/chat/completions",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=60) as r:
            answers.append(json.loads(r.read())["usage"]["completion_tokens"])

    users = [threading.Thread(target=interactive, args=(i,)) for i in range(4)]
    for u in users:
        u.start()
    for u in users:
        u.join(60)
    assert answers == [32, 32, 32, 32]
    wait_until(lambda: w.counters.done == 10, 120, "batch done beside interactive traffic")
    assert w.counters.failed == 0


def test_the_control_thread_never_reads_the_spool(tmp_path: Path, made: list[OpenAIWorkload]) -> None:
    spool = tmp_path / "jobs"
    write_jobs(spool, "quiet", 3, max_tokens=4)
    cfg = OpenAIWorkloadConfig(type="openai", url="http://127.0.0.1:9/v1", model="m", jobs=str(spool))
    w = OpenAIWorkload("gpu0", cfg, state_dir=tmp_path)
    made.append(w)
    scanned_on: list[str] = []
    assert w.spool is not None
    real_scan = w.spool.scan

    def recording_scan() -> int:
        scanned_on.append(threading.current_thread().name)
        return real_scan()

    w.spool.scan = recording_scan  # type: ignore[method-assign]
    w.start()
    wait_until(lambda: scanned_on, 5, "the first scan")
    for _ in range(100):
        w.set_level(0.0)
        w.work_rate()
        w.status()
    assert scanned_on and threading.current_thread().name not in scanned_on
    assert all(name.endswith("-scan") for name in scanned_on)


def test_probe_uses_port_443_for_https(monkeypatch: pytest.MonkeyPatch) -> None:
    import http.client

    from heatctl.workloads.openai import RequestError, probe_server

    seen: list[tuple[str, int]] = []

    class Refused:
        def __init__(self, host: str, port: int, timeout: float) -> None:
            seen.append((host, port))

        def request(self, *args: object, **kw: object) -> None:
            raise OSError("refused")

        def close(self) -> None:
            pass

    monkeypatch.setattr(http.client, "HTTPSConnection", Refused)
    with pytest.raises(RequestError):
        probe_server("https://inference.example/v1")
    assert seen == [("inference.example", 443)]


def test_a_job_file_still_being_written_is_read_once_whole(tmp_path: Path, made: list[OpenAIWorkload]) -> None:
    """A torn last line is not a failed job: it is queued at the scan after its newline arrives."""
    spool = tmp_path / "jobs"
    spool.mkdir()
    cfg = OpenAIWorkloadConfig(type="openai", url="http://127.0.0.1:9/v1", model="m", jobs=str(spool))
    w = OpenAIWorkload("gpu0", cfg, state_dir=tmp_path)  # not started: the test scans by hand
    made.append(w)
    first = json.dumps({"id": "a", "prompt": "x"})
    second = json.dumps({"prompt": "no id given", "max_tokens": 4})  # runs under <file>:<line>
    path = spool / "batch.jsonl"
    path.write_text(first + "\n" + second[:12])  # the writer is half way through its second line
    assert w.spool is not None and w.spool.scan() == 1
    assert [(j.id, j.error) for j in w.spool._queue] == [("a", None)]
    path.write_text(first + "\n" + second + "\n")
    assert w.spool.scan() == 1
    jobs = {j.id: j for j in w.spool._queue}
    assert set(jobs) == {"a", "batch.jsonl:2"} and jobs["batch.jsonl:2"].error is None
    assert jobs["batch.jsonl:2"].body["prompt"] == "no id given"


def test_a_full_disk_costs_no_worker_and_no_result(
    tinyllm: TinyLLM, tmp_path: Path, made: list[OpenAIWorkload], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Results cannot be stored for a while: the workload says so (a fault), every worker lives, and once
    the disk has room every job's result is there once."""
    from heatctl.workloads.spool import JobSpool

    spool = tmp_path / "jobs"
    write_jobs(spool, "full", 6, max_tokens=4)
    full = threading.Event()
    full.set()
    complete = JobSpool.complete

    def disk_full(self: JobSpool, job: Any, result: dict[str, Any]) -> None:
        if full.is_set():
            raise OSError(28, "No space left on device")
        complete(self, job, result)

    monkeypatch.setattr(JobSpool, "complete", disk_full)
    w = workload(made, tinyllm, spool, max_concurrency=2)
    w.start()
    w.set_level(1.0)
    wait_until(lambda: w.fault() is not None, 30, "the fault shown")
    assert "no space left on device" in (w.fault() or "")
    full.clear()  # room on the disk again
    wait_until(lambda: len(results(spool)) == 6 and w.counters.in_flight == 0, 120, "every result stored")
    assert w.fault() is None and all(t.is_alive() for t in w._workers)
    assert Counter(r["id"] for r in results(spool)) == Counter(f"full-{i}" for i in range(6))


def test_a_request_slower_than_its_timeout_fails_after_max_attempts(tmp_path: Path, made: list[OpenAIWorkload]) -> None:
    """A server that takes the request and never answers: not re-sent for ever, but a recorded failure."""
    import socket

    from heatctl.batch.queue import BatchQueue
    from heatctl.batch.store import BatchStore
    from heatctl.config import BatchApiConfig

    listener = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:  # takes every request and never answers
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except TimeoutError:
                continue

    server = threading.Thread(target=accept, daemon=True)
    server.start()
    store = BatchStore(tmp_path / "batch")
    queue = BatchQueue(store, BatchApiConfig(token="a-token-of-enough-length"), slots=1)  # type: ignore[arg-type]
    try:
        line = {"custom_id": "slow", "method": "POST", "url": "/v1/chat/completions", "body": {"messages": []}}
        record = store.add_file("in.jsonl", "batch", [(json.dumps(line) + "\n").encode()])
        batch = store.create_batch(record.id, "/v1/chat/completions", "24h", 86400, {})
        queue.start()
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/v1"
        cfg = OpenAIWorkloadConfig(type="openai", url=url, model="m", request_timeout_s=0.3, max_attempts=2)
        w = OpenAIWorkload("gpu0", cfg, state_dir=tmp_path, batches=queue)
        made.append(w)
        w.start()
        w.set_level(1.0)
        counts = lambda: (store.get_batch(str(batch["id"])) or {}).get("request_counts", {})  # noqa: E731
        wait_until(lambda: counts().get("failed") == 1, 20, "the request failed")
        assert len(held) == 2  # sent twice (max_attempts), not for ever
        assert w.counters.failed == 1 and w.counters.retries == 1
    finally:
        queue.stop()
        stop.set()
        server.join(5)
        for conn in held:
            conn.close()
        listener.close()
        store.close()
