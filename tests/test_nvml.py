"""The NVML backend: the real pynvml bindings against the fake NVIDIA driver, one test per fault."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from heatctl.config import GpuConfig
from heatctl.errors import BackendError
from heatctl.gpu.nvml import NvmlGpu, restore_recorded_limits
from tests.conftest import FakeClock
from tests.services import FakeNvml, Mosquitto, Probe, wait_until

pytestmark = pytest.mark.integration
UUID0 = "GPU-fa4e0000-0000-4000-8000-000000000000"


def open_gpu(state_dir: Path, clock: FakeClock | None = None, **cfg: object) -> NvmlGpu:
    return NvmlGpu(
        GpuConfig(id="gpu0", backend="nvml", **cfg),
        state_dir=state_dir,  # type: ignore[arg-type]
        time_fn=clock or FakeClock(),
    )


def test_reads_sets_and_restores(fake_nvml: FakeNvml, tmp_path: Path) -> None:
    fake_nvml.configure(max_limit_w=400, min_limit_w=100, default_limit_w=350, idle_w=30)
    fake_nvml.set_load(380)
    gpu = open_gpu(tmp_path)
    assert gpu.limits_w() == (100.0, 400.0)
    assert gpu.original_limit_w == 350.0
    r = gpu.read()
    assert r.power_w == 350.0 and r.power_limit_w == 350.0 and r.fault is None
    assert r.temperature_c is not None and r.energy_j is not None
    assert gpu.set_power_limit(250.0) == 250.0
    assert fake_nvml.limit_w() == 250.0
    assert gpu.read().power_w == 250.0
    assert gpu.set_power_limit(900.0) == 400.0  # clamped to the driver's range
    recorded = json.loads((tmp_path / "limits.json").read_text())
    assert recorded == {UUID0: 350.0}
    gpu.restore()
    assert fake_nvml.limit_w() == 350.0
    assert json.loads((tmp_path / "limits.json").read_text()) == {}


def test_select_by_uuid_and_bad_index(fake_nvml: FakeNvml, tmp_path: Path) -> None:
    fake_nvml.configure(count=2)
    gpu = open_gpu(tmp_path, uuid="GPU-fa4e0000-0000-4000-8000-000000000001")
    assert gpu.uuid.endswith("0001")
    gpu.restore()
    with pytest.raises(BackendError, match="no GPU with index 5 \\(2 found\\)"):
        open_gpu(tmp_path, index=5)


def test_idle_gpu_reports_idle_power(fake_nvml: FakeNvml, tmp_path: Path) -> None:
    fake_nvml.configure(idle_w=55)
    gpu = open_gpu(tmp_path)
    assert gpu.idle_w() == 55.0
    assert gpu.read().power_w == 55.0
    gpu.restore()


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        ("driver_not_loaded", "the NVIDIA driver is not loaded"),
        ("lib_rm_version_mismatch", "driver/library version mismatch"),
        ("no_permission", "no permission"),
    ],
)
def test_init_failures_are_clear(fake_nvml: FakeNvml, tmp_path: Path, fault: str, message: str) -> None:
    fake_nvml.configure(fault_init=fault)
    with pytest.raises(BackendError, match=message):
        open_gpu(tmp_path)


@pytest.mark.parametrize("fault", ["no_permission", "not_supported"])
def test_no_limit_control_falls_back_to_workload(fake_nvml: FakeNvml, tmp_path: Path, fault: str) -> None:
    fake_nvml.configure(fault_set_limit=fault, default_limit_w=300)
    gpu = open_gpu(tmp_path)
    assert gpu.can_set_limit is False
    assert "workload alone" in (gpu.limit_problem or "")
    with pytest.raises(BackendError):
        gpu.set_power_limit(200.0)
    assert gpu.read().power_w is not None  # still readable
    gpu.restore()
    assert fake_nvml.limit_w() is None  # never touched


def test_power_reading_not_supported_is_none(fake_nvml: FakeNvml, tmp_path: Path) -> None:
    fake_nvml.configure(power_reading="not_supported")
    gpu = open_gpu(tmp_path)
    r = gpu.read()
    assert r.power_w is None and r.energy_j is None and r.temperature_c is not None and r.fault is None
    gpu.restore()


def test_energy_counter_not_supported_is_none(fake_nvml: FakeNvml, tmp_path: Path) -> None:
    fake_nvml.configure(energy_reading="not_supported")
    gpu = open_gpu(tmp_path)
    r = gpu.read()
    assert r.energy_j is None and r.power_w is not None
    gpu.restore()


def test_lost_gpu_fails_safe_and_is_retried(fake_nvml: FakeNvml, tmp_path: Path) -> None:
    fake_nvml.configure(gpu_lost_after_calls=12)
    clock = FakeClock()
    gpu = open_gpu(tmp_path, clock)
    readings = [gpu.read() for _ in range(5)]
    assert readings[-1].fault == "the GPU has fallen off the bus (GPU lost)"
    clock.advance(5)
    assert gpu.read().fault is not None  # too soon to retry
    clock.advance(30)
    assert gpu.read().fault is None  # re-initialised: the fake's counter starts again
    gpu.restore()


def test_a_limit_left_by_a_killed_run_is_repaired_at_start(fake_nvml: FakeNvml, tmp_path: Path) -> None:
    fake_nvml.configure(default_limit_w=450)
    (tmp_path / "limits.json").write_text(json.dumps({UUID0: 450.0}))
    fake_nvml.dir.joinpath("limit0").write_text("230\n")  # what the killed run left
    gpu = open_gpu(tmp_path)
    assert fake_nvml.limit_w() == 450.0 and gpu.original_limit_w == 450.0
    gpu.set_power_limit(300.0)
    gpu.restore()
    assert fake_nvml.limit_w() == 450.0


def test_a_damaged_limit_record_takes_the_drivers_default_as_the_original(fake_nvml: FakeNvml, tmp_path: Path) -> None:
    """Killed with the card capped, the record torn: the capped 200 W is never taken as the card's own."""
    fake_nvml.configure(default_limit_w=450)
    (tmp_path / "limits.json").write_text('{"GPU-fa4e')  # torn by a power cut, no previous copy
    fake_nvml.dir.joinpath("limit0").write_text("200\n")
    gpu = open_gpu(tmp_path)
    assert gpu.original_limit_w == 450.0 and fake_nvml.limit_w() == 450.0
    assert gpu.state_problem is not None and "default 450 W" in gpu.state_problem
    gpu.set_power_limit(300.0)
    gpu.restore()
    assert fake_nvml.limit_w() == 450.0


