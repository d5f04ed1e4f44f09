"""Batch deadlines and heat: a simulated week whose last 30 h want no heat.

    python benchmarks/batch_deadlines.py [--step-s 30]

Batches arrive every 6 h, each worth ``--work-h`` hours of the GPU's work at its most
efficient cap, due 24 h later. Outdoors is 5 °C until hour 138, then 24 °C: the room wants
no heat for the last 30 h. Prints, for heatctl with the deadline rule and without it (batch
work only while heat is wanted), how many batches finished inside their windows, and the
share of the batch energy that was heat the room wanted, split into batches due while heat
was wanted and the rest. Targets (issue #11): every batch whose work fits finishes in its
window; with heat wanted, ≥ 95 % of batch energy is reused heat.

``--parts planner``: night batches (23:00, due 05:30) in the setback fortnight, reacting and
with the planner, whose plan makes the work's heat before each deadline where the room wants
it, and with a planner "blind" to the work (the deadline rule alone runs it): the share of
batch energy reused as heat, second week.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from heatctl.config import Config  # noqa: E402
from heatctl.gpu.sim import SimGpuModel  # noqa: E402
from heatctl.sim.batches import SimBatches  # noqa: E402
from heatctl.sim.report import kpis, kpis_since  # noqa: E402
from heatctl.sim.runner import simulate  # noqa: E402
from heatctl.sim.scenario import Scenario, load_scenario  # noqa: E402

WARM_FROM_H = 138.0
WEEK_H = 168.0


class NoDeadlineRule(SimBatches):
    """Batch work only while heat is wanted: what heatctl would do without the deadline rule."""

    def due(self, t: float, full_rate: float) -> float:
        return 0.0


def scenario(folder: Path, step_s: float, work_h: float) -> Scenario:
    weather = folder / "weather.csv"
    start = "2026-01-05T00:00:00"
    with weather.open("w") as fh:
        fh.write("time,temp_c\n")
        for h in range(int(WEEK_H) + 1):
            stamp = f"2026-01-{5 + h // 24:02d}T{h % 24:02d}:00:00"
            fh.write(f"{stamp},{5.0 if h < WARM_FROM_H else 24.0}\n")
    base = Scenario(duration_h=WEEK_H, step_s=step_s, start=start)  # type: ignore[arg-type]
    model = SimGpuModel(base.gpu)
    efficient_w = max(base.gpu.work_at_w, key=lambda p: p[1] / max(model.power_w(p[0], 1.0), 1e-9))[0]
    full_rate = model.work_rate(efficient_w, 1.0)
    work_per_batch = work_h * 3600.0 * full_rate
    return Scenario.model_validate(
        {
            "name": "batch week",
            "duration_h": WEEK_H,
            "step_s": step_s,
            "start": start,
            "weather": {"csv": str(weather)},
            "schedule": [{"at": "00:00", "setpoint_c": 21.0}],
            "batches": [
                {"at_h": 0.0, "requests": 100, "work_per_request": work_per_batch / 100, "window_h": 24, "every_h": 6}
            ],
        }
    )


def report(label: str, batches: SimBatches, end_s: float) -> dict[str, float]:
    closed = [b for b in batches.batches if b.deadline_s <= end_s]
    wanted_phase = [b for b in closed if b.deadline_s <= WARM_FROM_H * 3600.0]
    late = [b for b in closed if not b.on_time]
    energy = sum(b.energy_j for b in wanted_phase)
    reused = sum(b.reused_j for b in wanted_phase)
    row = {
        "batches due in the week": len(closed),
        "finished in their window": len(closed) - len(late),
        "late or unfinished": len(late),
        "reused share, batches due while heat was wanted": reused / energy if energy else float("nan"),
        "reused share, all batch energy": sum(b.reused_j for b in batches.batches)
        / max(sum(b.energy_j for b in batches.batches), 1e-9),
        "batch kWh": sum(b.energy_j for b in batches.batches) / 3.6e6,
    }
    print(f"\n{label}")
    for key, value in row.items():
        print(f"  {key:<50} {value:.3f}" if isinstance(value, float) else f"  {key:<50} {value}")
    return row


def with_the_planner(work_h: float) -> bool:
    """Night batches in a setback fortnight: reacting, their deadline rule runs them in the cold
    small hours; with the planner, their heat is made in the warm-up the morning wants anyway."""
    setback = ROOT / "examples" / "planner" / "setback-fortnight.yaml"
    base = load_scenario(setback)
    model = SimGpuModel(base.gpu)
    efficient_w = max(base.gpu.work_at_w, key=lambda p: p[1] / max(model.power_w(p[0], 1.0), 1e-9))[0]
    work = work_h * 3600.0 * model.work_rate(efficient_w, 1.0)
    # Every night at 23:00 a batch due at 03:00, before a reacting loop or an optimum start heats.
    batches = [{"at_h": 23.0, "requests": 50, "work_per_request": work / 50, "window_h": 4.0, "every_h": 24.0}]
    scen = base.model_copy(update={"batches": Scenario.model_validate({"duration_h": 1, "batches": batches}).batches})
    zone = {"name": "room", "temperature": {"topic": "t"}, "setpoint": {"topic": "s"}, "gpus": ["gpu0"]}
    runs = {}
    from heatctl.control.policy import TickPolicy

    work_for_plan = TickPolicy.work_for_plan
    for label, planner in (
        ("reacting", None),
        ("planner", {"objective": "energy"}),
        ("blind", {"objective": "energy"}),
    ):
        cfg = Config.model_validate(
            {"mqtt": None, "zones": [zone], "gpus": [{"id": "gpu0", "backend": "sim"}]}
            | ({"planner": planner} if planner else {})
        )
        if label == "blind":  # the planner, not told of the work: the deadline rule alone runs it
            TickPolicy.work_for_plan = lambda self, zone: ()  # type: ignore[method-assign]
        try:
            runs[label] = simulate(scen, cfg, base_dir=setback.parent)
        finally:
            TickPolicy.work_for_plan = work_for_plan  # type: ignore[method-assign]
    print(f"\nnight batches ({work_h:g} h of work, 23:00 → 03:00) in the setback fortnight, second week:")
    print(f"  {'':<10}{'on time':>9}{'batch kWh':>11}{'reused':>8}{'discomfort K·h':>16}{'energy kWh':>12}")
    shares = {}
    for label, result in runs.items():
        assert result.batches is not None
        week = [b for b in result.batches.batches if 7 * 86400.0 <= b.deadline_s <= base.duration_h * 3600.0]
        energy = sum(b.energy_j for b in week)
        shares[label] = sum(b.reused_j for b in week) / energy if energy else float("nan")
        k = kpis_since(result, 7 * 86400.0)
        print(
            f"  {label:<10}{sum(b.on_time for b in week):>5}/{len(week):<3}{energy / 3.6e6:>11.2f}{shares[label]:>8.1%}"
            f"{k['discomfort_kh']:>16.2f}{k['energy_kwh']:>12.1f}"
        )
    on_time = all(
        b.on_time
        for r in runs.values()
        for b in (r.batches.batches if r.batches else [])
        if b.deadline_s <= base.duration_h * 3600.0
    )
    better = shares["planner"] > max(shares["reacting"], shares["blind"])
    print(f"  {'PASS' if on_time else 'FAIL'}  every batch in its window")
    print(f"  {'PASS' if better else 'FAIL'}  with the work in its plan, more of the batch energy is reused heat")
    return on_time and better


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--step-s", type=float, default=30.0)
    parser.add_argument("--work-h", type=float, default=2.0, help="each batch's work, hours at the efficient cap")
    parser.add_argument("--parts", default="week,planner", help="week: the deadline week; planner: night batches")
    args = parser.parse_args()
    parts = {p.strip() for p in args.parts.split(",")}
    planner_ok = with_the_planner(1.5) if "planner" in parts else True
    if "week" not in parts:
        return 0 if planner_ok else 1
    with tempfile.TemporaryDirectory() as tmp:
        scen = scenario(Path(tmp), args.step_s, args.work_h)
        end_s = WEEK_H * 3600.0
        with_rule = simulate(scen)
        assert with_rule.batches is not None
        summary = kpis(with_rule)
        print(f"room: discomfort {summary['discomfort_kh']:.2f} K·h, energy {summary['energy_kwh']:.1f} kWh")
        rule = report("heatctl (deadline rule)", with_rule.batches, end_s)

        import heatctl.sim.scenario as scenario_module

        original = scenario_module.SimBatches
        scenario_module.SimBatches = NoDeadlineRule  # type: ignore[misc]
        try:
            without = simulate(scen)
        finally:
            scenario_module.SimBatches = original  # type: ignore[misc]
        assert without.batches is not None
        report("without the deadline rule (batch work only while heat is wanted)", without.batches, end_s)
    ok_time = rule["late or unfinished"] == 0
    ok_reuse = rule["reused share, batches due while heat was wanted"] >= 0.95
    print(f"\ntarget: every batch in its window: {'PASS' if ok_time else 'FAIL'}")
    print(f"target: ≥ 95 % of batch energy reused while heat is wanted: {'PASS' if ok_reuse else 'FAIL'}")
    return 0 if ok_time and ok_reuse and planner_ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
