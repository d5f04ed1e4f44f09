"""Small persistent state in ``state_dir``: one atomic-write helper for every state file, and JSON
documents that keep their previous copy and fail closed when damaged."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

_LOGGER = logging.getLogger(__name__)
PREVIOUS = ".prev"  # the copy a file had before its last write, beside it


def previous_copy(path: Path) -> Path:
    return path.with_name(path.name + PREVIOUS)


def atomic_write(path: Path, data: str | bytes, *, keep_previous: bool = False) -> None:
    """Write to a temporary file, fsync it, rename it over ``path``, fsync the folder: a crash or a
    power cut leaves the old file or the new one, never a torn one. ``keep_previous``: the old
    file stays beside it (``<name>.prev``), the fallback when the new one is found damaged."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data.encode("utf-8") if isinstance(data, str) else data)
            fh.flush()
            os.fsync(fh.fileno())
        if keep_previous and path.exists():
            os.replace(path, previous_copy(path))  # between the two renames, load() reads the copy
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not every file system lets a folder be opened for fsync
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class StateFile:
    """One JSON document, written atomically with its previous copy kept.

    A damaged file is never read as "nothing there": ``load`` falls back to the previous copy,
    and where that is damaged too it returns ``{}`` with ``problem`` set, so the caller takes
    the safe side and says so (log, state, ``check``). A missing file is simply empty.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.problem: str | None = None  # why the last load could not trust the file (None: it could)

    def load(self) -> dict[str, Any]:
        self.problem = None
        data, problem = _read(self.path)
        if problem is None:
            return data if data is not None else self._previous_if_renaming()
        copy, copy_problem = _read(previous_copy(self.path))
        if copy is not None and copy_problem is None:
            self.problem = f"{self.path} is damaged ({problem}): using its previous copy"
            _LOGGER.error("%s", self.problem)
            return copy
        self.problem = f"{self.path} is damaged ({problem}) and has no good previous copy"
        _LOGGER.error("%s: taking the safe side", self.problem)
        return {}

    def _previous_if_renaming(self) -> dict[str, Any]:
        """The file is missing: a write was cut between its two renames, or it never existed."""
        copy, problem = _read(previous_copy(self.path))
        return copy if copy is not None and problem is None else {}

    def save(self, data: dict[str, Any]) -> None:
        atomic_write(self.path, json.dumps(data, indent=1, sort_keys=True), keep_previous=True)


def _read(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    """(the document, None), (None, None) when there is no file, or (None, what is wrong with it)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None, None
    except (OSError, ValueError) as exc:
        return None, str(exc)
    try:
        data = json.loads(text)
    except ValueError as exc:
        return None, f"not JSON: {exc}" if text.strip() else "empty"
    except RecursionError:
        return None, "nested too deeply"
    if not isinstance(data, dict):
        return None, "not a JSON object"
    return data, None
