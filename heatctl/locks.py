"""One heatctl per state_dir and per GPU: advisory locks the kernel drops when the process ends.

Two instances on one card fight over its limit every tick, and the second takes the first's cap
for the card's own limit and "restores" it on exit; two on one state_dir overwrite each other's
state and remove each other's Home Assistant entities. The second one is refused, naming the
first: its PID, node and start time are written into the lock file it holds.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import tempfile
import threading
import time
from pathlib import Path

from heatctl.errors import InstanceConflict

STATE_DIR_LOCK = "heatctl.lock"


# Locks this process holds: path → (descriptor, holders). A GPU opened again after it was lost, or
# two services in one test process, share the one lock rather than refuse themselves.
_HELD: dict[Path, tuple[int, int]] = {}
_HELD_LOCK = threading.Lock()


class InstanceLock:
    """An exclusive ``flock`` on ``path``, taken without waiting; ``what`` names it in the refusal."""

    def __init__(self, path: Path, what: str) -> None:
        self.path = path
        self.what = what
        self.held = False

    def acquire(self, holder: str) -> None:
        """Take it, or raise ``InstanceConflict`` naming the process that has it. ``holder``: who
        this process is, written for the next one to read (the node, the GPU's id)."""
        with _HELD_LOCK:
            if (mine := _HELD.get(self.path)) is not None:
                _HELD[self.path] = (mine[0], mine[1] + 1)
                self.held = True
                return
            _HELD[self.path] = (self._take(holder), 1)
            self.held = True

    def release(self) -> None:
        with _HELD_LOCK:
            if not self.held or (mine := _HELD.get(self.path)) is None:
                return
            self.held = False
            if mine[1] > 1:
                _HELD[self.path] = (mine[0], mine[1] - 1)
                return
            del _HELD[self.path]
            with contextlib.suppress(OSError):
                os.close(mine[0])  # the lock goes with the descriptor; the file stays (no race on unlink)

    def _take(self, holder: str) -> int:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise InstanceConflict(f"{self.what} is in use by another heatctl ({holder}): stop it first") from None
        os.ftruncate(fd, 0)
        since = time.strftime("%Y-%m-%d %H:%M:%S")
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "as": holder, "since": since}).encode(), 0)
        return fd


def state_dir_lock(state_dir: Path) -> InstanceLock:
    return InstanceLock(state_dir / STATE_DIR_LOCK, f"state_dir {state_dir}")


def gpu_lock(uuid: str) -> InstanceLock:
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", uuid)
    return InstanceLock(run_dir() / f"gpu-{safe}.lock", f"GPU {uuid}")


def run_dir() -> Path:
    """Where the per-GPU locks live: shared by every heatctl on this machine (``HEATCTL_RUN_DIR``,
    else ``/run/heatctl`` from the unit's RuntimeDirectory, else ``/run/lock/heatctl``, else the
    temporary directory)."""
    if given := os.environ.get("HEATCTL_RUN_DIR"):
        return Path(given)
    for candidate in (Path("/run/heatctl"), Path("/run/lock/heatctl")):
        with contextlib.suppress(OSError):
            candidate.mkdir(parents=True, exist_ok=True)
            if os.access(candidate, os.W_OK):
                return candidate
    return Path(tempfile.gettempdir()) / "heatctl-locks"


def _holder(fd: int) -> str:
    try:
        data = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except (OSError, ValueError):
        return "its details unreadable"
    if not isinstance(data, dict):
        return "its details unreadable"
    return f"pid {data.get('pid', '?')}, {data.get('as', '?')}, since {data.get('since', '?')}"
