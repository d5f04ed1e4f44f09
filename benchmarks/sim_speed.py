"""Simulated time per wall second: a 365-day scenario at step_s 30 (target: under 60 s).

python benchmarks/sim_speed.py [--days 365] [--repeat 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from heatctl.sim.report import kpis  # noqa: E402
from heatctl.sim.runner import simulate  # noqa: E402
from heatctl.sim.scenario import load_scenario  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--days", type=float, default=365.0)
    parser.add_argument("--step-s", type=float, default=30.0)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    path = ROOT / "examples" / "scenarios" / "mild-week.yaml"
    scenario = load_scenario(path).model_copy(update={"duration_h": args.days * 24.0, "step_s": args.step_s})
    walls = []
    for i in range(args.repeat):
        t0 = time.perf_counter()
        result = simulate(scenario, base_dir=path.parent)
        kpis(result)
        walls.append(time.perf_counter() - t0)
        print(f"run {i + 1}: {walls[-1]:.1f} s wall", flush=True)
    median = statistics.median(walls)
    steps = int(scenario.duration_h * 3600 / scenario.step_s)
    print(f"{args.days:g} days at step {args.step_s:g} s = {steps:,} steps")
    print(f"median wall time {median:.1f} s (min {min(walls):.1f}, max {max(walls):.1f})")
    print(
        f"speed: {scenario.duration_h * 3600 / median:,.0f} simulated s per wall s; "
        f"{median / steps * 1e6:.1f} µs per step; target < 60 s: {'met' if median < 60 else 'MISSED'}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
