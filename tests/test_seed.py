"""Day-one learning: the planner seeds a zone's history from Home Assistant's recorder."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from heatctl.config import parse_config
from heatctl.planner.node import NodePlanner
from heatctl.planner.seed import history_rows, wanted_series

NOW_S = 1_800_000_000.0
UA_W_PER_K, TAU_H = 40.0, 15.0

ZONE_YAML = """
node_id: seed
mqtt: null
state_dir: {state}
homeassistant: {{url: "http://127.0.0.1:1", token: t}}
planner: {{}}
zones:
  - name: office
    temperature: {{entity: sensor.office_temperature}}
    setpoint: {{entity: climate.office, attribute: temperature}}
    outdoor_temperature: {{entity: sensor.outdoor_temperature}}
    power_meter: {{entity: sensor.pc_power}}
    gpus: [gpu0]
gpus: [{{id: gpu0, backend: sim}}]
"""

Events = dict[str, list[tuple[float, str, dict[str, Any]]]]


def recorded_room(days: float, end_s: float = NOW_S, gap_h: tuple[float, float] | None = None) -> Events:
    """What Home Assistant records of a 1R1C room heated by a PC whose draw varies: changes only
    (0.1 K, 1 W resolution), as sensors report."""
    step_s = 60.0
    c_j_per_k = UA_W_PER_K * TAU_H * 3600.0
    room_c = 20.0
    events: Events = {
        k: [] for k in ("sensor.office_temperature", "climate.office", "sensor.outdoor_temperature", "sensor.pc_power")
    }
    last: dict[str, str] = {}

    def report(entity: str, at_s: float, state: str, attrs: dict[str, Any] | None = None) -> None:
        key = state + str(attrs)
        if last.get(entity) != key:
            last[entity] = key
            events[entity].append((at_s, state, attrs or {}))

    start_s = end_s - days * 86400.0
    for k in range(int(days * 86400.0 / step_s)):
        t = start_s + k * step_s
        hour = (t / 3600.0) % 24.0
        outdoor_c = 5.0 + 4.0 * math.sin(2 * math.pi * (hour - 9.0) / 24.0)
        heat_w = 320.0 if int(t // (3 * 3600)) % 2 else 70.0  # the PC busy three hours, idle three
        room_c += step_s * (heat_w + UA_W_PER_K * (outdoor_c - room_c)) / c_j_per_k
        if gap_h is not None and gap_h[0] <= (t - start_s) / 3600.0 < gap_h[1]:
            continue  # the sensors said nothing (a dead battery)
        report("sensor.office_temperature", t, f"{round(room_c, 1)}")
        report("sensor.outdoor_temperature", t, f"{round(outdoor_c, 1)}")
        report("sensor.pc_power", t, f"{heat_w:.0f}")
        report("climate.office", t, "heat", {"temperature": 21.0, "current_temperature": round(room_c, 1)})
    return events


def test_home_assistant_changes_become_the_planners_samples(tmp_path: Path) -> None:
    cfg = parse_config(ZONE_YAML.format(state=tmp_path))
    series, why = wanted_series(cfg, cfg.zones[0])
    assert why is None and [(w.role, w.entity, w.attribute) for w in series] == [
        ("room", "sensor.office_temperature", None),
        ("setpoint", "climate.office", "temperature"),
        ("outdoor", "sensor.outdoor_temperature", None),
        ("heat", "sensor.pc_power", None),
    ]
    events = recorded_room(2.0, gap_h=(30.0, 36.0))
    rows = history_rows(series, events, NOW_S - 2 * 86400.0, NOW_S)
    assert rows.shape[1] == 6 and np.all(np.diff(rows[:, 0]) == 300.0)
    valid = rows[:, 5] > 0.5
    hours_in = (rows[:, 0] - (NOW_S - 2 * 86400.0)) / 3600.0
    assert not valid[(hours_in > 33.1) & (hours_in < 36.0)].any()  # a silent room 3 h on is a gap, not steady
    assert valid[(hours_in > 1) & (hours_in < 29)].all()
    heats = set(np.round(rows[valid, 2]).tolist())
    assert {70.0, 320.0} <= heats  # the mean over each sample, the PC's two draws among them
    assert np.all(rows[valid, 4] == 21.0)


def test_a_room_is_learned_on_day_one_from_home_assistants_history(tmp_path: Path) -> None:
    cfg = parse_config(ZONE_YAML.format(state=tmp_path))
    node = NodePlanner(cfg, {"office": 300.0}, {"office": 20.0}, tmp_path, wall_fn=lambda: NOW_S)
    asked: list[tuple[list[str], float, float]] = []

    def fetch(entities: list[str], start_s: float, end_s: float) -> Events:
        asked.append((entities, start_s, end_s))
        return recorded_room(14.0)

    done = node.seed_from_homeassistant(fetch)
    assert done["office"].startswith("Home Assistant's recorder: ")
    assert asked[0][0] == [
        "climate.office",
        "sensor.office_temperature",
        "sensor.outdoor_temperature",
        "sensor.pc_power",
    ]
    assert asked[0][2] - asked[0][1] == pytest.approx(14 * 86400.0)
    node.record("office", room_c=20.5, setpoint_c=21.0, heat_w=100.0, outdoor_c=5.0, valid=True)
    node.run_once()
    planner = node.zones["office"]
    model = planner._s.model
    assert model is not None and model.trusted, model
    assert model.ua_w_per_k == pytest.approx(UA_W_PER_K, rel=0.25)
    assert planner.status == "active"
    assert node.seed_from_homeassistant(fetch) == {}  # seeded once: never again
    from heatctl.planner.show import model_text

    assert "learned from Home Assistant's recorder" in model_text(cfg)


def test_without_a_heat_history_nothing_is_seeded_and_the_planner_learns_as_before(tmp_path: Path) -> None:
    text = ZONE_YAML.format(state=tmp_path).replace("    power_meter: {entity: sensor.pc_power}\n", "")
    cfg = parse_config(text)
    node = NodePlanner(cfg, {"office": 300.0}, {"office": 20.0}, tmp_path, wall_fn=lambda: NOW_S)
    recorded = recorded_room(3.0)
    done = node.seed_from_homeassistant(
        lambda entities, start, end: {k: v for k, v in recorded.items() if k in entities}
    )
    assert "nothing recorded for sensor.heatctl_seed_heat_w" in done["office"]
    assert node.zones["office"].history.valid_hours() == 0.0
    broken = node.seed_from_homeassistant(lambda *a: (_ for _ in ()).throw(OSError("connection refused")))
    assert "could not be read: connection refused" in broken["office"]


def test_model_shows_the_room_from_home_assistants_history_before_any_run(tmp_path: Path) -> None:
    from heatctl.planner.show import _preview_from_homeassistant

    cfg = parse_config(ZONE_YAML.format(state=tmp_path))
    lines = _preview_from_homeassistant(cfg, cfg.zones[0], lambda entities, start, end: recorded_room(14.0, end_s=end))
    assert lines[0].startswith("  from Home Assistant's recorder: ") and "not saved" in lines[0]
    assert "heat loss" in lines[1] and "trusted: the planner starts with it" in lines[1]
    assert list(tmp_path.iterdir()) == []  # nothing written: a running service owns the state_dir
