"""KPIs, time-series CSV and the plot of a simulation run."""

from __future__ import annotations

import csv
import itertools
import json
import math
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from heatctl.accounting import PLAN_WARMING_W
from heatctl.config import ZoneConfig
from heatctl.money import heat_price_per_kwh
from heatctl.sim.runner import COLUMNS, FloatArray, SimResult

BoolArray = npt.NDArray[np.bool_]
WARMUP_S = 6 * 3600.0
KPI_UNITS = {
    "rms_error_k": "K",
    "steady_hours": "h",
    "occupied_rms_error_k": "K",
    "occupied_hours": "h",
    "max_overshoot_k": "K",
    "discomfort_kh": "K·h",
    "overheat_kh": "K·h",
    "energy_kwh": "kWh",
    "backup_kwh": "kWh",
    "added_kwh": "kWh",
    "heat_reused_kwh": "kWh",
    "erf": "",
    "work_done": "units",
    "work_per_kwh": "units/kWh",
    "limit_writes_per_h": "1/h",
    "cost": "currency",
    "heat_value": "currency",
    "tokens_per_kwh": "tokens/kWh",
    "j_per_token": "J/token",
    "net_saving": "currency",
    "carbon_kg": "kg CO2",
    "main_kwh": "kWh",
    "gpu_heat_share": "share",
    "main_switches_per_day": "1/day",
    "batches": "batches",
    "batches_on_time": "batches",
    "batch_kwh": "kWh",
    "batch_heat_reused_share": "share",
    # a house (sim/house.py)
    "pool_heat_reused_share": "share",
    "deadlines_met": "share",
    "pool_batches": "batches",
    "pool_kwh": "kWh",
    "budget_exceeded_s": "s",
    "peak_w": "W",
    "budget_w": "W",
    "house_kwh": "kWh",
}
OVERHEAT_BAND_K = 1.0
STEADY_HOURS_ENOUGH = 24.0


def steady_mask(result: SimResult) -> BoolArray:
    """Samples in steady operation, as DESIGN.md defines them for rms_error_k."""
    s = result.series
    t, room, sp, outdoor = s["time_s"], s["room_c"], s["setpoint_c"], s["outdoor_c"]
    scen = result.scenario
    mask = t >= WARMUP_S
    # At least 2 h after the last setpoint change, and after the room first reached it.
    change_idx = [0, *(np.flatnonzero(np.diff(sp) != 0) + 1).tolist(), len(t)]
    for a, b in itertools.pairwise(change_idx):
        near = np.flatnonzero(np.abs(room[a:b] - sp[a:b]) <= 0.1)
        settled_s = max(t[a] + 2 * 3600.0, t[a + near[0]] if near.size else math.inf)
        mask[a:b] &= t[a:b] >= settled_s
    for event in scen.events:
        start_s, end_s = event.span_s
        mask &= ~((t >= start_s) & (t < end_s + 3600.0))
    free_running_c = outdoor + scen.room.gains_w * scen.room.total_r_k_per_w
    mask &= free_running_c < sp - 0.5
    return mask


def kpis_since(result: SimResult, start_s: float) -> dict[str, float]:
    """KPIs from ``start_s`` on (e.g. the second week: the first is warm-up and learning)."""
    s = result.series
    keep = s["time_s"] >= start_s
    trimmed = SimResult(
        scenario=result.scenario.model_copy(update={"duration_h": result.scenario.duration_h - start_s / 3600.0}),
        controller=result.controller,
        series={k: v[keep] - (start_s if k == "time_s" else 0.0) for k, v in s.items()},
        mode=[m for m, k in zip(result.mode, keep, strict=True) if k],
        failsafe=[f for f, k in zip(result.failsafe, keep, strict=True) if k],
        idle_w=result.idle_w,
        main_switches=result.main_switches,
        zone=result.zone,
    )
    return kpis(trimmed)


