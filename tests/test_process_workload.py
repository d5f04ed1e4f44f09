"""``type: process``: a real child process paused and resumed by signals."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from heatctl.config import ProcessWorkloadConfig
from heatctl.workloads.process import ProcessWorkload, alive, boot_id, phase_on, pid_record, recorded_pid
from tests.conftest import FakeClock
from tests.services import wait_until

SPIN = [sys.executable, "-c", "import time\nwhile True: time.sleep(0.01)"]


def proc_state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


@pytest.fixture
def made() -> Iterator[list[ProcessWorkload]]:
    workloads: list[ProcessWorkload] = []
    yield workloads
    for w in workloads:  # never leave a test process behind, paused or not
        w.stop()
        child = w._child
        if child is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGKILL)
            child.wait(5)


def workload(
    made: list[ProcessWorkload], tmp_path: Path, clock: FakeClock | None = None, **cfg: object
) -> ProcessWorkload:
    settings: dict[str, object] = {"type": "process", "command": SPIN, "period_s": 0.4, **cfg}
    w = ProcessWorkload("gpu0", ProcessWorkloadConfig(**settings), state_dir=tmp_path, time_fn=clock or FakeClock())  # type: ignore[arg-type]
    made.append(w)
    return w


def test_phase_is_time_proportional() -> None:
    on = sum(phase_on(0.3, 10.0, t / 10) for t in range(1000))
    assert on == 300
    assert phase_on(1.0, 10.0, 9.99) and not phase_on(0.0, 10.0, 0.0)


def test_level_pauses_and_resumes_the_process(made: list[ProcessWorkload], tmp_path: Path) -> None:
    w = workload(made, tmp_path)
    w.start()
    pid = wait_until(lambda: w.pid, 5, "spawned")
    wait_until(lambda: proc_state(pid) == "T", 5, "paused at level 0")
    w.set_level(1.0)
    wait_until(lambda: proc_state(pid) != "T", 5, "running at level 1")
    w.set_level(0.5)
    seen = set()
    wait_until(lambda: seen.add(proc_state(pid)) or ("T" in seen and len(seen) > 1), 5, "both phases at 0.5")
    assert "paused" in w.status() or "running" in w.status()


@pytest.mark.parametrize("on_exit", ["resume", "stop"])
def test_stop_never_leaves_it_paused(made: list[ProcessWorkload], tmp_path: Path, on_exit: str) -> None:
    w = workload(made, tmp_path, on_exit=on_exit)
    w.start()
    pid = wait_until(lambda: w.pid, 5, "spawned")
    wait_until(lambda: proc_state(pid) == "T", 5, "paused")
    w.stop()
    if on_exit == "resume":
        assert alive(pid) and proc_state(pid) != "T"
    else:
        wait_until(lambda: not alive(pid), 5, "terminated")


def test_dead_process_is_restarted_with_backoff(made: list[ProcessWorkload], tmp_path: Path) -> None:
    clock = FakeClock()
    w = workload(made, tmp_path, clock, command=[sys.executable, "-c", "raise SystemExit(3)"])
    w.set_level(1.0)
    w.start()
    wait_until(lambda: "exited with code 3" in w.status(), 5, "death noticed")
    restarts = w._restarts
    clock.advance(1.0)  # the first backoff is 1 s; later ones double
    wait_until(lambda: w._restarts > restarts, 5, "restarted after the backoff")


def test_adopts_by_pid_file_and_repairs_a_paused_process(made: list[ProcessWorkload], tmp_path: Path) -> None:
    other = subprocess.Popen(SPIN, start_new_session=True)
    try:
        os.kill(other.pid, signal.SIGSTOP)  # as a killed heatctl would have left it
        pid_file = tmp_path / "folding.pid"
        pid_file.write_text(f"{other.pid}\n")
        w = workload(made, tmp_path, command=None, pid_file=str(pid_file))
        w.set_level(1.0)
        w.start()
        assert w.pid == other.pid
        wait_until(lambda: proc_state(other.pid) != "T", 5, "resumed")
        w.stop()  # on_exit resume: adopted process keeps running
        assert other.poll() is None and proc_state(other.pid) != "T"
    finally:
        other.kill()
        other.wait()


def test_an_openai_fallback_runs_only_while_heat_finds_no_other_work(tmp_path: Path) -> None:
    from heatctl.config import OpenAIWorkloadConfig
    from heatctl.workloads.openai import OpenAIWorkload

    cfg = OpenAIWorkloadConfig(
        type="openai",
        url="http://127.0.0.1:9/v1",  # nobody answers: a job stays queued, so there is work
        model="m",
        jobs=str(tmp_path / "jobs"),
        fallback=ProcessWorkloadConfig(type="process", command=SPIN, period_s=0.4, on_exit="stop"),
    )
    w = OpenAIWorkload("gpu0", cfg, state_dir=tmp_path)
    w.start()
    try:
        fallback = w._fallback
        assert fallback is not None
        pid = wait_until(lambda: fallback.pid, 5, "fallback spawned")
        wait_until(lambda: proc_state(pid) == "T", 5, "paused while no heat is wanted")
        assert w.has_work()  # with a fallback, heat always finds work: not work-starved
        w.set_level(1.0)  # heat wanted, nothing queued: the fallback runs
        wait_until(lambda: proc_state(pid) != "T", 5, "fallback running")
        assert w.effective_level() == 1.0
        w.set_level(0.0)
        (tmp_path / "jobs" / "a.jsonl").write_text('{"id": "a", "prompt": "x"}\n')
        assert w.spool is not None and w.spool.scan() == 1
        w.set_level(1.0)  # heat wanted and a job waits: the job's turn, the fallback pauses
        wait_until(lambda: proc_state(pid) == "T", 5, "fallback paused for real work")
        assert "fallback process" in w.status()
    finally:
        w.stop()
    assert not alive(pid)  # on_exit: stop


@pytest.mark.parametrize("record", ["{pid}\n", "{pid} 1 another-boot\n", "{pid} 1 {boot}\n"])
def test_a_pid_record_from_another_boot_or_process_is_never_adopted_or_signalled(
    made: list[ProcessWorkload], tmp_path: Path, record: str
) -> None:
    """A record left across a reboot names whoever has that PID now: heatctl neither pauses nor kills it."""
    stranger = subprocess.Popen(SPIN, start_new_session=True)
    try:
        (tmp_path / "gpu0-workload.pid").write_text(record.format(pid=stranger.pid, boot=boot_id()))
        w = workload(made, tmp_path, on_exit="stop")
        w.set_level(0.0)  # paused: a SIGSTOP would go to the workload, not the stranger
        w.start()
        wait_until(lambda: w.pid is not None, 5, "its own process started")
        assert w.pid != stranger.pid
        wait_until(lambda: w.pid is not None and proc_state(w.pid) == "T", 5, "its own process paused")
        assert proc_state(stranger.pid) != "T"
        w.stop()  # on_exit stop: its own process ends, the stranger lives
        assert stranger.poll() is None and proc_state(stranger.pid) != "T"
    finally:
        stranger.kill()
        stranger.wait()


def test_heatctls_own_record_is_adopted_in_the_same_boot(made: list[ProcessWorkload], tmp_path: Path) -> None:
    ours = subprocess.Popen(SPIN, start_new_session=True)
    try:
        (tmp_path / "gpu0-workload.pid").write_text(pid_record(ours.pid))
        w = workload(made, tmp_path)  # adopts what it started before a restart, rather than start another
        w.start()
        assert w.pid == ours.pid
    finally:
        ours.kill()
        ours.wait()


def test_a_pid_file_older_than_its_process_is_not_adopted(made: list[ProcessWorkload], tmp_path: Path) -> None:
    stranger = subprocess.Popen(SPIN, start_new_session=True)
    try:
        pid_file = tmp_path / "job.pid"
        pid_file.write_text(f"{stranger.pid}\n")
        os.utime(pid_file, (1.0e9, 1.0e9))  # written in 2001, long before this process started
        assert recorded_pid(pid_file, own=False) is None
        os.utime(pid_file, None)
        assert recorded_pid(pid_file, own=False) == stranger.pid
    finally:
        stranger.kill()
        stranger.wait()
