"""``heatctl report``: the ledger a run keeps, read back day by day, printed and drawn."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from heatctl.cli import main
from heatctl.config import parse_config
from heatctl.report import parse_since
from heatctl.service import Service
from tests.conftest import FakeClock

CONFIG = """
node_id: report
mqtt: null
state_dir: {state}
tariff: {{price_per_kwh: 0.30}}
carbon: {{g_per_kwh: 200}}
zones:
  - name: office
    temperature: {{topic: t}}
    setpoint: {{topic: s}}
    gpus: [gpu0]
gpus:
  - id: gpu0
    backend: sim
    workload: {{type: sim, model: llama-3.1-8b}}
    sim:
      idle_w: 30
      min_limit_w: 100
      max_limit_w: 300
      inference:
        max_concurrency: 16
        uncapped: [[1, 35, 140], [2, 66, 165], [4, 120, 200], [8, 200, 250], [16, 290, 290]]
"""


class StepClock(FakeClock):
    def wait(self, event: threading.Event, timeout_s: float) -> bool:
        self.advance(max(timeout_s, 0.0))
        return event.is_set()


def test_three_simulated_days_reported_and_drawn(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "heatctl.yaml"
    config.write_text(CONFIG.format(state=tmp_path / "state"))
    clock = StepClock()
    start = time.time() - 3 * 86400.0  # three days ago: the ledger's days end today
    svc = Service(parse_config(config.read_text()), clock=clock, wall_fn=lambda: start + clock.now_s)
    svc.start()
    try:
        for _ in range(3 * 24 * 30):  # three days of 2-minute ticks
            clock.advance(120.0)
            room_c = 19.5 if (clock.now_s // 3600) % 24 < 12 else 21.4  # a cold morning, a warm afternoon
            svc.store.put("office", "temperature", room_c, "t")
            svc.store.put("office", "setpoint", 21.0, "s")
            svc.tick()
    finally:
        svc.shutdown()
    assert main(["report", "-c", str(config), "--since", "7d", "--plot", str(tmp_path / "report.png")]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split()[:4] == ["day", "heat", "the", "room"]
    day_rows = [line for line in lines if line[:4].isdigit()]
    assert len(day_rows) in (3, 4)  # three days of 24 h, across four dates at most
    total = next(line for line in lines if line.startswith("in all"))
    assert "EUR" in total and " kg" in total  # money and CO2 known from the tariff and the carbon source
    assert "llama-3.1-8b:" in out and "J per token" in out
    assert (tmp_path / "report.png").stat().st_size > 10_000


def test_since_takes_days_or_weeks_and_refuses_anything_else() -> None:
    from heatctl.errors import ConfigError

    assert parse_since("30d") == 30 and parse_since("2w") == 14 and parse_since("12") == 12
    for bad in ("0d", "soon", "-3d", "3m"):
        with pytest.raises(ConfigError):
            parse_since(bad)


def test_a_day_without_a_run_reports_nothing_recorded(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "heatctl.yaml"
    config.write_text(CONFIG.format(state=tmp_path / "state"))
    assert main(["report", "-c", str(config), "--plot", str(tmp_path / "r.png")]) == 1
    assert "nothing recorded yet" in capsys.readouterr().out and not (tmp_path / "r.png").exists()
