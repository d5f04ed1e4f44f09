"""The batch queue: validated requests, most urgent deadline first, and the deadline rule.

Batch work is the openai workload's level: while heat is wanted its workers take requests
from here at the concurrency the level allows. A batch that would otherwise miss its window
is run even when no heat is wanted: ``due_level`` turns 1 once the work left (requests ×
the measured seconds per request ÷ the slots, × ``SAFETY``, + ``MARGIN_S``) no longer fits
in the time left, and stays 1 for that batch until it is done. The controller then runs the
GPU at its most efficient cap (see ``NodeInputs.work_due``); the energy counts as heat reused
only while the room wanted it.

A manager thread validates new batches, closes finished, cancelled and expired ones, and
writes each batch's share of the GPUs' energy. Workers and the API thread only call the
short methods here; every state change that matters is in the ``BatchStore`` first.
"""

from __future__ import annotations

import heapq
import json
import logging
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from heatctl.batch.store import BatchStore, QueuedRequest
from heatctl.config import BatchApiConfig
from heatctl.untrusted import UntrustedJsonError, parse_json

if TYPE_CHECKING:
    from heatctl.house.pool import PooledRequest, PoolLink

_LOGGER = logging.getLogger(__name__)

ENDPOINTS = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings")
DEFAULT_S_PER_REQUEST = 30.0  # until a request has been timed here
SAFETY = 1.5  # the work left is taken as this much longer than measured ...
PLANNED_SAFETY = 1.0  # ... or as measured, while the planner makes the work's heat in time
FLAT_OUT = 2.0  # the due level that runs the GPUs at full power (the planner's deadline rule)
MARGIN_S = 900.0  # ... plus this, when deciding whether a deadline is at risk
MAINTAIN_S = 1.0
EWMA = 0.2

EXPIRED = {
    "code": "batch_expired",
    "message": "This request could not be executed before the completion window expired.",
}
CANCELLED = {"code": "batch_cancelled", "message": "This request was not executed because the batch was cancelled."}


@dataclass(frozen=True, slots=True)
class BatchSummary:
    """For the state: what waits, and the nearest deadline."""

    queued: int  # batches validated, none of their requests started yet
    in_progress: int  # batches with requests started or done, not finished
    requests_left: int
    in_flight: int
    next_deadline: int | None  # Unix seconds
    due: bool  # running because a deadline needs it, heat wanted or not
    s_per_request: float

    def to_json(self) -> dict[str, Any]:
        deadline = self.next_deadline
        return {
            "queued": self.queued,
            "in_progress": self.in_progress,
            "requests_left": self.requests_left,
            "in_flight": self.in_flight,
            "next_deadline": datetime.fromtimestamp(deadline, UTC).isoformat() if deadline is not None else None,
            "due": self.due,
            "s_per_request": round(self.s_per_request, 2),
        }


