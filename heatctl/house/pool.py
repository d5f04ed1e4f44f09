"""The house's pool of batch work on NATS JetStream: one work-queue stream, pulled where heat is wanted.

A batch created on any node stays that node's record (its store, its output file); with a house
its requests are published to the house's work stream (``heatctl_<house>_work``, subject
``heatctl.<house>.work.<origin>.<batch>``), one message per request, and the node keeps count of
what is left. Every node's inference workers pull from one durable consumer (``workers``), and
only while their level lets them (the room wants heat, or the house's deadlines need the work):
the pull is the lever, so the work runs where its heat is wanted.

A pulled request is acked only once its result is stored at the batch's node: in its own store
when the batch is this node's, else on the house's results stream (``heatctl.<house>.results.
<origin>``), which the origin reads and records before it acks that. A node that dies holding a
request has it run elsewhere once ``ack_wait_s`` passes (progress acks keep a long request
alive); the origin records each line once, so each ``custom_id`` is in the output once however
often it ran. A cancelled or expired batch's waiting requests are purged from the stream.

With ``fleet:`` the house's nats-server is a leaf node of a fleet hub: when the house's pool has
nothing for a node whose room wants heat, it pulls from the hub's pool (through the hub's
JetStream domain) and sends the results to the hub's results stream the same way.

Threads: inference workers call ``take``, ``complete`` and ``release``, which never wait on the
network; the batch manager calls ``publish_batch``, which waits for the stream's acks; all the
network work runs on the house thread's event loop (``serve``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from heatctl.batch.store import QueuedRequest
from heatctl.config import HouseConfig
from heatctl.errors import plain

_LOGGER = logging.getLogger(__name__)
FETCH_WAIT_S = 1.0  # a pull waits this long for requests (on a busy machine the server's answer is slow)
HOLD_S = 3.0  # a pulled request no worker took within this is handed back (nak) for the others
MAX_FETCH = 16
PUBLISH_CHUNK = 256
RESULTS_BATCH = 16
RESULTS_MAX_AGE_S = 7 * 86400  # results not yet read by their origin (it was down) wait this long


@dataclass(frozen=True, slots=True)
class PooledRequest(QueuedRequest):
    origin: str  # the node whose batch it is
    pool: str  # the pool it came from: the house's name, or the fleet's

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.pool, self.batch_id, self.line)


class Pool:
    """One pool's streams and its JetStream context: the house's own, or the fleet hub's through its domain."""

    def __init__(self, name: str, js: Any) -> None:
        self.name = name
        self.js = js
        self.stream = f"heatctl_{name}_work"
        self.results = f"heatctl_{name}_results"
        self.sub: Any = None

    def work_subject(self, origin: str, batch_id: str) -> str:
        return f"heatctl.{self.name}.work.{origin}.{batch_id}"

    def results_subject(self, origin: str) -> str:
        return f"heatctl.{self.name}.results.{origin}"

    async def open(self, ack_wait_s: float) -> None:
        """The streams and the shared pull consumer, made if missing (every node may be first)."""
        if self.sub is not None:
            return
        from nats.js.api import AckPolicy, ConsumerConfig, RetentionPolicy, StorageType, StreamConfig

        await _ensure_stream(
            self.js,
            StreamConfig(
                name=self.stream,
                subjects=[f"heatctl.{self.name}.work.>"],
                retention=RetentionPolicy.WORK_QUEUE,
                storage=StorageType.FILE,
            ),
        )
        await _ensure_stream(
            self.js,
            StreamConfig(
                name=self.results,
                subjects=[f"heatctl.{self.name}.results.>"],
                storage=StorageType.FILE,
                max_age=RESULTS_MAX_AGE_S,
            ),
        )
        self.sub = await self.js.pull_subscribe(
            f"heatctl.{self.name}.work.>",
            durable="workers",
            stream=self.stream,
            config=ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, ack_wait=ack_wait_s, max_deliver=-1),
        )

    async def waiting(self) -> tuple[int, int]:
        """(requests waiting in the pool, requests pulled and not yet acked), house-wide."""
        info = await self.js.consumer_info(self.stream, "workers", timeout=2)
        return int(info.num_pending or 0), int(info.num_ack_pending or 0)