def test_restore_with_a_damaged_record_gives_every_gpu_its_default(fake_nvml: FakeNvml, tmp_path: Path) -> None:
    fake_nvml.configure(default_limit_w=450)
    (tmp_path / "limits.json").write_text("\x00" * 16)
    fake_nvml.dir.joinpath("limit0").write_text("200\n")
    done = restore_recorded_limits(tmp_path)
    assert "every GPU gets the driver's default limit" in done[0] and done[1] == f"{UUID0}: restored 450 W"
    assert fake_nvml.limit_w() == 450.0


def test_restore_command_repairs_recorded_limits(fake_nvml: FakeNvml, tmp_path: Path) -> None:
    fake_nvml.configure(default_limit_w=450)
    (tmp_path / "limits.json").write_text(json.dumps({UUID0: 450.0}))
    fake_nvml.dir.joinpath("limit0").write_text("230\n")
    assert restore_recorded_limits(tmp_path) == [f"{UUID0}: restored 450 W"]
    assert fake_nvml.limit_w() == 450.0


def nvml_config(port: int, state_dir: Path) -> str:
    return f"""
node_id: nv
state_dir: {state_dir}
mqtt: {{host: 127.0.0.1, port: {port}}}
zones:
  - name: office
    temperature: {{topic: nv/trv, json_path: local_temperature}}
    setpoint: {{topic: nv/trv, json_path: occupied_heating_setpoint}}
    control: {{interval_s: 1}}
    gpus: [gpu0]
gpus:
  - {{id: gpu0, backend: nvml, index: 0, max_power_w: 400, workload: {{type: none}}}}
"""


