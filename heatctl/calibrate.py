"""``heatctl calibrate``: measure a GPU serving an LLM, cap by cap and batch by batch.

For each power cap (the driver's minimum to its maximum) and each number of requests in flight
(1, 2, 4, … ``max_concurrency``) it keeps that many requests running against the configured
server for a while, and measures the mean draw (NVML's energy counter, else its power readings)
and the tokens/s the server returned. From the table it fits what the allocator needs: each
batch's uncapped draw and tokens/s (its measurement where the cap did not bind) and the clock
exponent (how much tokens/s fall under a cap that binds). The result lives in
``state_dir/surface/<gpu>-<model>.json``; ``run`` starts from it (else from the published shape)
and refines it from what it measures. The GPU's own limit is put back afterwards, on every exit.
It takes the GPU's lock: while ``run`` steers the GPU, calibrate is refused.
"""

from __future__ import annotations

import http.client
import json
import logging
import math
import re
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from heatctl.config import Config, GpuConfig, InferenceConfig, OpenAIWorkloadConfig
from heatctl.control.surface import InferenceSurface, Limits
from heatctl.errors import ConfigError, HeatctlError
from heatctl.state import atomic_write

_LOGGER = logging.getLogger(__name__)
PROMPT = "Write a few sentences about a warm room on a cold day."
MAX_TOKENS = 32
WARMUP_SHARE = 0.25  # of each point's time: the batch fills and the draw settles before it is measured


@dataclass(frozen=True, slots=True)
class Measured:
    cap_w: float
    in_flight: int
    draw_w: float
    tokens_s: float

    @property
    def tokens_per_j(self) -> float:
        return self.tokens_s / self.draw_w if self.draw_w > 0 else 0.0


@dataclass(frozen=True, slots=True)
class Calibration:
    """What ``run`` takes from a calibration: the batches' uncapped figures and the clock exponent."""

    gpu: str
    model: str
    idle_w: float
    max_concurrency: int
    uncapped: list[tuple[int, float, float]]  # (in flight, tokens/s, draw W)
    clock_exponent: float
    points: list[Measured]
    created: str

    def inference(self) -> InferenceConfig:
        return InferenceConfig(
            max_concurrency=self.max_concurrency, uncapped=self.uncapped, clock_exponent=self.clock_exponent
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "gpu": self.gpu,
            "model": self.model,
            "idle_w": self.idle_w,
            "max_concurrency": self.max_concurrency,
            "uncapped": [list(r) for r in self.uncapped],
            "clock_exponent": self.clock_exponent,
            "points": [[p.cap_w, p.in_flight, p.draw_w, p.tokens_s] for p in self.points],
            "created": self.created,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Calibration:
        return cls(
            gpu=str(data["gpu"]),
            model=str(data["model"]),
            idle_w=float(data["idle_w"]),
            max_concurrency=int(data["max_concurrency"]),
            uncapped=[(int(n), float(t), float(d)) for n, t, d in data["uncapped"]],
            clock_exponent=float(data["clock_exponent"]),
            points=[Measured(float(c), int(n), float(d), float(t)) for c, n, d, t in data["points"]],
            created=str(data["created"]),
        )


def surface_path(state_dir: Path, gpu_id: str, model: str) -> Path:
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", model)
    return state_dir / "surface" / f"{gpu_id}-{safe}.json"


def learned_path(state_dir: Path, gpu_id: str, model: str) -> Path:
    """What the allocator learned of the surface since (kept across restarts; a new calibration drops it)."""
    return surface_path(state_dir, gpu_id, model).with_suffix(".learned.json")


def load_learned(state_dir: Path, gpu: GpuConfig) -> Any:
    """The learned surface's figures as saved (None: none, or a damaged file, said in the log)."""
    if not isinstance(gpu.workload, OpenAIWorkloadConfig):
        return None
    path = learned_path(state_dir, gpu.id, gpu.workload.model)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        _LOGGER.error("gpu %s: %s cannot be read (%s); the surface is learned again", gpu.id, path, exc)
        return None


def save_learned(state_dir: Path, gpu: GpuConfig, data: dict[str, Any]) -> None:
    """Kept per GPU and served model (a simulated plant, with no model, keeps nothing)."""
    if not isinstance(gpu.workload, OpenAIWorkloadConfig):
        return
    path = learned_path(state_dir, gpu.id, gpu.workload.model)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps(data))


