"""InfluxDB output (v2 write API via influxdb-client): never slows or stops control.

The control thread only turns the tick's snapshot into line-protocol points and appends them
to a bounded buffer. A writer thread of its own sends them in order; while the server is
unreachable they wait (the oldest are dropped when the buffer is full, and counted); points
the server rejects as malformed are logged once with its reason and dropped, not retried.
With ``spool`` set, unsent points are kept on disk so a restart during an outage loses none.
"""

from __future__ import annotations

import itertools
import logging
import math
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

from heatctl.config import InfluxConfig
from heatctl.errors import plain
from heatctl.publish.mqtt_state import NodeSnapshot
from heatctl.state import atomic_write

_LOGGER = logging.getLogger(__name__)
BATCH_POINTS = 5000
SPOOL_EVERY_S = 30.0


def _escape_tag(value: str) -> str:
    return value.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=").replace(" ", "\\ ")


def line(measurement: str, tags: dict[str, str], fields: dict[str, float | None], time_ns: int) -> str | None:
    """One point in line protocol; every field a float so its type never changes across restarts."""
    values = [f"{k}={float(v)!r}" for k, v in fields.items() if v is not None and math.isfinite(v)]
    if not values:
        return None
    tag_text = "".join(f",{k}={_escape_tag(v)}" for k, v in sorted(tags.items()) if v)
    return f"{measurement}{tag_text} {','.join(values)} {time_ns}"


STAGES = {"given back": 0.0, "held": 1.0, "released": 2.0}
PLANNER_STATUS = {"fallback": 0.0, "learning": 1.0, "active": 2.0}


def snapshot_lines(snap: NodeSnapshot, node: str, extra_tags: dict[str, str], time_ns: int) -> list[str]:
    """The points of one tick: measurements zone, gpu and node (DESIGN.md's schema)."""
    base = {**extra_tags, "node": node}
    out: list[str | None] = []
    main = snap.extra.get("main_heating") or {}
    planned = (snap.extra.get("planner") or {}).get("zones", {})
    for name, z in snap.zones.items():
        stage = main.get(name)
        plan = planned.get(name) or {}
        model = plan.get("model") or {}
        out.append(
            line(
                "zone",
                {**base, "zone": name},
                {
                    "temperature_c": z.temperature_c,
                    "setpoint_c": z.setpoint_c,
                    "demand_w": z.demand_w,
                    "pid_p": z.pid_p,
                    "pid_i": z.pid_i,
                    "pid_d": z.pid_d,
                    "failsafe": 1.0 if z.failsafe else 0.0,
                    # the main heating: 0 given back, 1 held back, 2 released (helping); what it was told
                    "main_stage": STAGES.get(stage["stage"]) if stage else None,
                    "main_setpoint_c": stage.get("setpoint_c") if stage else None,
                    "main_on": (1.0 if stage["on"] else 0.0) if stage and stage.get("on") is not None else None,
                    # the planner: 0 fallback, 1 learning, 2 active; the plan for now; what it learned
                    "planner_status": PLANNER_STATUS.get(plan["status"]) if plan else None,
                    "plan_w": plan.get("plan_w"),
                    "target_c": plan.get("target_c"),
                    "model_ua_w_per_k": model.get("ua_w_per_k"),
                    "model_tau_h": model.get("tau_h"),
                    "model_rmse_k": model.get("fit_rmse_k"),
                    "model_data_h": model.get("data_h"),
                    "model_trusted": (1.0 if model["trusted"] else 0.0) if model else None,
                },
                time_ns,
            )
        )
    for gid, g in snap.gpus.items():
        out.append(
            line(
                "gpu",
                {**base, "gpu": gid, **({"model": g.model} if g.model else {})},
                {
                    "power_w": g.power_w,
                    "power_limit_w": g.power_limit_w,
                    "temperature_c": g.temperature_c,
                    "level": g.level,
                    "work_rate": g.work_rate,
                    "efficiency": g.efficiency_per_kwh,
                    "energy_per_work_j": g.energy_per_work_j,
                    "energy_kwh": snap.counters.gpu_energy_kwh.get(gid, 0.0),
                },
                time_ns,
            )
        )
    c = snap.counters
    batches = snap.extra.get("batches") or {}
    house = snap.extra.get("house") or {}
    pool = house.get("pool") or {}
    out.append(
        line(
            "node",
            base,
            {
                "heat_w": snap.heat_w,
                "energy_kwh": c.energy_kwh,
                "added_kwh": c.added_kwh,
                "heat_reused_kwh": c.heat_reused_kwh,
                "work_done": c.work_done,
                "failsafe": 1.0 if snap.failsafe else 0.0,
                "work_starved": 1.0 if snap.extra.get("work_starved") else 0.0,
                "batch_requests_left": batches.get("requests_left"),
                "batch_due": (1.0 if batches["due"] else 0.0) if "due" in batches else None,
                "house_share_w": house.get("share_w"),  # a house: this node's share of its budget
                "house_budget_w": house.get("budget_w"),
                "pool_waiting": pool.get("waiting"),
                "pool_done_here": pool.get("done_here"),
            },
            time_ns,
        )
    )
    for batch in snap.extra.get("batches_finished", ()):
        heat, counts = batch["heat"], batch["request_counts"]
        out.append(
            line(
                "batch",
                {**base, "batch": batch["id"], "status": batch["status"]},
                {
                    "energy_kwh": heat["energy_kwh"],
                    "heat_reused_share": heat["heat_reused_share"],
                    "j_per_token": heat["j_per_token"],
                    "tokens": heat["tokens"],
                    "completed": counts["completed"],
                    "failed": counts["failed"],
                    "total": counts["total"],
                },
                time_ns,
            )
        )
    return [p for p in out if p is not None]


