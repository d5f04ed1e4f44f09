"""Closed-loop actuation with fakes: command, read back, compare, re-command; faults to a defined state."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from heatctl.actuation import NO_POWER_READING, REOPEN_S, GpuActuator
from heatctl.config import GpuConfig
from heatctl.control.allocate import GpuCommand
from heatctl.control.efficiency import GpuCaps
from heatctl.errors import BackendError
from heatctl.gpu.base import Gpu, GpuReading
from heatctl.workloads.base import Workload
from tests.conftest import FakeClock


class FakeGpu:
    """A driver that holds a limit; tests change it behind heatctl's back or make reads fail."""

    def __init__(self, *, can_set_limit: bool = True, power_w: float | None = 150.0) -> None:
        self.id = "gpu0"
        self.can_set_limit = can_set_limit
        self.limit_problem = None if can_set_limit else "no permission"
        self.limit_w = 300.0
        self.power_w = power_w
        self.fault: str | None = None
        self.writes: list[float] = []
        self.restored = False

    def limits_w(self) -> tuple[float, float]:
        return 100.0, 300.0

    def idle_w(self) -> float:
        return 20.0

    def set_power_limit(self, watts: float) -> float:
        if self.fault is not None:
            raise BackendError(f"gpu0: cannot set the power limit: {self.fault}")
        self.writes.append(watts)
        self.limit_w = min(max(watts, 100.0), 300.0)
        return self.limit_w

    def read(self) -> GpuReading:
        if self.fault is not None:
            return GpuReading(fault=self.fault)
        return GpuReading(power_w=self.power_w, temperature_c=50.0, power_limit_w=self.limit_w)

    def restore(self) -> None:
        self.restored = True


class FakeWorkload:
    """A workload whose real level a test can set apart from the commanded one."""

    kind = "fake"

    def __init__(self, *, steerable: bool = True) -> None:
        self.steerable = steerable
        self.commanded: list[float] = []
        self.running = 0.0
        self.stopped = False
        self.problem: str | None = None

    def start(self) -> None:
        pass

    def set_level(self, level: float) -> None:
        self.commanded.append(level)
        self.running = level

    def effective_level(self) -> float | None:
        return self.running

    def work_rate(self) -> float | None:
        return 10.0

    def status(self) -> str:
        return "fake"

    def fault(self) -> str | None:
        return self.problem

    def stop(self) -> None:
        self.stopped = True


def actuator(
    clock: FakeClock, gpu: FakeGpu | None = None, workload: FakeWorkload | None = None, **cfg: object
) -> tuple[GpuActuator, FakeGpu, FakeWorkload]:
    gpu = gpu or FakeGpu()
    workload = workload or FakeWorkload()

    def open_workload(g: Gpu | None) -> Workload:
        return workload

    act = GpuActuator(
        GpuConfig(id="gpu0", backend="sim", **cfg),  # type: ignore[arg-type]
        open_gpu=lambda: gpu,
        open_workload=open_workload,
        time_fn=clock,
    )
    return act, gpu, workload


def cmd(limit_w: float, level: float = 1.0) -> GpuCommand:
    return GpuCommand(target_w=limit_w, power_limit_w=limit_w, level=level, regime="continuous")


def tick(act: GpuActuator, clock: FakeClock, command: GpuCommand, *, metered: bool = False) -> None:
    clock.advance(30.0)
    act.observe(metered=metered)
    act.apply(command)


def test_a_limit_reset_behind_heatctls_back_is_set_again_and_counted(clock: FakeClock) -> None:
    act, gpu, _ = actuator(clock)
    tick(act, clock, cmd(200.0))
    assert gpu.limit_w == 200.0 and act.status().limit_mismatches == 0
    gpu.limit_w = 300.0  # a driver restart or another tool puts the default back
    tick(act, clock, cmd(200.0))  # the same command as before: a cache would not re-send it
    assert gpu.limit_w == 200.0
    status = act.status()
    assert status.limit_mismatches == 1 and status.limit_w == 200.0


def test_an_unchanged_limit_is_not_written_again(clock: FakeClock) -> None:
    act, gpu, _ = actuator(clock)
    for _ in range(5):
        tick(act, clock, cmd(200.0))
    assert gpu.writes == [200.0] and act.status().limit_mismatches == 0


