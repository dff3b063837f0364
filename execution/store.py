"""SQLite plumbing for the durable queue: errors, the stored record (QueueItem) and its row codecs, the
process lock, connection settings, schema and migrations.

`execution.queue.JobStore` is the only user. Kept apart so the queue logic reads as queue logic, and so
the schema (the on-disk contract) sits in one place with its version number.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from core.errors import EngineError

try:  # fcntl is POSIX-only; Loom's supported platforms have it (see open_lock for the fallback)
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

MEMORY = ":memory:"
SCHEMA_VERSION = 1


MAX_QUEUE_NUMBER = 2**53
"""Largest |number| (queue position) a prompt may have: positions are compared as floats, exact up to
2**53, and SQLite keeps integers in 64 bits."""


class QueueError(EngineError):
    """A queue or history operation was refused; the message says which prompt and why."""


class DuplicatePromptError(QueueError):
    """A prompt_id given to submit() is already known to the store."""


class UnknownPromptError(QueueError):
    """No prompt with that id exists in the state the operation needs."""


class InvalidQueryError(QueueError, ValueError):
    """A history/jobs query parameter is out of range (the HTTP layer answers 400)."""


class StoreLockedError(QueueError):
    """Another Loom process (or another JobStore in this one) already owns the database."""


class SchemaError(QueueError):
    """The database file was written by an incompatible (newer) Loom."""


@dataclass(frozen=True)
class QueueItem:
    """One queued prompt as stored. `sensitive` is filled only by claim() (for the worker)."""

    number: float
    prompt_id: str
    prompt: dict
    extra_data: dict
    outputs_to_execute: list[str]
    status: str
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    worker_id: str | None = None
    client_id: str | None = None
    attempts: int = 0
    sensitive: dict = field(default_factory=dict, repr=False, compare=False)

    def as_comfy_tuple(self) -> list[Any]:
        """ComfyUI's 5-element queue item (the 6th, sensitive element is never exposed)."""
        return [self.number, self.prompt_id, self.prompt, self.extra_data, self.outputs_to_execute]