class InfluxSink:
    """Buffered, ordered, bounded writes from a thread of its own."""

    def __init__(self, cfg: InfluxConfig, node: str, *, state_dir: Path | None = None) -> None:
        from influxdb_client.client.influxdb_client import InfluxDBClient

        self._cfg = cfg
        self._node = node
        token = cfg.token.get_secret_value() if cfg.token else ""
        self._client = InfluxDBClient(
            url=cfg.url, token=token, org=cfg.org, timeout=int(cfg.timeout_s * 1000), verify_ssl=cfg.verify_ssl
        )
        self._buffer: deque[str] = deque()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self.written = 0
        self.dropped = 0
        self.rejected = 0
        self.last_error: str | None = None
        self._last_write_s = -math.inf
        self._spool = Path(cfg.spool).expanduser() if cfg.spool else None
        self._spooled_at_s = -math.inf
        if self._spool is not None:
            self._load_spool()
        self._thread = threading.Thread(target=self._run, name="influx", daemon=True)
        self._thread.start()

    # --- control thread ---------------------------------------------------------------

    def write(self, snap: NodeSnapshot, now_s: float) -> None:
        """Queue this tick's points (at most one per write_interval_s). Never blocks on the network."""
        if self._cfg.write_interval_s is not None and now_s - self._last_write_s < self._cfg.write_interval_s:
            return
        self._last_write_s = now_s
        self.enqueue(snapshot_lines(snap, self._node, self._cfg.tags, time.time_ns()))

    def enqueue(self, lines: list[str]) -> None:
        with self._lock:
            overflow = len(self._buffer) + len(lines) - self._cfg.buffer_points
            if overflow > 0:
                for _ in range(min(overflow, len(self._buffer))):
                    self._buffer.popleft()
                self.dropped += overflow
                _LOGGER.warning(
                    "InfluxDB buffer full (%d points): dropped the %d oldest, %d in all",
                    self._cfg.buffer_points,
                    overflow,
                    self.dropped,
                )
            self._buffer.extend(lines[-self._cfg.buffer_points :])
        self._wake.set()

    @property
    def buffered(self) -> int:
        with self._lock:
            return len(self._buffer)

    def stats(self) -> dict[str, Any]:
        return {"buffered": self.buffered, "written": self.written, "dropped": self.dropped, "rejected": self.rejected}

    def close(self, timeout_s: float = 5.0) -> None:
        """Try to send what is left for a moment; spool the rest."""
        self._wake.set()
        deadline = time.monotonic() + timeout_s
        while self.buffered and time.monotonic() < deadline and self.last_error is None:
            time.sleep(0.05)
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=timeout_s)
        if self._spool is not None:
            self._save_spool()
        self._client.close()  # type: ignore[no-untyped-call]

    # --- writer thread ----------------------------------------------------------------

    def _run(self) -> None:
        # Writer thread: the only one that talks to InfluxDB.
        from influxdb_client.client.write_api import SYNCHRONOUS

        api = self._client.write_api(write_options=SYNCHRONOUS)
        backoff_s = 0.0
        while not self._stop.is_set():
            if backoff_s:
                if self._stop.wait(backoff_s):
                    return
            else:
                self._wake.wait(timeout=1.0)
                self._wake.clear()
            backoff_s = self._drain(api, backoff_s)

    def _drain(self, api: Any, backoff_s: float) -> float:
        """Send everything buffered, in order; returns the backoff before the next try."""
        while not self._stop.is_set():
            with self._lock:
                batch = list(itertools.islice(self._buffer, BATCH_POINTS))
            if not batch:
                if self._spool is not None:
                    self._spool.unlink(missing_ok=True)
                return 0.0
            if self._send(api, batch) == "retry":
                if self._spool is not None and time.monotonic() - self._spooled_at_s >= SPOOL_EVERY_S:
                    self._save_spool()
                return min(max(backoff_s * 2, 1.0), 60.0)
            with self._lock:
                for _ in range(min(len(batch), len(self._buffer))):
                    self._buffer.popleft()
        return 0.0

    def _send(self, api: Any, batch: list[str]) -> str:
        """'ok', 'dropped' (rejected as malformed: logged, not retried) or 'retry'."""
        from influxdb_client.rest import ApiException

        try:
            api.write(bucket=self._cfg.bucket, org=self._cfg.org or None, record=batch)
        except ApiException as exc:
            status = exc.status or 0
            reason = (exc.body or exc.reason or "").strip()[:300]
            if status in (400, 413, 422):
                self.rejected += len(batch)
                _LOGGER.error("InfluxDB rejected %d point(s) (HTTP %d): %s; dropped", len(batch), status, reason)
                return "dropped"
            self._note(f"HTTP {status}: {reason}")
            return "retry"
        except Exception as exc:  # urllib3 and socket errors: the server is away
            self._note(plain(exc))
            return "retry"
        if self.last_error is not None:
            _LOGGER.info("InfluxDB reachable again; sending %d buffered point(s)", self.buffered)
        self.last_error = None
        self.written += len(batch)
        return "ok"

    def _note(self, error: str) -> None:
        if self.last_error is None:
            _LOGGER.warning("InfluxDB write failed (%s); buffering up to %d points", error, self._cfg.buffer_points)
        self.last_error = error

    # --- spool ------------------------------------------------------------------------

    def _save_spool(self) -> None:
        assert self._spool is not None
        self._spooled_at_s = time.monotonic()
        with self._lock:
            lines = list(self._buffer)
        if not lines:
            self._spool.unlink(missing_ok=True)
            return
        try:
            atomic_write(self._spool, "\n".join(lines) + "\n")
        except OSError as exc:
            _LOGGER.error("cannot write the InfluxDB spool %s: %s", self._spool, exc)

    def _load_spool(self) -> None:
        assert self._spool is not None
        try:
            lines = [ln for ln in self._spool.read_text(encoding="utf-8").splitlines() if ln.strip()]
        except FileNotFoundError:
            return
        except (OSError, UnicodeDecodeError) as exc:
            _LOGGER.error("cannot read the InfluxDB spool %s: %s", self._spool, exc)
            return
        self.enqueue(lines)
        _LOGGER.info("loaded %d unsent InfluxDB point(s) from %s", len(lines), self._spool)


