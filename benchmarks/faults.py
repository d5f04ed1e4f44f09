"""Fault matrix: each NVML fault through the fake driver, with each kind of workload, heat wanted or not.

    .venv/bin/python benchmarks/faults.py [--workloads process,openai,none] [--llm-url URL]

The real service runs on a fake clock (30 s ticks) against the real ``pynvml`` bindings and
``tests/fakes/fakenvml``. After each tick the fake GPU's load follows what really runs: a
``process`` workload's job draws 600 W while it is not stopped, an ``openai`` workload's
server while requests are in flight; under ``none`` something else keeps it loaded. The heat
is what the fake driver then draws: min(load, limit), or idle.

Per cell it prints: ticks until heat stopped where it must (heat not wanted, or a GPU whose
heat cannot be measured), ticks until the limit was back after it drifted, tracebacks logged,
and what the state said. "no lever" marks a cell where heatctl has neither the limit nor the
workload to stop the heat, and says so. The ``openai`` column needs an OpenAI-compatible
server (``--llm-url``, e.g. ``tests/fakes/tinyllm/serve.sh 18431``).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from heatctl.publish.mqtt_state import NodeSnapshot

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

FAULTS = ("gpu lost", "limit not supported", "too hot", "limit reset", "driver restart", "nvml init failure")
WORKLOADS = ("process", "openai", "none")
FAULT_AT_TICK = 4
TICKS = 12
LOAD_W, IDLE_W, DEFAULT_LIMIT_W, CAP_W = 600.0, 40.0, 400.0, 250.0
SPIN = [sys.executable, "-c", "import time\nwhile True: time.sleep(0.01)"]
STOP_WITHIN_TICKS, LIMIT_BACK_WITHIN_TICKS = 3, 2


@dataclass(frozen=True, slots=True)
class Cell:
    workload: str
    fault: str
    wanted: bool
    stop_ticks: int | None  # ticks until heat stopped; None: it never had to stop
    lever: bool  # heatctl could stop the heat (limit or workload)
    limit_back_ticks: int | None  # after a drift; None: no drift in this cell
    tracebacks: int
    state: str
    heated: bool  # the GPU made heat at some point (a cell that wants heat must show it did)

    @property
    def ok(self) -> bool:
        stopped_in_time = self.stop_ticks is None or self.stop_ticks <= STOP_WITHIN_TICKS or not self.lever
        limit_in_time = self.limit_back_ticks is None or self.limit_back_ticks <= LIMIT_BACK_WITHIN_TICKS
        said_so = self.lever or "fault:" in self.state or "steerable: no" in self.state
        heated_when_wanted = self.heated or not self.wanted
        return stopped_in_time and limit_in_time and self.tracebacks == 0 and said_so and heated_when_wanted


def build_fake_driver(out: Path) -> Path:
    subprocess.run(["sh", str(ROOT / "tests/fakes/fakenvml/build.sh"), str(out)], check=True, capture_output=True)
    return out / "libnvidia-ml.so.1"


class Traceback(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += record.exc_info is not None


class Clock:
    def __init__(self) -> None:
        self.now_s = 1000.0

    def __call__(self) -> float:
        return self.now_s

    def wait(self, event: threading.Event, timeout_s: float) -> bool:
        return event.is_set()


def config(state_dir: Path, workload: str, jobs: Path, llm_url: str | None, max_temp_c: float) -> str:
    kinds = {
        "process": f"{{type: process, pid_file: {state_dir / 'job.pid'}, period_s: 0.2}}",
        "openai": f"{{type: openai, url: '{llm_url}', model: tinyllm, jobs: {jobs}, max_concurrency: 2}}",
        "none": "{type: none}",
    }
    return f"""
node_id: faults
state_dir: {state_dir}
mqtt: null
zones:
  - name: room
    temperature: {{topic: t}}
    setpoint: {{topic: s}}
    gpus: [gpu0]
gpus:
  - {{id: gpu0, backend: nvml, index: 0, max_power_w: {CAP_W}, max_temp_c: {max_temp_c}, workload: {kinds[workload]}}}
