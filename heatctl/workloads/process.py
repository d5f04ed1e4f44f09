"""``type: process``: a command doing GPU work, modulated by time-proportional SIGSTOP/SIGCONT."""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

from heatctl.config import ProcessWorkloadConfig
from heatctl.errors import BackendError
from heatctl.state import atomic_write

_LOGGER = logging.getLogger(__name__)
MAX_BACKOFF_S = 300.0
SIGNAL_SETTLE_S = 0.5  # a state read this soon after our own signal may not show it yet


def phase_on(level: float, period_s: float, t_s: float) -> bool:
    """Whether a process at ``level`` runs at time ``t_s`` within a period of ``period_s``."""
    if level >= 1.0:
        return True
    if level <= 0.0:
        return False
    return (t_s % period_s) < level * period_s


def _proc_state(pid: int) -> str | None:
    """The one-letter state in /proc/PID/stat (R, S, T, Z, …), None when unreadable."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def stopped(pid: int) -> bool:
    """Whether the process is stopped (SIGSTOP), as the kernel reports it."""
    return _proc_state(pid) in ("T", "t")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped) is not alive for our purposes.
    return _proc_state(pid) != "Z"


PID_FILE_SLACK_S = 5.0  # a job writes its PID file a moment after it starts


class ProcessWorkload:
    """Runs (or adopts by PID file) a command and pauses it part of each period.

    A thread of its own switches the process group between SIGCONT and SIGSTOP on the
    period, restarts the command with backoff if it dies, and on ``stop`` always sends
    SIGCONT first: the process is left running or terminated, never paused. The PID of a
    spawned process is kept in ``state_dir`` so that a run killed mid-pause is repaired
    (SIGCONT) at the next start.
    """

    kind = "process"
    steerable = True

    def __init__(
        self,
        gpu_id: str,
        cfg: ProcessWorkloadConfig,
        *,
        state_dir: Path,
        time_fn: Callable[[], float] = time.monotonic,
    ) -> None:
        self._gpu_id = gpu_id
        self._cfg = cfg
        self._time_fn = time_fn
        self._pid_record = state_dir / f"{gpu_id}-workload.pid"
        self._log_path = state_dir / f"{gpu_id}-workload.log"
        self._level = 0.0
        self._pid: int | None = None
        self._child: subprocess.Popen[bytes] | None = None
        self._paused = False
        self._restarts = 0
        self._signalled_at = -float("inf")
        self.mismatches = 0  # times the process was found running when paused, or paused when running
        self._next_start_s = 0.0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"workload-{gpu_id}", daemon=True)
        self.last_problem: str | None = None

    # --- Workload protocol ------------------------------------------------------------

    def start(self) -> None:
        self._repair_left_paused()
        with self._lock:
            self._ensure_running()
        self._thread.start()

    def set_level(self, level: float) -> None:
        with self._lock:
            self._level = min(max(level, 0.0), 1.0)

    def effective_level(self) -> float | None:
        """What runs now, read back from the kernel: 0 without a live process or while it is stopped."""
        with self._lock:
            if self._pid is None or not self._is_alive():
                return 0.0
            if 0.0 < self._level < 1.0:
                return self._level  # mid-cycle: either state is right
            return 0.0 if stopped(self._pid) else 1.0

    def has_work(self) -> bool:
        return True

    def work_rate(self) -> float | None:
        return None  # a foreign process does not tell us its throughput

    def status(self) -> str:
        with self._lock:
            if self._pid is None:
                return f"process not running ({self.last_problem or 'starting'})"
            state = "paused" if self._paused else "running"
            return f"process {self._pid} {state}, level {self._level:.2f}, restarts {self._restarts}"

    def fault(self) -> str | None:
        return None

    @property
    def pid(self) -> int | None:
        return self._pid

    def stop(self) -> None:
        """Resume it, then leave it running or terminate it, as ``on_exit`` says."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        with self._lock:
            pid = self._pid
            if pid is None:
                return
            self._signal(signal.SIGCONT)
            self._paused = False
            if self._cfg.on_exit == "stop":
                self._terminate(pid)
                self._pid_record.unlink(missing_ok=True)
            else:
                _LOGGER.info("gpu %s: workload %d left running", self._gpu_id, pid)

    # --- inside -----------------------------------------------------------------------

    def _repair_left_paused(self) -> None:
        resume_recorded(self._gpu_id, self._cfg, self._pid_record.parent)

    def _ensure_running(self) -> None:
        """Adopt by PID file, or (re)start the command, honouring the restart backoff."""
        if self._pid is not None and self._is_alive():
            return
        if self._pid is not None:
            code = self._child.poll() if self._child else None
            self.last_problem = f"exited with code {code}" if code is not None else "exited"
            _LOGGER.error("gpu %s: workload %d %s", self._gpu_id, self._pid, self.last_problem)
            self._pid, self._child, self._paused = None, None, False
            delay_s = min(2.0**self._restarts, MAX_BACKOFF_S)
            self._restarts += 1
            self._next_start_s = self._time_fn() + delay_s
            _LOGGER.info("gpu %s: restarting the workload in %.0f s", self._gpu_id, delay_s)
        if self._time_fn() < self._next_start_s:
            return
        adopted = self._adopt()
        if adopted is not None:
            self._pid = adopted
            return
        if self._cfg.command is None:
            self.last_problem = f"no live process in {self._cfg.pid_file}"
            return
        self._spawn()

    def _adopt(self) -> int | None:
        for record in (Path(self._cfg.pid_file) if self._cfg.pid_file else None, self._pid_record):
            pid = recorded_pid(record, own=record == self._pid_record) if record else None
            if pid is not None:
                _LOGGER.info("gpu %s: adopted workload process %d from %s", self._gpu_id, pid, record)
                return pid
        return None

    def _spawn(self) -> None:
        command = self._cfg.command
        argv = shlex.split(command) if isinstance(command, str) else list(command or [])
        self._pid_record.parent.mkdir(parents=True, exist_ok=True)
        try:
            with self._log_path.open("ab") as log:
                self._child = subprocess.Popen(
                    argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
                )
        except OSError as exc:
            self.last_problem = f"cannot start {argv[0]!r}: {exc}"
            _LOGGER.error("gpu %s: %s", self._gpu_id, self.last_problem)
            self._next_start_s = self._time_fn() + min(2.0**self._restarts, MAX_BACKOFF_S)
            self._restarts += 1
            return
        self._pid = self._child.pid
        atomic_write(self._pid_record, pid_record(self._pid))
        _LOGGER.info("gpu %s: started workload %s (pid %d)", self._gpu_id, argv[0], self._pid)

    def _is_alive(self) -> bool:
        if self._child is not None:
            return self._child.poll() is None
        return self._pid is not None and alive(self._pid)

    def _signal(self, sig: signal.Signals) -> None:
        if self._pid is None:
            return
        try:
            # A spawned command leads its own process group: pause its children too.
            if self._child is not None:
                os.killpg(self._pid, sig)
            else:
                os.kill(self._pid, sig)
        except ProcessLookupError:
            pass
        except PermissionError as exc:
            raise BackendError(f"gpu {self._gpu_id}: may not signal workload {self._pid}: {exc}") from exc

    def _terminate(self, pid: int) -> None:
        self._signal(signal.SIGTERM)
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline and self._is_alive():
            if self._child is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self._child.wait(timeout=0.1)
            else:
                self._stop.wait(0.1)
        if self._is_alive():
            self._signal(signal.SIGKILL)
            if self._child is not None:
                self._child.wait(timeout=5)
        _LOGGER.info("gpu %s: workload %d stopped", self._gpu_id, pid)

    def _enforce(self, want_on: bool) -> None:
        """Compare the process's real state with the wanted one and signal on any difference.

        The kernel's state is read back every time, not remembered: a process that someone
        else resumed (or stopped) is put back and the mismatch is counted and logged.
        """
        if self._pid is None:
            return
        is_stopped = stopped(self._pid)
        settled = time.monotonic() - self._signalled_at >= SIGNAL_SETTLE_S  # our own signal may be in flight
        if is_stopped != self._paused and settled:
            self.mismatches += 1
            _LOGGER.warning(
                "gpu %s: workload %d was found %s; heatctl had it %s",
                self._gpu_id,
                self._pid,
                "stopped" if is_stopped else "running",
                "paused" if self._paused else "running",
            )
        if want_on and is_stopped:
            self._signal(signal.SIGCONT)
            self._signalled_at = time.monotonic()
        elif not want_on and not is_stopped:
            self._signal(signal.SIGSTOP)
            self._signalled_at = time.monotonic()
        self._paused = not want_on

    def _run(self) -> None:
        # Workload thread: owns pausing and restarting; takes the lock for every change.
        period_s = self._cfg.period_s
        tick_s = min(period_s / 20.0, 1.0)
        while not self._stop.is_set():
            with self._lock:
                try:
                    self._ensure_running()
                    self._enforce(phase_on(self._level, period_s, time.monotonic()))
                except BackendError as exc:
                    self.last_problem = str(exc)
                    _LOGGER.error("%s", exc)
            self._stop.wait(tick_s)


