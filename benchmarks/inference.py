"""Heat from an LLM server: tokens per kWh by controller, against the best any choice could do.

    .venv/bin/python benchmarks/inference.py [--step-s 10]

Each scenario in ``examples/inference/`` (a 300 W card serving an LLM with the published shape:
requests in flight set the draw first, the cap second) runs a week under heatctl (requests in
flight, cap and duty cycle chosen together from the surface it learns, starting from the
published prior), ``cap`` (every request in flight, heat by cap and duty cycling) and
``concurrency`` (cap at its maximum, requests in flight following the heat). The second half of
the week is judged. ``envelope`` is the most tokens any operating-point choice could make for
the same heat, hour by hour: the upper concave envelope of tokens/s over draw, from the true
surface. Each scenario runs again with limits that cannot be set (min = max).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from heatctl.gpu.sim import plant_surface  # noqa: E402
from heatctl.sim.report import kpis_since  # noqa: E402
from heatctl.sim.runner import SimResult, simulate  # noqa: E402
from heatctl.sim.scenario import Scenario, load_scenario  # noqa: E402

CONTROLLERS = ("heatctl", "cap", "concurrency")
JUDGED_FROM = 0.5  # the second half of the week


def envelope_tokens_per_kwh(result: SimResult, start_s: float, *, settable: bool) -> float:
    """Tokens per kWh the best choice makes for each hour's mean heat (from the true surface)."""
    surface = plant_surface(result.scenario.gpu)
    assert surface is not None
    s = result.series
    keep = s["time_s"] >= start_s
    power = s["gpu_power_w"][keep]
    per_hour = max(round(3600.0 / result.scenario.step_s), 1)
    hours = len(power) // per_hour
    means = power[: hours * per_hour].reshape(hours, per_hour).mean(axis=1)
    tokens = sum(surface.envelope_tokens_s(float(h), settable=settable) * 3600.0 for h in means)
    kwh = float(means.sum()) * 3600.0 / 3.6e6
    return tokens / kwh if kwh > 0 else math.nan


def fixed_limits(scenario: Scenario) -> Scenario:
    gpu = scenario.gpu.model_copy(update={"min_limit_w": scenario.gpu.max_limit_w})
    return scenario.model_copy(update={"gpu": gpu, "name": f"{scenario.name}, limits not settable"})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--step-s", type=float, default=10.0)
    args = parser.parse_args()
    started = time.perf_counter()
    for path in sorted((ROOT / "examples" / "inference").glob("*.yaml")):
        base = load_scenario(path).model_copy(update={"step_s": args.step_s})
        for scenario, settable in ((base, True), (fixed_limits(base), False)):
            start_s = scenario.duration_h * 3600.0 * JUDGED_FROM
            print(f"\n{scenario.name} (judged from hour {start_s / 3600:.0f})")
            head = f"{'controller':<12} {'tokens/kWh':>12} {'J/token':>8} {'rms K':>6}"
            print(f"{head} {'discomfort K·h':>15} {'energy kWh':>11}")
            figures = {}
            envelope = math.nan
            for controller in CONTROLLERS:
                result = simulate(scenario, controller=controller, base_dir=path.parent)
                k = kpis_since(result, start_s)
                figures[controller] = k
                print(
                    f"{controller:<12} {k['tokens_per_kwh']:>12,.0f} {k['j_per_token']:>8.3f} {k['rms_error_k']:>6.3f}"
                    f" {k['discomfort_kh']:>15.2f} {k['energy_kwh']:>11.2f}"
                )
                if controller == "heatctl":
                    envelope = envelope_tokens_per_kwh(result, start_s, settable=settable)
            ours = figures["heatctl"]["tokens_per_kwh"]
            print(f"{'envelope':<12} {envelope:>12,.0f}   (the best choice for heatctl's heat, hour by hour)")
            print(
                f"heatctl: ×{ours / figures['concurrency']['tokens_per_kwh']:.2f} concurrency,"
                f" ×{ours / figures['cap']['tokens_per_kwh']:.3f} cap, {ours / envelope:.1%} of the envelope"
            )
    print(f"\n{time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