def load_calibration(state_dir: Path, gpu: GpuConfig) -> Calibration | None:
    """The GPU's calibration for its model, if one was made; a damaged file is said and left out
    (the allocator then starts from the published shape, as without one)."""
    if not isinstance(gpu.workload, OpenAIWorkloadConfig):
        return None
    path = surface_path(state_dir, gpu.id, gpu.workload.model)
    try:
        calibration = Calibration.from_json(json.loads(path.read_text(encoding="utf-8")))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
        _LOGGER.error(
            "gpu %s: the calibration %s cannot be read (%s); starting from the published shape", gpu.id, path, exc
        )
        return None
    if calibration.max_concurrency != gpu.workload.max_concurrency:
        _LOGGER.warning(
            "gpu %s: calibrated with max_concurrency %d, configured %d: calibrate again",
            gpu.id,
            calibration.max_concurrency,
            gpu.workload.max_concurrency,
        )
    return calibration


def calibrations(cfg: Config, state_dir: Path) -> dict[str, InferenceConfig]:
    """GPU → its calibrated surface, for the GPUs that have one (the controller's starting point)."""
    return {g.id: c.inference() for g in cfg.gpus if (c := load_calibration(state_dir, g)) is not None}


def fit(points: list[Measured], idle_w: float, max_concurrency: int) -> tuple[list[tuple[int, float, float]], float]:
    """Each batch's uncapped (tokens/s, draw) — its measurement under the highest cap — and the
    clock exponent: the median of log(tokens/uncapped) / log((cap − idle)/(uncapped draw − idle))
    where the cap bound (0.4, the published figure, when it never did)."""
    top: dict[int, Measured] = {}
    for p in points:
        if p.in_flight not in top or p.cap_w > top[p.in_flight].cap_w:
            top[p.in_flight] = p
    uncapped = [(n, top[n].tokens_s, top[n].draw_w) for n in sorted(top)]
    exponents = []
    for p in points:
        u = top[p.in_flight]
        if p.cap_w < u.draw_w - 5.0 and u.tokens_s > 0 and p.tokens_s > 0:
            power_ratio = (p.cap_w - idle_w) / (u.draw_w - idle_w)
            token_ratio = min(p.tokens_s / u.tokens_s, 1.0)
            if 0.0 < power_ratio < 0.98:
                exponents.append(math.log(max(token_ratio, 1e-6)) / math.log(power_ratio))
    exponent = sorted(exponents)[len(exponents) // 2] if exponents else 0.4
    return uncapped, min(max(exponent, 0.0), 2.0)


class Load:
    """``n`` requests kept in flight against an OpenAI-compatible server; completion tokens counted."""

    def __init__(self, workload: OpenAIWorkloadConfig) -> None:
        self._cfg = workload
        url = urllib.parse.urlsplit(workload.url.rstrip("/"))
        self._host, self._port = url.hostname or "127.0.0.1", url.port or (443 if url.scheme == "https" else 80)
        self._https = url.scheme == "https"
        self._path = f"{url.path}/chat/completions"
        self._lock = threading.Lock()
        self.tokens = 0
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self, n: int) -> None:
        self._stop.clear()
        self._threads = [threading.Thread(target=self._worker, daemon=True) for _ in range(n)]
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=self._cfg.request_timeout_s)

    def _worker(self) -> None:
        conn_class = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
        conn = conn_class(self._host, self._port, timeout=self._cfg.request_timeout_s)
        headers = {"Content-Type": "application/json"}
        if self._cfg.api_key is not None:
            headers["Authorization"] = f"Bearer {self._cfg.api_key.get_secret_value()}"
        body = json.dumps(
            {"model": self._cfg.model, "messages": [{"role": "user", "content": PROMPT}], "max_tokens": MAX_TOKENS}
        )
        try:
            self._requests(conn, body, headers)
        finally:
            conn.close()

    def _requests(self, conn: http.client.HTTPConnection, body: str, headers: dict[str, str]) -> None:
        while not self._stop.is_set():
            try:
                conn.request("POST", self._path, body=body, headers=headers)
                response = conn.getresponse()
                data = json.loads(response.read() or b"{}")
                if response.status != 200:
                    raise HeatctlError(f"HTTP {response.status}: {str(data)[:120]}")
                tokens = int((data.get("usage") or {}).get("completion_tokens") or 0)
            except (OSError, ValueError, HeatctlError, http.client.HTTPException) as exc:
                with self._lock:
                    self.errors.append(str(exc))
                conn.close()
                if self._stop.wait(0.5):
                    return
                continue
            with self._lock:
                self.tokens += tokens


