"""``heatctl model`` and ``heatctl plan``: what the planner learned and plans, read from ``state_dir``."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

from heatctl.config import Config, PlannerConfig, ZoneConfig
from heatctl.errors import HeatctlError
from heatctl.planner.node import planner_path
from heatctl.planner.seed import Fetch


def _read(path: Path, what: str) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise HeatctlError(f"cannot read {what} {path}: {exc}") from exc
    return data if isinstance(data, dict) else None


def model_text(cfg: Config) -> str:
    lines = []
    for zone in cfg.zones:
        path = planner_path(cfg.resolved_state_dir(), zone.name)
        data = _read(path, "the planner's memory")
        model = data.get("model") if data else None
        rows = len((data or {}).get("history", {}).get("rows", []))
        if not model:
            seeded = f"; {data['history_source']}" if data and data.get("history_source") else ""
            lines.append(f"{zone.name}: nothing learned yet ({rows} samples of 5 min in {path}{seeded})")
            if cfg.homeassistant is not None and not seeded:
                lines += _preview_from_homeassistant(cfg, zone)
            continue
        trusted = "trusted" if model.get("trusted") else f"not trusted yet: {model.get('why_not', '')}"
        lines.append(
            f"{zone.name}: heat loss {model['ua_w_per_k']:.1f} W/K, time constant {model['tau_h']:.1f} h, "
            f"other gains {model.get('gains_w', 0.0):.0f} W; fit error {model['fit_rmse_k']:.2f} K "
            f"over {model['data_h']:.0f} h of data — {trusted}"
        )
        if source := (data or {}).get("history_source"):
            lines.append(f"  learned from {source}, then heatctl's own samples")
        if model.get("ce_j_per_k"):
            lines.append(
                f"  air and furniture {model['ci_j_per_k'] / 3.6e6:.2f} kWh/K behind {model['rie_k_per_w']:.4f} K/W, "
                f"envelope {model['ce_j_per_k'] / 3.6e6:.2f} kWh/K behind {model['rea_k_per_w']:.4f} K/W"
            )
    if cfg.planner is None:
        lines.append("(the config has no 'planner:' section: nothing is learned)")
    return "\n".join(lines)


def _preview_from_homeassistant(cfg: Config, zone: ZoneConfig, fetch: Fetch | None = None) -> list[str]:
    """Before the first run: what the room looks like from Home Assistant's history (fitted here,
    saved nowhere; ``run`` learns the same at start)."""
    import time

    from heatctl.planner.node import planner_settings
    from heatctl.planner.seed import fetch_zone_rows, ha_fetch
    from heatctl.planner.zone import ZonePlanner

    assert cfg.homeassistant is not None
    now = time.time()
    got = fetch_zone_rows(cfg, zone, fetch or ha_fetch(cfg.homeassistant), now, now)
    if isinstance(got, str):
        return [f"  from Home Assistant's history: {got}"]
    rows, source = got
    settings = planner_settings(cfg.planner or PlannerConfig(), zone, capacity_w=1.0, floor_w=0.0, max_power_w=None)
    planner = ZonePlanner(zone.name, settings)
    planner.seed(rows, source)
    model = planner.refit_now(now)
    if model is None:
        return [f"  from {source}: too little to fit"]
    trusted = "trusted: the planner starts with it" if model.trusted else f"not trusted: {model.why_not}"
    return [
        f"  from {source} (not saved; run learns the same at start):",
        f"  heat loss {model.ua_w_per_k:.1f} W/K, time constant {model.tau_h:.1f} h, other gains {model.gains_w:.0f} W;"
        f" fit error {model.fit_rmse_k:.2f} K over {model.data_h:.0f} h — {trusted}",
    ]


def plan_documents(cfg: Config) -> list[dict[str, Any]]:
    out = []
    for zone in cfg.zones:
        path = planner_path(cfg.resolved_state_dir(), zone.name).with_suffix(".plan.json")
        doc = _read(path, "the plan")
        out.append(doc or {"zone": zone.name, "status": "none", "reason": f"no plan yet ({path})", "steps": []})
    return out


def plan_text(doc: dict[str, Any], every: int = 4) -> str:
    head = f"{doc.get('zone')}: {doc.get('status')}" + (f" ({doc['reason']})" if doc.get("reason") else "")
    steps = doc.get("steps") or []
    if not steps:
        return head
    lines = [head, f"made {doc.get('created')}", "start             heat W  room °C  setpoint  price"]
    for step in steps[::every]:
        start = datetime.fromisoformat(step["start"]).astimezone().strftime("%a %H:%M")
        price = "" if step.get("price") is None else f"{step['price']:.3f}"
        lines.append(f"{start:<16} {step['heat_w']:7.0f}  {step['room_c']:7.2f}  {step['setpoint_c']:8.1f}  {price}")
    kwh = sum(s["heat_w"] for s in steps) * float(doc.get("step_s", 900)) / 3.6e6
    lines.append(f"{len(steps)} steps, {kwh:.2f} kWh planned (every {every}th step shown)")
    return "\n".join(lines)


def plot_plans(docs: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(docs), 1, figsize=(12, 4 * len(docs)), squeeze=False)
    for ax, doc in zip(axes[:, 0], docs, strict=True):
        steps = doc.get("steps") or []
        ax.set_title(f"{doc.get('zone')}: {doc.get('status')} {doc.get('reason') or ''}".strip())
        if not steps:
            continue
        times = [datetime.fromisoformat(s["start"]).astimezone() for s in steps]
        ax.step(times, [s["setpoint_c"] for s in steps], where="post", color="tab:gray", label="setpoint")
        ax.plot(times, [s["room_c"] for s in steps], color="tab:red", label="planned room")
        ax.set_ylabel("°C")
        heat = ax.twinx()
        heat.fill_between(times, [s["heat_w"] for s in steps], step="post", color="tab:orange", alpha=0.3)
        heat.set_ylabel("planned heat W", color="tab:orange")
        ax.legend(loc="upper left", fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
