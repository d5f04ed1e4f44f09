"""A house of heaters in virtual time: several nodes, one power budget, one pool of batch work.

Each node is a ``SimNode`` (its room, schedule, GPU and weather; the service's tick policy). At
each tick the budget is split like the service's ``NodeHouse`` splits it (``house.budget.split``,
from every node's last ``house_wants``), and each node's share is its ``budget_w``. The pool is one
``SimBatches``: a node's GPU pays into it whenever it runs, that is while its room wants heat, or
while the house's deadlines need the work (the same ``at_risk`` rule, judged over the pool with
every node's rate, as ``house.work.PooledWork``). ``round-robin`` deals each arrival out evenly
instead: each node runs its own share, for its room or for its share's deadline.

KPIs: ``pool_heat_reused_share`` (the pool's energy made while its node's room wanted heat),
``deadlines_met`` (the pool's batches done by their deadline, of those due in the run) and
``budget_exceeded_s`` (time the nodes drew more than the budget together).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Self

import numpy as np
from pydantic import Field, model_validator

from heatctl.config import Config, SimGpuConfig
from heatctl.config.loader import load_model
from heatctl.control.policy import house_wants
from heatctl.house.budget import PeerState, split
from heatctl.sim.batches import SimBatch, SimBatches, SimWorkSource
from heatctl.sim.runner import SimNode, SimResult, _full_rate
from heatctl.sim.scenario import (
    BackupHeaterConfig,
    BatchArrivalConfig,
    EventConfig,
    Room1R1CConfig,
    Room2R2CConfig,
    Scenario,
    ScheduleEntry,
    WeatherConfig,
    _Strict,
)

HOUSE_CONTROLLERS = ("heatctl", "round-robin")
BUDGET_TOLERANCE_W = 0.5  # rounding in the plant's steady state


class HouseNodeConfig(_Strict):
    """One node of a house: a scenario's room, weather, schedule, GPU and events (the rest is the house's)."""

    name: Annotated[str, Field(pattern=r"^[a-z0-9_-]+$")]
    room: Annotated[Room1R1CConfig | Room2R2CConfig, Field(discriminator="model")] = Room2R2CConfig()
    weather: WeatherConfig = WeatherConfig(constant_c=5.0)
    schedule: list[ScheduleEntry] = Field(default=[ScheduleEntry(at="00:00", setpoint_c=21.0)], min_length=1)
    gpu: SimGpuConfig = SimGpuConfig()
    backup_heater: BackupHeaterConfig | None = None
    sensor_resolution_k: Annotated[float, Field(ge=0)] = 0.1
    events: list[EventConfig] = Field(default_factory=list)


class PoolConfig(_Strict):
    arrivals: Annotated[list[BatchArrivalConfig], Field(min_length=1)]


class HouseScenario(_Strict):
    """``nodes:`` each a room, a schedule, a GPU and a weather (a scenario's fields, each node's own);
    the rest is the house's: its time, its budget, its pool of work."""

    name: str | None = None
    duration_h: Annotated[float, Field(gt=0, le=24 * 366)]
    step_s: Annotated[float, Field(gt=0, le=600)] = 30.0
    start: datetime = datetime(2026, 1, 5)
    timezone: str | None = None
    budget_w: Annotated[float, Field(gt=0)]
    nodes: Annotated[list[HouseNodeConfig], Field(min_length=2)]
    pool: PoolConfig

    @model_validator(mode="after")
    def _names_once(self) -> Self:
        names = self.node_names()
        if len(set(names)) != len(names):
            raise ValueError(f"every node needs its own name; got {names}")
        return self

    def node_names(self) -> list[str]:
        return [node.name for node in self.nodes]

    def node_scenario(self, i: int) -> Scenario:
        """Node ``i`` as a scenario of its own: the house's time, the node's room and machine."""
        common = {"name": self.name, "duration_h": self.duration_h, "step_s": self.step_s, "start": self.start}
        node = self.nodes[i].model_dump(exclude={"name"})
        return Scenario.model_validate(common | {"timezone": self.timezone} | node)

    def build_pool(self, share: float = 1.0) -> SimBatches:
        """The pool's arrivals (``share`` of each: a node's part under round-robin)."""
        end_s = self.duration_h * 3600.0
        made = []
        for b in self.pool.arrivals:
            at_s = b.at_h * 3600.0
            while at_s < end_s:
                work = b.requests * b.work_per_request * share
                made.append(SimBatch(arrival_s=at_s, deadline_s=at_s + b.window_h * 3600.0, work=work, left=work))
                if b.every_h is None:
                    break
                at_s += b.every_h * 3600.0
        return SimBatches(made)


