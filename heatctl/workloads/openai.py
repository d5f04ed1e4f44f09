"""``type: openai``: a heat-driven batch scheduler for a local OpenAI-compatible server.

Jobs are JSONL files in a spool directory, one request a line with an ``id``::

    {"id": "q1", "messages": [{"role": "user", "content": "Summarise …"}], "max_tokens": 256}
    {"id": "q2", "prompt": "Once upon a time", "max_tokens": 64}

Every key but ``id`` goes into the request body (``model`` defaults to the configured one).
Results go beside each file as ``<name>.results.jsonl``, one line per job, ``status`` ``ok``
(with ``text`` and ``usage``) or ``failed`` (with ``error``), fsynced as they are written. A
job whose id has a result is never sent again, so a restart resumes without redoing or
losing work; a job that was in flight when heatctl stopped is sent again.

Throughput follows the level: worker ``i`` of ``max_concurrency`` may hold a request only
while ``i < round(level × max_concurrency)``. A streamed request whose slot is taken away is
cut off and its job goes back to the front of the queue (not counted as an attempt), so heat
falls within a token or two. The work rate is completion tokens per second of finished
requests: tokens of a request that was cut off are not useful work and are never counted, so
the total only goes up.

A scanner thread of its own reads the spool every ``RESCAN_S``; the control thread never
touches the files. Only jobs queued or in flight are remembered; a file whose jobs all have
results is skipped until it changes.

With the Batch API (``batch_api:``), workers take requests from a ``WorkSource`` (the ``BatchQueue``)
first, most urgent deadline first, and the spool's jobs when no batch waits. A batch request
is sent as its line says (not streamed), so its output is exactly the server's answer; a slot
taken away cuts its connection, and the request goes back to the queue. An interactive
request through the API's passthrough takes one slot while it runs.

With ``fallback`` (a ``process`` workload, e.g. a folding client), the level goes to that
process while nothing is queued or running here, and it is paused again as soon as work comes.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import secrets
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from heatctl.config import OpenAIWorkloadConfig
from heatctl.errors import plain
from heatctl.workloads.spool import Job, JobSpool

if TYPE_CHECKING:
    from heatctl.batch.store import QueuedRequest
    from heatctl.workloads.process import ProcessWorkload
    from heatctl.worksource import WorkSource

_LOGGER = logging.getLogger(__name__)
RETRYABLE_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})


class Preempted(Exception):
    """The worker's slot was taken away mid-request."""