def run_calibration(
    cfg: Config,
    gpu_id: str | None,
    minutes: float,
    *,
    progress: Callable[[int, int, str], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Calibration:
    """Sweep caps × requests in flight on the configured GPU and server; the limit put back after."""
    from heatctl.gpu.registry import open_gpu

    gpu_cfg = _pick(cfg, gpu_id)
    workload = gpu_cfg.workload
    assert isinstance(workload, OpenAIWorkloadConfig)
    gpu = open_gpu(gpu_cfg, state_dir=cfg.resolved_state_dir(), time_fn=clock)  # takes the GPU's lock
    try:
        lo_w, hi_w = gpu.limits_w()
        settable = gpu.can_set_limit and hi_w - lo_w > 1.0
        caps = [lo_w + (hi_w - lo_w) * k / 3 for k in range(4)] if settable else [hi_w]
        batches = sorted({min(2**k, workload.max_concurrency) for k in range(9)} | {workload.max_concurrency})
        steps = len(caps) * len(batches) + 1
        dwell_s = max(minutes * 60.0 / steps, 1.0)
        idle_w = _mean_draw(gpu, dwell_s, clock, sleep)
        if progress is not None:
            progress(1, steps, f"idle {idle_w:.0f} W")
        load = Load(workload)
        points = []
        for cap in sorted(caps, reverse=True):
            if settable:
                gpu.set_power_limit(cap)
            for n in batches:
                load.tokens = 0
                load.start(n)
                try:
                    sleep(dwell_s * WARMUP_SHARE)
                    start_tokens, start_s = load.tokens, clock()
                    draw_w = _mean_draw(gpu, dwell_s * (1 - WARMUP_SHARE), clock, sleep)
                    tokens_s = (load.tokens - start_tokens) / max(clock() - start_s, 1e-9)
                finally:
                    load.stop()
                points.append(Measured(cap, n, draw_w, tokens_s))
                if progress is not None:
                    progress(
                        len(points) + 1,
                        steps,
                        f"cap {cap:.0f} W × {n} in flight: {draw_w:.0f} W, {tokens_s:.1f} tokens/s",
                    )
        if load.errors and not any(p.tokens_s > 0 for p in points):
            raise HeatctlError(f"the server answered no request: {load.errors[-1]}")
    finally:
        gpu.restore()  # the GPU's own limit back, and its lock released
    uncapped, exponent = fit(points, idle_w, workload.max_concurrency)
    return Calibration(
        gpu=gpu_cfg.id,
        model=workload.model,
        idle_w=idle_w,
        max_concurrency=workload.max_concurrency,
        uncapped=uncapped,
        clock_exponent=exponent,
        points=points,
        created=datetime.now(UTC).isoformat(timespec="seconds"),
    )


def _mean_draw(gpu: Any, seconds: float, clock: Callable[[], float], sleep: Callable[[float], None]) -> float:
    """The mean draw over ``seconds``: the energy counter where the driver has one, else readings."""
    first = gpu.read()
    start_s = clock()
    samples = []
    end_s = start_s + seconds
    while (now := clock()) < end_s:
        sleep(min(0.2, end_s - now))
        reading = gpu.read()
        if reading.power_w is not None:
            samples.append(reading.power_w)
    last = gpu.read()
    elapsed = clock() - start_s
    if first.energy_j is not None and last.energy_j is not None and last.energy_j > first.energy_j and elapsed > 0:
        return float((last.energy_j - first.energy_j) / elapsed)
    return sum(samples) / len(samples) if samples else math.nan


def _pick(cfg: Config, gpu_id: str | None) -> GpuConfig:
    serving = [g for g in cfg.gpus if isinstance(g.workload, OpenAIWorkloadConfig)]
    if gpu_id is not None:
        chosen = [g for g in serving if g.id == gpu_id]
        if not chosen:
            raise ConfigError([f"heatctl calibrate: no GPU {gpu_id!r} with an openai workload in the config"])
        return chosen[0]
    if not serving:
        raise ConfigError(["heatctl calibrate: no GPU in the config has an openai workload (an LLM server) to measure"])
    if len(serving) > 1:
        raise ConfigError(
            [f"heatctl calibrate: several GPUs serve an LLM ({', '.join(g.id for g in serving)}): give --gpu"]
        )
    return serving[0]


def table(calibration: Calibration) -> str:
    lines = [f"{'cap W':>6} {'in flight':>9} {'draw W':>7} {'tokens/s':>9} {'tokens/J':>9}"]
    for p in calibration.points:
        lines.append(f"{p.cap_w:6.0f} {p.in_flight:9d} {p.draw_w:7.1f} {p.tokens_s:9.1f} {p.tokens_per_j:9.3f}")
    lines.append(
        f"idle {calibration.idle_w:.0f} W; clock exponent {calibration.clock_exponent:.2f}; "
        f"best {max(calibration.points, key=lambda p: p.tokens_per_j).tokens_per_j:.3f} tokens/J"
    )
    return "\n".join(lines)


def plot(calibration: Calibration, limits: Limits, path: Path) -> None:
    """tokens/J over the cap, a line per batch; the points the allocator would run for a few heats."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    surface = InferenceSurface(
        calibration.uncapped,
        limits,
        max_concurrency=calibration.max_concurrency,
        clock_exponent=calibration.clock_exponent,
    )
    fig, ax = plt.subplots(figsize=(9, 5))
    for n in sorted({p.in_flight for p in calibration.points}):
        measured = sorted((p.cap_w, p.tokens_per_j) for p in calibration.points if p.in_flight == n)
        ax.plot([c for c, _ in measured], [t for _, t in measured], marker="o", label=f"{n} in flight")
    for share in (0.25, 0.5, 0.75):
        heat_w = limits.idle_w + share * (limits.max_limit_w - limits.idle_w)
        point = surface.choose(heat_w)
        if point.in_flight:
            ax.plot([point.cap_w], [point.tokens_s / point.draw_w], marker="*", markersize=14, color="black")
            ax.annotate(f"{heat_w:.0f} W of heat", (point.cap_w, point.tokens_s / point.draw_w), fontsize=8)
    ax.set_xlabel("power cap (W)")
    ax.set_ylabel("tokens per joule")
    ax.set_title(f"{calibration.gpu} serving {calibration.model}: ★ where heatctl runs it for a heat")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def run_calibrate(config: Path, gpu_id: str | None, minutes: float, plot_path: Path | None) -> int:
    """The CLI: sweep with a progress bar, write the surface, print the table, draw it."""
    from heatctl.config import load_config

    cfg = load_config(config)

    def bar(done: int, total: int, what: str) -> None:
        filled = round(30 * done / total)
        sys.stderr.write(f"\r[{'#' * filled}{' ' * (30 - filled)}] {done}/{total} {what:<60}")
        sys.stderr.flush()

    calibration = run_calibration(cfg, gpu_id, minutes, progress=bar)
    sys.stderr.write("\n")
    path = surface_path(cfg.resolved_state_dir(), calibration.gpu, calibration.model)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps(calibration.to_json(), indent=1), keep_previous=True)
    learned_path(cfg.resolved_state_dir(), calibration.gpu, calibration.model).unlink(missing_ok=True)  # superseded
    print(table(calibration))
    print(f"wrote {path}; the limit is back where it was")
    if plot_path is not None:
        caps = [p.cap_w for p in calibration.points]
        plot(calibration, Limits(idle_w=calibration.idle_w, min_limit_w=min(caps), max_limit_w=max(caps)), plot_path)
        print(f"wrote {plot_path}")
    return 0
