"""Inner loop: step response of measured GPU power to heat-demand steps.

    python benchmarks/tracking.py [--fakenvml]

On the sim GPU (first-order power response, τ = 1 s) in virtual time, and with --fakenvml
against the fake NVIDIA driver through the real pynvml bindings in real time. For each step:
time until measured power stays within 5 % of the target, overshoot, and limit writes per
hour over a day of realistic demand. Target: within 5 % in under 10 s, no oscillation.
"""

from __future__ import annotations

import argparse
import ctypes
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from heatctl.config import DutyConfig, GpuConfig, SimGpuConfig  # noqa: E402
from heatctl.control.allocate import Allocator  # noqa: E402
from heatctl.control.efficiency import EfficiencyModel, GpuCaps  # noqa: E402
from heatctl.gpu.sim import SimGpu  # noqa: E402

STEPS_W = [(0, 150.0), (60, 260.0), (120, 180.0), (180, 300.0), (240, 130.0), (300, 220.0)]


class Clock:
    def __init__(self) -> None:
        self.now_s = 0.0

    def __call__(self) -> float:
        return self.now_s


def settle_report(samples: list[tuple[float, float]], target_w: float, t0: float) -> tuple[float, float]:
    """(seconds until power stays within 5 %, overshoot in % of the step)."""
    inside_from = None
    for t, p in samples:
        inside_from = (t if inside_from is None else inside_from) if abs(p - target_w) <= 0.05 * target_w else None
    settle = (inside_from - t0) if inside_from is not None else math.inf
    start = samples[0][1]
    step = target_w - start
    peak = max(samples, key=lambda s: (s[1] - start) * (1 if step > 0 else -1))[1]
    overshoot = max(0.0, (peak - target_w) * (1 if step > 0 else -1)) / abs(step) * 100 if step else 0.0
    return settle, overshoot


def run_steps(
    read_w: Callable[[], float],
    apply: Callable[[float, float], None],
    alloc: Allocator,
    *,
    now: Callable[[], float],
    advance: Callable[[float], None],
    tick_s: float,
    steps: list[tuple[float, float]],
) -> None:
    print(f"{'step':>14}  {'within 5 %':>10}  {'overshoot':>9}")
    for i, (at_s, target_w) in enumerate(steps):
        end_s = steps[i + 1][0] if i + 1 < len(steps) else at_s + 60
        t0 = now()
        samples = [(t0, read_w())]
        while now() - t0 < end_s - at_s:
            cmd = alloc.step(now(), target_w, samples[-1][1])
            apply(cmd.power_limit_w, cmd.level)
            advance(tick_s)
            samples.append((now(), read_w()))
        settle, overshoot = settle_report(samples, target_w, t0)
        print(f"{samples[0][1]:5.0f} → {target_w:4.0f} W  {settle:8.1f} s  {overshoot:7.1f} %")


def sim(tick_s: float) -> None:
    clock = Clock()
    cfg = SimGpuConfig()
    gpu = SimGpu("gpu0", cfg, time_fn=clock)
    caps = GpuCaps(idle_w=cfg.idle_w, min_limit_w=cfg.min_limit_w, max_limit_w=cfg.max_limit_w)
    alloc = Allocator(EfficiencyModel(caps, cfg.work_at_w), DutyConfig())

    def apply(limit_w: float, level: float) -> None:
        gpu.set_power_limit(limit_w)
        gpu.set_level(level)

    def advance(dt: float) -> None:
        clock.now_s += dt

    print(f"== sim GPU (τ = {cfg.response_s:g} s), control tick {tick_s:g} s")
    read = lambda: gpu.read().power_w or 0.0  # noqa: E731
    run_steps(read, apply, alloc, now=clock, advance=advance, tick_s=tick_s, steps=STEPS_W)
    day_writes(caps, cfg.work_at_w)


def day_writes(caps: GpuCaps, curve: list[tuple[float, float]]) -> None:
    """Limit writes over a day of slowly varying demand with noise, at a 30 s tick."""
    alloc = Allocator(EfficiencyModel(caps, curve), DutyConfig())
    t = 0.0
    while t < 86400:
        demand = 170 + 90 * math.sin(2 * math.pi * t / 86400) + 8 * math.sin(t / 97.0)
        alloc.step(t, demand, None)
        t += 30.0
    print(f"limit writes over a day of varying demand: {alloc.limit_writes / 24:.1f} per hour")


def fakenvml() -> None:
    import pynvml

    lib_dir = Path(tempfile.mkdtemp(prefix="fakenvml-"))
    subprocess.run(
        ["sh", str(ROOT / "tests" / "fakes" / "fakenvml" / "build.sh"), str(lib_dir)], check=True, capture_output=True
    )
    pynvml.nvmlLib = ctypes.CDLL(str(lib_dir / "libnvidia-ml.so.1"))
    state = Path(tempfile.mkdtemp(prefix="fakenvml-state-"))
    (state / "config").write_text("min_limit_w=100\nmax_limit_w=350\ndefault_limit_w=350\nidle_w=30\n")
    (state / "load0").write_text("400\n")
    os.environ["FAKENVML_DIR"] = str(state)
    from heatctl.gpu.nvml import NvmlGpu

    gpu = NvmlGpu(GpuConfig(id="gpu0", backend="nvml"), state_dir=state)
    lo, hi = gpu.limits_w()
    caps = GpuCaps(idle_w=30.0, min_limit_w=lo, max_limit_w=hi)
    alloc = Allocator(EfficiencyModel(caps), DutyConfig())
    print("== fake NVIDIA driver through pynvml, real time, tick 0.5 s")
    try:
        run_steps(
            lambda: gpu.read().power_w or 0.0,
            lambda w, level: gpu.set_power_limit(w),
            alloc,
            now=time.monotonic,
            advance=time.sleep,
            tick_s=0.5,
            steps=[(t / 6, w) for t, w in STEPS_W],  # 10 s per step in real time
        )
    finally:
        gpu.restore()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--fakenvml", action="store_true", help="also run against the fake NVIDIA driver")
    parser.add_argument("--tick-s", type=float, default=1.0)
    args = parser.parse_args()
    sim(args.tick_s)
    if args.fakenvml:
        fakenvml()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