async def _ensure_stream(js: Any, config: Any) -> None:
    from nats.js.errors import NotFoundError

    try:
        await js.stream_info(config.name)
    except NotFoundError:
        await js.add_stream(config)


def request_message(req: QueuedRequest, origin: str) -> bytes:
    return json.dumps(
        {
            "o": origin,
            "b": req.batch_id,
            "l": req.line,
            "c": req.custom_id,
            "u": req.url,
            "body": req.body_json,
            "e": req.expires_at,
            "s": req.batch_seq,
        },
        separators=(",", ":"),
    ).encode()


def parse_request(data: bytes, pool: str) -> PooledRequest | None:
    """A pool message as a request, or None when it cannot be read (it is then dropped, said in the log)."""
    try:
        raw = json.loads(data)
        return PooledRequest(
            str(raw["b"]),
            int(raw["l"]),
            str(raw["c"]),
            str(raw["u"]),
            str(raw["body"]),
            int(raw["e"]),
            int(raw["s"]),
            str(raw["o"]),
            pool,
        )
    except (ValueError, TypeError, KeyError):
        return None


class PoolLink:
    """This node's side of the pool (see the module's docstring)."""

    def __init__(
        self,
        cfg: HouseConfig,
        node_id: str,
        *,
        loop: asyncio.AbstractEventLoop,
        stop: threading.Event,
        wall_fn: Callable[[], float] = time.time,
    ) -> None:
        self.cfg = cfg
        self.node_id = node_id
        self._loop = loop
        self._stop = stop
        self._wall_fn = wall_fn
        self._lock = threading.Lock()
        self._buffer: deque[tuple[PooledRequest, float]] = deque()  # pulled, no worker yet (since, monotonic)
        self._msgs: dict[tuple[str, str, int], Any] = {}  # pulled and not yet acked or handed back
        self._running: set[tuple[str, str, int]] = set()
        self._outbox: deque[tuple[Any, ...]] = deque()
        self._want = 0  # workers that found nothing since the last fetch
        self._allowed = False
        self._pull_wake: asyncio.Event | None = None
        self._out_wake: asyncio.Event | None = None
        self._listeners: list[Callable[[], None]] = []
        self._house: Pool | None = None
        self.on_result: Callable[..., bool] | None = None  # BatchQueue.record_pooled
        self.on_energy: Callable[[str, str, list[float]], None] | None = None  # BatchQueue.add_pooled_energy
        self.peer_live: Callable[[str], bool] = lambda node: True  # the house's: a node still reporting
        self.waiting = 0  # in the house's pool (and the fleet's), as last seen
        self.pulled = 0  # pulled by some node and not yet acked, house-wide
        self.done_here = 0
        self.problem: str | None = None

    # --- the workers' side (any thread) ----------------------------------------------------------

    def subscribe(self, listener: Callable[[], None]) -> None:
        self._listeners.append(listener)

    def has_work(self) -> bool:
        with self._lock:
            return bool(self._buffer) or self.waiting > 0

    def set_allowed(self, allowed: bool) -> None:
        """Whether this node may pull now; when it may not, what it pulled and did not start goes back."""
        with self._lock:
            self._allowed = allowed
            dropped = [] if allowed else [req for req, _ in self._buffer]
            if not allowed:
                self._buffer.clear()
            self._outbox.extend(("nak", req.key) for req in dropped)
        if dropped:
            self._wake_out()

    def take(self) -> PooledRequest | None:
        """A pulled request for a worker, or None (and a pull is asked for)."""
        with self._lock:
            if not self._allowed:
                return None
            if self._buffer:
                req = self._buffer.popleft()[0]
                self._running.add(req.key)
                return req
            self._want = min(self._want + 1, MAX_FETCH)
        self._wake(self._pull_wake)
        return None

    def release(self, req: PooledRequest) -> None:
        """Cut off before it finished: back to the pool at once, for whichever node wants heat."""
        with self._lock:
            self._running.discard(req.key)
            self._outbox.append(("nak", req.key))
        self._wake_out()

    def complete(self, req: PooledRequest, ok: bool, line: dict[str, Any], tokens: int, elapsed_s: float) -> None:
        """The request's result: stored here when the batch is this node's (and then acked), else sent
        to its origin's results (and acked once the stream has it). Raises if a local store fails."""
        if req.pool == self.cfg.name and req.origin == self.node_id:
            assert self.on_result is not None
            self.on_result(req, ok, line, tokens=tokens, node=self.node_id, elapsed_s=elapsed_s)
            item: tuple[Any, ...] = ("ack", req.key)
        else:
            result = {"k": "result", "b": req.batch_id, "l": req.line, "c": req.custom_id, "ok": ok, "r": line}
            result |= {"t": tokens, "n": self.node_id, "s": elapsed_s}
            item = ("result", req.key, req.pool, req.origin, json.dumps(result, separators=(",", ":")).encode())
        with self._lock:
            self._running.discard(req.key)
            self._outbox.append(item)
            self.done_here += 1
        self._wake_out()

    def send_energy(self, pool: str, origin: str, batch_id: str, tally: list[float]) -> None:
        """Energy this node's GPUs spent on another node's batch, for that batch's ``heat``."""
        energy = {"k": "energy", "b": batch_id, "n": self.node_id, "j": tally}
        data = json.dumps(energy, separators=(",", ":")).encode()
        with self._lock:
            self._outbox.append(("energy", None, pool, origin, data))
        self._wake_out()

    # --- the batch manager's side -------------------------------------------------------------------

    def publish_batch(self, requests: list[QueuedRequest]) -> bool:
        """Every request into the house's pool, each acked by the stream; False (and nothing left
        in the pool) when NATS cannot take them now: the batch then runs on this node alone."""
        if self._house is None or not requests:
            return False
        future = asyncio.run_coroutine_threadsafe(self._publish_all(self._house, requests), self._loop)
        try:
            future.result(timeout=30.0 + len(requests) / 200)
        except Exception as exc:  # NATS went away midway, or too slow: whatever reached the pool is purged
            future.cancel()
            _LOGGER.warning("house %s: the batch's requests could not go to the pool: %s", self.cfg.name, plain(exc))
            self.drop_batch(requests[0].batch_id)
            return False
        return True

    def drop_batch(self, batch_id: str) -> None:
        """The batch was cancelled or expired: its requests still waiting leave the pool."""
        with self._lock:
            self._outbox.append(("purge", None, batch_id))
        self._wake_out()

    # --- the house thread ----------------------------------------------------------------------------

    async def serve(self, nc: Any) -> None:
        """While connected: pull, send results and acks, keep long requests alive, read this node's results."""
        self._pull_wake, self._out_wake = asyncio.Event(), asyncio.Event()
        house = Pool(self.cfg.name, nc.jetstream())
        fleet = Pool(self.cfg.fleet.name, nc.jetstream(domain=self.cfg.fleet.domain)) if self.cfg.fleet else None
        try:
            await house.open(self.cfg.ack_wait_s)
            self._house = house
            async with asyncio.TaskGroup() as tasks:  # one failing ends them all: serve is called again
                tasks.create_task(self._pull_loop(house, fleet))
                tasks.create_task(self._outbox_loop({p.name: p for p in (house, fleet) if p is not None}))
                tasks.create_task(self._results_loop(house))
                tasks.create_task(self._progress_loop())
        finally:
            self._house = None
            await self._hand_back_all()

    async def _hand_back_all(self) -> None:
        """Leaving (heatctl stops, or the connection is gone): what this node pulled and did not finish
        goes back to the pool now where the server still hears it, else after its ack deadline."""
        with self._lock:
            held, self._msgs = list(self._msgs.values()), {}
            self._buffer.clear()
            self._running.clear()
        for msg in held:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(msg.nak(), 1.0)

    async def _pull_loop(self, house: Pool, fleet: Pool | None) -> None:
        fleet_open = False
        while not self._stop.is_set():
            await _wait(self._pull_wake, 1.0)
            self._hand_back_unclaimed()
            with self._lock:
                want, self._want = self._want, 0
                allowed = self._allowed
            try:
                if fleet is not None and not fleet_open:
                    with contextlib.suppress(Exception):  # the hub may be out of reach: the house goes on
                        await fleet.open(self.cfg.ack_wait_s)
                        fleet_open = True
                got = await self._fetch(house, want) if want and allowed else 0
                if want and allowed and not got and fleet_open:
                    assert fleet is not None
                    got = await self._fetch(fleet, want)
                if got:
                    for listener in self._listeners:
                        listener()
                await self._count_waiting(house, fleet if fleet_open else None)
                self.say(None)
            except Exception as exc:  # NATS away a moment: pulled again next time
                self.say(f"the pool: {plain(exc) or type(exc).__name__}")
                await asyncio.sleep(0.5)

    async def _fetch(self, pool: Pool, want: int) -> int:
        import nats.errors

        try:
            msgs = await pool.sub.fetch(batch=want, timeout=FETCH_WAIT_S)
        except (nats.errors.TimeoutError, TimeoutError):  # nothing waiting (nats-py raises either)
            return 0
        now_wall, now = self._wall_fn(), time.monotonic()
        taken = 0
        for msg in msgs:
            req = parse_request(msg.data, pool.name)
            if req is None:
                _LOGGER.warning("house %s: an unreadable request in the pool was dropped", pool.name)
                await msg.term()
                continue
            if req.expires_at <= now_wall:  # its batch has expired at its origin: nothing to run
                await msg.ack()
                continue
            with self._lock:
                self._msgs[req.key] = msg
                self._buffer.append((req, now))
            taken += 1
        return taken

    def _hand_back_unclaimed(self) -> None:
        now = time.monotonic()
        with self._lock:
            while self._buffer and now - self._buffer[0][1] > HOLD_S:
                self._outbox.append(("nak", self._buffer.popleft()[0].key))
        self._wake_out()

    async def _count_waiting(self, house: Pool, fleet: Pool | None) -> None:
        """The pool's counts for the state and ``has_work`` (kept as they were when the server is slow)."""
        try:
            waiting, pulled = await house.waiting()
        except TimeoutError:
            return
        if fleet is not None:
            with contextlib.suppress(Exception):
                more, _ = await fleet.waiting()
                waiting += more
        self.waiting, self.pulled = waiting, pulled

    async def _outbox_loop(self, pools: dict[str, Pool]) -> None:
        while not self._stop.is_set():
            await _wait(self._out_wake, 1.0)
            while True:
                with self._lock:
                    if not self._outbox:
                        break
                    item = self._outbox[0]
                try:
                    await self._send(item, pools)
                except Exception as exc:  # NATS away: the item waits at the head of the outbox
                    self.say(f"the pool: {plain(exc) or type(exc).__name__}")
                    await asyncio.sleep(1.0)
                    break
                with self._lock:
                    self._outbox.popleft()

    async def _send(self, item: tuple[Any, ...], pools: dict[str, Pool]) -> None:
        kind, key = item[0], item[1]
        if kind in ("result", "energy"):
            pool, origin, data = pools.get(item[2]), item[3], item[4]
            if pool is not None:
                await pool.js.publish(pool.results_subject(origin), data, timeout=5)
        elif kind == "purge":
            assert self._house is not None
            await self._house.js.purge_stream(
                self._house.stream, subject=self._house.work_subject(self.node_id, item[2])
            )
        if key is None:
            return
        with self._lock:
            msg = self._msgs.pop(key, None)
        if msg is not None:
            with contextlib.suppress(Exception):  # an ack that cannot go: the request runs again, recorded once
                await (msg.nak() if kind == "nak" else msg.ack())

    async def _results_loop(self, house: Pool) -> None:
        import nats.errors

        sub = await house.js.pull_subscribe(
            house.results_subject(self.node_id), durable=f"results-{self.node_id}", stream=house.results
        )
        while not self._stop.is_set():
            try:
                msgs = await sub.fetch(batch=RESULTS_BATCH, timeout=1.0)
            except (nats.errors.TimeoutError, TimeoutError):
                continue
            left = list(msgs)
            try:
                while left and not self._stop.is_set():
                    await asyncio.get_running_loop().run_in_executor(None, self._record, left[0].data)
                    await left.pop(0).ack()
            finally:  # stopping: what was fetched and not recorded is delivered again at once, not in 30 s
                for msg in left:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(msg.nak(), 1.0)

    def _record(self, data: bytes) -> None:
        """A result or energy report for one of this node's batches, into its store (the store's own
        thread-safety; run off the event loop, as a commit waits for the disk)."""
        try:
            raw = json.loads(data)
            batch_id = str(raw["b"])
            if raw["k"] == "energy":
                if self.on_energy is not None:
                    self.on_energy(batch_id, str(raw["n"]), [float(v) for v in raw["j"]])
                return
            req = QueuedRequest(batch_id, int(raw["l"]), str(raw["c"]), "", "", 0, 0)
            if self.on_result is not None:
                ok, line = bool(raw["ok"]), raw["r"]
                self.on_result(req, ok, line, tokens=int(raw["t"]), node=str(raw["n"]), elapsed_s=float(raw["s"]))
        except (ValueError, TypeError, KeyError):
            _LOGGER.warning("house %s: an unreadable result was dropped", self.cfg.name)

    async def _progress_loop(self) -> None:
        """Requests still running tell the stream so every third of the ack deadline."""
        while not self._stop.is_set():
            await asyncio.sleep(max(self.cfg.ack_wait_s / 3, 0.5))
            with self._lock:
                running = [self._msgs[key] for key in self._running if key in self._msgs]
            for msg in running:
                with contextlib.suppress(Exception):
                    await msg.in_progress()

    async def _publish_all(self, pool: Pool, requests: list[QueuedRequest]) -> None:
        for start in range(0, len(requests), PUBLISH_CHUNK):
            await asyncio.gather(
                *(
                    pool.js.publish(
                        pool.work_subject(self.node_id, req.batch_id),
                        request_message(req, self.node_id),
                        timeout=10,
                        headers={"Nats-Msg-Id": f"{self.node_id}.{req.batch_id}.{req.line}"},
                    )
                    for req in requests[start : start + PUBLISH_CHUNK]
                )
            )

    # --- helpers --------------------------------------------------------------------------------------

    def _wake(self, event: asyncio.Event | None) -> None:
        if event is not None and not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(event.set)

    def _wake_out(self) -> None:
        self._wake(self._out_wake)

    def say(self, problem: str | None) -> None:
        if problem != self.problem:
            if problem is None:
                _LOGGER.info("house %s: the pool answers again", self.cfg.name)
            else:
                _LOGGER.warning("house %s: %s; retrying", self.cfg.name, problem)
        self.problem = problem

    def state(self) -> dict[str, Any]:
        with self._lock:
            buffered, running = len(self._buffer), len(self._running)
        return {
            "waiting": self.waiting,
            "in_flight": self.pulled,
            "here": buffered + running,
            "done_here": self.done_here,
        }


async def _wait(event: asyncio.Event | None, timeout_s: float) -> None:
    if event is None:
        await asyncio.sleep(timeout_s)
        return
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), timeout_s)
    event.clear()
