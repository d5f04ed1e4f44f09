"""Files, batches and their requests, durable in ``state_dir/batch``: SQLite for the records, plain
files for the uploaded and produced JSONL.

Nothing accepted is lost and nothing finished is redone: an upload is written to a temporary
file, fsynced and renamed before its record is committed; a request's result is committed
(``synchronous=FULL``) before its slot takes the next one; output and error files are written
atomically, then the batch is marked completed in the same transaction that records them. A
kill -9 at any point leaves either the old state or the new one.

One connection, guarded by a lock: the API thread reads and writes short transactions, the
manager and the workers record results. Timestamps are Unix seconds, as the OpenAI API gives them.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_LOGGER = logging.getLogger(__name__)
SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    id TEXT PRIMARY KEY, purpose TEXT NOT NULL, filename TEXT NOT NULL, bytes INTEGER NOT NULL,
    created_at INTEGER NOT NULL, deleted INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS batches (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE NOT NULL, input_file_id TEXT NOT NULL,
    endpoint TEXT NOT NULL, completion_window TEXT NOT NULL, status TEXT NOT NULL,
    created_at INTEGER NOT NULL, expires_at INTEGER NOT NULL, in_progress_at INTEGER,
    finalizing_at INTEGER, completed_at INTEGER, failed_at INTEGER, expired_at INTEGER,
    cancelling_at INTEGER, cancelled_at INTEGER, output_file_id TEXT, error_file_id TEXT,
    errors TEXT, metadata TEXT, total INTEGER NOT NULL DEFAULT 0, completed INTEGER NOT NULL DEFAULT 0,
    failed INTEGER NOT NULL DEFAULT 0, energy_j REAL NOT NULL DEFAULT 0, reused_j REAL NOT NULL DEFAULT 0,
    tokens INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS requests (
    batch_id TEXT NOT NULL, line INTEGER NOT NULL, custom_id TEXT NOT NULL, url TEXT NOT NULL,
    body TEXT NOT NULL, state TEXT NOT NULL DEFAULT 'queued', result TEXT,
    PRIMARY KEY (batch_id, line)
);
CREATE INDEX IF NOT EXISTS requests_state ON requests (state, batch_id);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

# The money and carbon of each batch's energy: J with no price (or carbon) known are counted apart.
ADDED_COLUMNS = (
    "cost REAL NOT NULL DEFAULT 0",
    "unpriced_j REAL NOT NULL DEFAULT 0",
    "co2_g REAL NOT NULL DEFAULT 0",
    "uncarboned_j REAL NOT NULL DEFAULT 0",
    "by_node TEXT NOT NULL DEFAULT '{}'",  # in a house: requests run per node
)

OPEN_STATUSES = ("validating", "in_progress", "cancelling", "finalizing")
TIMESTAMPS = (
    "in_progress_at",
    "finalizing_at",
    "completed_at",
    "failed_at",
    "expired_at",
    "cancelling_at",
    "cancelled_at",
)


def new_id(prefix: str) -> str:
    return prefix + secrets.token_hex(12)


@dataclass(frozen=True, slots=True)
class FileRecord:
    id: str
    purpose: str
    filename: str
    bytes: int
    created_at: int

    def to_api(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "file",
            "bytes": self.bytes,
            "created_at": self.created_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
            "status_details": None,
            "expires_at": None,
        }


@dataclass(frozen=True, slots=True)
class QueuedRequest:
    batch_id: str
    line: int
    custom_id: str
    url: str
    body_json: str  # kept as the text it is stored as: a queue of 50,000 dicts would hold gigabytes
    expires_at: int
    batch_seq: int

    @property
    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = json.loads(self.body_json)
        return body


class BatchStore:
    def __init__(self, root: Path, *, wall_fn: Callable[[], float] = time.time) -> None:
        self.root = root
        self.files_dir = root / "files"
        self.files_dir.mkdir(parents=True, exist_ok=True)
        self._wall_fn = wall_fn
        self._lock = threading.RLock()
        self.damaged: str | None = None  # the database was damaged and moved aside (said in the state and check)
        try:
            self._db = self._open(root / "batch.db")
        except sqlite3.DatabaseError as exc:
            self.damaged = self._move_aside(root / "batch.db", str(exc))
            self._db = self._open(root / "batch.db")
        # Reads go through a connection of their own: under WAL they never wait for a commit's fsync.
        self._reader = sqlite3.connect(root / "batch.db", check_same_thread=False, isolation_level=None)
        self._reader.row_factory = sqlite3.Row
        self._read_lock = threading.Lock()
        self._sweep_temporaries()

    def now(self) -> int:
        return int(self._wall_fn())

    @staticmethod
    def _open(path: Path) -> sqlite3.Connection:
        """The database, checked: a zero-length or damaged file is never silently taken for an empty store."""
        if path.exists() and path.stat().st_size == 0:
            raise sqlite3.DatabaseError("the file is empty (cut off): every batch it held is missing")
        db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        try:
            db.row_factory = sqlite3.Row
            result = db.execute("PRAGMA quick_check").fetchone()
            if result is None or result[0] != "ok":
                raise sqlite3.DatabaseError(f"integrity check: {result[0] if result else 'no answer'}")
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.executescript(SCHEMA)
            have = {row[1] for row in db.execute("PRAGMA table_info(batches)")}
            for column in ADDED_COLUMNS:  # a store from an earlier heatctl gains what this one keeps
                if column.split()[0] not in have:
                    db.execute(f"ALTER TABLE batches ADD COLUMN {column}")
        except sqlite3.DatabaseError:
            db.close()
            raise
        return db

    def _move_aside(self, path: Path, problem: str) -> str:
        """A damaged database is kept for a person to look at, never emptied; the store starts anew."""
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(self._wall_fn()))
        aside = path.with_name(f"{path.name}.damaged-{stamp}")
        for suffix in ("", "-wal", "-shm"):
            part = path.with_name(path.name + suffix)
            if part.exists():
                part.replace(aside.with_name(aside.name + suffix))
        message = f"{path} was damaged ({problem}); moved to {aside.name}, the Batch API starts with no batches"
        _LOGGER.error("%s", message)
        return message

    def close(self) -> None:
        with self._lock, self._read_lock:
            self._reader.close()
            self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _one(self, sql: str, args: Iterable[Any] = ()) -> sqlite3.Row | None:
        with self._read_lock:
            row: sqlite3.Row | None = self._reader.execute(sql, tuple(args)).fetchone()
            return row

    def _all(self, sql: str, args: Iterable[Any] = ()) -> list[sqlite3.Row]:
        with self._read_lock:
            return list(self._reader.execute(sql, tuple(args)).fetchall())

    # --- files --------------------------------------------------------------------------

    def _sweep_temporaries(self) -> None:
        """Uploads cut off by a crash never got a record: their temporary files go."""
        for tmp in self.files_dir.glob("*.tmp"):
            tmp.unlink(missing_ok=True)

    def file_path(self, file_id: str) -> Path:
        return self.files_dir / f"{file_id}.jsonl"

    def add_file(self, filename: str, purpose: str, chunks: Iterable[bytes]) -> FileRecord:
        """Write the content durably, then record it. The chunks' iterator may raise to abort."""
        upload = self.begin_file()
        try:
            for chunk in chunks:
                upload.write(chunk)
        except BaseException:
            upload.abort()
            raise
        return upload.commit(filename, purpose)

    def begin_file(self) -> Upload:
        """An upload written piece by piece to a temporary file; recorded only by ``commit``."""
        return Upload(self, new_id("file-"))

    def _record_file(self, record: FileRecord) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO files (id, purpose, filename, bytes, created_at) VALUES (?, ?, ?, ?, ?)",
                (record.id, record.purpose, record.filename, record.bytes, record.created_at),
            )

    def get_file(self, file_id: str) -> FileRecord | None:
        row = self._one("SELECT * FROM files WHERE id = ? AND deleted = 0", (file_id,))
        if row is None:
            return None
        return FileRecord(row["id"], row["purpose"], row["filename"], row["bytes"], row["created_at"])

    def list_files(self, after: str | None = None, limit: int = 10_000) -> tuple[list[FileRecord], bool]:
        """Newest first, a page at a time; ``after`` is the id of the last one already seen."""
        bound = (1 << 62) if after is None else self._file_rowid(after)
        rows = self._all(
            "SELECT rowid, * FROM files WHERE deleted = 0 AND rowid < ? ORDER BY rowid DESC LIMIT ?", (bound, limit + 1)
        )
        records = [FileRecord(r["id"], r["purpose"], r["filename"], r["bytes"], r["created_at"]) for r in rows[:limit]]
        return records, len(rows) > limit

    def _file_rowid(self, file_id: str) -> int:
        row = self._one("SELECT rowid FROM files WHERE id = ?", (file_id,))
        return int(row["rowid"]) if row else 0

    def delete_file(self, file_id: str) -> bool:
        with self._tx() as db:
            deleted = db.execute("UPDATE files SET deleted = 1 WHERE id = ? AND deleted = 0", (file_id,)).rowcount
        if deleted:
            self.file_path(file_id).unlink(missing_ok=True)
        return bool(deleted)

    # --- batches ------------------------------------------------------------------------

    def create_batch(
        self, input_file_id: str, endpoint: str, window: str, window_s: float, metadata: dict[str, str] | None
    ) -> dict[str, Any]:
        batch_id = new_id("batch_")
        now = self.now()
        with self._tx() as db:
            db.execute(
                "INSERT INTO batches (id, input_file_id, endpoint, completion_window, status, created_at, expires_at,"
                " metadata) VALUES (?, ?, ?, ?, 'validating', ?, ?, ?)",
                (batch_id, input_file_id, endpoint, window, now, now + int(window_s), json.dumps(metadata)),
            )
        batch = self.get_batch(batch_id)
        assert batch is not None
        return batch

    def batch_row(self, batch_id: str) -> sqlite3.Row | None:
        return self._one("SELECT * FROM batches WHERE id = ?", (batch_id,))

    def get_batch(self, batch_id: str) -> dict[str, Any] | None:
        row = self.batch_row(batch_id)
        return None if row is None else batch_to_api(row)

    def list_batches(self, after: str | None, limit: int) -> tuple[list[dict[str, Any]], bool]:
        """Newest first, as the API lists them; ``after`` is the id of the last one already seen."""
        bound = (1 << 62) if after is None else self._seq(after)
        rows = self._all("SELECT * FROM batches WHERE seq < ? ORDER BY seq DESC LIMIT ?", (bound, limit + 1))
        return [batch_to_api(r) for r in rows[:limit]], len(rows) > limit

    def _seq(self, batch_id: str) -> int:
        row = self._one("SELECT seq FROM batches WHERE id = ?", (batch_id,))
        return int(row["seq"]) if row else 0

    def batches_in(self, *statuses: str) -> list[sqlite3.Row]:
        marks = ",".join("?" * len(statuses))
        return self._all(f"SELECT * FROM batches WHERE status IN ({marks}) ORDER BY seq", statuses)

    def set_status(self, batch_id: str, status: str, *, only_from: tuple[str, ...] = OPEN_STATUSES) -> bool:
        """Move a batch to ``status`` (stamping ``<status>_at``) if it is in one of ``only_from``."""
        stamp = {"cancelling": "cancelling_at", "in_progress": "in_progress_at", "finalizing": "finalizing_at"}
        column = stamp.get(status)
        marks = ",".join("?" * len(only_from))
        sets = "status = ?" + (f", {column} = ?" if column else "")
        args: list[Any] = [status, *([self.now()] if column else []), batch_id, *only_from]
        with self._tx() as db:
            return bool(db.execute(f"UPDATE batches SET {sets} WHERE id = ? AND status IN ({marks})", args).rowcount)

    def insert_requests(self, batch_id: str, requests: list[tuple[int, str, str, str]]) -> None:
        """The validated lines (line, custom_id, url, body as JSON), queued; the batch is still validating."""
        with self._tx() as db:
            db.execute("DELETE FROM requests WHERE batch_id = ?", (batch_id,))  # a validation cut off by a crash
            db.executemany(
                "INSERT INTO requests (batch_id, line, custom_id, url, body) VALUES (?, ?, ?, ?, ?)",
                [(batch_id, line, cid, url, body) for line, cid, url, body in requests],
            )

    def start_batch(self, batch_id: str, total: int) -> None:
        """The batch's requests are queued: it goes in progress."""
        with self._tx() as db:
            db.execute(
                "UPDATE batches SET status = 'in_progress', in_progress_at = ?, total = ? WHERE id = ?",
                (self.now(), total, batch_id),
            )

    def fail_batch(self, batch_id: str, errors: list[dict[str, Any]]) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE batches SET status = 'failed', failed_at = ?, errors = ? WHERE id = ?",
                (self.now(), json.dumps({"object": "list", "data": errors}), batch_id),
            )

    def queued_requests(self) -> list[QueuedRequest]:
        rows = self._all(
            "SELECT r.batch_id, r.line, r.custom_id, r.url, r.body, b.expires_at, b.seq FROM requests r"
            " JOIN batches b ON b.id = r.batch_id WHERE r.state = 'queued' AND b.status = 'in_progress'"
        )
        return [QueuedRequest(r[0], r[1], r[2], r[3], r[4], r[5], r[6]) for r in rows]

    def record_result(
        self, req: QueuedRequest, ok: bool, result: dict[str, Any], tokens: int, *, node: str | None = None
    ) -> bool:
        """The request's output or error line, committed; False if it was already recorded (a request
        the house's pool ran twice is in the output once). ``node``: the house's node that ran it."""
        column = "completed" if ok else "failed"
        with self._tx() as db:
            updated = db.execute(
                "UPDATE requests SET state = ?, result = ? WHERE batch_id = ? AND line = ? AND state = 'queued'",
                ("ok" if ok else "error", json.dumps(result, ensure_ascii=False), req.batch_id, req.line),
            ).rowcount
            if updated:
                db.execute(
                    f"UPDATE batches SET {column} = {column} + 1, tokens = tokens + ? WHERE id = ?",
                    (max(tokens, 0), req.batch_id),
                )
            if updated and node is not None:
                path = f'$."{node}"'  # node ids are [a-z0-9_-]: nothing to quote
                db.execute(
                    "UPDATE batches SET by_node = json_set(by_node, ?, coalesce(json_extract(by_node, ?), 0) + 1)"
                    " WHERE id = ?",
                    (path, path, req.batch_id),
                )
        return bool(updated)

    def requests_left(self, batch_id: str) -> int:
        row = self._one("SELECT COUNT(*) FROM requests WHERE batch_id = ? AND state = 'queued'", (batch_id,))
        return int(row[0]) if row else 0

    def add_energy(self, energy_j: Mapping[str, Sequence[float]]) -> None:
        """Per batch: (energy J, of which reused as heat J, cost, J unpriced, CO2 g, J without carbon)."""
        if not energy_j:
            return
        with self._tx() as db:
            db.executemany(
                "UPDATE batches SET energy_j = energy_j + ?, reused_j = reused_j + ?, cost = cost + ?,"
                " unpriced_j = unpriced_j + ?, co2_g = co2_g + ?, uncarboned_j = uncarboned_j + ? WHERE id = ?",
                [(*(list(v) + [0.0] * 6)[:6], bid) for bid, v in energy_j.items()],
            )

    def finish(self, batch_id: str, status: str, unfinished_error: dict[str, Any] | None) -> None:
        """Write the output and error files and close the batch as ``status`` (completed, expired, cancelled).

        Requests not run are dropped (a result that comes back later is not recorded) and, with
        ``unfinished_error``, listed in the error file with it.
        """
        with self._lock:  # no result is recorded between reading the rows and closing the batch
            rows = self._all(
                "SELECT custom_id, state, result FROM requests WHERE batch_id = ? ORDER BY line", (batch_id,)
            )
            outputs = [r["result"] for r in rows if r["state"] == "ok"]
            errors = [r["result"] for r in rows if r["state"] == "error"]
            if unfinished_error is not None:
                errors += [
                    json.dumps(request_error_line(r["custom_id"], unfinished_error))
                    for r in rows
                    if r["state"] == "queued"
                ]
            produced = {
                kind: self._write_result_file(lines) for kind, lines in (("output", outputs), ("error", errors))
            }
            now = self.now()
            stamp = {"completed": "completed_at", "expired": "expired_at", "cancelled": "cancelled_at"}[status]
            with self._tx() as db:
                for kind, file_id in produced.items():
                    if file_id is not None:
                        db.execute(
                            "INSERT INTO files (id, purpose, filename, bytes, created_at) VALUES (?, ?, ?, ?, ?)",
                            (
                                file_id,
                                "batch_output",
                                f"{batch_id}_{kind}.jsonl",
                                self.file_path(file_id).stat().st_size,
                                now,
                            ),
                        )
                db.execute(
                    f"UPDATE batches SET status = ?, {stamp} = ?, output_file_id = ?, error_file_id = ? WHERE id = ?",
                    (status, now, produced["output"], produced["error"], batch_id),
                )
                db.execute("UPDATE requests SET state = 'dropped' WHERE batch_id = ? AND state = 'queued'", (batch_id,))
                db.execute("UPDATE requests SET body = '{}' WHERE batch_id = ?", (batch_id,))  # the input file has it

    def _write_result_file(self, lines: list[str]) -> str | None:
        if not lines:
            return None
        file_id = new_id("file-")
        out = AtomicFile(self.file_path(file_id))
        out.write(("\n".join(lines) + "\n").encode())
        out.commit()
        return file_id

    # --- small persistent values ----------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        row = self._one("SELECT value FROM meta WHERE key = ?", (key,))
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))