def test_a_lasting_drift_is_counted_once_per_episode(clock: FakeClock) -> None:
    act, gpu, _ = actuator(clock)
    tick(act, clock, cmd(200.0))
    gpu.limit_w = 300.0
    tick(act, clock, cmd(200.0))
    tick(act, clock, cmd(200.0))
    gpu.limit_w = 250.0
    tick(act, clock, cmd(200.0))
    assert act.limit_mismatches == 2


def test_the_state_shows_the_drivers_limit_not_the_remembered_one(clock: FakeClock) -> None:
    act, gpu, _ = actuator(clock)
    tick(act, clock, cmd(200.0))
    gpu.limit_w = 280.0
    clock.advance(30.0)
    act.observe(metered=False)
    assert act.status().limit_w == 280.0


def test_a_faulted_gpu_gets_no_work_and_no_limit_writes(clock: FakeClock, caplog: pytest.LogCaptureFixture) -> None:
    act, gpu, workload = actuator(clock)
    tick(act, clock, cmd(250.0, 1.0))
    assert workload.running == 1.0
    gpu.fault = "driver/library version mismatch: reboot after a driver update"
    writes = len(gpu.writes)
    with caplog.at_level(logging.INFO, "heatctl.actuation"):
        for _ in range(5):
            tick(act, clock, cmd(250.0, 1.0))  # even if the controller asked for work
    assert workload.running == 0.0 and len(gpu.writes) == writes
    assert act.status().fault == "driver/library version mismatch: reboot after a driver update"
    assert sum("no work until this clears" in r.message for r in caplog.records) == 1  # said once, not per tick
    gpu.fault = None
    with caplog.at_level(logging.INFO, "heatctl.actuation"):
        tick(act, clock, cmd(250.0, 1.0))
        tick(act, clock, cmd(250.0, 1.0))
    assert workload.running == 1.0 and act.status().fault is None
    assert sum("back to normal" in r.message for r in caplog.records) == 1


def test_no_power_reading_means_no_work_unless_a_meter_measures_it(clock: FakeClock) -> None:
    act, _, workload = actuator(clock, FakeGpu(power_w=None))
    tick(act, clock, cmd(250.0, 1.0))
    assert workload.running == 0.0 and act.status().fault == NO_POWER_READING
    tick(act, clock, cmd(250.0, 1.0), metered=True)
    assert workload.running == 1.0 and act.status().fault is None