def test_sigkill_then_next_start_restores_sigterm_restores(
    fake_nvml: FakeNvml, mosquitto: Mosquitto, probe: Probe, tmp_path: Path
) -> None:
    fake_nvml.configure(min_limit_w=100, max_limit_w=700, default_limit_w=450, idle_w=40)
    fake_nvml.set_load(600)
    cfg = tmp_path / "heatctl.yaml"
    cfg.write_text(nvml_config(mosquitto.port, tmp_path / "state"))
    probe.publish("nv/trv", json.dumps({"local_temperature": 20.6, "occupied_heating_setpoint": 21}), retain=True)
    log = (tmp_path / "run.log").open("ab")

    def run() -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            [sys.executable, "-m", "heatctl", "run", "-c", str(cfg)], env=fake_nvml.env(), stderr=log
        )
        return proc

    proc = run()
    # Warm room near setpoint: a moderate demand, so heatctl lowers the limit from 450 W.
    wait_until(lambda: (fake_nvml.limit_w() or 450) < 400, 30, "heatctl lowered the power limit")
    proc.kill()
    proc.wait()
    assert (fake_nvml.limit_w() or 450) < 400  # left behind by the killed run
    probe.publish("nv/trv", json.dumps({"local_temperature": 25.5, "occupied_heating_setpoint": 21}), retain=True)
    proc = run()
    wait_until(lambda: "restoring the original 450 W" in (tmp_path / "run.log").read_text(), 30, "repair")
    proc.terminate()
    assert proc.wait(20) == 0
    assert fake_nvml.limit_w() == 450.0
    assert json.loads((tmp_path / "state" / "limits.json").read_text()) == {}
    log.close()


def nvml_service_config(state_dir: Path, workload: str = "{type: none}", gpu_extra: str = "") -> str:
    """One zone on one NVML GPU, no broker: the tests feed readings into the store."""
    return f"""
node_id: nv
state_dir: {state_dir}
mqtt: null
zones:
  - name: office
    temperature: {{topic: nv/trv}}
    setpoint: {{topic: nv/trv2}}
    gpus: [gpu0]
gpus:
  - {{id: gpu0, backend: nvml, index: 0, workload: {workload}{gpu_extra}}}
"""


def test_service_fails_safe_when_the_gpu_is_lost_and_keeps_running(fake_nvml: FakeNvml, tmp_path: Path) -> None:
    from heatctl.config import parse_config
    from heatctl.service import Service

    fake_nvml.configure(gpu_lost_after_calls=40, default_limit_w=400)
    fake_nvml.set_load(600)
    svc = Service(parse_config(nvml_service_config(tmp_path)))
    svc.start()
    try:
        svc.store.put("office", "temperature", 18.0, "t")
        svc.store.put("office", "setpoint", 21.0, "t")
        snaps = [svc.tick() for _ in range(12)]
        assert snaps[0].failsafe is None and snaps[0].gpus["gpu0"].power_limit_w > 200
        assert snaps[-1].failsafe == "gpu0: the GPU has fallen off the bus (GPU lost)"
        assert snaps[-1].gpus["gpu0"].level == 0.0 and snaps[-1].gpus["gpu0"].fault is not None
        # No healthy GPU: the zone has no capacity, so its integrator is held, not wound up.
        assert snaps[-1].zones["office"].demand_w == 0.0
        held = svc.controller.zones["office"].integral_w  # type: ignore[union-attr]
        svc.tick()
        assert svc.controller.zones["office"].integral_w == held  # type: ignore[union-attr]
    finally:
        svc.shutdown()


def test_without_limit_control_heat_is_steered_by_the_workload(fake_nvml: FakeNvml, tmp_path: Path) -> None:
    from heatctl.config import parse_config
    from heatctl.service import Service
    from tests.conftest import FakeClock

    fake_nvml.configure(fault_set_limit="no_permission", default_limit_w=300, min_limit_w=100, max_limit_w=400)
    clock = FakeClock()
    clock.wait = lambda event, timeout_s: event.is_set()  # type: ignore[attr-defined]
    workload = "{type: process, command: [sleep, '600'], on_exit: stop}"
    svc = Service(parse_config(nvml_service_config(tmp_path, workload)), clock=clock)  # type: ignore[arg-type]
    svc.start()
    try:
        svc.store.put("office", "temperature", 20.5, "t")
        svc.store.put("office", "setpoint", 21.0, "t")
        caps = svc.actuators["gpu0"].caps()
        assert caps.min_limit_w == caps.max_limit_w == 300.0  # the fixed limit the driver keeps
        levels = set()
        for _ in range(40):
            clock.advance(30.0)
            svc.store.put("office", "temperature", 20.5, "t")  # the thermostat keeps reporting
            svc.store.put("office", "setpoint", 21.0, "t")
            snap = svc.tick()
            levels.add(snap.gpus["gpu0"].level)
            assert snap.gpus["gpu0"].limit_control is False
        assert levels == {0.0, 1.0}  # duty-cycled on and off by pausing the workload
        assert fake_nvml.limit_w() is None  # never written
    finally:
        svc.shutdown()