class AtomicFile:
    """Written to ``<path>.tmp``; ``commit`` fsyncs, renames and fsyncs the folder, ``abort`` leaves nothing.

    Until committed it is never visible, and a crash leaves only a temporary file (swept at start).
    """

    def __init__(self, path: Path) -> None:
        self._path = path
        self._tmp = path.with_name(path.name + ".tmp")
        self._fh = self._tmp.open("wb")
        self.size = 0

    def write(self, chunk: bytes) -> None:
        self._fh.write(chunk)
        self.size += len(chunk)

    def abort(self) -> None:
        self._fh.close()
        self._tmp.unlink(missing_ok=True)

    def commit(self) -> None:
        try:
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._fh.close()
            self._tmp.replace(self._path)
        except BaseException:
            self.abort()
            raise
        folder = os.open(self._path.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)


class Upload:
    """One upload in progress: a file of the store, recorded only once it is committed."""

    def __init__(self, store: BatchStore, file_id: str) -> None:
        self._store = store
        self.file_id = file_id
        self._file = AtomicFile(store.file_path(file_id))

    @property
    def size(self) -> int:
        return self._file.size

    def write(self, chunk: bytes) -> None:
        self._file.write(chunk)

    def abort(self) -> None:
        self._file.abort()

    def commit(self, filename: str, purpose: str) -> FileRecord:
        """On disk for good, then recorded."""
        self._file.commit()
        record = FileRecord(self.file_id, purpose, filename, self.size, self._store.now())
        self._store._record_file(record)
        return record


