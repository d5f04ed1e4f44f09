"""Shared fixtures. Service fixtures (Mosquitto, fake NVML, VictoriaMetrics) live in services.py."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = ROOT / "examples" / "scenarios"

pytest_plugins = ["tests.services"]


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self, now_s: float = 1000.0) -> None:
        self.now_s = now_s

    def __call__(self) -> float:
        return self.now_s

    def advance(self, dt_s: float) -> None:
        self.now_s += dt_s


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


MINIMAL_YAML = """
node_id: test-node
zones:
  - name: office
    temperature: {topic: z2m/office_trv, json_path: local_temperature}
    setpoint: {topic: z2m/office_trv, json_path: occupied_heating_setpoint}
    gpus: [gpu0]
gpus:
  - id: gpu0
    backend: sim
"""