def kpis(result: SimResult) -> dict[str, float]:
    s = result.series
    step_s = result.scenario.step_s
    after = s["time_s"] >= WARMUP_S
    room, sp = s["room_c"][after], s["setpoint_c"][after]
    gpu_w, backup_w = s["gpu_power_w"][after], s["backup_w"][after]
    j_per_kwh = 3.6e6
    steady = steady_mask(result)
    err = s["room_c"][steady] - s["setpoint_c"][steady]
    added_w = np.maximum(gpu_w - result.idle_w, 0.0)
    energy_kwh = float(gpu_w.sum() * step_s / j_per_kwh)
    added_kwh = float(added_w.sum() * step_s / j_per_kwh)
    # Heat is wanted up to the setpoint, or up to the plan's target while the plan heats (ahead of a
    # setpoint rise, or storing cheap heat) — not while it lets the room coast.
    warming = s["plan_w"][after] > result.idle_w + PLAN_WARMING_W
    wanted_c = np.where(warming, np.fmax(sp, s["target_c"][after]), sp)
    reused = room <= wanted_c + 0.5
    reused_kwh = float(added_w[reused].sum() * step_s / j_per_kwh)
    work_done = float(s["work_rate"][after].sum() * step_s)
    limit = s["power_limit_w"][after]
    hours = max(after.sum() * step_s / 3600.0, 1e-9)
    # Occupied: the comfort setpoint is on (the schedule's highest value), whatever the room did.
    occupied = sp >= sp.max() - 1e-9 if sp.size else sp.astype(bool)
    occupied_err = room[occupied] - sp[occupied]
    # Overheat heatctl caused: above the band while the GPU was adding heat, not a room still
    # cooling down after a setback with the GPU idle.
    heating = added_w > 1.0
    price = s["price_per_kwh"][after]
    # What came from the grid: the solar surplus (export the house had anyway) heats for free.
    bought_w = np.maximum(gpu_w + backup_w - s["surplus_w"][after], 0.0)
    carbon = s["carbon_g_per_kwh"][after]
    return (
        {
            "rms_error_k": float(np.sqrt(np.mean(err**2))) if err.size else math.nan,
            "steady_hours": float(steady.sum() * step_s / 3600.0),
            "occupied_rms_error_k": float(np.sqrt(np.mean(occupied_err**2))) if occupied_err.size else math.nan,
            "occupied_hours": float(occupied.sum() * step_s / 3600.0),
            "max_overshoot_k": float(max(err.max(), 0.0)) if err.size else math.nan,
            "discomfort_kh": float(np.maximum(sp - 0.5 - room, 0).sum() * step_s / 3600.0),
            "overheat_kh": float((np.maximum(room - wanted_c - OVERHEAT_BAND_K, 0) * heating).sum() * step_s / 3600.0),
            "energy_kwh": energy_kwh,
            "backup_kwh": float(backup_w.sum() * step_s / j_per_kwh),
            "added_kwh": added_kwh,
            "heat_reused_kwh": reused_kwh,
            "erf": reused_kwh / added_kwh if added_kwh > 0 else math.nan,
            "work_done": work_done,
            "work_per_kwh": work_done / energy_kwh if energy_kwh > 0 else math.nan,
            "limit_writes_per_h": float(np.count_nonzero(np.diff(limit) != 0) / hours),
            "cost": (cost := float((bought_w * price).sum() * step_s / j_per_kwh))
            if not np.isnan(price).any()
            else math.nan,
            "heat_value": (value := _heat_value(result.zone, added_w * reused, price, step_s)),
            "net_saving": value - cost if not np.isnan(price).any() else math.nan,
            "carbon_kg": float((bought_w * carbon).sum() * step_s / j_per_kwh / 1000.0)
            if not np.isnan(carbon).any()
            else math.nan,
        }
        | (_token_kpis(work_done, energy_kwh) if result.scenario.gpu.inference is not None else {})
        | (result.batches.kpis(result.scenario.duration_h * 3600.0) if result.batches is not None else {})
        | _main_kpis(result, after, gpu_w, backup_w)
    )


def _token_kpis(tokens: float, energy_kwh: float) -> dict[str, float]:
    """An LLM server plant: its work is tokens; every one's energy counted (idle included)."""
    return {
        "tokens_per_kwh": tokens / energy_kwh if energy_kwh > 0 else math.nan,
        "j_per_token": energy_kwh * 3.6e6 / tokens if tokens > 0 else math.nan,
    }