"""


@contextmanager
def job_process(state_dir: Path) -> Iterator[subprocess.Popen[bytes]]:
    """The GPU job a ``process`` workload adopts by its PID file."""
    proc = subprocess.Popen(SPIN, start_new_session=True)
    (state_dir / "job.pid").write_text(f"{proc.pid}\n")
    try:
        yield proc
    finally:
        proc.send_signal(signal.SIGCONT)
        proc.kill()
        proc.wait(5)


def write_jobs(jobs: Path) -> None:
    jobs.mkdir(parents=True, exist_ok=True)
    with (jobs / "long.jsonl").open("w") as fh:
        for i in range(200):
            body = {"messages": [{"role": "user", "content": f"warm {i}"}], "max_tokens": 2000}
            fh.write(json.dumps({"id": f"j{i}", **body}) + "\n")


def run_cell(workload: str, fault: str, wanted: bool, llm_url: str | None, work: Path) -> Cell:
    import pynvml

    from heatctl.config import parse_config
    from heatctl.service import Service
    from heatctl.workloads.process import stopped

    fake = work / "fakenvml"
    state = work / "state"
    fake.mkdir(parents=True)
    state.mkdir()
    os.environ["FAKENVML_DIR"] = str(fake)
    settings = f"min_limit_w=100\nmax_limit_w=400\ndefault_limit_w={DEFAULT_LIMIT_W:.0f}\nidle_w={IDLE_W:.0f}\n"
    if fault == "limit not supported":
        settings += "fault_set_limit=not_supported\n"
    if fault == "nvml init failure":
        (fake / "config").write_text(settings + "fault_init=driver_not_loaded\n")
    else:
        (fake / "config").write_text(settings)
    (fake / "load0").write_text(f"{LOAD_W}\n")
    write_jobs(work / "jobs")
    max_temp_c = 45.0 if fault == "too hot" else 83.0  # the fake runs at 30 + 0.07 °C/W
    room_c = 18.0 if wanted else 23.0
    clock = Clock()
    catcher = Traceback()
    logging.getLogger().addHandler(catcher)
    job = job_process(state) if workload == "process" else None
    proc = job.__enter__() if job else None
    svc = Service(parse_config(config(state, workload, work / "jobs", llm_url, max_temp_c)), clock=clock)  # type: ignore[arg-type]

    def working() -> bool:
        act = svc.actuators["gpu0"]
        if workload == "process":
            return proc is not None and not stopped(proc.pid)
        if workload == "openai":
            return (act.workload.effective_level() or 0.0) > 0
        return True

    def limit_w() -> float:
        path = fake / "limit0"
        return float(path.read_text()) if path.exists() else DEFAULT_LIMIT_W

    heat: list[float] = []
    said: list[str] = []
    limits: list[tuple[float, float | None, bool]] = []  # (driver's limit, heatctl's, gpu faulted) per tick
    snap = None
    try:
        svc.start()
        for k in range(TICKS):
            inject(fault, k, fake)
            clock.now_s += 30.0
            svc.store.put("room", "temperature", room_c, "t")
            svc.store.put("room", "setpoint", 21.0, "s")
            snap = svc.tick()
            settle(working, snap.gpus["gpu0"].level > 0 or workload == "none")
            (fake / "load0").write_text(f"{LOAD_W if working() else 0.0}\n")
            heat.append(min(LOAD_W, limit_w()) if working() else IDLE_W)
            said.append(state_words(snap))
            limits.append((limit_w(), svc.actuators["gpu0"]._written_limit_w, snap.gpus["gpu0"].fault is not None))
    finally:
        svc.shutdown()
        if job is not None:
            job.__exit__(None, None, None)
        logging.getLogger().removeHandler(catcher)
        while True:
            try:
                pynvml.nvmlShutdown()
            except pynvml.NVMLError:
                break
    assert snap is not None
    must_from = must_stop_from(fault, wanted)
    no_heat_w = 100.0 if workload == "none" else IDLE_W  # with the limit as the only lever: its minimum
    stop_ticks = None
    if must_from is not None:
        stop_ticks = next((k - must_from for k in range(must_from, TICKS) if heat[k] <= no_heat_w), TICKS)
    if fault == "too hot" and wanted:
        stop_ticks = next((k for k in range(TICKS) if heat[k] < 0.9 * min(LOAD_W, CAP_W)), TICKS)  # derated
    unreadable = fault in ("gpu lost", "driver restart", "nvml init failure")
    lever = snap.gpus["gpu0"].steerable and not (workload == "none" and unreadable)
    report_at = {"nvml init failure": 0, "gpu lost": FAULT_AT_TICK, "driver restart": FAULT_AT_TICK}.get(fault)
    state = said[report_at if report_at is not None else -1]
    if must_from is not None and fault in ("gpu lost", "driver restart"):
        state += f"; heat {heat[FAULT_AT_TICK - 1]:.0f} W before, {heat[must_from]:.0f} W after the fault"
    return Cell(
        workload=workload,
        fault=fault,
        wanted=wanted,
        stop_ticks=stop_ticks,
        lever=lever,
        limit_back_ticks=limit_back_ticks(fault, limits),
        tracebacks=catcher.count,
        state=state,
        heated=max(heat) > no_heat_w,
    )


def state_words(snap: NodeSnapshot) -> str:
    g = snap.gpus["gpu0"]
    words = [f"fault: {g.fault}" if g.fault else ""]
    words += [f"limit mismatches: {g.limit_mismatches}" if g.limit_mismatches else ""]
    words += ["steerable: no (cannot take heat away)" if not g.steerable else ""]
    limit = f"{g.power_limit_w:.0f} W" if g.power_limit_w is not None else "unknown"
    words += [f"level {g.level:.2f}, limit {limit}"]
    return "; ".join(w for w in words if w)


def limit_back_ticks(fault: str, limits: list[tuple[float, float | None, bool]]) -> int | None:
    """Ticks, counting the one that saw it, from a drifted limit (or the GPU's return) until the limit is back."""
    if fault not in ("limit reset", "driver restart"):
        return None
    start = next((k for k in range(FAULT_AT_TICK, TICKS) if not limits[k][2]), None)  # the GPU is readable
    if start is None:
        return TICKS
    back = next((k for k in range(start, TICKS) if _held(limits[k])), None)
    return (back - start + 1) if back is not None else TICKS


def _held(limit: tuple[float, float | None, bool]) -> bool:
    driver_w, heatctl_w, _ = limit
    return heatctl_w is not None and abs(driver_w - heatctl_w) <= 1.0


def must_stop_from(fault: str, wanted: bool) -> int | None:
    """The tick from which there must be no heat: not wanted (from the start), or heat unmeasurable."""
    if not wanted:
        return 1  # the first tick reads a warm room; the second must be idle
    if fault in ("gpu lost", "driver restart"):
        return FAULT_AT_TICK
    if fault == "nvml init failure":
        return 0
    return None


def inject(fault: str, k: int, fake: Path) -> None:
    """Change the fake driver just before tick ``k``."""
    if fault == "gpu lost" and k == FAULT_AT_TICK:
        (fake / "lost").touch()
    elif fault == "limit reset" and k == FAULT_AT_TICK:
        (fake / "limit0").write_text(f"{DEFAULT_LIMIT_W}\n")  # `nvidia-smi -pl`, another tool
    elif fault == "driver restart":
        if k == FAULT_AT_TICK:
            (fake / "lost").touch()
            (fake / "limit0").unlink(missing_ok=True)  # a reloaded driver starts at its default limit
        elif k == FAULT_AT_TICK + 3:
            (fake / "lost").unlink()
    elif fault == "nvml init failure" and k == FAULT_AT_TICK:
        text = (fake / "config").read_text().replace("fault_init=driver_not_loaded\n", "")
        (fake / "config").write_text(text)  # the driver is loaded now


def settle(working: Callable[[], bool], expected: bool, within_s: float = 2.0) -> None:
    """Give the workload's own threads time to follow the tick's level (a signal, a preempted stream)."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline and working() != expected:
        time.sleep(0.01)


def run_matrix(workloads: tuple[str, ...], lib: Path, llm_url: str | None) -> list[Cell]:
    import pynvml

    pynvml.nvmlLib = ctypes.CDLL(str(lib))
    cells = []
    for workload in workloads:
        for fault in FAULTS:
            for wanted in (True, False):
                with tempfile.TemporaryDirectory(prefix="heatctl-faults-") as tmp:
                    cells.append(run_cell(workload, fault, wanted, llm_url, Path(tmp)))
    return cells


def format_table(cells: list[Cell]) -> str:
    lines = [
        f"{'workload':<8} {'fault':<19} {'heat':<7} {'stop':>5} {'limit':>6} {'tb':>3}  ok    state",
        "-" * 120,
    ]
    for c in cells:
        stop = "-" if c.stop_ticks is None else ("no lever" if not c.lever else str(c.stop_ticks))
        back = "-" if c.limit_back_ticks is None else str(c.limit_back_ticks)
        lines.append(
            f"{c.workload:<8} {c.fault:<19} {'wanted' if c.wanted else 'no':<7} {stop:>5} {back:>6} "
            f"{c.tracebacks:>3}  {'ok ' if c.ok else 'FAIL'}  {c.state}"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", default=",".join(WORKLOADS))
    parser.add_argument("--llm-url", default=None, help="OpenAI-compatible server for the openai column")
    args = parser.parse_args()
    workloads = tuple(w for w in args.workloads.split(",") if w)
    if "openai" in workloads and args.llm_url is None:
        print("no --llm-url: leaving out the openai column (tests/fakes/tinyllm/serve.sh PORT starts one)")
        workloads = tuple(w for w in workloads if w != "openai")
    logging.basicConfig(level=logging.CRITICAL)
    with tempfile.TemporaryDirectory() as tmp:
        cells = run_matrix(workloads, build_fake_driver(Path(tmp)), args.llm_url)
    print(format_table(cells))
    print(
        f"\nstop: ticks (30 s) until no heat where it must stop (target ≤ {STOP_WITHIN_TICKS}); "
        f"limit: ticks until a drifted limit is back (target ≤ {LIMIT_BACK_WITHIN_TICKS}); tb: tracebacks"
    )
    failed = [c for c in cells if not c.ok]
    print(f"{len(cells) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
