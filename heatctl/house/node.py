"""A node's side of the house: its report into the house's key-value bucket, its peers' reports
read back, and its share of the budget for the tick policy (``budget_w``).

The NATS client (``nats-py``) runs on a thread of its own with its own event loop; every
``publish_every_s`` it puts this node's report (``heatctl_<house>`` bucket, key = node id) and
reads every node's. The control thread only reads what that thread last saw, under a lock: a
slow or absent NATS never holds up a tick. Fail closed: a peer not heard for ``stale_after_s``
counts at its full capacity; before the house was ever seen, the share is the budget over
``nodes``, and while fewer than ``nodes`` have reported, an equal share is set aside for each
missing one; so the house's heaters together stay within the budget whatever NATS does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from heatctl.config import HouseConfig
from heatctl.errors import plain
from heatctl.house.budget import PeerState, is_live, pool_work, split, surplus_w
from heatctl.house.pool import PoolLink

_LOGGER = logging.getLogger(__name__)
RETRY_S = 2.0
GRID_FRESH_S = 60.0  # a meter reading older than this adds no surplus


class NodeHouse:
    def __init__(
        self, cfg: HouseConfig, node_id: str, *, pool: bool = False, wall_fn: Callable[[], float] = time.time
    ) -> None:
        self.cfg = cfg
        self.node_id = node_id
        self._wall_fn = wall_fn
        self._lock = threading.Lock()
        self._own: PeerState | None = None
        self._peers: dict[str, PeerState | None] = {}  # what the bucket said, self included
        self._seen_s: float | None = None  # when the bucket was last read (wall)
        self.connected = False
        self.problem: str | None = None
        self._stop = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="house", daemon=True)
        self.bucket = f"heatctl_{cfg.name}"
        self._grid: tuple[float, float] | None = None  # the house's meter (W, wall time read)
        # With a Batch API on this node: the house's one pool of work (see ``house.pool``).
        self.pool = PoolLink(cfg, node_id, loop=self._loop, stop=self._stop, wall_fn=wall_fn) if pool else None
        if self.pool is not None:
            self.pool.peer_live = self.peer_live

    # --- the control thread's side ------------------------------------------------------------

    def report(
        self,
        *,
        comfort_w: float,
        due_w: float,
        store_w: float,
        capacity_w: float,
        slots: int = 0,
        s_per_request: float = 0.0,
        work: tuple[tuple[float, float], ...] = (),
        floor_w: float = 0.0,
        draw_w: float = 0.0,
    ) -> None:
        """This tick's wants and capacity, and with a pool its slots and its batches' work left
        (what the next publish says)."""
        own = PeerState(
            max(comfort_w, 0.0),
            max(due_w, 0.0),
            max(store_w, 0.0),
            max(capacity_w, 0.0),
            self._wall_fn(),
            float(slots),
            s_per_request,
            work,
            max(floor_w, 0.0),
            max(draw_w, 0.0),
            self._fresh_grid_w(),
        )
        with self._lock:
            self._own = own

    def put_grid_w(self, value_w: float) -> None:
        """The house's meter, as read now (any thread)."""
        with self._lock:
            self._grid = (value_w, self._wall_fn())

    def _fresh_grid_w(self) -> float | None:
        with self._lock:
            grid = self._grid
        return grid[0] if grid is not None and self._wall_fn() - grid[1] <= GRID_FRESH_S else None

    def peer_live(self, node: str) -> bool:
        """Whether ``node`` reported within ``stale_after_s`` (as last read)."""
        with self._lock:
            peer = self._peers.get(node)
        return is_live(peer, self._wall_fn(), self.cfg.stale_after_s)

    def _peers_now(self) -> tuple[dict[str, PeerState | None], bool, float | None, float]:
        """The peers as last read with this node's own report, whether it has one, when the bucket
        was last read, and now."""
        now = self._wall_fn()
        with self._lock:
            own, peers, seen = self._own, dict(self._peers), self._seen_s
        if own is not None:
            peers[self.node_id] = own
        return peers, own is not None, seen, now

    def pool_work(self) -> list[tuple[float, float]]:
        """The house's pooled batches: (deadline, seconds of work left with every live node busy)."""
        peers, _own, _seen, now = self._peers_now()
        return pool_work(peers, now, self.cfg.stale_after_s)

    def share_w(self) -> float:
        """This node's share of the house budget now (the policy's ``budget_w``)."""
        return self._shares()[0]

    def _shares(self) -> tuple[float, dict[str, float], dict[str, PeerState | None], float]:
        """(this node's share, every node's share, the peers as last read with this node's own
        report, now). Before the house was ever seen, an equal share keeps the sum within the budget."""
        peers, own, seen, now = self._peers_now()
        if seen is None:
            return self.cfg.budget_w / self.cfg.nodes, {}, peers, now
        shares = split(self._known_budget_w(peers, now), peers, now, self.cfg.stale_after_s)
        own_share = shares.get(self.node_id, 0.0) if own else self.cfg.budget_w / self.cfg.nodes
        return own_share, shares, peers, now

    def _known_budget_w(self, peers: dict[str, PeerState | None], now: float) -> float:
        """The budget (with the solar surplus) less an equal share for each of the ``nodes`` not heard
        of yet (a heater that has not reported may be heating: until it does, its share stays set aside)."""
        missing = max(self.cfg.nodes - len(peers), 0)
        surplus = surplus_w(peers, now, self.cfg.stale_after_s) if self.cfg.grid_power else 0.0
        return self.cfg.budget_w + surplus - missing * self.cfg.budget_w / self.cfg.nodes

    def state(self) -> dict[str, Any]:
        """The state's ``house`` block."""
        share_w, shares, peers, now = self._shares()
        return {
            "house": {
                "name": self.cfg.name,
                "connected": self.connected,
                "budget_w": self.cfg.budget_w,
                **(
                    {"surplus_w": round(surplus_w(peers, now, self.cfg.stale_after_s), 1)}
                    if self.cfg.grid_power
                    else {}
                ),
                "share_w": round(share_w, 1),
                "problem": self.problem,
                **({"pool": self.pool.state()} if self.pool is not None else {}),
                "nodes": {
                    node: {
                        "share_w": round(shares.get(node, 0.0), 1),
                        "silent": not is_live(peer, now, self.cfg.stale_after_s),
                        "comfort_w": round(peer.comfort_w, 1) if peer is not None else None,
                        "capacity_w": round(peer.capacity_w, 1) if peer is not None else None,
                    }
                    for node, peer in sorted(peers.items())
                },
            }
        }

    # --- the house thread ---------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10.0)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._main())
        finally:  # nats-py's reconnect and read tasks end here, not after the loop is gone
            pending = asyncio.all_tasks(self._loop)
            for task in pending:
                task.cancel()
            self._loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            self._loop.run_until_complete(self._loop.shutdown_asyncgens())
            self._loop.close()

    async def _main(self) -> None:
        import nats

        while not self._stop.is_set():
            try:
                nc = await nats.connect(
                    servers=[self.cfg.nats],
                    connect_timeout=2,
                    reconnect_time_wait=1,
                    max_reconnect_attempts=-1,
                    allow_reconnect=True,
                    error_cb=self._on_error,
                    disconnected_cb=self._on_disconnected,
                    reconnected_cb=self._on_reconnected,
                    name=f"heatctl-{self.node_id}",
                )
            except Exception as exc:  # nats-py's own errors and the OS's alike: said, and tried again
                self._say(f"cannot reach NATS at {self.cfg.nats}: {plain(exc)}")
                await self._sleep(RETRY_S)
                continue
            self.connected = True
            try:
                await asyncio.gather(self._cycle(nc), *([self._serve_pool(nc)] if self.pool is not None else []))
            finally:
                self.connected = False
                with contextlib.suppress(Exception):
                    await nc.close()

    async def _cycle(self, nc: Any) -> None:
        js = nc.jetstream()
        kv = None
        while not self._stop.is_set():
            try:
                kv = kv or await self._bucket(js)
                with self._lock:
                    own = self._own
                if own is not None:
                    await kv.put(self.node_id, own.to_json())
                peers = await self._read_all(kv)
                with self._lock:
                    self._peers, self._seen_s = peers, self._wall_fn()
                if self.problem is not None:
                    _LOGGER.info("house %s: reports again through %s", self.cfg.name, self.cfg.nats)
                self.problem = None
            except Exception as exc:  # NATS down, the bucket gone with a restarted server: again next time
                kv = None
                self._say(f"house {self.cfg.name}: {plain(exc) or type(exc).__name__}")
            await self._sleep(self.cfg.publish_every_s)

    async def _serve_pool(self, nc: Any) -> None:
        """The pool, for as long as the connection: opened again after a failure (a restarted server)."""
        assert self.pool is not None
        while not self._stop.is_set():
            try:
                await self.pool.serve(nc)
            except Exception as exc:  # the streams not there yet, NATS away: said, and tried again
                if self._stop.is_set():
                    return
                self.pool.say(f"the pool: {plain(exc) or type(exc).__name__}")
                await self._sleep(RETRY_S)

    async def _bucket(self, js: Any) -> Any:
        from nats.js.errors import BucketNotFoundError

        try:
            return await js.key_value(self.bucket)
        except BucketNotFoundError:
            return await js.create_key_value(bucket=self.bucket, history=1)

    async def _read_all(self, kv: Any) -> dict[str, PeerState | None]:
        from nats.js.errors import NoKeysError

        try:
            keys = await kv.keys()
        except NoKeysError:
            return {}
        peers: dict[str, PeerState | None] = {}
        for key in keys:
            entry = await kv.get(key)
            peers[key] = PeerState.from_json(entry.value or b"")
        return peers

    async def _sleep(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while not self._stop.is_set() and time.monotonic() < end:
            await asyncio.sleep(min(0.1, end - time.monotonic()))

    def _say(self, problem: str) -> None:
        if problem != self.problem:
            _LOGGER.warning("%s; the house's budget is shared as if the others ran flat out", problem)
        self.problem = problem

    async def _on_error(self, exc: Exception) -> None:
        _LOGGER.debug("NATS: %s", exc)

    async def _on_disconnected(self) -> None:
        self.connected = False

    async def _on_reconnected(self) -> None:
        self.connected = True
