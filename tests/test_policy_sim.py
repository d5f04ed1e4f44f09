"""One policy for the service and the simulator: the same inputs give the same decisions, quiet hours
hold in both, and the planner sees the node's cap ahead (the policy alone: test_policy.py)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from heatctl.config import SimGpuConfig, parse_config
from heatctl.control.core import GpuState
from heatctl.control.policy import TickDecision, TickInputs, TickPolicy
from heatctl.gpu.base import GpuReading
from heatctl.gpu.sim import SimGpu
from heatctl.service import Service
from heatctl.sim.runner import simulate
from heatctl.sim.scenario import Scenario
from tests.conftest import FakeClock

QUIET_CONFIG = """
node_id: same
mqtt: null
state_dir: {state}
zones:
  - name: room
    temperature: {{topic: t/room}}
    setpoint: {{topic: t/setpoint}}
    outdoor_temperature: {{topic: t/outdoor}}
    gpus: [gpu0]
gpus:
  - {{id: gpu0, backend: sim, workload: {{type: sim}}}}
quiet: {{from: "22:00", to: "06:00", max_power_w: 90}}
"""

START = datetime(2026, 1, 12, 12, 0)  # a Monday noon, UTC


def quiet_scenario(hours: float = 30.0) -> Scenario:
    return Scenario.model_validate(
        {
            "duration_h": hours,
            "step_s": 30.0,
            "start": START,
            "weather": {"constant_c": -2.0},
            "schedule": [{"at": "00:00", "setpoint_c": 21.0}],
            "room": {"model": "1r1c", "r_k_per_w": 0.1, "c_j_per_k": 2.0e6, "initial_c": 20.0},
        }
    )


class ServiceClock(FakeClock):
    def wait(self, event: threading.Event, timeout_s: float) -> bool:
        return event.is_set()


class ReplayGpu(SimGpu):
    """A simulated GPU whose readings are what the simulator's plant drew at each tick."""

    def __init__(self, cfg: SimGpuConfig, clock: FakeClock) -> None:
        super().__init__("gpu0", cfg, time_fn=clock)
        self.state = GpuState()
        self.done = 0.0

    def read(self) -> GpuReading:
        return GpuReading(
            power_w=self.state.power_w, energy_j=None, temperature_c=self.state.temperature_c, power_limit_w=None
        )

    def work_done(self) -> float:
        return self.done


def record_decisions(monkeypatch: pytest.MonkeyPatch) -> list[tuple[TickInputs, TickDecision]]:
    seen: list[tuple[TickInputs, TickDecision]] = []
    decide = TickPolicy.decide

    def recorded(self: TickPolicy, inputs: TickInputs) -> TickDecision:
        decision = decide(self, inputs)
        seen.append((inputs, decision))
        return decision

    monkeypatch.setattr(TickPolicy, "decide", recorded)
    return seen


def test_the_service_and_the_simulator_decide_alike_from_the_same_inputs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = parse_config(QUIET_CONFIG.format(state=tmp_path / "state"))
    scenario = quiet_scenario()
    seen = record_decisions(monkeypatch)
    simulate(scenario, cfg)
    simulated = list(seen)
    seen.clear()
    assert len(simulated) == 30 * 120

    clock = ServiceClock(0.0)
    start_epoch = START.replace(tzinfo=UTC).timestamp()
    wall = {"now": start_epoch}
    gpu = ReplayGpu(scenario.gpu, clock)
    monkeypatch.setenv("TZ", "UTC")
    svc = Service(cfg, clock=clock, gpus={"gpu0": gpu}, wall_fn=lambda: wall["now"])  # type: ignore[arg-type]
    svc.start()
    try:
        last_t = 0.0
        for inputs, expected in simulated:
            zin = inputs.zones["room"]
            assert zin.temperature is not None and zin.setpoint is not None and zin.outdoor is not None
            t = zin.setpoint.at_s
            clock.now_s, wall["now"] = t, start_epoch + t
            state = inputs.gpus["gpu0"]
            gpu.state = state
            gpu.done += (state.work_rate or 0.0) * (t - last_t)
            last_t = t
            svc.store.put("room", "temperature", zin.temperature.value, "t/room")
            svc.store.put("room", "setpoint", zin.setpoint.value, "t/setpoint")
            svc.store.put("room", "outdoor", zin.outdoor.value, "t/outdoor")
            svc.tick()
            got_inputs, got = seen[-1]
            assert got_inputs.local_minute == inputs.local_minute
            mine, sims = got_inputs.gpus["gpu0"], inputs.gpus["gpu0"]
            assert (mine.power_w, mine.temperature_c, mine.fault) == (sims.power_w, sims.temperature_c, sims.fault)
            assert mine.work_rate == pytest.approx(sims.work_rate), t
            assert (got.cap_w, got.quiet) == (expected.cap_w, expected.quiet), t
            ours, theirs = got.node.gpus["gpu0"], expected.node.gpus["gpu0"]
            assert ours.power_limit_w == pytest.approx(theirs.power_limit_w), t
            assert ours.level == pytest.approx(theirs.level), t
            assert got.node.zones["room"].demand_w == pytest.approx(expected.node.zones["room"].demand_w), t
    finally:
        svc.shutdown()
    quiet = [d for _, d in simulated if d.quiet]
    assert len(quiet) == 8 * 120  # 22:00 to 06:00, a tick every 30 s
    assert all(d.node.zones["room"].capacity_w <= 90.0 for d in quiet)


def test_the_simulator_keeps_quiet_hours(tmp_path: Path) -> None:
    cfg = parse_config(QUIET_CONFIG.format(state=tmp_path))
    result = simulate(quiet_scenario(), cfg)
    t = result.series["time_s"]
    hour = (12.0 + t / 3600.0) % 24.0
    quiet = (hour >= 22.0) | (hour < 6.0)
    power = result.series["gpu_power_w"]
    # The room is cold: it would take 300 W. 90 W is below the card's lowest limit (100 W): it duty-cycles.
    assert power[quiet].max() <= 100.0 and power[quiet].mean() <= 90.0 + 1.0
    assert power[~quiet & (t > 3600)].max() > 250.0


@pytest.mark.parametrize("controller", ["heatctl", "oracle"])
def test_the_planner_heats_ahead_of_quiet_hours(tmp_path: Path, controller: str) -> None:
    """With quiet hours in the plan, the room is warmer when they begin than without them (the
    learned planner from its second day; the oracle, the same LP with the true room)."""
    planner_cfg = QUIET_CONFIG + "planner: {{objective: energy, store_k: 1.0}}\n"
    quiet_cfg = parse_config(planner_cfg.format(state=tmp_path / "a"))
    no_quiet = planner_cfg.replace('quiet: {{from: "22:00", to: "06:00", max_power_w: 90}}\n', "")
    assert "quiet" not in no_quiet
    plain_cfg = parse_config(no_quiet.format(state=tmp_path / "b"))
    scenario = quiet_scenario(hours=24 * 4)
    with_quiet = simulate(scenario, quiet_cfg, controller=controller)
    without = simulate(scenario, plain_cfg, controller=controller)
    t = with_quiet.series["time_s"]
    at_22 = np.isclose((12.0 + t / 3600.0) % 24.0, 21.9, atol=1e-9) & (t > 2 * 86400)
    assert at_22.any()
    assert (with_quiet.series["room_c"][at_22] > without.series["room_c"][at_22] + 0.2).all()