def request_error_line(custom_id: str, error: dict[str, Any]) -> dict[str, Any]:
    """An error-file line for a request that got no HTTP response (expired, cancelled, unreachable)."""
    return {"id": new_id("batch_req_"), "custom_id": custom_id, "response": None, "error": error}


def batch_to_api(row: sqlite3.Row) -> dict[str, Any]:
    """The OpenAI ``Batch`` object, with heatctl's energy figures in an extra ``heat`` field."""
    energy_j, reused_j, tokens = float(row["energy_j"]), float(row["reused_j"]), int(row["tokens"])
    return {
        "id": row["id"],
        "object": "batch",
        "endpoint": row["endpoint"],
        "errors": json.loads(row["errors"]) if row["errors"] else None,
        "input_file_id": row["input_file_id"],
        "completion_window": row["completion_window"],
        "status": row["status"],
        "output_file_id": row["output_file_id"],
        "error_file_id": row["error_file_id"],
        "created_at": row["created_at"],
        "expires_at": row["expires_at"],
        **{column: row[column] for column in TIMESTAMPS},
        "request_counts": {"total": row["total"], "completed": row["completed"], "failed": row["failed"]},
        "metadata": json.loads(row["metadata"]) if row["metadata"] else None,
        "heat": {
            "energy_kwh": round(energy_j / 3.6e6, 9),  # to 3.6 mJ: a quick batch draws a few joules
            "heat_reused_share": round(reused_j / energy_j, 4) if energy_j > 0 else None,
            "j_per_token": round(energy_j / tokens, 4) if tokens > 0 else None,
            "tokens": tokens,
            # what the energy cost and emitted, where a tariff and a carbon source told it (else None)
            "cost": round(float(row["cost"]), 6) if energy_j > 0 and row["unpriced_j"] < energy_j else None,
            "co2_g": round(float(row["co2_g"]), 3) if energy_j > 0 and row["uncarboned_j"] < energy_j else None,
            **({"by_node": by_node} if (by_node := json.loads(row["by_node"] or "{}")) else {}),
        },
    }
