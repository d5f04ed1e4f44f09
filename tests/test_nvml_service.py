"""The service against the real pynvml bindings and the fake driver: every fault gets a defined state."""

from __future__ import annotations

import itertools
import logging
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from heatctl.actuation import REOPEN_S
from heatctl.config import parse_config
from heatctl.publish.mqtt_state import NodeSnapshot
from heatctl.service import Service
from heatctl.workloads.process import stopped
from tests.conftest import FakeClock
from tests.services import FakeNvml, Mosquitto, Probe, wait_until
from tests.test_nvml import nvml_service_config

pytestmark = pytest.mark.integration
SPIN = [sys.executable, "-c", "import time\nwhile True: time.sleep(0.01)"]


class ServiceClock(FakeClock):
    def wait(self, event: threading.Event, timeout_s: float) -> bool:
        return event.is_set()


@pytest.fixture
def adopted(tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A GPU job heatctl did not start: adopted by its PID file."""
    proc = subprocess.Popen(SPIN, start_new_session=True)
    (tmp_path / "job.pid").write_text(f"{proc.pid}\n")
    yield proc
    proc.send_signal(signal.SIGCONT)
    proc.kill()
    proc.wait(5)


class Run:
    """A started service on a fake clock; the thermostat reports a cold room every tick."""

    def __init__(self, cfg_text: str, room_c: float = 18.0) -> None:
        self.clock = ServiceClock()
        self.svc = Service(parse_config(cfg_text), clock=self.clock)  # type: ignore[arg-type]
        self.room_c = room_c
        self.svc.start()

    def tick(self, n: int = 1) -> NodeSnapshot:
        for _ in range(n):
            self.clock.advance(30.0)
            self.svc.store.put("office", "temperature", self.room_c, "nv/trv")
            self.svc.store.put("office", "setpoint", 21.0, "nv/trv2")
            snap = self.svc.tick()
        return snap


@pytest.fixture
def runs() -> Iterator[list[Run]]:
    made: list[Run] = []
    yield made
    for run in made:
        run.svc.shutdown()


def test_a_lost_gpu_pauses_an_adopted_process(
    fake_nvml: FakeNvml, tmp_path: Path, adopted: subprocess.Popen[bytes], runs: list[Run]
) -> None:
    fake_nvml.configure(gpu_lost_after_calls=60)
    workload = f"{{type: process, pid_file: {tmp_path / 'job.pid'}, period_s: 0.2}}"
    run = Run(nvml_service_config(tmp_path / "state", workload))
    runs.append(run)
    snap = run.tick()
    assert snap.gpus["gpu0"].level == 1.0
    wait_until(lambda: not stopped(adopted.pid), 5, "the adopted job running")
    for _ in range(20):
        snap = run.tick()
        if snap.gpus["gpu0"].fault:
            break
    assert snap.gpus["gpu0"].fault == "the GPU has fallen off the bus (GPU lost)"
    assert snap.failsafe == "gpu0: the GPU has fallen off the bus (GPU lost)"
    assert snap.gpus["gpu0"].level == 0.0
    wait_until(lambda: stopped(adopted.pid), 5, "the adopted job paused while its GPU cannot be seen")


def test_a_driver_mismatch_says_so_and_no_gpu_back_message_per_tick(
    fake_nvml: FakeNvml, tmp_path: Path, runs: list[Run], caplog: pytest.LogCaptureFixture
) -> None:
    fake_nvml.configure(gpu_lost_after_calls=30)
    run = Run(nvml_service_config(tmp_path / "state", "{type: none}"))
    runs.append(run)
    # A driver upgrade under a running heatctl: from the next re-init the library and driver disagree.
    fake_nvml.configure(fault_init="lib_rm_version_mismatch")
    with caplog.at_level(logging.INFO):
        snap = run.tick(20)
    assert snap.gpus["gpu0"].fault == "driver/library version mismatch: reboot after a driver update"
    messages = [r.getMessage() for r in caplog.records]
    assert not any("back" in m for m in messages), messages
    assert sum("no work until this clears" in m for m in messages) == 2  # lost, then mismatch: once each


def test_too_hot_without_limit_control_pauses_the_work(
    fake_nvml: FakeNvml, tmp_path: Path, runs: list[Run], adopted: subprocess.Popen[bytes]
) -> None:
    # No permission to set limits; at 300 W the fake runs at 30 + 0.07 × 300 = 51 °C, above max_temp_c 45.
    fake_nvml.configure(fault_set_limit="no_permission", default_limit_w=300, min_limit_w=100, max_limit_w=400)
    fake_nvml.set_load(300)
    workload = f"{{type: process, pid_file: {tmp_path / 'job.pid'}, period_s: 0.2}}"
    run = Run(nvml_service_config(tmp_path / "state", workload, ", max_temp_c: 45"))
    runs.append(run)
    levels = [run.tick().gpus["gpu0"].level for _ in range(60)]
    assert levels[0] < 1.0 and levels[-1] < 0.5
    assert all(b <= a for a, b in itertools.pairwise(levels))  # lower while it stays hot
    assert fake_nvml.limit_w() is None  # the limit was never touched


def test_a_limit_reset_behind_heatctls_back_is_back_within_two_ticks(
    fake_nvml: FakeNvml, tmp_path: Path, runs: list[Run]
) -> None:
    fake_nvml.configure(default_limit_w=450, min_limit_w=100, max_limit_w=450)
    fake_nvml.set_load(600)
    run = Run(nvml_service_config(tmp_path / "state", "{type: none}"), room_c=20.8)
    runs.append(run)
    run.tick(20)
    commanded = fake_nvml.limit_w()
    assert commanded is not None and commanded < 400
    fake_nvml.dir.joinpath("limit0").write_text("450\n")  # nvidia-smi -pl, or a driver reload
    snaps = [run.tick() for _ in range(2)]
    assert fake_nvml.limit_w() == pytest.approx(snaps[-1].gpus["gpu0"].power_limit_w, abs=6)
    assert (fake_nvml.limit_w() or 450) < 400
    assert snaps[-1].gpus["gpu0"].limit_mismatches == 1


def test_nvml_failing_at_start_keeps_the_service_running_and_retries(
    fake_nvml: FakeNvml, tmp_path: Path, runs: list[Run], adopted: subprocess.Popen[bytes]
) -> None:
    fake_nvml.configure(fault_init="driver_not_loaded", default_limit_w=300, max_limit_w=300)
    fake_nvml.set_load(300)
    workload = f"{{type: process, pid_file: {tmp_path / 'job.pid'}, period_s: 0.2}}"
    run = Run(nvml_service_config(tmp_path / "state", workload))
    runs.append(run)
    snap = run.tick(2)
    assert "driver is not loaded" in (snap.gpus["gpu0"].fault or "") and snap.gpus["gpu0"].level == 0.0
    wait_until(lambda: stopped(adopted.pid), 5, "no work while the GPU cannot be seen")
    fake_nvml.configure(default_limit_w=300, max_limit_w=300)  # the driver loads
    run.clock.advance(REOPEN_S)
    snap = run.tick()
    assert snap.gpus["gpu0"].fault is None and snap.gpus["gpu0"].level == 1.0
    wait_until(lambda: not stopped(adopted.pid), 5, "work resumes once the GPU is open")


def test_a_gpu_that_opens_late_updates_home_assistants_max_power_range(
    fake_nvml: FakeNvml, tmp_path: Path, mosquitto: Mosquitto, probe: Probe
) -> None:
    fake_nvml.configure(fault_init="driver_not_loaded", max_limit_w=450, default_limit_w=450)
    text = nvml_service_config(tmp_path / "state").replace(
        "mqtt: null", f"mqtt: {{host: 127.0.0.1, port: {mosquitto.port}}}"
    )
    clock = ServiceClock()
    svc = Service(parse_config(text), clock=clock)  # type: ignore[arg-type]
    svc.start()
    try:
        topic = "homeassistant/number/nv/max_power_w/config"
        first = probe.wait_json(topic, lambda d: d.get("max") is not None)
        assert first["max"] == 300  # placeholder from the config while NVML is down
        fake_nvml.configure(max_limit_w=450, default_limit_w=450)  # the driver loads
        clock.advance(REOPEN_S)
        svc.tick()
        assert probe.wait_json(topic, lambda d: d.get("max") == 450)["max"] == 450
    finally:
        svc.shutdown()