def _main_kpis(result: SimResult, after: BoolArray, gpu_w: FloatArray, backup_w: FloatArray) -> dict[str, float]:
    """With a main heating in the scenario: its energy, the GPU's share of all heat, stage switches per day."""
    if result.scenario.main_heating is None:
        return {}
    step_s = result.scenario.step_s
    main_kwh = float(result.series["main_w"][after].sum() * step_s / 3.6e6)
    gpu_kwh = float(gpu_w.sum() * step_s / 3.6e6)
    total = gpu_kwh + main_kwh + float(backup_w.sum() * step_s / 3.6e6)
    days = max(float(after.sum()) * step_s / 86400.0, 1e-9)
    return {
        "main_kwh": main_kwh,
        "gpu_heat_share": gpu_kwh / total if total > 0 else math.nan,
        "main_switches_per_day": result.main_switches / days if result.main_switches is not None else math.nan,
    }


def _heat_value(zone: ZoneConfig | None, reused_w: FloatArray, price: FloatArray, step_s: float) -> float:
    """The heat the room wanted, at what its own heating would have charged for it (``heatctl.money``)."""
    per_price = heat_price_per_kwh(zone, 1.0)  # a COP divides the price; a fixed heat price does not
    fixed = heat_price_per_kwh(zone, None)
    heat_price = np.full(price.shape, fixed) if fixed is not None else price * (per_price or math.nan)
    if np.isnan(heat_price).any():
        return math.nan
    return float((reused_w * heat_price).sum() * step_s / 3.6e6)


def _cost(power_w: FloatArray, price_per_kwh: FloatArray, step_s: float) -> float:
    """Electricity at the tariff; NaN without one."""
    if np.isnan(price_per_kwh).any():
        return math.nan
    return float((power_w * price_per_kwh).sum() * step_s / 3.6e6)


def format_table(rows: dict[str, dict[str, float]], *, work_unit: str = "units") -> str:
    """KPIs as a text table, one column per run; a note where a KPI covers little time."""
    names = list(rows)
    keys = [k for k in KPI_UNITS if any(k in r for r in rows.values())]
    width = max(12, *(len(n) for n in names))
    lines = [f"{'KPI':<24}{'unit':<13}" + "".join(f"{n:>{width + 2}}" for n in names)]
    for key in keys:
        unit = KPI_UNITS[key].replace("units", work_unit)
        cells = "".join(f"{_fmt(rows[n].get(key, math.nan)):>{width + 2}}" for n in names)
        lines.append(f"{key:<24}{unit:<13}{cells}")
    short = [n for n in names if rows[n].get("steady_hours", math.inf) < STEADY_HOURS_ENOUGH]
    if short:
        hours = ", ".join(f"{n}: {rows[n]['steady_hours']:.1f} h" for n in short)
        lines.append(f"note: rms_error_k covers little steady operation ({hours}); see occupied_rms_error_k")
    return "\n".join(lines)


def _share(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.0%}"


def _count(value: float) -> str:
    """A large count as a person reads it: 1.17 million, 940 thousand."""
    if math.isnan(value):
        return "n/a"
    for size, word in ((1e9, "billion"), (1e6, "million"), (1e3, "thousand")):
        if abs(value) >= size:
            return f"{value / size:.3g} {word}"
    return f"{value:.3g}"


def _fmt(value: float) -> str:
    if math.isnan(value):
        return "n/a"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.3f}"