def load_house_scenario(path: str | Path) -> HouseScenario:
    """Read and validate a house scenario (errors as config errors: every one, with its path)."""
    return load_model(HouseScenario, path)


def is_house_scenario(path: Path) -> bool:
    """A scenario file with ``nodes:`` is a house's."""
    import yaml

    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return False
    return isinstance(raw, dict) and "nodes" in raw


@dataclass(slots=True)
class HouseResult:
    house: HouseScenario
    controller: str
    nodes: dict[str, SimResult]
    pools: list[SimBatches]  # one (the house's) or one a node (round-robin)
    total_w: np.ndarray[Any, np.dtype[np.float64]]
    budget_exceeded_s: float


def simulate_house(
    house: HouseScenario,
    config: Config | None = None,
    *,
    controller: str = "heatctl",
    base_dir: Path = Path("."),
    progress: Callable[[float], None] | None = None,
) -> HouseResult:
    """Run the house's nodes together against one budget and one pool (``round-robin``: a pool each)."""
    if controller not in HOUSE_CONTROLLERS:
        raise ValueError(f"a house runs with --controller {' or '.join(HOUSE_CONTROLLERS)}, not {controller}")
    names = house.node_names()
    now = [0.0]
    nodes: dict[str, SimNode] = {}
    pools: list[SimBatches] = []
    if controller == "heatctl":
        pool = house.build_pool()
        pools.append(pool)
        # The house's deadlines: the pool's work left at every node's efficient rate.
        due = SimWorkSource(pool, lambda: now[0], lambda: sum(_rate(node) for node in nodes.values()))
        for i, name in enumerate(names):
            nodes[name] = SimNode(house.node_scenario(i), config, base_dir=base_dir, batches=pool, work=due)
    else:
        for i, name in enumerate(names):
            share = house.build_pool(1.0 / len(names))
            pools.append(share)
            nodes[name] = SimNode(
                house.node_scenario(i), config, controller="round-robin", base_dir=base_dir, batches=share
            )
    step_s = house.step_s
    n = min(node.n for node in nodes.values())
    total_w = np.zeros(n)
    exceeded_s = 0.0
    shares = dict.fromkeys(names, house.budget_w / len(names))  # before any node has said what it wants
    report_every = max(n // 100, 1)
    for k in range(n):
        now[0] = t = k * step_s
        decided = False
        for name, node in nodes.items():
            decided = node.tick(k, budget_w=shares[name]) is not None or decided
        if decided:  # the reports go round: the next ticks' split (the service's NodeHouse, without NATS)
            peers = {name: _report(node, t) for name, node in nodes.items()}
            shares = split(house.budget_w, peers, t, math.inf)
        drawn_w = 0.0
        for node in nodes.values():
            node.advance(k)
            drawn_w += node.gpu_w
        total_w[k] = drawn_w
        if drawn_w > house.budget_w + BUDGET_TOLERANCE_W:
            exceeded_s += step_s
        if progress is not None and k % report_every == 0:
            progress(k / n)
    if progress is not None:
        progress(1.0)
    results = {name: node.result() for name, node in nodes.items()}
    for result in results.values():
        result.batches = None  # the pool is the house's: its figures are house_kpis'
    return HouseResult(house, controller, results, pools, total_w, exceeded_s)


def _rate(node: SimNode) -> float:
    return _full_rate(node.ctrl, node.plant, node.gpu_ids)


def _report(node: SimNode, t: float) -> PeerState | None:
    if node.decision is None:
        return None
    comfort_w, due_w = house_wants(node.decision, node.capacity_w)
    return PeerState(comfort_w, due_w, 0.0, node.capacity_w, t, floor_w=node.floor_w)


def house_kpis(result: HouseResult) -> dict[str, float]:
    """The house's figures: the pool's heat reused and deadlines, the budget, the energy."""
    end_s = result.house.duration_h * 3600.0
    batches = [b for pool in result.pools for b in pool.batches]
    closed = [b for b in batches if b.done_s is not None or b.deadline_s <= end_s]
    energy_j = sum(b.energy_j for b in batches)
    step_s = result.house.step_s
    return {
        "pool_heat_reused_share": sum(b.reused_j for b in batches) / energy_j if energy_j > 0 else math.nan,
        "deadlines_met": sum(b.on_time for b in closed) / len(closed) if closed else math.nan,
        "pool_batches": float(len(closed)),
        "pool_kwh": energy_j / 3.6e6,
        "budget_exceeded_s": result.budget_exceeded_s,
        "house_kwh": float(result.total_w.sum()) * step_s / 3.6e6,
        "peak_w": float(result.total_w.max()) if len(result.total_w) else 0.0,
        "budget_w": result.house.budget_w,
    }


def write_house_outputs(
    results: dict[str, HouseResult], summaries: dict[str, dict[str, Any]], out_dir: Path
) -> list[Path]:
    """summary.json (the house and each node, for every controller run), each node's time series and
    a plot of the house: every node's draw stacked under the budget, and the rooms."""
    from heatctl.sim.report import write_outputs

    out_dir.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    first = next(iter(results.values()))
    for name, result in first.nodes.items():
        paths += write_outputs(result, summaries[first.controller]["nodes"][name], out_dir / name)[:1]
    summary_path = out_dir / "summary.json"
    clean = json.loads(json.dumps(summaries, default=str).replace("NaN", "null"))
    summary_path.write_text(json.dumps(clean, indent=2) + "\n", encoding="utf-8")
    plot_path = out_dir / "house.png"
    plot_house(first, plot_path, summaries[first.controller]["house"])
    return [summary_path, plot_path, *paths]


def plot_house(result: HouseResult, path: Path, house: dict[str, float]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_w, ax_c) = plt.subplots(2, 1, figsize=(12, 7), sharex=True)
    any_node = next(iter(result.nodes.values()))
    hours = any_node.series["time_s"][: len(result.total_w)] / 3600.0
    draws = [r.series["gpu_power_w"][: len(hours)] for r in result.nodes.values()]
    ax_w.stackplot(hours, draws, labels=list(result.nodes), alpha=0.7)
    ax_w.axhline(result.house.budget_w, color="black", linestyle="--", label="house budget")
    ax_w.set_ylabel("GPU draw, W")
    ax_w.legend(loc="upper right", fontsize=8)
    ax_w.set_title(
        f"{result.house.name or 'house'} ({result.controller}): pool heat reused "
        f"{house['pool_heat_reused_share']:.0%}, deadlines met {house['deadlines_met']:.0%}, "
        f"over budget {house['budget_exceeded_s']:.0f} s"
    )
    for name, r in result.nodes.items():
        line = ax_c.plot(hours, r.series["room_c"][: len(hours)], label=f"{name} room")[0]
        ax_c.plot(hours, r.series["setpoint_c"][: len(hours)], color=line.get_color(), linestyle=":", linewidth=0.8)
    ax_c.set_ylabel("°C (dotted: setpoint)")
    ax_c.set_xlabel("hours")
    ax_c.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