def dumps(value: Any, prompt_id: str, what: str) -> str:
    try:
        return json.dumps(value, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise QueueError(f"prompt {prompt_id}: {what} cannot be stored as JSON ({exc})") from None


def loads(text: str | None, default: Any) -> Any:
    return default if text is None else json.loads(text)


def to_ms(seconds: float | None) -> int | None:
    return None if seconds is None else int(seconds * 1000)


JSON_COLUMNS = ("prompt", "extra_data", "outputs_to_execute")
"""The columns of a QueueItem stored as JSON; written once, at submit, and never updated."""


def decode_json_columns(row: sqlite3.Row) -> tuple[Any, ...]:
    return tuple(json.loads(row[name]) for name in JSON_COLUMNS)


def item_with(row: sqlite3.Row, decoded: tuple[Any, ...], sensitive: dict | None = None) -> QueueItem:
    """The QueueItem of a row whose JSON columns are already decoded (JSON_COLUMNS order)."""
    prompt, extra_data, outputs_to_execute = decoded
    return QueueItem(
        number=row["number"],
        prompt_id=row["prompt_id"],
        prompt=prompt,
        extra_data=extra_data,
        outputs_to_execute=outputs_to_execute,
        status=row["status"],
        created_at=row["created_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        worker_id=row["worker_id"],
        client_id=row["client_id"],
        attempts=row["attempts"],
        sensitive=dict(sensitive or {}),
    )


def item_of_row(row: sqlite3.Row, sensitive: dict | None = None) -> QueueItem:
    return item_with(row, decode_json_columns(row), sensitive)


def history_status(row: sqlite3.Row) -> dict[str, Any]:
    # ComfyUI knows only success/error: an interrupted prompt reads as an error that did not complete.
    return {
        "status_str": "success" if row["status"] == "success" else "error",
        "completed": row["status"] == "success",
        "messages": loads(row["messages"], []),
    }


def history_entry(row: sqlite3.Row) -> dict[str, Any]:
    """Spec §4.7 history item."""
    item = item_of_row(row)
    return {
        "prompt": item.as_comfy_tuple(),
        "outputs": loads(row["outputs"], {}),
        "status": history_status(row),
        "meta": loads(row["meta"], {}),
    }


def not_pending(conn: sqlite3.Connection, prompt_id: str, action: str) -> QueueError:
    """The error for an operation that needs a pending prompt: unknown id, or its actual status."""
    row = conn.execute("SELECT status FROM prompts WHERE prompt_id = ?", (prompt_id,)).fetchone()
    if row is None:
        return UnknownPromptError(f"cannot {action} prompt {prompt_id}: no such prompt")
    return QueueError(f"cannot {action} prompt {prompt_id}: it is {row['status']}, not pending")


def renumber(numbers: list[float], count: int) -> list[float]:
    """`count` strictly increasing numbers made from the pending queue's current (sorted) numbers.

    Moving an item is done by handing the existing numbers out again in the new order, so items
    outside the moved range keep theirs and integer numbers stay integers. Ties (two prompts given
    the same explicit number) are bumped by one, because a tie would leave their relative order to
    submission order instead of to the move."""
    out: list[float] = []
    for number in sorted(numbers)[:count]:
        if out and number <= out[-1]:
            number = out[-1] + 1
        out.append(number)
    return out


def lock_path(db_path: Path) -> Path:
    return db_path.with_name(db_path.name + ".lock")


def open_lock(db_path: Path) -> IO[str] | None:
    """Take the exclusive lock `<db>.lock` or raise StoreLockedError naming the holder's pid.

    flock locks belong to the open file description, so a second JobStore in the *same* process is
    refused too, and the kernel drops the lock when the holder dies (even on kill -9): a crashed Loom
    never leaves a stale lock behind.
    """
    path = lock_path(db_path)
    handle = open(path, "a+", encoding="utf-8")  # noqa: SIM115 - kept open for the store's lifetime
    if fcntl is None:  # pragma: no cover - Windows
        log.warning("no fcntl on this platform: %s is not protected against a second Loom process", db_path)
        return handle
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise StoreLockedError(
            f"the queue database {db_path} is in use by another Loom process (pid {holder}, lock file {path}); "
            "stop that process or give this one another --user-directory / database path"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


def release_lock(handle: IO[str] | None) -> None:
    if handle is None:
        return
    if fcntl is not None:
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
    handle.close()


def connect(path: Path | str) -> sqlite3.Connection:
    """One connection for the whole store, shared by threads under the store's lock.

    isolation_level=None: we issue BEGIN IMMEDIATE / COMMIT ourselves, so every state change is
    exactly one explicit transaction (Python's implicit transactions would hide where they end).
    """
    conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    if str(path) != MEMORY:
        # WAL: readers never block the writer and a crash mid-write leaves the previous state intact.
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if mode.lower() != "wal":
            log.warning("SQLite refused WAL mode for %s (got %s); durability still holds, concurrency less", path, mode)
    # FULL rather than NORMAL: in WAL mode NORMAL already survives a process crash (kill -9), but a
    # power loss or OS crash may roll back the last commits. A submit answered with HTTP 200 must not
    # vanish, and submits/finishes come at human rates (a few per second), so one fsync per commit
    # costs nothing that matters.
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA busy_timeout=5000")  # an external reader (sqlite3 CLI) may briefly hold a lock
    return conn


def _create_v1(conn: sqlite3.Connection) -> None:
    # number is NUMERIC so ComfyUI's integer counter stays an int on the wire while explicit float
    # priorities keep their fraction. JSON columns hold prompt/extra_data/outputs/messages/meta. The
    # job-summary columns (create_time .. preview_output) are derived once, at submit/finish, so that
    # /api/jobs filters, sorts and pages in SQL instead of decoding every history row per request.
    # Statements run one by one: before Python 3.12, executescript() COMMITs the open transaction
    # first, which would make a failed migration half-applied.
    for statement in _V1_DDL:
        conn.execute(statement)


_V1_DDL = (
    """
        CREATE TABLE prompts (
            seq              INTEGER PRIMARY KEY AUTOINCREMENT,
            prompt_id        TEXT NOT NULL UNIQUE,
            number           NUMERIC NOT NULL,
            status           TEXT NOT NULL CHECK (status IN
                               ('pending', 'running', 'success', 'error', 'interrupted', 'cancelled')),
            prompt           TEXT NOT NULL,
            extra_data       TEXT NOT NULL,
            outputs_to_execute TEXT NOT NULL,
            client_id        TEXT,
            sensitive_keys   TEXT NOT NULL DEFAULT '[]',
            worker_id        TEXT,
            attempts         INTEGER NOT NULL DEFAULT 0,
            created_at       REAL NOT NULL,
            started_at       REAL,
            finished_at      REAL,
            done_seq         INTEGER UNIQUE,
            outputs          TEXT,
            messages         TEXT,
            meta             TEXT,
            create_time      INTEGER,
            workflow_id      TEXT,
            exec_start_ms    INTEGER,
            exec_end_ms      INTEGER,
            execution_error  TEXT,
            outputs_count    INTEGER NOT NULL DEFAULT 0,
            preview_output   TEXT
        )""",
    "CREATE INDEX prompts_by_status ON prompts (status, number, seq)",
    "CREATE INDEX prompts_by_created ON prompts (create_time, seq)",
    "CREATE TABLE loom_meta (key TEXT PRIMARY KEY, value NOT NULL)",
    "INSERT INTO loom_meta (key, value) VALUES ('counter', 0)",
)


# target version -> step that upgrades from (version - 1). A new schema adds an entry here and bumps
# SCHEMA_VERSION; it never edits an old step, because databases in the field were built by it.
MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {1: _create_v1}


def migrate(
    conn: sqlite3.Connection,
    migrations: Mapping[int, Callable[[sqlite3.Connection], None]] | None = None,
    target: int = SCHEMA_VERSION,
) -> int:
    """Bring the database to `target` (PRAGMA user_version) in one transaction; returns the old version."""
    steps = MIGRATIONS if migrations is None else migrations
    current = conn.execute("PRAGMA user_version").fetchone()[0]
    if current > target:
        raise SchemaError(
            f"the queue database has schema version {current}, newer than this Loom understands ({target}); "
            "run the newer Loom or point this one at another database"
        )
    if current == target:
        return current
    missing = [v for v in range(current + 1, target + 1) if v not in steps]
    if missing:
        raise SchemaError(f"no migration step to schema version {missing[0]} (database is at {current})")
    conn.execute("BEGIN IMMEDIATE")
    try:
        for version in range(current + 1, target + 1):
            log.info("migrating queue database to schema version %d", version)
            steps[version](conn)
        conn.execute(f"PRAGMA user_version = {int(target)}")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return current