def resume_recorded(gpu_id: str, cfg: ProcessWorkloadConfig, state_dir: Path) -> list[str]:
    """SIGCONT every live process a run may have left paused (its PID record and pid_file)."""
    done = []
    records = [state_dir / f"{gpu_id}-workload.pid"] + ([Path(cfg.pid_file)] if cfg.pid_file else [])
    for record in records:
        pid = recorded_pid(record, own=record == records[0])
        if pid is not None:
            try:
                os.kill(pid, signal.SIGCONT)
            except (ProcessLookupError, PermissionError) as exc:
                done.append(f"gpu {gpu_id}: cannot resume workload {pid}: {exc}")
                continue
            done.append(f"gpu {gpu_id}: workload {pid} resumed")
    return done


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def boot_id() -> str:
    """This boot's id: a PID recorded in another boot names some other process now."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def start_ticks(pid: int) -> int | None:
    """When the process started, in clock ticks since boot (/proc/PID/stat field 22)."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def started_epoch_s(pid: int) -> float | None:
    """When the process started, in epoch seconds."""
    ticks = start_ticks(pid)
    try:
        btime = next(
            int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines() if line.startswith("btime ")
        )
    except (OSError, StopIteration, ValueError, IndexError):
        return None
    return btime + ticks / os.sysconf("SC_CLK_TCK") if ticks is not None else None