def write_outputs(result: SimResult, summary: dict[str, float], out_dir: Path) -> list[Path]:
    """timeseries.csv, summary.json and plot.png in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path = out_dir / "timeseries.csv"
    s = result.series
    columns = {c: np.round(s[c], 4).tolist() for c in COLUMNS if c in s}
    columns |= {"mode": result.mode, "failsafe": result.failsafe}
    with csv_path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(COLUMNS)
        writer.writerows(zip(*(columns[c] for c in COLUMNS), strict=True))
    json_path = out_dir / "summary.json"
    payload: dict[str, Any] = {
        "scenario": result.scenario.name,
        "controller": result.controller,
        "duration_h": result.scenario.duration_h,
        "kpis": {k: (None if math.isnan(v) else v) for k, v in summary.items()},
    }
    if result.model is not None or result.planner_status is not None:
        payload["model"] = result.model.public() if result.model is not None else None
        payload["planner"] = result.planner_status
    json_path.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    plot_path = out_dir / "plot.png"
    plot(result, plot_path, summary)
    return [csv_path, json_path, plot_path]


def _bucket_mean(values: FloatArray, size: int) -> FloatArray:
    n = len(values) // size * size
    return values[:n].reshape(-1, size).mean(axis=1) if size > 1 else values


EVENT_STYLES = {  # kind → (colour, legend label)
    "window_open_min": ("tab:cyan", "window open"),
    "sensor_dropout_min": ("tab:olive", "sensor silent"),
    "mode_off_min": ("tab:gray", "mode off"),
    "interactive_min": ("tab:pink", "others use the GPU"),
}


def plot(result: SimResult, path: Path, summary: dict[str, float] | None = None, *, max_points: int = 4000) -> None:
    """Room vs setpoint and outdoor; GPU power, limit and backup heat per hour; work rate; a footer of totals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    s = result.series
    summary = summary if summary is not None else kpis(result)
    size = max(1, len(s["time_s"]) // max_points)
    # The scenario's own clock on the axis (its start, in its time zone): days and times, not hours since 0.
    start_s, tz = result.scenario.start_epoch_s, result.scenario.tz

    def clock_times(seconds: FloatArray) -> list[datetime]:
        return [datetime.fromtimestamp(start_s + t, tz) for t in seconds.tolist()]

    hours = clock_times(_bucket_mean(s["time_s"], size))
    fig, (ax_t, ax_p, ax_w) = plt.subplots(
        3, 1, figsize=(13, 8.5), sharex=True, gridspec_kw={"height_ratios": [3, 2, 1]}
    )
    title = result.scenario.name or "simulation"
    fig.suptitle(f"{title} — controller: {result.controller}")
    outside = {"loc": "upper left", "bbox_to_anchor": (1.07, 1.0), "fontsize": 8, "frameon": False}
    ax_t.plot(hours, _bucket_mean(s["setpoint_c"], size), color="tab:gray", lw=1, label="setpoint")
    ax_t.plot(hours, _bucket_mean(s["room_c"], size), color="tab:red", lw=1.2, label="room")
    if result.scenario.main_heating is not None and not np.isnan(s["main_setpoint_c"]).all():
        ax_t.plot(
            hours,
            _bucket_mean(s["main_setpoint_c"], size),
            color="tab:brown",
            lw=0.8,
            ls=":",
            label="main heating setpoint",
        )
    if not np.isnan(s["plan_w"]).all():
        ax_t.plot(hours, _bucket_mean(s["target_c"], size), color="tab:green", lw=0.8, ls="--", label="plan's room")
    ax_o = ax_t.twinx()
    ax_o.plot(hours, _bucket_mean(s["outdoor_c"], size), color="tab:blue", lw=0.8, alpha=0.6)
    ax_o.set_ylabel("outdoor °C", color="tab:blue")
    ax_t.set_ylabel("room °C")
    kinds = _shade_events(ax_t, result, clock_times)
    handles, _ = ax_t.get_legend_handles_labels()
    handles.append(Line2D([], [], color="tab:blue", lw=0.8, alpha=0.6, label="outdoor (right axis)"))
    handles += [Patch(color=EVENT_STYLES[k][0], alpha=0.3, label=EVENT_STYLES[k][1]) for k in kinds]
    ax_t.legend(handles=handles, **outside)
    ax_p.plot(hours, _bucket_mean(s["gpu_power_w"], size), color="tab:orange", lw=0.8, label="GPU power (mean)")
    limit = _bucket_mean(s["power_limit_w"], size)
    drawn = _bucket_mean(s["gpu_power_w"], size)
    capping = np.zeros(len(limit), dtype=bool)
    if np.isfinite(limit).any():  # the limit only where it holds the card: below its most, the card at it
        capping = (limit < np.nanmax(limit) - 1.0) & (drawn >= limit - 10.0)
    if capping.any():
        shown = np.where(capping, limit, np.nan)
        ax_p.plot(hours, shown, color="black", lw=0.6, ls="--", label="power limit (where it caps)")
    if not np.isnan(s["plan_w"]).all():
        ax_p.plot(
            hours, _bucket_mean(np.nan_to_num(s["plan_w"]), size), color="tab:green", lw=0.8, label="planned heat"
        )
    if not np.isnan(s["price_per_kwh"]).all():
        ax_c = ax_p.twinx()
        ax_c.step(hours, _bucket_mean(s["price_per_kwh"], size), where="mid", color="tab:gray", lw=0.6, alpha=0.7)
        ax_c.set_ylabel("price/kWh", color="tab:gray")
    per_hour = max(1, round(3600.0 / result.scenario.step_s))
    hour_starts = clock_times(_bucket_mean(s["time_s"], per_hour) - 1800.0)
    for column, color, label in (
        ("backup_w", "tab:purple", "backup heater (Wh per hour)"),
        ("main_w", "tab:brown", "main heating (Wh per hour)"),
    ):
        if s[column].any():  # mean W over an hour = Wh in that hour
            ax_p.fill_between(
                hour_starts, _bucket_mean(s[column], per_hour), step="post", color=color, alpha=0.35, lw=0, label=label
            )
    ax_p.set_ylabel("W")
    ax_p.legend(**outside)
    ax_w.plot(hours, _bucket_mean(s["work_rate"], size), color="tab:green", lw=0.8)
    ax_w.set_ylabel("tokens per second" if result.scenario.gpu.inference is not None else "work per second")
    if result.scenario.gpu.inference is not None:  # the batch: a lever of its own
        ax_n = ax_w.twinx()
        ax_n.step(hours, _bucket_mean(s["in_flight"], size), where="mid", color="tab:purple", lw=0.6, alpha=0.7)
        ax_n.set_ylabel("requests in flight", color="tab:purple")
    locator = mdates.AutoDateLocator(tz=tz)  # type: ignore[no-untyped-call]
    ax_w.xaxis.set_major_locator(locator)
    ax_w.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator, tz=tz))  # type: ignore[no-untyped-call]
    ax_w.set_xlabel(f"local time ({result.scenario.timezone or 'UTC'})")
    for ax in (ax_t, ax_p, ax_w):
        ax.grid(alpha=0.3)
    fig.text(0.01, 0.01, footer(summary, result), fontsize=9, family="monospace", va="bottom")
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    fig.savefig(path, dpi=100)
    plt.close(fig)


