"""A simulated house: three rooms of different weight and schedule for a week, one budget and one
pool of work with deadlines; each node's decisions from the service's own tick policy."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from heatctl.cli import main
from heatctl.house.budget import PeerState, split
from heatctl.sim.house import house_kpis, load_house_scenario, simulate_house

HOUSE = Path(__file__).resolve().parent.parent / "examples" / "house" / "house-week.yaml"


def test_the_house_week_runs_the_pool_where_heat_is_wanted_within_the_budget(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    assert main(["simulate", "--scenario", str(HOUSE), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "pool_heat_reused_share" in printed and "round-robin" in printed  # the baseline beside it
    summary = json.loads((out / "summary.json").read_text())
    ours, theirs = summary["heatctl"]["house"], summary["round-robin"]["house"]
    assert ours["pool_heat_reused_share"] >= 0.9
    assert ours["deadlines_met"] == 1.0 and ours["pool_batches"] >= 50  # every batch due in the week, on time
    assert ours["budget_exceeded_s"] == 0.0 and ours["peak_w"] <= 550.0 + 0.5
    assert theirs["pool_heat_reused_share"] < ours["pool_heat_reused_share"] - 0.1  # dealt out evenly: wasted
    assert theirs["budget_exceeded_s"] == 0.0  # the same split of the budget under both
    for room in ("living", "office", "bedroom"):
        kpis = summary["heatctl"]["nodes"][room]
        assert kpis["overheat_kh"] == 0.0 and kpis["heat_reused_kwh"] > 10
        assert (out / room / "timeseries.csv").stat().st_size > 100_000
    assert (out / "house.png").stat().st_size > 30_000


def test_without_the_budget_split_the_house_would_go_over_it() -> None:
    # The same week with every node's share its full capacity (no house): the three draw past 550 W.
    house = load_house_scenario(HOUSE).model_copy(update={"duration_h": 48.0})
    shared = house_kpis(simulate_house(house))
    alone = house_kpis(simulate_house(house.model_copy(update={"budget_w": 10_000.0})))
    assert shared["budget_exceeded_s"] == 0.0
    assert alone["peak_w"] > 550.0  # so the split is what held it


def test_each_node_keeps_its_floor_and_the_rest_is_split() -> None:
    now = 100.0
    peers = {
        "a": PeerState(300.0, 0.0, 0.0, 300.0, now, floor_w=20.0),
        "b": PeerState(300.0, 0.0, 0.0, 300.0, now, floor_w=20.0),
        "c": PeerState(0.0, 0.0, 0.0, 300.0, now, floor_w=20.0),  # a warm room: its GPU idles at 20 W
    }
    shares = split(550.0, peers, now, 30.0)
    assert shares["c"] == pytest.approx(20.0)  # what it draws idle, set aside
    assert shares["a"] == pytest.approx(265.0) and shares["b"] == pytest.approx(265.0)
    assert sum(shares.values()) == pytest.approx(550.0)
    assert PeerState.from_json(peers["a"].to_json()) == peers["a"]
    assert PeerState.from_json(b'{"comfort_w":1,"due_w":0,"store_w":0,"capacity_w":9,"at_s":1}') is not None  # older


def test_a_house_scenario_takes_only_the_house_controllers(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", "--scenario", str(HOUSE), "--controller", "cap", "--out", str(tmp_path)]) == 2
    assert "heatctl or round-robin" in capsys.readouterr().err
    assert main(["simulate", "--controller", "round-robin", "--out", str(tmp_path)]) == 2
    assert "house scenario" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "duration_h: 5\nbudget_w: 500\nnodes:\n  - {name: a, rooom: {}}\n  - {name: b}\npool: {arrivals: []}\n"
    )
    assert main(["simulate", "--scenario", str(bad), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "nodes[0].rooom" in err and "pool.arrivals" in err  # every problem, with its path


def test_the_solar_surplus_is_the_meters_export_plus_what_the_heaters_draw_behind_it() -> None:
    from heatctl.config import HouseConfig, SourceConfig
    from heatctl.house.budget import surplus_w
    from heatctl.house.node import NodeHouse

    now = 1000.0
    peers = {
        "a": PeerState(300.0, 0.0, 0.0, 300.0, now, draw_w=250.0, grid_w=-400.0),
        "b": PeerState(300.0, 0.0, 0.0, 300.0, now, draw_w=100.0, grid_w=-380.0),  # read a moment later
        "c": PeerState(300.0, 0.0, 0.0, 300.0, now - 60.0, draw_w=300.0, grid_w=-2000.0),  # silent: not counted
    }
    assert surplus_w(peers, now, 30.0) == pytest.approx(380.0 + 250.0 + 100.0)  # the least export seen
    assert surplus_w({"a": peers["a"]._replace(grid_w=None)}, now, 30.0) == 0.0  # no fresh meter: no surplus
    assert surplus_w({"a": peers["a"]._replace(grid_w=500.0, draw_w=200.0)}, now, 30.0) == 0.0  # importing
    assert PeerState.from_json(peers["a"].to_json()) == peers["a"]

    clock = [now]
    cfg = HouseConfig(budget_w=500.0, nodes=1, grid_power=SourceConfig(topic="meter/power"))
    house = NodeHouse(cfg, "a", wall_fn=lambda: clock[0])
    try:
        house.put_grid_w(-300.0)
        house.report(comfort_w=300.0, due_w=0.0, store_w=0.0, capacity_w=300.0, draw_w=200.0)
        own = house._own
        assert own is not None and own.grid_w == -300.0 and own.draw_w == 200.0
        assert house._known_budget_w({"a": own}, clock[0]) == pytest.approx(500.0 + 300.0 + 200.0)
        clock[0] += 61.0  # the meter not heard for a minute: its reading is not trusted
        house.report(comfort_w=300.0, due_w=0.0, store_w=0.0, capacity_w=300.0, draw_w=200.0)
        assert house._own is not None and house._own.grid_w is None
        assert house._known_budget_w({"a": house._own}, clock[0]) == 500.0
    finally:
        house._loop.close()  # never started