def pid_record(pid: int) -> str:
    """heatctl's own PID record: the PID, its start time and the boot, so a reused PID is never taken for it."""
    return f"{pid} {start_ticks(pid)} {boot_id()}\n"


def recorded_pid(path: Path, *, own: bool) -> int | None:
    """The live process a PID record names, or None: heatctl's own record must match the process's
    start time and this boot; a workload's own ``pid_file`` must be no older than its process (a
    PID file left from before a reboot or a restart names whoever has the PID now)."""
    pid = _read_pid(path)
    if pid is None or not alive(pid):
        return None
    problem = _own_record_problem(path, pid) if own else _pid_file_problem(path, pid)
    if problem is not None:
        _LOGGER.warning("%s: PID %d %s: left alone", path, pid, problem)
        return None
    return pid


def _own_record_problem(path: Path, pid: int) -> str | None:
    try:
        _, ticks, boot = path.read_text().split()
    except (OSError, ValueError):
        return "recorded without its start time and boot, so not known to be heatctl's"
    if boot != boot_id() or ticks != str(start_ticks(pid)):
        return "is another process now (the machine rebooted or the PID was reused)"
    return None


def _pid_file_problem(path: Path, pid: int) -> str | None:
    started = started_epoch_s(pid)
    try:
        written = path.stat().st_mtime
    except OSError as exc:
        return f"cannot be checked ({exc})"
    if started is not None and started > written + PID_FILE_SLACK_S:
        return "started after the file was written: another process"
    return None