def test_a_driver_fault_is_tolerated_while_a_wall_plug_meter_measures_the_heat(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    act, gpu, workload = actuator(clock)
    gpu.fault = "the GPU has fallen off the bus (GPU lost)"
    for _ in range(3):
        tick(act, clock, cmd(250.0, 1.0), metered=True)
    assert workload.running == 1.0 and act.status().fault is None
    assert gpu.writes == [] and not caplog.records  # no limit writes into a driver that does not answer


def test_work_running_above_the_commanded_level_is_a_mismatch_and_re_sent(clock: FakeClock) -> None:
    act, _, workload = actuator(clock)
    tick(act, clock, cmd(250.0, 0.0))
    workload.running = 1.0  # someone resumed the paused work
    tick(act, clock, cmd(250.0, 0.0))
    assert act.level_mismatches == 1 and workload.running == 0.0
    workload.running = 0.0  # less work than commanded is no mismatch (nothing queued)
    tick(act, clock, cmd(250.0, 1.0))
    workload.running = 0.5
    tick(act, clock, cmd(250.0, 1.0))
    assert act.level_mismatches == 1


def test_a_level_that_just_changed_gets_time_to_take_effect(clock: FakeClock) -> None:
    act, _, workload = actuator(clock)
    act.observe(metered=False)
    act.apply(cmd(250.0, 1.0))
    act.apply(cmd(250.0, 0.0))
    workload.running = 1.0  # still winding down
    clock.advance(0.5)
    act.observe(metered=False)
    assert act.level_mismatches == 0


def test_a_gpu_that_cannot_be_opened_is_retried_and_its_workload_idles(clock: FakeClock) -> None:
    gpu = FakeGpu()
    attempts = {"n": 0}

    def open_gpu() -> Gpu:
        attempts["n"] += 1
        if attempts["n"] < 3:
            raise BackendError("NVML: the NVIDIA driver is not loaded (nvidia-smi should work first)")
        return gpu

    workload = FakeWorkload()
    act = GpuActuator(
        GpuConfig(id="gpu0", backend="nvml", max_power_w=250),
        open_gpu=open_gpu,
        open_workload=lambda g: workload,
        time_fn=clock,
    )
    assert act.gpu is None and act.caps().max_limit_w == 250.0
    act.observe(metered=False)
    act.apply(cmd(250.0, 1.0))
    assert workload.running == 0.0 and "driver is not loaded" in (act.status().fault or "")
    clock.advance(REOPEN_S)
    act.observe(metered=False)
    assert attempts["n"] == 2 and not act.just_opened
    clock.advance(REOPEN_S)
    act.observe(metered=False)
    assert act.just_opened and act.gpu is gpu and act.caps().max_limit_w == 250.0
    act.apply(cmd(250.0, 1.0))
    assert workload.running == 1.0 and act.status().fault is None


def test_without_limit_control_nothing_is_written_and_the_workload_is_the_lever(clock: FakeClock) -> None:
    act, gpu, workload = actuator(clock, FakeGpu(can_set_limit=False))
    tick(act, clock, cmd(100.0, 0.4))
    assert gpu.writes == [] and workload.running == 0.4
    caps = act.caps()
    assert caps.min_limit_w == caps.max_limit_w == 300.0
    assert act.status().steerable and not act.status().limit_control


def test_neither_lever_is_reported(clock: FakeClock) -> None:
    act, _, _ = actuator(clock, FakeGpu(can_set_limit=False), FakeWorkload(steerable=False))
    assert not act.status().steerable


def test_idle_and_stop_put_everything_in_a_defined_state(clock: FakeClock) -> None:
    act, gpu, workload = actuator(clock)
    tick(act, clock, cmd(250.0, 1.0))
    act.idle()
    assert workload.running == 0.0 and gpu.limit_w == 100.0
    act.stop()
    assert workload.stopped and gpu.restored


def test_max_power_w_of_the_config_caps_the_range(clock: FakeClock) -> None:
    act, _, _ = actuator(clock, max_power_w=220.0)
    assert act.caps().max_limit_w == 220.0 and act.caps().min_limit_w == 100.0


def messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "heatctl.actuation"]


def test_what_the_operator_reads(clock: FakeClock, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "heatctl.actuation")
    gpu = FakeGpu()
    opened = {"ok": False}

    def open_gpu() -> Gpu:
        if not opened["ok"]:
            raise BackendError("NVML: the NVIDIA driver is not loaded")
        return gpu

    workload = FakeWorkload()
    act = GpuActuator(
        GpuConfig(id="gpu7", backend="nvml"), open_gpu=open_gpu, open_workload=lambda g: workload, time_fn=clock
    )
    act.observe(metered=False)
    opened["ok"] = True
    clock.advance(REOPEN_S)
    act.observe(metered=False)
    act.apply(cmd(200.0, 0.0))
    gpu.limit_w = 300.0
    workload.running = 1.0
    clock.advance(30.0)
    act.observe(metered=False)
    act.apply(cmd(200.0, 0.0))
    assert messages(caplog) == [
        "gpu gpu7: NVML: the NVIDIA driver is not loaded; no work on it until it opens (tried every 30 s)",
        "gpu gpu7: NVML: the NVIDIA driver is not loaded; its workload gets no work until this clears",
        "gpu gpu7: opened",
        "gpu gpu7: back to normal (was: NVML: the NVIDIA driver is not loaded)",
        "gpu gpu7: workload runs at 1.00, commanded 0.00; re-sent",
        "gpu gpu7: the driver holds 300 W, heatctl set 200 W; setting it again",
    ]


def test_a_failing_limit_write_is_logged_and_tried_again(clock: FakeClock, caplog: pytest.LogCaptureFixture) -> None:
    act, gpu, _ = actuator(clock)
    act.observe(metered=False)
    gpu.fault = "gone"
    act.apply(cmd(200.0))  # the read just before still looked healthy
    assert messages(caplog) == ["gpu0: cannot set the power limit: gone"]
    gpu.fault = None
    tick(act, clock, cmd(200.0))
    assert gpu.writes == [200.0]


