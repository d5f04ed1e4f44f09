"""KPIs of the three controllers on every example scenario, and on rooms we did not tune on.

    python benchmarks/control.py [--step-s 10] [--variants]

Prints one table per scenario, then a check of DESIGN/issue targets for heatctl:
rms_error_k ≤ 0.15, max_overshoot_k ≤ 0.3, discomfort and overheat within 10 % of
hysteresis (+0.1 K·h slack for near-zero values), limit_writes_per_h ≤ 60, erf ≥ 0.95,
work_per_kwh ≥ 1.2 × dutycycle's.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from heatctl.sim.report import format_table, kpis  # noqa: E402
from heatctl.sim.runner import simulate  # noqa: E402
from heatctl.sim.scenario import Scenario, load_scenario  # noqa: E402

CONTROLLERS = ("heatctl", "hysteresis", "dutycycle")


def room_variants(scenario: Scenario) -> dict[str, Scenario]:
    """The room's capacities and resistances ×0.5 and ×2."""
    room = scenario.room
    out = {"as tuned": scenario}
    for label, factor in (("C×0.5", 0.5), ("C×2", 2.0), ("R×0.5", 0.5), ("R×2", 2.0)):
        fields = (
            ("ci_j_per_k", "ce_j_per_k", "c_j_per_k")
            if label[0] == "C"
            else ("rie_k_per_w", "rea_k_per_w", "r_k_per_w")
        )
        update = {f: getattr(room, f) * factor for f in fields if hasattr(room, f)}
        out[label] = scenario.model_copy(update={"room": room.model_copy(update=update)})
    return out


def check_targets(k: dict[str, dict[str, float]]) -> list[str]:
    h, d, hc = k["hysteresis"], k["dutycycle"], k["heatctl"]
    checks = [
        ("rms_error_k ≤ 0.15", hc["rms_error_k"] <= 0.15),
        ("max_overshoot_k ≤ 0.3", hc["max_overshoot_k"] <= 0.3),
        ("discomfort ≤ 1.1 × hysteresis", hc["discomfort_kh"] <= 1.1 * h["discomfort_kh"] + 0.1),
        ("overheat ≤ 1.1 × hysteresis", hc["overheat_kh"] <= 1.1 * h["overheat_kh"] + 0.1),
        ("limit_writes_per_h ≤ 60", hc["limit_writes_per_h"] <= 60),
        ("erf ≥ 0.95", hc["erf"] >= 0.95),
        ("work_per_kwh ≥ 1.2 × dutycycle", hc["work_per_kwh"] >= 1.2 * d["work_per_kwh"]),
    ]
    ratio = hc["work_per_kwh"] / d["work_per_kwh"]
    no_steady = math.isnan(hc["rms_error_k"])  # the room never settled: the GPU is too small for it

    def mark(name: str, ok: bool) -> str:
        if no_steady and name.startswith(("rms", "max_overshoot")):
            return "n/a "
        return "ok  " if ok else "MISS"

    return [f"{mark(name, ok)} {name}" for name, ok in checks] + [f"     work_per_kwh ratio to dutycycle: {ratio:.3f}"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("scenarios", nargs="*", type=Path)
    parser.add_argument("--step-s", type=float, default=None, help="override every scenario's step")
    parser.add_argument("--variants", action="store_true", help="also run rooms ×0.5 and ×2")
    args = parser.parse_args()
    paths = args.scenarios or sorted((ROOT / "examples" / "scenarios").glob("*.yaml"))
    misses = 0
    for path in paths:
        base = load_scenario(path)
        if args.step_s:
            base = base.model_copy(update={"step_s": args.step_s})
        runs = room_variants(base) if args.variants else {"as tuned": base}
        for label, scenario in runs.items():
            t0 = time.perf_counter()
            rows = {c: kpis(simulate(scenario, controller=c, base_dir=path.parent)) for c in CONTROLLERS}
            print(f"\n== {scenario.name or path.stem} — room {label} ({time.perf_counter() - t0:.1f} s)")
            print(format_table(rows))
            lines = check_targets(rows)
            misses += sum(line.startswith("MISS") for line in lines)
            print("\n".join(lines))
    print(f"\n{misses} target(s) missed")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
