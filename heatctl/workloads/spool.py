"""The jobs spool as a source of work: JSONL files in a folder, one request a line with an ``id``;
each job's result appended, fsynced, to ``<file>.results.jsonl`` beside it.

A thread of its own reads the folder every ``RESCAN_S``: the control thread never touches the
disk. The inference workload takes jobs while heat is wanted, hands each back finished
(``complete``) or cut off (``release``); a job with a result is never queued again, so a restart
neither loses nor repeats one. Batch requests come through ``worksource.WorkSource`` the same way.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from heatctl.errors import plain

_LOGGER = logging.getLogger(__name__)
RESULTS_SUFFIX = ".results.jsonl"
RESCAN_S = 30.0


@dataclass
class Job:
    id: str
    body: dict[str, Any]
    source: Path  # the job file
    results: Path
    attempts: int = 0
    error: str | None = None  # a job that could not even be read


class JobSpool:
    """Thread: the scanner thread reads the folder; workers ``take``, ``complete`` and ``release``
    from theirs; ``on_work`` (any thread) says jobs arrived. Its lock is never held while calling it."""

    def __init__(self, folder: Path, name: str, on_work: Callable[[], None]) -> None:
        self.folder = folder
        self._name = name
        self._on_work = on_work
        self._lock = threading.Lock()
        self._queue: deque[Job] = deque()
        self._pending: set[tuple[str, str]] = set()  # (file, id) queued or in flight
        self._done_files: dict[Path, tuple[float, int]] = {}  # file → (mtime, size) when all its jobs had results
        self._file_locks: dict[Path, threading.Lock] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._scan_loop, name=f"{name}-scan", daemon=True)

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2.0)

    def __len__(self) -> int:
        with self._lock:
            return len(self._queue)

    def has_work(self) -> bool:
        return len(self) > 0

    def take(self) -> Job | None:
        with self._lock:
            return self._queue.popleft() if self._queue else None

    def release(self, job: Job) -> None:
        """Cut off before it finished: it runs first again."""
        with self._lock:
            self._queue.appendleft(job)
        self._on_work()

    def requeue(self, job: Job) -> None:
        """A worker failed on it: it runs again, after the others."""
        with self._lock:
            self._queue.append(job)
        self._on_work()

    def complete(self, job: Job, result: dict[str, Any]) -> None:
        """Append the result, fsynced; only then is the job forgotten (it is finished on disk). Raises
        ``OSError`` when the result cannot be written (the caller keeps it and tries again)."""
        with self._lock:
            lock = self._file_locks.setdefault(job.results, threading.Lock())
        line = json.dumps({"id": job.id, **result}, ensure_ascii=False) + "\n"
        with lock, job.results.open("a", encoding="utf-8") as fh:
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())
        with self._lock:
            self._pending.discard((str(job.source), job.id))

    def _scan_loop(self) -> None:
        # Scanner thread: the only reader of the spool; hands new jobs to the workers.
        while not self._stop.is_set():
            try:
                self.scan()
            except Exception:  # a bug here must not end the scanning
                _LOGGER.exception("%s: scanning the job spool failed", self._name)
            self._stop.wait(RESCAN_S)

    def scan(self) -> int:
        """Queue every job in the spool that has no result yet; returns how many were added."""
        added = 0
        try:
            files = sorted(p for p in self.folder.glob("*.jsonl") if not p.name.endswith(RESULTS_SUFFIX))
        except OSError as exc:
            _LOGGER.error("%s: cannot read the job spool %s: %s", self._name, self.folder, plain(exc))
            return 0
        for path in files:
            try:
                stat = path.stat()
            except OSError:
                continue
            if self._done_files.get(path) == (stat.st_mtime, stat.st_size):
                continue
            results = path.with_name(path.name.removesuffix(".jsonl") + RESULTS_SUFFIX)
            finished = _finished_ids(results)
            open_jobs = 0
            for job in _read_jobs(path, results):
                key = (str(path), job.id)
                if job.id in finished:
                    continue
                open_jobs += 1
                with self._lock:
                    if key in self._pending:
                        continue
                    self._pending.add(key)
                    self._queue.append(job)
                added += 1
            if open_jobs == 0:
                self._done_files[path] = (stat.st_mtime, stat.st_size)
        if added:
            _LOGGER.info("%s: %d job(s) queued from %s", self._name, added, self.folder)
            self._on_work()
        return added


def _read_jobs(path: Path, results: Path) -> Iterator[Job]:
    """The file's jobs. A last line without its newline is still being written: it is read at a later
    scan, once whole. A job without an ``id`` runs under ``<file>:<line>``."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        _LOGGER.error("cannot read job file %s: %s", path, exc)
        return
    lines = text.split("\n")[:-1]  # whole lines only: what follows the last newline is not finished
    first_line: dict[str, int] = {}
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        fallback_id = f"{path.name}:{lineno}"
        try:
            data = json.loads(line)
        except json.JSONDecodeError as exc:
            yield Job(
                id=fallback_id, body={}, source=path, results=results, error=f"line {lineno} is not JSON: {exc.msg}"
            )
            continue
        if not isinstance(data, dict):
            yield Job(
                id=fallback_id, body={}, source=path, results=results, error=f"line {lineno} is not a JSON object"
            )
            continue
        job_id = str(data.pop("id", fallback_id))
        if (first := first_line.setdefault(job_id, lineno)) != lineno:
            # Its result would be taken for the first one's: failed under its own place, with why.
            error = f"id {job_id!r} is used again (first at line {first}): not run"
            yield Job(id=fallback_id, body={}, source=path, results=results, error=error)
            continue
        if "messages" not in data and "prompt" not in data:
            yield Job(id=job_id, body={}, source=path, results=results, error="a job needs 'messages' or 'prompt'")
            continue
        yield Job(id=job_id, body=data, source=path, results=results)


def _finished_ids(results: Path) -> set[str]:
    """Ids with a final result. A torn last line (a crash mid-write) is ignored: that job runs again."""
    done: set[str] = set()
    try:
        text = results.read_text(encoding="utf-8")
    except FileNotFoundError:
        return done
    except (OSError, UnicodeDecodeError) as exc:
        _LOGGER.error("cannot read results %s: %s", results, exc)
        return done
    for line in text.splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(entry, dict) and entry.get("status") in ("ok", "failed") and "id" in entry:
            done.add(str(entry["id"]))
    return done