def probe_influx(cfg: InfluxConfig, node: str) -> tuple[bool, str, str]:
    """For ``heatctl check``: (ok, detail, fix). Writes one point to prove the token may write."""
    from influxdb_client.client.influxdb_client import InfluxDBClient
    from influxdb_client.client.write_api import SYNCHRONOUS
    from influxdb_client.rest import ApiException

    token = cfg.token.get_secret_value() if cfg.token else ""
    with InfluxDBClient(url=cfg.url, token=token, org=cfg.org, timeout=5000, verify_ssl=cfg.verify_ssl) as client:
        try:
            client.write_api(write_options=SYNCHRONOUS).write(
                bucket=cfg.bucket,
                org=cfg.org or None,
                record=line("heatctl_check", {"node": node}, {"ok": 1.0}, time.time_ns()),
            )
        except ApiException as exc:
            status = exc.status or 0
            fix = (
                "check influxdb.token and its write permission" if status in (401, 403) else "check influxdb.bucket/org"
            )
            return False, f"{cfg.url}: HTTP {status}: {(exc.body or exc.reason or '').strip()[:120]}", fix
        except Exception as exc:
            return False, f"{cfg.url}: {plain(exc)}", "is InfluxDB running? check influxdb.url"
    return True, f"{cfg.url}: wrote a test point to bucket {cfg.bucket}", ""