class BatchQueue:
    def __init__(
        self,
        store: BatchStore,
        cfg: BatchApiConfig,
        *,
        slots: int,
        mono_fn: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.cfg = cfg
        self.slots = max(slots, 1)
        self._mono_fn = mono_fn
        self._lock = threading.Lock()
        self._heap: list[tuple[int, int, int, QueuedRequest]] = []
        self._left: dict[str, int] = {}  # batch → requests queued or in flight
        self._deadline: dict[str, int] = {}
        self._closed: set[str] = set()  # cancelling or expired: their queued requests are skipped
        self._in_flight: dict[tuple[str, int], tuple[str, float]] = {}  # (batch, line) → (gpu, busy since)
        self._busy_s: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))  # gpu → batch → s run
        self._urgent: set[str] = set()
        self._started: set[str] = set()  # batches that have had a request taken
        self._energy: dict[str, list[float]] = defaultdict(lambda: [0.0] * 6)  # as store.add_energy takes it
        self._listeners: list[Callable[[], None]] = []
        self._finalizing_since: dict[str, float] = {}
        self._finished: deque[dict[str, Any]] = deque(maxlen=100)  # closed batches, for InfluxDB
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._manage_loop, name="batch-manager", daemon=True)
        self.interactive = 0  # interactive requests in flight: each takes a batch slot
        self._heat_wanted = True  # False: only batches whose deadline needs it may run
        self.passthrough_block: str | None = None  # why interactive passthrough is refused now (None: it is not)
        # In a house: this node's batches whose requests went to the pool (counted here, run anywhere),
        # and the other nodes' batches this node's GPUs run (their energy goes back to their origin).
        self.pool: PoolLink | None = None
        self._pooled: set[str] = set()
        self._foreign: dict[str, tuple[str, str]] = {}  # batch → (pool, origin)
        self._energy_owed: dict[str, set[str]] = defaultdict(set)  # batch → nodes whose last energy report is due
        saved = store.get_meta("s_per_request")
        self.s_per_request = float(saved) if saved else DEFAULT_S_PER_REQUEST
        self._saved_s_per_request = self.s_per_request

    # --- lifecycle ------------------------------------------------------------------------

    def attach_pool(self, pool: PoolLink) -> None:
        """The house's pool: new batches go there; results and energy for this node's batches come back."""
        self.pool = pool
        pool.on_result = self.record_pooled
        pool.on_energy = self.add_pooled_energy

    def start(self) -> None:
        """Load what was queued before a restart (in-flight requests were not recorded: they run again;
        a pooled batch's requests wait in the pool, and are only counted here)."""
        pooled: dict[str, bool] = {}
        with self._lock:
            for req in self.store.queued_requests():
                if req.batch_id not in pooled:
                    pooled[req.batch_id] = self.store.get_meta(f"pooled:{req.batch_id}") is not None
                if pooled[req.batch_id]:
                    self._pooled.add(req.batch_id)
                    self._count(req)
                else:
                    self._push(req)
        self._started.update(r["id"] for r in self.store.batches_in("in_progress") if r["completed"] + r["failed"] > 0)
        if self._left:
            _LOGGER.info("batch: %d request(s) of %d batch(es) queued", sum(self._left.values()), len(self._left))
        try:
            self.maintain()
        except Exception:  # nothing in the store stops heatctl from starting: the manager tries again
            _LOGGER.exception("batch upkeep failed at start")
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5.0)
        self._flush_energy()

    def subscribe(self, listener: Callable[[], None]) -> None:
        """Called (from any thread) when work arrives or interactive requests come and go."""
        self._listeners.append(listener)

    def _notify(self) -> None:
        for listener in self._listeners:
            listener()

    def poke(self) -> None:
        """Something changed in the store (a batch created or cancelled): the manager looks now."""
        self._wake.set()

    # --- workers --------------------------------------------------------------------------

    def _push(self, req: QueuedRequest) -> None:
        """(Under the lock.)"""
        heapq.heappush(self._heap, (req.expires_at, req.batch_seq, req.line, req))
        self._count(req)

    def _count(self, req: QueuedRequest) -> None:
        """(Under the lock.) One more request of its batch left to run."""
        self._left[req.batch_id] = self._left.get(req.batch_id, 0) + 1
        self._deadline[req.batch_id] = req.expires_at

    def has_work(self) -> bool:
        with self._lock:
            self._drop_closed()
            return bool(self._heap)

    def _drop_closed(self) -> None:
        while self._heap and self._heap[0][3].batch_id in self._closed:
            req = heapq.heappop(self._heap)[3]
            if req.batch_id in self._left:  # not yet forgotten
                self._left[req.batch_id] -= 1

    def set_heat_wanted(self, wanted: bool, *, off_reason: str | None = None) -> None:
        """Whether the rooms want heat now; when not, only batches that are due may start requests.
        ``off_reason``: heatctl is off or in fail-safe, so interactive passthrough waits (its heat unwanted)."""
        with self._lock:
            self._heat_wanted = wanted
            self.passthrough_block = off_reason

    @property
    def heat_wanted(self) -> bool:
        return self._heat_wanted

    def take(self, gpu_id: str) -> QueuedRequest | None:
        """The most urgent queued request, now in flight on ``gpu_id``."""
        with self._lock:
            self._drop_closed()
            if not self._heap or (not self._heat_wanted and self._heap[0][3].batch_id not in self._urgent):
                return None
            req = heapq.heappop(self._heap)[3]
            self._in_flight[(req.batch_id, req.line)] = (gpu_id, self._mono_fn())
            self._started.add(req.batch_id)
            return req

    def release(self, req: QueuedRequest) -> None:
        """A request cut off before it finished: back to the front of its deadline."""
        with self._lock:
            self._end_flight(req)
            if req.batch_id in self._closed or req.batch_id not in self._left:
                return  # its batch expired or was cancelled meanwhile: nothing to run again
            heapq.heappush(self._heap, (req.expires_at, req.batch_seq, req.line, req))
        self._notify()

    def complete(self, req: QueuedRequest, ok: bool, result: dict[str, Any], tokens: int, elapsed_s: float) -> None:
        """Record the request's output or error line (durably), then let it go."""
        recorded = self.store.record_result(req, ok, result, tokens)
        with self._lock:
            self._end_flight(req)
            self._left[req.batch_id] = self._left.get(req.batch_id, 1) - 1
            if ok and elapsed_s > 0:
                self.s_per_request += EWMA * (elapsed_s - self.s_per_request)
            done = self._left[req.batch_id] <= 0
        if not recorded:
            _LOGGER.info("batch %s: a result for line %d came after the batch closed", req.batch_id, req.line)
        if done:
            self._wake.set()

    def record_pooled(
        self, req: QueuedRequest, ok: bool, result: dict[str, Any], *, tokens: int, node: str, elapsed_s: float
    ) -> bool:
        """A result for one of this node's pooled batches, run by ``node`` (this one or another): stored
        once (a request the pool ran twice is recorded the first time); raises if it cannot be stored."""
        recorded = self.store.record_result(req, ok, result, tokens, node=node)
        if not recorded:
            return False
        with self._lock:
            if self.pool is not None and node != self.pool.node_id:
                self._energy_owed[req.batch_id].add(node)  # its energy report comes after its results
            self._left[req.batch_id] = self._left.get(req.batch_id, 1) - 1
            if ok and elapsed_s > 0:
                self.s_per_request += EWMA * (elapsed_s - self.s_per_request)
            done = self._left[req.batch_id] <= 0
        if done:
            self._wake.set()
        return True

    def add_pooled_energy(self, batch_id: str, node: str, tally: list[float]) -> None:
        """Energy ``node`` spent on one of this node's pooled batches (as ``store.add_energy`` takes it)."""
        self.store.add_energy({batch_id: tally})
        with self._lock:
            self._energy_owed[batch_id].discard(node)

    def track(self, req: PooledRequest, gpu_id: str) -> None:
        """A request pulled from the pool now runs on ``gpu_id``: its batch is charged for the time."""
        with self._lock:
            self._in_flight[(req.batch_id, req.line)] = (gpu_id, self._mono_fn())
            own = self.pool is not None and (req.pool, req.origin) == (self.pool.cfg.name, self.pool.node_id)
            if not own:
                self._foreign[req.batch_id] = (req.pool, req.origin)

    def untrack(self, req: QueuedRequest) -> None:
        with self._lock:
            self._end_flight(req)

    def _end_flight(self, req: QueuedRequest) -> None:
        """(Under the lock.) The request's running time since the last charge counts for its batch."""
        flight = self._in_flight.pop((req.batch_id, req.line), None)
        if flight is not None:
            gpu_id, since = flight
            self._busy_s[gpu_id][req.batch_id] += max(self._mono_fn() - since, 0.0)

    def interactive_started(self) -> None:
        with self._lock:
            self.interactive += 1
        self._notify()

    def interactive_ended(self) -> None:
        with self._lock:
            self.interactive = max(self.interactive - 1, 0)
        self._notify()

    # --- energy ---------------------------------------------------------------------------

    def charge(
        self, gpu_id: str, energy_j: float, wanted: bool, *, price: float | None = None, carbon: float | None = None
    ) -> None:
        """One GPU's energy since its last charge, shared among batches by their requests' running time;
        with the electricity's price and carbon intensity now, what it cost and emitted."""
        with self._lock:
            finishing = any(b in self._finalizing_since for b in self._busy_s.get(gpu_id, {}))
            now = self._mono_fn()
            busy = self._busy_s.pop(gpu_id, defaultdict(float))
            for key, (gid, since) in self._in_flight.items():
                if gid == gpu_id:
                    busy[key[0]] += max(now - since, 0.0)
                    self._in_flight[key] = (gid, now)
            total = sum(busy.values())
            for batch_id, seconds in busy.items():
                if total <= 0 or seconds <= 0:
                    continue
                share_j = max(energy_j, 0.0) * seconds / total
                tally = self._energy[batch_id]
                tally[0] += share_j
                if wanted:
                    tally[1] += share_j
                if price is None:
                    tally[3] += share_j
                else:
                    tally[2] += share_j / 3.6e6 * price
                if carbon is None:
                    tally[5] += share_j
                else:
                    tally[4] += share_j / 3.6e6 * carbon
        if finishing:
            self._wake.set()  # a batch waited for this charge to close

    def _flush_energy(self) -> None:
        with self._lock:
            pending = {bid: tuple(tally) for bid, tally in self._energy.items()}
            self._energy.clear()
            foreign = {bid: self._foreign[bid] for bid in pending if bid in self._foreign}
            # Another node's batch is forgotten once nothing of it runs here and its time is charged.
            busy = {bid for gpu in self._busy_s.values() for bid, s in gpu.items() if s > 0}
            running = {bid for bid, _ in self._in_flight} | busy
            for bid in [b for b in self._foreign if b not in running]:
                del self._foreign[bid]
        if self.pool is not None:
            for bid, (pool, origin) in foreign.items():
                self.pool.send_energy(pool, origin, bid, list(pending.pop(bid)))
        self.store.add_energy(pending)

    # --- deadlines ------------------------------------------------------------------------

    def _open_by_deadline(self, *, pooled: bool = False) -> list[tuple[float, str]]:
        """This node's open batches, earliest deadline first: those it runs alone, or (``pooled``)
        those in the house's pool, whose deadlines the house judges."""
        return sorted(
            (d, bid)
            for bid, d in self._deadline.items()
            if self._left.get(bid, 0) > 0 and bid not in self._closed and (bid in self._pooled) == pooled
        )

    def pool_work(self) -> tuple[tuple[float, float], ...]:
        """This node's batches in the house's pool: (deadline, requests left), for the house's report."""
        with self._lock:
            return tuple((float(d), float(self._left[bid])) for d, bid in self._open_by_deadline(pooled=True))

    def open_work(self) -> list[tuple[float, float]]:
        """(deadline, seconds of work left with every slot busy at the efficient cap), earliest first."""
        with self._lock:
            return [(d, self._left[bid] * self.s_per_request / self.slots) for d, bid in self._open_by_deadline()]

    def due_level(self, now_wall_s: float | None = None, *, full_speedup: float | None = None) -> float:
        """1 while some batch must run now to meet its deadline, else 0 (now: the store's clock).
        ``full_speedup``: the plan makes the work's heat in time at full power, this much faster than
        the efficient cap; the rule then waits until the work only just fits at full power, and asks
        for it (``FLAT_OUT``). The service's ``WorkSource``."""
        if now_wall_s is None:
            now_wall_s = self.store.now()
        planned = full_speedup is not None
        speedup = full_speedup or 1.0
        with self._lock:
            open_batches = self._open_by_deadline()
            work = [(d, self._left[bid] * self.s_per_request / self.slots / speedup) for d, bid in open_batches]
            for _, batch_id in open_batches[: at_risk(now_wall_s, work, planned=planned)]:
                if batch_id not in self._urgent:
                    self._urgent.add(batch_id)
                    _LOGGER.info(
                        "batch %s: %d request(s) left, %.1f h to its deadline: running it, heat wanted or not",
                        batch_id,
                        self._left[batch_id],
                        (self._deadline[batch_id] - now_wall_s) / 3600,
                    )
            self._urgent = {b for b in self._urgent if self._left.get(b, 0) > 0 and b not in self._closed}
            return (FLAT_OUT if planned else 1.0) if self._urgent else 0.0

    def summary(self) -> BatchSummary:
        with self._lock:
            open_ids = [b for b, n in self._left.items() if n > 0 and b not in self._closed]
            return BatchSummary(
                queued=sum(1 for b in open_ids if b not in self._started),
                in_progress=sum(1 for b in open_ids if b in self._started),
                requests_left=sum(self._left[b] for b in open_ids),
                in_flight=len(self._in_flight),
                next_deadline=min((self._deadline[b] for b in open_ids), default=None),
                due=bool(self._urgent),
                s_per_request=self.s_per_request,
            )

    # --- the manager ------------------------------------------------------------------------

    def _manage_loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(MAINTAIN_S)
            self._wake.clear()
            try:
                self.maintain()
            except Exception:  # a bug here must not end the batches' upkeep
                _LOGGER.exception("batch upkeep failed")

    def maintain(self) -> None:
        """Validate new batches, close finished, cancelled and expired ones, write energy."""
        self._flush_energy()
        for row in self.store.batches_in("validating"):
            try:
                self._validate(row["id"], row["input_file_id"], row["endpoint"])
            except Exception as exc:  # one batch fails alone: the others validate, run and expire
                _LOGGER.exception("batch %s: validation failed", row["id"])
                message = f"The input file could not be validated: {type(exc).__name__}."
                self.store.fail_batch(row["id"], [_error("invalid_file", message)])
        now = self.store.now()
        for row in self.store.batches_in("in_progress", "cancelling", "finalizing"):
            batch_id = row["id"]
            with self._lock:
                running = any(bid == batch_id for bid, _ in self._in_flight)
                left = self._left.get(batch_id, 0)
            if row["status"] == "cancelling":
                self._close(batch_id)
                if not running:
                    self.store.finish(batch_id, "cancelled", CANCELLED)
                    self._forget(batch_id)
            elif now >= row["expires_at"] and left > 0:
                _LOGGER.warning("batch %s expired with %d request(s) not run", batch_id, left)
                self._close(batch_id)
                self.store.finish(batch_id, "expired", EXPIRED)
                self._forget(batch_id)
            elif left <= 0 and not running:
                # Finalizing: until the GPUs' energy for its last requests is charged (the next tick).
                if row["status"] != "finalizing":
                    self.store.set_status(batch_id, "finalizing")
                    self._finalizing_since[batch_id] = self._mono_fn()
                waited_s = self._mono_fn() - self._finalizing_since.get(batch_id, 0)
                if self._uncharged(batch_id) and waited_s < 120:
                    continue
                if self._owes_energy(batch_id) and waited_s < 120:
                    continue  # the energy the other nodes spent on its last requests is on its way
                self._flush_energy()
                self.store.finish(batch_id, "completed", None)
                self._forget(batch_id)
                _LOGGER.info("batch %s completed", batch_id)
        if self.s_per_request != self._saved_s_per_request:  # a commit (an fsync) only when it changed
            self.store.set_meta("s_per_request", repr(self.s_per_request))
            self._saved_s_per_request = self.s_per_request

    def _owes_energy(self, batch_id: str) -> bool:
        """Some live node that ran the pooled batch's requests has not yet sent its energy since."""
        with self._lock:
            owed = set(self._energy_owed.get(batch_id, ()))
        return self.pool is not None and any(self.pool.peer_live(node) for node in owed)

    def _uncharged(self, batch_id: str) -> bool:
        with self._lock:
            return any(busy.get(batch_id, 0.0) > 0 for busy in self._busy_s.values())

    def _close(self, batch_id: str) -> None:
        with self._lock:
            self._closed.add(batch_id)
            pooled = batch_id in self._pooled
        if pooled and self.pool is not None:
            self.pool.drop_batch(batch_id)

    def drain_finished(self) -> list[dict[str, Any]]:
        """Batches closed since the last call, as the API shows them (for InfluxDB)."""
        with self._lock:
            finished = list(self._finished)
            self._finished.clear()
        return finished

    def _forget(self, batch_id: str) -> None:
        batch = self.store.get_batch(batch_id)
        with self._lock:
            if batch is not None:
                self._finished.append(batch)
            self._left.pop(batch_id, None)
            self._deadline.pop(batch_id, None)
            self._urgent.discard(batch_id)
            self._started.discard(batch_id)
            self._finalizing_since.pop(batch_id, None)
            self._pooled.discard(batch_id)
            self._energy_owed.pop(batch_id, None)
            self._heap = [item for item in self._heap if item[3].batch_id != batch_id]
            heapq.heapify(self._heap)

    def _validate(self, batch_id: str, file_id: str, endpoint: str) -> None:
        path = self.store.file_path(file_id)
        try:
            with path.open(encoding="utf-8") as lines:  # line by line: a 200 MB file is never one string
                requests, errors = parse_requests(lines, endpoint, self.cfg.max_requests)
        except (OSError, UnicodeDecodeError) as exc:
            self.store.fail_batch(batch_id, [_error("invalid_file", f"The input file cannot be read: {exc}")])
            return
        if errors:
            _LOGGER.warning("batch %s failed validation: %s", batch_id, errors[0]["message"])
            self.store.fail_batch(batch_id, errors)
            return
        row = self.store.batch_row(batch_id)
        assert row is not None
        self.store.insert_requests(batch_id, requests)  # the long write, with the queue free for the workers
        queued = [
            QueuedRequest(batch_id, line, cid, url, body, row["expires_at"], row["seq"])
            for line, cid, url, body in requests
        ]
        pooled = self.pool is not None and self.pool.publish_batch(queued)  # else (NATS away) it runs here
        if pooled:
            self.store.set_meta(f"pooled:{batch_id}", "1")
        with self._lock:  # only the pushes: the control thread reads the queue every tick
            if pooled:
                self._pooled.add(batch_id)
            for req in queued:
                (self._count if pooled else self._push)(req)
        self.store.start_batch(batch_id, len(requests))  # whoever sees it in progress sees its requests queued
        due = datetime.fromtimestamp(row["expires_at"], UTC).astimezone().isoformat(timespec="minutes")
        where = f"in house {self.pool.cfg.name}'s pool" if pooled and self.pool is not None else "here"
        _LOGGER.info("batch %s: %d request(s) queued %s, due %s", batch_id, len(requests), where, due)
        self._notify()


