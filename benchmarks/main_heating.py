"""GPU first, main heating second: a 1 kW radiator beside a 260 W GPU, a cold and a mild fortnight.

    python benchmarks/main_heating.py [--step-s 30]

For each fortnight, three runs on the same plant (KPIs over the second week):
- ``main-only``: the GPU idle, the radiator's own thermostat at the user's setpoint;
- ``side-by-side``: heatctl as 0.1 did it, next to the radiator at the user's setpoint;
- ``heatctl``: the cascade steering the radiator through ``main_heating: {trv: …}``.

Prints comfort (discomfort K·h per week, occupied rms error), energy of each source, the GPU's
heat against what it could have given (min(heat made, capacity) at each step: the main heating
only runs while the GPU is flat out; and, for comparison, hour by hour against what
``main-only``'s radiator made), how much radiator energy the GPU's heat saved, and stage
switches per day.
Targets (issue #10): discomfort within +0.2 K·h/week and rms within 0.05 K of main-only; the
GPU ≥ 95 % of what it could; the radiator's energy falls by ≥ 90 % of the GPU's added heat;
≤ 12 stage switches a day.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from heatctl.config import Config  # noqa: E402
from heatctl.sim.report import kpis, kpis_since  # noqa: E402
from heatctl.sim.runner import SimResult, simulate  # noqa: E402
from heatctl.sim.scenario import Scenario  # noqa: E402

GPU_W = 260.0
FORTNIGHTS = {"cold": {"mean_c": -2.0, "amplitude_k": 4.0}, "mild": {"mean_c": 9.0, "amplitude_k": 4.0}}


def scenario(weather: dict[str, float], step_s: float) -> Scenario:
    return Scenario.model_validate(
        {
            "duration_h": 14 * 24,
            "step_s": step_s,
            "room": {
                "model": "2r2c",
                "ci_j_per_k": 3.0e5,
                "ce_j_per_k": 3.3e6,
                "rie_k_per_w": 0.0054,
                "rea_k_per_w": 0.066,
                "initial_c": 19,
            },
            "weather": weather,
            "schedule": [{"at": "06:30", "setpoint_c": 21}, {"at": "22:30", "setpoint_c": 18}],
            "gpu": {
                "idle_w": 20,
                "min_limit_w": 100,
                "max_limit_w": GPU_W,
                "work_at_w": [[100, 40], [180, 70], [260, 84]],
            },
            "main_heating": {"power_w": 1000, "hysteresis_k": 0.3, "min_cycle_min": 10},
        }
    )


def config() -> Config:
    return Config.model_validate(
        {
            "node_id": "bench",
            "mqtt": None,
            "zones": [
                {
                    "name": "room",
                    "temperature": {"topic": "t"},
                    "setpoint": {"topic": "s"},
                    "gpus": ["gpu0"],
                    "main_heating": {"trv": "zigbee2mqtt/room_trv"},
                }
            ],
            "gpus": [{"id": "gpu0", "backend": "sim"}],
        }
    )


def second_week(result: SimResult, column: str) -> np.ndarray:
    s = result.series
    return s[column][s["time_s"] >= 7 * 86400.0]


def hourly(values: np.ndarray, step_s: float) -> np.ndarray:
    n = int(3600 / step_s)
    usable = len(values) // n * n
    return values[:usable].reshape(-1, n).mean(axis=1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--step-s", type=float, default=30.0)
    args = parser.parse_args()
    cfg = config()
    ok = True
    for name, weather in FORTNIGHTS.items():
        scen = scenario(weather, args.step_s)
        runs = {c: simulate(scen, cfg, controller=c) for c in ("main-only", "side-by-side", "heatctl")}
        week = {c: kpis_since(r, 7 * 86400.0) for c, r in runs.items()}
        idle_w = scen.gpu.idle_w
        # What the room needed each hour (main-only: all of it came from the radiator and the idle GPU) and
        # what the GPU could have given of it.
        # What the GPU could have given: all the heat made, up to its capacity, step by step (the room's
        # demand as heatctl met it); and, for comparison, hour by hour of what main-only's radiator made.
        gpu_w = second_week(runs["heatctl"], "gpu_power_w")
        made_w = gpu_w + second_week(runs["heatctl"], "main_w")
        step_h = args.step_s / 3600
        gpu_kwh = float(gpu_w.sum() * step_h / 1000)
        could_kwh = float(np.minimum(made_w, GPU_W).sum() * step_h / 1000)
        need_w = hourly(second_week(runs["main-only"], "main_w") + idle_w, args.step_s)
        could_main_only_kwh = float(np.minimum(need_w, GPU_W).sum() / 1000)
        added_kwh = gpu_kwh - idle_w * len(gpu_w) * step_h / 1000
        saved_kwh = week["main-only"]["main_kwh"] - week["heatctl"]["main_kwh"]
        print(f"\n{name} fortnight (outdoor mean {weather['mean_c']:g} °C), second week:")
        print(f"  {'':<14}{'discomfort K·h':>15}{'occ. rms K':>12}{'GPU kWh':>9}{'radiator kWh':>14}{'GPU share':>10}")
        for c, k in week.items():
            print(
                f"  {c:<14}{k['discomfort_kh']:>15.2f}{k['occupied_rms_error_k']:>12.3f}{k['energy_kwh']:>9.1f}"
                f"{k['main_kwh']:>14.1f}{k['gpu_heat_share']:>10.2f}"
            )
        gpu_ratio = gpu_kwh / could_kwh if could_kwh > 0 else float("nan")
        saved_ratio = saved_kwh / added_kwh if added_kwh > 0 else float("nan")
        switches = kpis(runs["heatctl"])["main_switches_per_day"]
        print(
            f"  GPU heat {gpu_kwh:.1f} kWh of {could_kwh:.1f} kWh it could have given: {gpu_ratio:.1%} "
            f"(of main-only's hourly heat up to 260 W, {could_main_only_kwh:.1f} kWh: "
            f"{gpu_kwh / could_main_only_kwh:.1%})"
        )
        print(
            f"  overheat (> setpoint + 1 K while the GPU heats): {week['heatctl']['overheat_kh']:.2f} K·h, "
            f"side-by-side {week['side-by-side']['overheat_kh']:.2f} K·h"
        )
        print(f"  radiator saved {saved_kwh:.1f} kWh for {added_kwh:.1f} kWh the GPU added: {saved_ratio:.1%}")
        print(f"  stage switches: {switches:.1f} per day")
        checks = {
            "discomfort ≤ main-only + 0.2 K·h": week["heatctl"]["discomfort_kh"]
            <= week["main-only"]["discomfort_kh"] + 0.2,
            "occupied rms ≤ main-only + 0.05 K": week["heatctl"]["occupied_rms_error_k"]
            <= week["main-only"]["occupied_rms_error_k"] + 0.05,
            "GPU ≥ 95 % of what it could": gpu_ratio >= 0.95,
            "radiator falls ≥ 90 % of GPU's added heat": saved_ratio >= 0.90,
            "≤ 12 switches a day": switches <= 12,
        }
        for label, passed in checks.items():
            print(f"  {'PASS' if passed else 'FAIL'}  {label}")
            ok &= passed
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