def test_stop_and_idle_never_raise(clock: FakeClock, caplog: pytest.LogCaptureFixture) -> None:
    act, gpu, workload = actuator(clock)

    def broken() -> None:
        raise RuntimeError("boom")

    workload.stop = broken  # type: ignore[method-assign]
    workload.set_level = lambda level: broken()  # type: ignore[method-assign]
    gpu.restore = broken  # type: ignore[method-assign]
    act.idle()
    act.stop()
    assert messages(caplog) == [
        "gpu gpu0: cannot idle it",
        "gpu gpu0: stopping the workload failed",
        "gpu gpu0: restoring the power limit failed",
    ]


def test_caps_before_opening_come_from_the_config(clock: FakeClock) -> None:
    def never() -> Gpu:
        raise BackendError("no driver")

    act = GpuActuator(
        GpuConfig(id="gpu0", backend="nvml", idle_w=15.0),
        open_gpu=never,
        open_workload=lambda g: FakeWorkload(),
        time_fn=clock,
    )
    assert act.caps() == GpuCaps(idle_w=15.0, min_limit_w=300.0, max_limit_w=300.0)
    act2 = GpuActuator(
        GpuConfig(id="gpu0", backend="nvml"), open_gpu=never, open_workload=lambda g: FakeWorkload(), time_fn=clock
    )
    assert act2.caps() == GpuCaps(idle_w=30.0, min_limit_w=300.0, max_limit_w=300.0)


def test_caps_of_an_open_gpu(clock: FakeClock) -> None:
    act, _, _ = actuator(clock, idle_w=95.0)  # an idle power above 90 % of the lowest limit is not believed
    assert act.caps() == GpuCaps(idle_w=90.0, min_limit_w=100.0, max_limit_w=300.0)
    act, gpu, _ = actuator(clock, FakeGpu(can_set_limit=False))
    gpu.limit_w = 250.0
    assert act.caps() == GpuCaps(idle_w=20.0, min_limit_w=250.0, max_limit_w=250.0)


def test_the_observation_carries_the_reading_and_the_work_rate(clock: FakeClock) -> None:
    act, _, _ = actuator(clock)
    obs = act.observe(metered=False)
    assert obs.reading.power_w == 150.0 and obs.work_rate == 10.0 and obs.fault is None
    assert act.status().level == 0.0 and act.status().limit_w == 300.0


def test_a_workload_that_cannot_keep_its_results_is_a_fault_until_it_can(clock: FakeClock) -> None:
    """A full disk: heat from work whose results are lost is not wanted; the fault shows and clears."""
    act, _, workload = actuator(clock)
    tick(act, clock, cmd(200.0))
    assert workload.running == 1.0
    workload.problem = "cannot store results: database or disk is full"
    tick(act, clock, cmd(200.0))
    assert act.status().fault == workload.problem and workload.running == 0.0
    workload.problem = None
    tick(act, clock, cmd(200.0))
    assert act.status().fault is None and workload.running == 1.0


def test_actuators_open_the_given_gpu_or_the_configured_backend_with_its_workload(tmp_path: Path) -> None:
    from heatctl.actuation import open_actuators
    from heatctl.config import parse_config
    from heatctl.gpu.sim import SimGpu
    from heatctl.workloads.registry import WorkloadContext
    from heatctl.workloads.sim import SimWorkload

    cfg = parse_config(
        "node_id: n\nmqtt: null\nzones: [{name: z, temperature: {topic: t}, setpoint: {topic: s}, gpus: [a, b]}]\n"
        "gpus: [{id: a, backend: sim}, {id: b, backend: sim, sim: {max_limit_w: 250}}]\n"
    )
    clock = FakeClock()
    given = SimGpu("a", cfg.gpu("a").sim, time_fn=clock)
    actuators = open_actuators(cfg, WorkloadContext(state_dir=tmp_path, time_fn=clock), {"a": given})
    assert list(actuators) == ["a", "b"]
    assert actuators["a"].gpu is given and isinstance(actuators["a"].workload, SimWorkload)
    opened = actuators["b"].gpu
    assert isinstance(opened, SimGpu) and opened is not given and opened.limits_w() == (100.0, 250.0)
    assert actuators["b"].caps().max_limit_w == 250.0