def work_for_plan(
    work: Sequence[tuple[float, float]], *, full_speedup: float, full_heat_w: float
) -> tuple[tuple[float, float], ...]:
    """The work due as the planner takes it: (deadline less ``MARGIN_S``, heat in J its work makes at
    full power), from (deadline, seconds at the efficient cap). Making that heat before then, at any
    power up to full, does the work: work per joule only grows below full power."""
    return tuple((d - MARGIN_S, need_s / full_speedup * full_heat_w) for d, need_s in work)


def at_risk(now_s: float, batches: Sequence[tuple[float, float]], *, planned: bool = False) -> int:
    """How many of the batches (deadline, seconds of work at full rate; earliest deadline first)
    must run now: all up to the last one whose work, with everything due before it, no longer
    fits in its time left with ``SAFETY`` and ``MARGIN_S`` to spare. ``planned``: the planner's
    plan makes the work's heat before the deadlines, where the room wants it; the rule then
    waits until the work only just fits (``PLANNED_SAFETY``) and is the plan's safety net.
    Used by the service and the simulator."""
    safety = PLANNED_SAFETY if planned else SAFETY
    work_s, count = 0.0, 0
    for i, (deadline_s, need_s) in enumerate(batches):
        work_s += need_s
        if work_s * safety + MARGIN_S >= deadline_s - now_s:
            count = i + 1
    return count