def test_the_fake_drivers_own_selftest_passes(fakenvml_lib: Path) -> None:
    """The fake driver is ours to keep working: its self-test runs the real bindings against it."""
    import os

    selftest = Path(__file__).parent / "fakes" / "fakenvml" / "selftest.py"
    env = {**os.environ, "LD_LIBRARY_PATH": str(fakenvml_lib)}
    out = subprocess.run([sys.executable, str(selftest)], env=env, capture_output=True, text=True, check=False)
    assert out.returncode == 0 and out.stdout.strip().endswith("passed, 0 failed"), out.stdout[-2000:]


def test_a_lost_file_makes_the_gpu_fall_off_the_bus_until_it_is_gone(fake_nvml: FakeNvml, tmp_path: Path) -> None:
    clock = FakeClock()
    gpu = open_gpu(tmp_path, clock)
    assert gpu.read().fault is None
    (fake_nvml.dir / "lost").touch()
    assert gpu.read().fault == "the GPU has fallen off the bus (GPU lost)"
    (fake_nvml.dir / "lost").unlink()
    clock.advance(30)
    assert gpu.read().fault is None
    gpu.restore()


def test_a_second_heatctl_on_the_same_gpu_or_state_dir_is_refused_in_one_line(
    fake_nvml: FakeNvml, tmp_path: Path
) -> None:
    """Two instances on one card fought over its limit, and the second "restored" the first one's
    cap on exit; two on one state_dir removed each other's entities. The second is refused."""
    fake_nvml.configure(min_limit_w=100, max_limit_w=700, default_limit_w=450, idle_w=40)
    fake_nvml.set_load(600)
    first_cfg, other_dir_cfg = tmp_path / "first.yaml", tmp_path / "second.yaml"
    first_cfg.write_text(nvml_service_config(tmp_path / "state-a"))
    other_dir_cfg.write_text(nvml_service_config(tmp_path / "state-b"))
    log = (tmp_path / "first.log").open("ab")
    first = subprocess.Popen(
        [sys.executable, "-m", "heatctl", "run", "-c", str(first_cfg)], env=fake_nvml.env(), stderr=log
    )
    try:
        lock = tmp_path / "state-a" / "heatctl.lock"
        wait_until(
            lambda: (
                lock.exists()
                and str(first.pid) in lock.read_text()
                and "running" in (tmp_path / "first.log").read_text()
            ),
            30,
            "the first run started",
        )
        # No reading yet: fail-safe, the card at its lowest limit — the first run has steered it.
        wait_until(lambda: fake_nvml.limit_w() == 100.0, 30, "the first run's first limit")
        fake_nvml_limit = fake_nvml.limit_w()
        for cfg in (other_dir_cfg, first_cfg):  # the same GPU from another state_dir; the same state_dir
            out = subprocess.run(
                [sys.executable, "-m", "heatctl", "run", "-c", str(cfg)],
                env=fake_nvml.env(),
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            assert out.returncode == 2, out.stderr
            lines = out.stderr.strip().splitlines()
            assert len(lines) == 1 and f"pid {first.pid}" in lines[0] and "stop it first" in lines[0], out.stderr
            assert ("GPU GPU-" in lines[0]) if cfg is other_dir_cfg else ("state_dir" in lines[0])
        restore = subprocess.run(
            [sys.executable, "-m", "heatctl", "restore", "-c", str(first_cfg)],
            env=fake_nvml.env(),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert restore.returncode == 2 and "in use by another heatctl" in restore.stderr
        check = subprocess.run(
            [sys.executable, "-m", "heatctl", "check", "-c", str(first_cfg)],
            env=fake_nvml.env(),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert (
            f"not probed: GPU GPU-fa4e0000-0000-4000-8000-000000000000 is in use by another heatctl (pid {first.pid}"
            in check.stdout
        ), check.stdout
        assert first.poll() is None  # the first is untouched: still running, its limit as it set it
        assert fake_nvml.limit_w() == fake_nvml_limit
        assert not (tmp_path / "state-b" / "limits.json").exists()  # the refused one recorded nothing
    finally:
        first.terminate()
        assert first.wait(20) == 0
        log.close()
    assert fake_nvml.limit_w() == 450.0  # the first gave the card its own limit back