def footer(summary: dict[str, float], result: SimResult) -> str:
    """Totals per day a person compares with a bill: energy, heat reused, backup, cost."""
    days = max(result.scenario.duration_h - WARMUP_S / 3600.0, 1.0) / 24.0
    text = (
        f"per day: GPU {summary['energy_kwh'] / days:.2f} kWh, {summary['added_kwh'] / days:.2f} kWh of it above idle, "
        f"{summary['heat_reused_kwh'] / days:.2f} kWh of that wanted ({_share(summary['erf'])} of the heat reused); "
        f"backup heater {summary['backup_kwh'] / days:.2f} kWh"
    )
    if not math.isnan(summary.get("cost", math.nan)):
        text += (
            f"; electricity {summary['cost'] / days:.2f},"
            f" the heat it replaced worth {summary['heat_value'] / days:.2f},"
            f" net {summary['net_saving'] / days:+.2f} at the scenario's tariff"
        )
    unit = "tokens" if result.scenario.gpu.inference is not None else "units of work"
    return text + f"\n{_count(summary['work_per_kwh'])} {unit} per kWh"


def _shade_events(ax: Any, result: SimResult, clock_times: Any) -> list[str]:
    """Shade each event's span; returns the kinds drawn, for the legend."""
    kinds: list[str] = []
    for event in result.scenario.events:
        a, b = clock_times(np.array(event.span_s, dtype=float))
        kind = next(k for k in EVENT_STYLES if getattr(event, k))
        ax.axvspan(a, b, color=EVENT_STYLES[kind][0], alpha=0.3, lw=0)
        if kind not in kinds:
            kinds.append(kind)
    return kinds