def _error(code: str, message: str, *, line: int | None = None, param: str | None = None) -> dict[str, Any]:
    return {"code": code, "message": message, "param": param, "line": line}


MAX_ERRORS = 100


def parse_requests(
    text: str | Iterable[str], endpoint: str, max_requests: int
) -> tuple[list[tuple[int, str, str, str]], list[dict[str, Any]]]:
    """The input file's lines as (line, custom_id, url, body as compact JSON), or the errors the
    OpenAI API would list."""
    requests: list[tuple[int, str, str, str]] = []
    errors: list[dict[str, Any]] = []
    seen: set[str] = set()
    models: set[str] = set()
    for lineno, raw in enumerate(text.splitlines() if isinstance(text, str) else text, start=1):
        if not raw.strip():
            continue
        if len(errors) >= MAX_ERRORS:
            break
        try:
            item = parse_json(raw)
        except UntrustedJsonError as exc:
            errors.append(
                _error("invalid_json_line", f"This line is not parseable as valid JSON ({exc}).", line=lineno)
            )
            continue
        if not isinstance(item, dict):
            errors.append(_error("invalid_json_line", "This line is not a JSON object.", line=lineno))
            continue
        problem = _line_problem(item, endpoint)
        if problem is not None:
            errors.append({**problem, "line": lineno})
            continue
        custom_id, body = item["custom_id"], item["body"]
        if custom_id in seen:
            errors.append(
                _error(
                    "duplicate_custom_id",
                    f"The custom_id {custom_id!r} is used more than once; each request needs its own.",
                    line=lineno,
                    param="custom_id",
                )
            )
            continue
        seen.add(custom_id)
        if isinstance(body.get("model"), str):
            models.add(body["model"])
        requests.append((lineno, custom_id, item["url"], json.dumps(body, separators=(",", ":"), ensure_ascii=False)))
    if not errors and not requests:
        errors.append(_error("empty_file", "The input file has no requests."))
    if len(requests) > max_requests:
        errors.append(
            _error("too_many_tasks", f"The batch has {len(requests)} requests; at most {max_requests} are allowed.")
        )
    if len(models) > 1:
        errors.append(
            _error("model_mismatch", f"All requests of a batch must use the same model; found {sorted(models)}.")
        )
    return requests, errors


def _line_problem(item: dict[str, Any], endpoint: str) -> dict[str, Any] | None:  # noqa: PLR0911 - one per rule
    for key in ("custom_id", "method", "url", "body"):
        if key not in item:
            return _error("missing_required_parameter", f"Missing required parameter: {key!r}.", param=key)
    if not isinstance(item["custom_id"], str) or not item["custom_id"]:
        return _error("invalid_request", "custom_id must be a non-empty string.", param="custom_id")
    if item["method"] != "POST":
        return _error("invalid_request", "Only the POST method is supported.", param="method")
    if item["url"] not in ENDPOINTS:
        return _error("invalid_url", f"Unknown endpoint {item['url']!r}; one of {', '.join(ENDPOINTS)}.", param="url")
    if item["url"] != endpoint:
        return _error(
            "url_mismatch", f"The line's url {item['url']!r} is not the batch's endpoint {endpoint!r}.", param="url"
        )
    if not isinstance(item["body"], dict):
        return _error("invalid_request", "body must be a JSON object.", param="body")
    if item["body"].get("stream"):
        return _error("invalid_request", "Streaming is not supported in a batch.", param="body.stream")
    return None