class RequestError(Exception):
    """``timed_out``: the server took the request and gave no answer in ``request_timeout_s`` — the
    request itself may be what is slow, so the attempt counts (a refused connection does not)."""

    def __init__(self, message: str, *, retryable: bool, timed_out: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.timed_out = timed_out


@dataclass
class Counters:
    done: int = 0
    failed: int = 0
    retries: int = 0
    preempted: int = 0
    tokens: int = 0
    prompt_tokens: int = 0
    peak_in_flight: int = 0
    in_flight: int = 0
    errors: deque[str] = field(default_factory=lambda: deque(maxlen=5))


class OpenAIWorkload:
    kind = "openai"
    steerable = True

    def __init__(
        self,
        gpu_id: str,
        cfg: OpenAIWorkloadConfig,
        *,
        state_dir: Path,
        time_fn: Callable[[], float] = time.monotonic,
        batches: WorkSource | None = None,
    ) -> None:
        self._gpu_id = gpu_id
        self._cfg = cfg
        self._time_fn = time_fn
        name = f"openai-{gpu_id}"
        self.spool = JobSpool(Path(cfg.jobs).expanduser(), name, self._batch_news) if cfg.jobs else None
        self._batches = batches
        self._fallback: ProcessWorkload | None = None
        if cfg.fallback is not None:
            from heatctl.workloads.process import ProcessWorkload

            self._fallback = ProcessWorkload(gpu_id, cfg.fallback, state_dir=state_dir, time_fn=time_fn)
        self._conns: dict[int, http.client.HTTPConnection] = {}  # slot → a batch request's connection
        parts = urlsplit(cfg.url.rstrip("/"))
        self._https = parts.scheme == "https"
        self._host = parts.hostname or "localhost"
        self._port = parts.port or (443 if self._https else 80)
        self._path = parts.path
        self._allowed = 0
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._workers = [
            threading.Thread(target=self._worker, args=(i,), name=f"openai-{gpu_id}-{i}", daemon=True)
            for i in range(cfg.max_concurrency)
        ]
        self._rate_mark: tuple[float, int] | None = None
        self._rate: float | None = None
        self._write_problem: str | None = None  # results cannot be stored (disk full, …): a fault
        self.counters = Counters()

    # --- Workload protocol ------------------------------------------------------------

    def start(self) -> None:
        self._rate_mark = (self._time_fn(), 0)
        if self.spool is not None:
            self.spool.start()
        if self._batches is not None:
            self._batches.subscribe(self._batch_news)
        if self._fallback is not None:
            self._fallback.set_level(0.0)
            self._fallback.start()
        for worker in self._workers:
            worker.start()

    def set_level(self, level: float) -> None:
        allowed = round(min(max(level, 0.0), 1.0) * self._cfg.max_concurrency)
        if level > 0 and allowed == 0:
            allowed = 1
        with self._cond:
            if allowed != self._allowed:
                self._allowed = allowed
                self._cond.notify_all()
        self._cut_above(self._slots_now())
        if self._fallback is not None:
            self._fallback.set_level(0.0 if self._own_work() else level)

    def _slots_now(self) -> int:
        """Slots batch work may use now: the level's, less one per interactive request in flight."""
        interactive = self._batches.interactive if self._batches is not None else 0
        return max(self._allowed - interactive, 0)

    def _batch_news(self) -> None:
        # Any thread: work arrived, or an interactive request came or went.
        with self._cond:
            self._cond.notify_all()
        self._cut_above(self._slots_now())

    def _cut_above(self, slots: int) -> None:
        """Cut the connections of batch requests in slots no longer allowed (their requests are re-queued)."""
        with self._cond:
            doomed = [conn for slot, conn in self._conns.items() if slot >= slots]
        for conn in doomed:
            sock = conn.sock
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def has_work(self) -> bool:
        """Whether heat wanted finds work: requests queued or running, or a fallback to run."""
        return self._fallback is not None or self._own_work()

    def _own_work(self) -> bool:
        with self._cond:
            if self.counters.in_flight:
                return True
        if self.spool is not None and self.spool.has_work():
            return True
        return self._batches is not None and self._batches.has_work()

    def effective_level(self) -> float | None:
        """Requests in flight now, as a share of ``max_concurrency`` (or what the fallback runs, if more)."""
        with self._cond:
            own = self.counters.in_flight / self._cfg.max_concurrency
        fallback = self._fallback.effective_level() if self._fallback is not None else None
        return max(own, fallback or 0.0)

    def work_rate(self) -> float | None:
        """Completion tokens per second since the last call."""
        now_s = self._time_fn()
        with self._cond:
            tokens = self.counters.tokens
        if self._rate_mark is not None and now_s > self._rate_mark[0]:
            self._rate = (tokens - self._rate_mark[1]) / (now_s - self._rate_mark[0])
        self._rate_mark = (now_s, tokens)
        return self._rate

    def status(self) -> str:
        queued = len(self.spool) if self.spool is not None else 0
        with self._cond:
            c = self.counters
            line = (
                f"openai: {c.in_flight} in flight of {self._allowed}, {queued} queued, {c.done} done, {c.failed} failed"
            )
        return line + (f"; fallback {self._fallback.status()}" if self._fallback is not None else "")

    def stop(self) -> None:
        """Stop taking jobs; requests in flight are cut off and will be sent again next start."""
        self._stop.set()
        with self._cond:
            self._allowed = 0
            self._cond.notify_all()
        if self.spool is not None:
            self.spool.stop()
        for thread in self._workers:
            if thread.is_alive():
                thread.join(timeout=2.0)
        if self._fallback is not None:
            self._fallback.stop()

    # --- results ----------------------------------------------------------------------

    def _stored(self, write: Callable[[], None]) -> bool:
        """Run a result's write until it succeeds (a full or read-only disk: the result waits here, the
        workload shows the fault and takes no new work); False if heatctl stops first."""
        delay_s = 1.0
        while True:
            try:
                write()
            except Exception as exc:  # disk full, read-only, a damaged database: never a dead worker
                problem = f"cannot store results: {plain(exc)}"
                if problem != self._write_problem:
                    _LOGGER.error("gpu %s: %s; retrying", self._gpu_id, problem)
                self._write_problem = problem
                if self._stop.wait(delay_s):
                    return False
                delay_s = min(delay_s * 2, 60.0)
                continue
            if self._write_problem is not None:
                _LOGGER.info("gpu %s: results are stored again", self._gpu_id)
                self._write_problem = None
            return True

    def fault(self) -> str | None:
        """Why heat from this workload would be wasted now (its results cannot be stored), or None."""
        return self._write_problem

    def _record(self, job: Job, result: dict[str, Any]) -> None:
        """The job's result into the spool; a write that fails is tried again until it is stored."""
        spool = self.spool
        assert spool is not None  # a job came from it
        self._stored(lambda: spool.complete(job, result))  # False: shutting down, the job runs next start

    # --- workers ----------------------------------------------------------------------

    def _worker(self, slot: int) -> None:
        # Worker thread: takes work while its slot is allowed; one request at a time, batches first.
        backoff_s = 0.0
        while not self._stop.is_set():
            with self._cond:
                work: Job | QueuedRequest | None = None
                while not self._stop.is_set():
                    if slot < self._slots_now():
                        work = self._batches.take(self._gpu_id) if self._batches is not None else None
                        spool_ok = self._batches is None or self._batches.heat_wanted  # not for due work
                        if work is None and spool_ok and self.spool is not None:
                            work = self.spool.take()
                        if work is not None:
                            break
                    self._cond.wait(timeout=1.0)
                if work is None:
                    return
                self.counters.in_flight += 1
                self.counters.peak_in_flight = max(self.counters.peak_in_flight, self.counters.in_flight)
            try:
                if isinstance(work, Job):
                    self._run(work, slot)
                else:
                    backoff_s = self._run_batch(work, slot, backoff_s)
            except Exception:  # a bug must not cost a slot until restart: the work runs again later
                _LOGGER.exception("gpu %s: worker %d failed on %s", self._gpu_id, slot, _work_name(work))
                self._give_back(work)
                backoff_s = min(max(backoff_s * 2, 1.0), 60.0)
            finally:
                with self._cond:
                    self.counters.in_flight -= 1
                    self._cond.notify_all()
            if backoff_s and self._stop.wait(backoff_s):
                return

    def _give_back(self, work: Job | QueuedRequest) -> None:
        """Work a worker could not finish goes back to where it came from."""
        try:
            if isinstance(work, Job) and self.spool is not None:
                self.spool.requeue(work)
            elif not isinstance(work, Job) and self._batches is not None:
                self._batches.release(work)
        except Exception:
            _LOGGER.exception("gpu %s: cannot hand %s back", self._gpu_id, _work_name(work))

    def _run_batch(self, req: QueuedRequest, slot: int, backoff_s: float) -> float:
        """One batch request; the pause before this worker takes the next (the server was unreachable)."""
        assert self._batches is not None
        started = time.monotonic()
        attempts = 0
        while True:
            attempts += 1
            try:
                status, body = self._send(req, slot)
            except Preempted:
                with self._cond:
                    self.counters.preempted += 1
                self._batches.release(req)
                return 0.0
            except RequestError as exc:
                if exc.timed_out and attempts < self._cfg.max_attempts and not self._stop.is_set():
                    with self._cond:
                        self.counters.retries += 1
                    continue  # the request itself may be what is slow: it has max_attempts
                if exc.timed_out and not self._stop.is_set():
                    status = 504
                    body = {
                        "error": {
                            "message": f"no answer within {self._cfg.request_timeout_s:g} s, {attempts} times",
                            "type": "server_error",
                            "param": None,
                            "code": "timeout",
                        }
                    }
                    break
                # The server is down or restarting: the request waits in the queue, no attempt spent.
                with self._cond:
                    self.counters.retries += 1
                    self.counters.errors.append(f"{req.custom_id}: {exc}")
                self._batches.release(req)
                delay_s = min(max(backoff_s * 2, 1.0), 60.0)
                _LOGGER.warning(
                    "gpu %s: batch request %s: %s; trying again in %.0f s", self._gpu_id, req.custom_id, exc, delay_s
                )
                return delay_s
            if status in RETRYABLE_STATUS and attempts < self._cfg.max_attempts and not self._stop.is_set():
                with self._cond:
                    self.counters.retries += 1
                if self._stop.wait(min(2.0 ** (attempts - 1), 60.0)):
                    self._batches.release(req)
                    return 0.0
                continue
            break
        ok = 200 <= status < 300
        usage = body.get("usage") if isinstance(body, dict) else None
        tokens = 0
        if isinstance(usage, dict):
            tokens = int(usage.get("completion_tokens") or usage.get("prompt_tokens") or 0)
        line = {
            "id": "batch_req_" + secrets.token_hex(12),
            "custom_id": req.custom_id,
            "response": {"status_code": status, "request_id": "req_" + secrets.token_hex(12), "body": body},
            "error": None,
        }
        elapsed_s = time.monotonic() - started
        batches = self._batches
        if not self._stored(lambda: batches.complete(req, ok, line, tokens if ok else 0, elapsed_s)):
            batches.release(req)  # shutting down before it could be stored: it runs again next start
            return 0.0
        with self._cond:
            if ok:
                self.counters.done += 1
                self.counters.tokens += max(tokens, 0)
            else:
                self.counters.failed += 1
                self.counters.errors.append(f"{req.custom_id}: HTTP {status}")
        return 0.0

    def _connection(self) -> http.client.HTTPConnection:
        """A connection to the inference server (not yet connected)."""
        conn_cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
        return conn_cls(self._host, self._port, timeout=self._cfg.request_timeout_s)

    def _headers(self, **extra: str) -> dict[str, str]:
        headers = {"Content-Type": "application/json", **extra}
        if self._cfg.api_key is not None:
            headers["Authorization"] = f"Bearer {self._cfg.api_key.get_secret_value()}"
        return headers

    def _send(self, req: QueuedRequest, slot: int) -> tuple[int, Any]:
        """POST the request's body as it is; (status, parsed body). Preempted if the slot was taken away."""
        body = {"model": self._cfg.model, **req.body}
        path = self._path + req.url.removeprefix("/v1")
        headers = self._headers()
        conn = self._connection()
        try:
            conn.connect()
            with self._cond:
                self._conns[slot] = conn
            if slot >= self._slots_now():
                raise Preempted
            conn.request("POST", path, body=json.dumps(body), headers=headers)
            response = conn.getresponse()
            raw = response.read()
            status = response.status
        except (OSError, http.client.HTTPException) as exc:
            if slot >= self._slots_now() or self._stop.is_set():
                raise Preempted from exc
            timed_out = isinstance(exc, TimeoutError) and conn.sock is not None
            raise RequestError(plain(exc), retryable=True, timed_out=timed_out) from exc
        finally:
            with self._cond:
                self._conns.pop(slot, None)
            conn.close()
        try:
            return status, json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            text = raw[:2000].decode("utf-8", "replace")
            return status, {"error": {"message": text, "type": "server_error", "param": None, "code": None}}

    def _run(self, job: Job, slot: int) -> None:
        if job.error is not None:
            self._fail(job, job.error)
            return
        started = time.monotonic()
        while True:
            job.attempts += 1
            try:
                text, usage, finish = self._request(job, slot)
            except Preempted:
                job.attempts -= 1
                with self._cond:
                    self.counters.preempted += 1
                assert self.spool is not None  # a job came from it
                self.spool.release(job)
                return
            except RequestError as exc:
                if exc.retryable and job.attempts < self._cfg.max_attempts and not self._stop.is_set():
                    delay_s = min(2.0 ** (job.attempts - 1), 60.0)
                    _LOGGER.warning("gpu %s: job %s: %s; retrying in %.0f s", self._gpu_id, job.id, exc, delay_s)
                    with self._cond:
                        self.counters.retries += 1
                    if self._stop.wait(delay_s):
                        return  # shutting down: the job stays unfinished and runs next start
                    continue
                if self._stop.is_set():
                    return
                self._fail(job, str(exc))
                return
            self._record(
                job,
                {
                    "status": "ok",
                    "text": text,
                    "usage": usage,
                    "finish_reason": finish,
                    "attempts": job.attempts,
                    "elapsed_s": round(time.monotonic() - started, 3),
                    "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                },
            )
            with self._cond:
                self.counters.done += 1
                self.counters.tokens += max(int(usage.get("completion_tokens", 0) or 0), 0)
                self.counters.prompt_tokens += int(usage.get("prompt_tokens", 0) or 0)
            return

    def _fail(self, job: Job, error: str) -> None:
        _LOGGER.error("gpu %s: job %s failed: %s", self._gpu_id, job.id, error)
        self._record(job, {"status": "failed", "error": error, "attempts": job.attempts})
        with self._cond:
            self.counters.failed += 1
            self.counters.errors.append(f"{job.id}: {error}")

    def _request(self, job: Job, slot: int) -> tuple[str, dict[str, Any], str | None]:
        """One streamed request. Returns (text, usage, finish_reason)."""
        chat = "messages" in job.body
        body = {"model": self._cfg.model, **job.body, "stream": True, "stream_options": {"include_usage": True}}
        path = f"{self._path}/{'chat/completions' if chat else 'completions'}"
        headers = self._headers(Accept="text/event-stream")
        conn = self._connection()
        pieces: list[str] = []
        counted = 0
        usage: dict[str, Any] = {}
        finish: str | None = None
        try:
            conn.request("POST", path, body=json.dumps(body), headers=headers)
            response = conn.getresponse()
            if response.status != 200:
                detail = response.read(500).decode("utf-8", "replace")
                raise RequestError(
                    f"HTTP {response.status}: {detail.strip()}", retryable=response.status in RETRYABLE_STATUS
                )
            for chunk in _sse_events(response):
                if slot >= self._slots_now() or self._stop.is_set():
                    raise Preempted
                if chunk.get("usage"):
                    usage = chunk["usage"]
                for choice in chunk.get("choices") or []:
                    piece = (choice.get("delta") or {}).get("content") if chat else choice.get("text")
                    if piece:
                        pieces.append(piece)
                        counted += 1
                    finish = choice.get("finish_reason") or finish
        except (OSError, http.client.HTTPException) as exc:
            raise RequestError(plain(exc), retryable=True) from exc
        finally:
            conn.close()
        if usage.get("completion_tokens") is None:
            # The server's count is the truth (chunks are not always one token each); else our count.
            usage = {"completion_tokens": counted, "estimated": True}
        return "".join(pieces), usage, finish


def _sse_events(response: http.client.HTTPResponse) -> Iterator[dict[str, Any]]:
    """Server-sent events of an OpenAI stream, parsed; ends at ``[DONE]``."""
    for raw in response:
        line = raw.decode("utf-8", "replace").strip()
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            return
        try:
            event = json.loads(data)
        except json.JSONDecodeError as exc:
            raise RequestError(f"bad stream event: {data[:80]!r}", retryable=True) from exc
        if isinstance(event, dict):
            if "error" in event:
                raise RequestError(f"server error: {event['error']}", retryable=True)
            yield event


def _work_name(work: Job | QueuedRequest) -> str:
    return f"job {work.id}" if isinstance(work, Job) else f"batch request {work.custom_id}"


def probe_server(url: str, timeout_s: float = 5.0) -> str:
    """GET /models: the ids the server serves (for ``heatctl check``)."""
    parts = urlsplit(url.rstrip("/"))
    conn_cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    default_port = 443 if parts.scheme == "https" else 80
    conn = conn_cls(parts.hostname or "localhost", parts.port or default_port, timeout=timeout_s)
    try:
        conn.request("GET", f"{parts.path}/models")
        response = conn.getresponse()
        data = json.loads(response.read() or b"{}")
        if response.status != 200:
            raise RequestError(f"HTTP {response.status}", retryable=False)
    except (TimeoutError, OSError, http.client.HTTPException, json.JSONDecodeError) as exc:
        raise RequestError(plain(exc), retryable=True) from exc
    finally:
        conn.close()
    return ", ".join(str(m.get("id")) for m in data.get("data", []) if isinstance(m, dict))
