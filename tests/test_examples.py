"""Every example config and scenario a user may copy is valid."""

from __future__ import annotations

from pathlib import Path

import pytest

from heatctl.config import load_config
from heatctl.sim.scenario import load_scenario
from tests.conftest import ROOT

EXAMPLES = ROOT / "examples"
CONFIGS = sorted([EXAMPLES / "heatctl.yaml", *(EXAMPLES / "configs").glob("*.yaml")])
CONFIGS = [c for c in CONFIGS if c.name != "secrets.yaml"]


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_example_config_is_valid(path: Path) -> None:
    cfg = load_config(path, env={"MQTT_PASSWORD": "x", "INFLUX_TOKEN": "y"})
    assert cfg.zones and cfg.gpus


@pytest.mark.parametrize("path", sorted((EXAMPLES / "scenarios").glob("*.yaml")), ids=lambda p: p.name)
def test_example_scenario_is_valid(path: Path) -> None:
    scenario = load_scenario(path)
    weather = scenario.build_weather(path.parent)
    temps = [weather.at(h * 3600.0) for h in range(int(scenario.duration_h))]
    assert all(-30 < t < 40 for t in temps) and max(temps) > min(temps)  # real weather varies
    assert scenario.duration_h == 168
