"""The durable queue and history of record (DESIGN.md §5): one SQLite file, stdlib only.

The HTTP layer only reads and writes this store; one worker per device blocks in `wait_for_work`,
`claim`s the lowest-numbered pending prompt and `finish`es it into history. Nothing a user queued is
lost: every state change is one committed transaction (WAL, synchronous=FULL), so pending prompts
survive a restart or a kill -9, and a prompt that was running when the process died is turned into
an `interrupted` history entry on the next open, from where `requeue` can run it again.

Statuses: pending -> running -> success | error | interrupted; pending -> cancelled. Wire shapes are
ComfyUI's (spec §1.1 queue/history/jobs routes, §1.2 numbering, §4.7 history item).

Loom's additions over ComfyUI's queue: `move` (reorder pending prompts), `set_paused` (stop handing
out prompts without losing any; kept across restarts) and `requeue` (run a failed, interrupted or
cancelled prompt again under its id).
"""

from __future__ import annotations

import json
import logging
import math
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from execution import jobs as jobfmt
from execution.store import (
    MAX_QUEUE_NUMBER,
    MEMORY,
    DuplicatePromptError,
    InvalidQueryError,
    QueueError,
    QueueItem,
    UnknownPromptError,
    connect,
    decode_json_columns,
    dumps,
    history_entry,
    history_status,
    item_of_row,
    item_with,
    loads,
    migrate,
    not_pending,
    open_lock,
    release_lock,
    renumber,
    to_ms,
)

__all__ = ["JobStore", "QueueItem", "SENSITIVE_EXTRA_DATA_KEYS"]

log = logging.getLogger(__name__)

# extra_data keys that carry credentials (ComfyUI's API-node tokens). They never reach the database
# file: submit() moves them into an in-memory dict keyed by prompt_id, claim() hands them to the
# worker, finish()/cancel() drop them. A restart therefore loses them on purpose -- a prompt pending
# across a restart runs without its token rather than leaving a secret on disk.
SENSITIVE_EXTRA_DATA_KEYS = ("auth_token_comfy_org", "api_key_comfy_org")
FINISH_STATUSES = ("success", "error", "interrupted")
REQUEUE_FROM = ("error", "interrupted", "cancelled")
_HISTORY_WHERE = "status IN ('success', 'error', 'interrupted')"
# ComfyUI's duration sort key: end - start when both are set and non-zero, else 0.
_DURATION_SQL = "CASE WHEN exec_start_ms AND exec_end_ms THEN exec_end_ms - exec_start_ms ELSE 0 END"
_RESTART_REASON = (
    "Loom stopped while this prompt was running (restart or crash); it was not completed and can be re-queued"
)


def _summary_of_row(row: sqlite3.Row) -> jobfmt.FinishSummary:
    return jobfmt.FinishSummary(
        exec_start_ms=row["exec_start_ms"],
        exec_end_ms=row["exec_end_ms"],
        execution_error=loads(row["execution_error"], None),
        outputs_count=row["outputs_count"],
        preview_output=loads(row["preview_output"], None),
    )


class JobStore:
    """Queue + history in one SQLite file (or ":memory:" for tests). Thread-safe.

    One connection is shared by all threads under one re-entrant lock; SQLite serialises writers
    anyway, and a single lock also gives wait_for_work() its Condition. Only one process may open a
    file-backed store at a time (see execution.store.open_lock).
    """

    def __init__(self, path: Path | str, *, retention: int = 10_000, clock: Callable[[], float] = time.time) -> None:
        if retention < 1:
            raise ValueError(f"retention must be at least 1 finished prompt, got {retention}")
        self.path = path
        self.retention = retention
        self._clock = clock
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._sensitive: dict[str, dict] = {}
        self._closed = False
        self._paused = False
        self._parsed: dict[int, tuple[Any, ...]] = {}
        self._lock_file = None
        if str(path) != MEMORY:
            db = Path(path)
            db.parent.mkdir(parents=True, exist_ok=True)
            self._lock_file = open_lock(db)
        try:
            self._conn = connect(path)
            migrate(self._conn)
            self._recover()
        except BaseException:
            if hasattr(self, "_conn"):
                self._conn.close()
            release_lock(self._lock_file)
            raise

    # ----------------------------------------------------------------- plumbing

    def _check_open(self) -> None:
        if self._closed:
            raise QueueError(f"the job store {self.path} is closed")

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction. IMMEDIATE takes the write lock up front, so no step can fail half-way
        on a lock upgrade."""
        with self._lock:
            self._check_open()
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def _rows(self, sql: str, params: Iterable[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            self._check_open()
            return self._conn.execute(sql, tuple(params)).fetchall()

    def _next_done_seq(self, conn: sqlite3.Connection) -> int:
        # History order is finish order; a counter is used rather than timestamps, which can tie or
        # step backwards when the wall clock is adjusted.
        return conn.execute("SELECT COALESCE(MAX(done_seq), 0) + 1 FROM prompts").fetchone()[0]

    def _prune(self, conn: sqlite3.Connection) -> None:
        """Keep at most `retention` finished rows (history and cancelled), dropping the oldest."""
        cutoff = conn.execute(
            "SELECT done_seq FROM prompts WHERE done_seq IS NOT NULL ORDER BY done_seq DESC LIMIT 1 OFFSET ?",
            (self.retention,),
        ).fetchone()
        if cutoff is not None:
            dropped = conn.execute("DELETE FROM prompts WHERE done_seq <= ?", (cutoff[0],)).rowcount
            log.debug("history retention %d: dropped %d oldest entries", self.retention, dropped)

    def _recover(self) -> None:
        """On open: prompts left `running` by a dead process become `interrupted` history entries."""
        now = self._clock()
        with self._tx() as conn:
            running = conn.execute("SELECT * FROM prompts WHERE status = 'running' ORDER BY started_at, seq").fetchall()
            for row in running:
                started = to_ms(row["started_at"])
                messages = [
                    ["execution_start", {"prompt_id": row["prompt_id"], "timestamp": started}],
                    [
                        "execution_interrupted",
                        {
                            "prompt_id": row["prompt_id"],
                            "node_id": None,
                            "node_type": None,
                            "executed": [],
                            "timestamp": to_ms(now),
                            "reason": _RESTART_REASON,
                        },
                    ],
                ]
                self._write_finish(conn, row, "interrupted", {}, messages, {}, now)
            self._prune(conn)
            paused = conn.execute("SELECT value FROM loom_meta WHERE key = 'paused'").fetchone()
            self._paused = bool(paused and paused[0])
            pending, lost = conn.execute(
                "SELECT COUNT(*), SUM(sensitive_keys != '[]') FROM prompts WHERE status = 'pending'"
            ).fetchone()
        if running:
            log.warning(
                "job store %s: %d prompt(s) were running when Loom stopped; marked interrupted: %s",
                self.path,
                len(running),
                ", ".join(r["prompt_id"] for r in running),
            )
        if lost:
            log.warning("%d pending prompt(s) lost their API tokens in the restart (never stored on disk)", lost)
        log.info("opened job store %s: %d pending", self.path, pending)
        if self._paused:
            log.warning(
                "the queue is paused (since before this start): %d pending prompt(s) wait for a resume", pending
            )

    def _write_finish(
        self,
        conn: sqlite3.Connection,
        row: sqlite3.Row,
        status: str,
        outputs: dict,
        messages: list,
        meta: dict,
        now: float,
    ) -> None:
        pid = row["prompt_id"]
        summary = jobfmt.summarize_finish(outputs, messages, to_ms(row["started_at"]), to_ms(now))
        conn.execute(
            """UPDATE prompts SET status = ?, finished_at = ?, done_seq = ?, outputs = ?, messages = ?, meta = ?,
                   exec_start_ms = ?, exec_end_ms = ?, execution_error = ?, outputs_count = ?, preview_output = ?
               WHERE seq = ?""",
            (
                status,
                now,
                self._next_done_seq(conn),
                dumps(outputs, pid, "outputs"),
                dumps(messages, pid, "status messages"),
                dumps(meta, pid, "meta"),
                summary.exec_start_ms,
                summary.exec_end_ms,
                None if summary.execution_error is None else dumps(summary.execution_error, pid, "execution_error"),
                summary.outputs_count,
                None if summary.preview_output is None else dumps(summary.preview_output, pid, "preview_output"),
                row["seq"],
            ),
        )

    # ----------------------------------------------------------------- queue

    def submit(
        self,
        prompt: dict,
        *,
        outputs_to_execute: list[str],
        prompt_id: str | None = None,
        number: float | None = None,
        front: bool = False,
        extra_data: dict | None = None,
        sensitive: dict | None = None,
        client_id: str | None = None,
    ) -> QueueItem:
        """Queue a validated prompt. Numbering is ComfyUI's: an explicit `number` is used as given;
        otherwise the persistent counter (then counter + 1), negated when `front` so it jumps ahead.
        Raises DuplicatePromptError if the id is already queued or in history."""
        pid = str(uuid.uuid4()) if prompt_id is None else prompt_id
        if number is not None:
            number = self._check_number(pid, number)
        now = self._clock()
        extra, secrets = self._split_extra(pid, prompt, extra_data, sensitive, client_id, now)
        create_time = extra["create_time"] if isinstance(extra["create_time"], (int, float)) else None
        targets = [str(t) for t in outputs_to_execute]
        columns = (
            dumps(prompt, pid, "prompt"),
            dumps(extra, pid, "extra_data"),
            dumps(targets, pid, "outputs_to_execute"),
            client_id,
            json.dumps(sorted(secrets)),  # key names only, to warn when a restart dropped the values
            now,
            create_time,
            jobfmt.workflow_id_of(extra),
        )
        with self._tx() as conn:
            taken = conn.execute("SELECT status FROM prompts WHERE prompt_id = ?", (pid,)).fetchone()
            if taken is not None:
                raise DuplicatePromptError(
                    f"prompt_id '{pid}' is already in the queue or history (status {taken[0]}); use a new id"
                )
            if number is None:
                counter = conn.execute("SELECT value FROM loom_meta WHERE key = 'counter'").fetchone()[0]
                conn.execute("UPDATE loom_meta SET value = ? WHERE key = 'counter'", (counter + 1,))
                number = -counter if front else counter
            conn.execute(
                """INSERT INTO prompts (prompt_id, number, status, prompt, extra_data, outputs_to_execute,
                       client_id, sensitive_keys, created_at, create_time, workflow_id)
                   VALUES (?, ?, 'pending', ?, ?, ?, ?, ?, ?, ?, ?)""",
                (pid, number, *columns),
            )
            self._cond.notify_all()
        if secrets:
            with self._lock:
                self._sensitive[pid] = secrets
        log.debug("queued prompt %s as number %s", pid, number)
        return QueueItem(number, pid, prompt, extra, targets, "pending", now, client_id=client_id)

    @staticmethod
    def _split_extra(
        pid: str, prompt: Any, extra_data: dict | None, sensitive: dict | None, client_id: str | None, now: float
    ) -> tuple[dict, dict]:
        """Check the submission; return (extra_data to store, secrets kept in memory only)."""
        if not isinstance(pid, str) or not pid:
            raise QueueError(f"prompt_id must be a non-empty string, got {pid!r}")
        if not isinstance(prompt, dict):
            raise QueueError(f"prompt {pid}: the prompt must be a JSON object, got {type(prompt).__name__}")
        extra = dict(extra_data or {})
        secrets = {key: extra.pop(key) for key in SENSITIVE_EXTRA_DATA_KEYS if key in extra}
        secrets.update(sensitive or {})
        if client_id is not None:
            extra["client_id"] = client_id
        # The server normally stamps create_time (epoch ms); stamping here too keeps jobs sortable.
        extra.setdefault("create_time", to_ms(now))
        return extra, secrets

    @staticmethod
    def _check_number(prompt_id: str, number: Any) -> float:
        try:
            value = float(number)
        except (TypeError, ValueError, OverflowError):  # OverflowError: an int beyond a float
            value = math.nan
        if not math.isfinite(value) or abs(value) > MAX_QUEUE_NUMBER:
            raise QueueError(f"prompt {prompt_id}: number must be a finite number within ±2**53, got {number!r:.100}")
        # SQLite's NUMERIC column gives integral values back as int; normalise now so the returned
        # item and the stored one agree.
        return int(value) if value.is_integer() else value

    def claim(self, worker_id: str = "0") -> QueueItem | None:
        """Atomically move the lowest-numbered pending prompt to running (ties: first submitted first).
        None when nothing is pending or the queue is paused."""
        with self._tx() as conn:
            if self._paused:
                return None
            row = conn.execute("SELECT * FROM prompts WHERE status = 'pending' ORDER BY number, seq LIMIT 1").fetchone()
            if row is None:
                return None
            conn.execute(
                "UPDATE prompts SET status = 'running', started_at = ?, worker_id = ? WHERE seq = ?",
                (self._clock(), worker_id, row["seq"]),
            )
            row = conn.execute("SELECT * FROM prompts WHERE seq = ?", (row["seq"],)).fetchone()
            secrets = self._sensitive.get(row["prompt_id"], {})
        if row["sensitive_keys"] != "[]" and not secrets:
            log.warning("prompt %s was queued with API tokens that did not survive a restart", row["prompt_id"])
        return item_of_row(row, secrets)

    def wait_for_work(self, timeout: float) -> bool:
        """Block until a prompt can be claimed (True) or `timeout` seconds pass / the store closes (False).
        While the queue is paused nothing can be claimed, so this waits for a resume."""
        with self._cond:
            ready = self._cond.wait_for(lambda: self._closed or (not self._paused and self._has_pending()), timeout)
            return bool(ready) and not self._closed

    def _has_pending(self) -> bool:
        return self._conn.execute("SELECT 1 FROM prompts WHERE status = 'pending' LIMIT 1").fetchone() is not None

    def finish(
        self,
        prompt_id: str,
        *,
        status: str,
        outputs: dict,
        messages: list,
        meta: dict | None = None,
    ) -> None:
        """Record a running prompt's result in history (status success, error or interrupted)."""
        if status not in FINISH_STATUSES:
            raise QueueError(f"prompt {prompt_id}: finish status must be one of {FINISH_STATUSES}, got {status!r}")
        with self._tx() as conn:
            row = conn.execute("SELECT * FROM prompts WHERE prompt_id = ?", (prompt_id,)).fetchone()
            if row is None:
                raise UnknownPromptError(f"cannot finish prompt {prompt_id}: no such prompt")
            if row["status"] != "running":
                raise QueueError(f"cannot finish prompt {prompt_id}: it is {row['status']}, not running")
            self._write_finish(conn, row, status, outputs, messages, meta or {}, self._clock())
            self._prune(conn)
            self._sensitive.pop(prompt_id, None)
        log.debug("prompt %s finished: %s", prompt_id, status)

    def cancel(self, prompt_ids: Iterable[str]) -> list[str]:
        """Cancel pending prompts (POST /queue delete); running or unknown ids are ignored, as in
        ComfyUI (a running prompt is stopped with /interrupt). Returns the ids actually cancelled."""
        done: list[str] = []
        now = self._clock()
        with self._tx() as conn:
            for pid in dict.fromkeys(prompt_ids):
                changed = conn.execute(
                    "UPDATE prompts SET status = 'cancelled', finished_at = ?, done_seq = ? "
                    "WHERE prompt_id = ? AND status = 'pending'",
                    (now, self._next_done_seq(conn), pid),
                ).rowcount
                if changed:
                    done.append(pid)
                    self._sensitive.pop(pid, None)
            self._prune(conn)
        return done

    def clear_pending(self) -> int:
        """Cancel every pending prompt (POST /queue clear); returns how many."""
        pending = self._rows("SELECT prompt_id FROM prompts WHERE status = 'pending' ORDER BY number, seq")
        return len(self.cancel(r["prompt_id"] for r in pending))

    def requeue(self, prompt_id: str) -> QueueItem:
        """Put an interrupted, failed or cancelled prompt back in the queue under the same id and number
        (so it keeps its place). Its history entry is removed until it finishes again."""
        with self._tx() as conn:
            row = conn.execute("SELECT status FROM prompts WHERE prompt_id = ?", (prompt_id,)).fetchone()
            if row is None:
                raise UnknownPromptError(
                    f"cannot re-queue prompt {prompt_id}: no such prompt (or dropped by retention)"
                )
            if row["status"] not in REQUEUE_FROM:
                raise QueueError(
                    f"cannot re-queue prompt {prompt_id}: it is {row['status']}; only {', '.join(REQUEUE_FROM)} "
                    "prompts can be re-queued (submit a succeeded one again under a new id)"
                )
            conn.execute(
                """UPDATE prompts SET status = 'pending', attempts = attempts + 1, started_at = NULL,
                       finished_at = NULL, done_seq = NULL, worker_id = NULL, outputs = NULL, messages = NULL,
                       meta = NULL, exec_start_ms = NULL, exec_end_ms = NULL, execution_error = NULL,
                       outputs_count = 0, preview_output = NULL
                   WHERE prompt_id = ?""",
                (prompt_id,),
            )
            item = item_of_row(conn.execute("SELECT * FROM prompts WHERE prompt_id = ?", (prompt_id,)).fetchone())
            self._cond.notify_all()
        return item

    def move(
        self, prompt_id: str, *, index: int | None = None, before: str | None = None, after: str | None = None
    ) -> tuple[QueueItem, list[str]]:
        """Move a pending prompt within the pending queue; (its item, pending ids in run order).

        Exactly one of: `index` (0 = runs next; negative counts from the end, -1 = last; clamped),
        `before` / `after` another pending prompt. The queue's existing numbers are handed out again
        in the new order (see store.renumber), so only the items between the old and the new place
        change number. Raises UnknownPromptError / QueueError naming what is wrong."""
        if sum(where is not None for where in (index, before, after)) != 1:
            raise QueueError(f"moving prompt {prompt_id}: give exactly one of index, before or after")
        with self._tx() as conn:
            rows = conn.execute(
                "SELECT seq, prompt_id, number FROM prompts WHERE status = 'pending' ORDER BY number, seq"
            ).fetchall()
            order = [r["prompt_id"] for r in rows]
            if prompt_id not in order:
                raise not_pending(conn, prompt_id, "move")
            order.remove(prompt_id)
            anchor = before if before is not None else after
            if index is not None:
                position = index if index >= 0 else len(order) + 1 + index
                position = min(max(position, 0), len(order))
            elif anchor == prompt_id:
                raise QueueError(f"cannot move prompt {prompt_id} before or after itself")
            elif anchor not in order:
                raise not_pending(conn, str(anchor), "move another prompt next to")
            else:
                position = order.index(anchor) + (1 if after is not None else 0)
            order.insert(position, prompt_id)
            by_id = {r["prompt_id"]: r for r in rows}
            for pid, number in zip(order, renumber([r["number"] for r in rows], len(rows)), strict=True):
                if by_id[pid]["number"] != number:
                    conn.execute("UPDATE prompts SET number = ? WHERE seq = ?", (number, by_id[pid]["seq"]))
            item = item_of_row(conn.execute("SELECT * FROM prompts WHERE prompt_id = ?", (prompt_id,)).fetchone())
        log.info("moved prompt %s to position %d of %d pending", prompt_id, position, len(order))
        return item, order

    @property
    def paused(self) -> bool:
        return self._paused

    def set_paused(self, paused: bool) -> bool:
        """Pause (True) or resume (False). While paused, claim() hands out nothing, so a worker finishes
        the prompt it is running and then waits; prompts can still be submitted, moved and cancelled.
        Stored in the database: a paused queue stays paused across a restart. Returns whether the
        state changed."""
        with self._tx() as conn:
            conn.execute("INSERT OR REPLACE INTO loom_meta (key, value) VALUES ('paused', ?)", (int(paused),))
            changed = self._paused != paused
            self._paused = paused
            self._cond.notify_all()
        if changed:
            log.info("queue %s", "paused" if paused else "resumed")
        return changed

    def item(self, prompt_id: str) -> QueueItem | None:
        """The stored record of any prompt, whatever its status (without sensitive data)."""
        rows = self._rows("SELECT * FROM prompts WHERE prompt_id = ?", (prompt_id,))
        return item_of_row(rows[0]) if rows else None

    def queue(self) -> tuple[list[QueueItem], list[QueueItem]]:
        """(running, pending) for GET /queue; pending sorted in claim order (a sorted list is a valid heap)."""
        with self._lock:
            running = self._rows("SELECT * FROM prompts WHERE status = 'running' ORDER BY started_at, seq")
            pending = self._rows("SELECT * FROM prompts WHERE status = 'pending' ORDER BY number, seq")
        # Decoding every queued prompt's JSON dominated GET /queue with a long queue (tests/soak/);
        # the JSON columns are written once, at submit, so their decoded form is kept per row (seq,
        # never reused) for the rows still queued. Only GET /queue reads these items, never mutating.
        known, parsed = self._parsed, {}
        for row in (*running, *pending):
            seq = row["seq"]
            parsed[seq] = known.get(seq) or decode_json_columns(row)
        self._parsed = parsed
        return [item_with(r, parsed[r["seq"]]) for r in running], [item_with(r, parsed[r["seq"]]) for r in pending]

    def remaining(self) -> int:
        """Pending + running (GET /prompt exec_info.queue_remaining)."""
        return self._rows("SELECT COUNT(*) FROM prompts WHERE status IN ('pending', 'running')")[0][0]

    # ----------------------------------------------------------------- history

    def history(self, max_items: int | None = None, offset: int | None = None) -> dict[str, dict]:
        """GET /history: {prompt_id: item}, oldest first. `max_items` alone = the last N; `offset` skips
        from the start (a negative offset counts as absent). max_items=0 returns nothing (ComfyUI's
        loop returns one item when an offset is also given, which we take for a bug)."""
        if max_items is not None and max_items < 0:
            raise InvalidQueryError(f"max_items must be 0 or more, got {max_items}")
        with self._lock:
            if offset is not None and offset >= 0:
                start = offset
            elif max_items is None:
                start = 0
            else:
                total = self._rows(f"SELECT COUNT(*) FROM prompts WHERE {_HISTORY_WHERE}")[0][0]
                start = max(0, total - max_items)
            rows = self._rows(
                f"SELECT * FROM prompts WHERE {_HISTORY_WHERE} ORDER BY done_seq LIMIT ? OFFSET ?",
                (-1 if max_items is None else max_items, start),
            )
        return {r["prompt_id"]: history_entry(r) for r in rows}

    def history_item(self, prompt_id: str) -> dict[str, dict]:
        """GET /history/{id}: {prompt_id: item}, or {} when the id is not (or not yet) in history."""
        rows = self._rows(f"SELECT * FROM prompts WHERE prompt_id = ? AND {_HISTORY_WHERE}", (prompt_id,))
        return {prompt_id: history_entry(rows[0])} if rows else {}

    def delete_history(self, prompt_ids: Iterable[str]) -> int:
        """POST /history delete: remove finished entries (queued ones are untouched); returns how many."""
        removed = 0
        with self._tx() as conn:
            for pid in dict.fromkeys(prompt_ids):
                removed += conn.execute(
                    "DELETE FROM prompts WHERE prompt_id = ? AND done_seq IS NOT NULL", (pid,)
                ).rowcount
        return removed

    def clear_history(self) -> int:
        """POST /history clear: remove every finished entry (cancelled ones too); returns how many."""
        with self._tx() as conn:
            return conn.execute("DELETE FROM prompts WHERE done_seq IS NOT NULL").rowcount

    # ----------------------------------------------------------------- jobs API

    def jobs(
        self,
        status: str | Iterable[str] | None = None,
        workflow_id: str | None = None,
        sort_by: str = "created_at",
        sort_order: str = "desc",
        limit: int | None = None,
        offset: int = 0,
    ) -> dict[str, Any]:
        """GET /api/jobs: {"jobs": [...], "pagination": {offset, limit, total, has_more}}.

        `status` is a CSV string or iterable of pending/in_progress/completed/failed. Bad parameters
        raise InvalidQueryError with ComfyUI's message (the handler answers 400). Ties in the sort key
        are broken by submission order, so pages never overlap."""
        wanted = jobfmt.parse_status_filter(status)
        offset = jobfmt.check_paging(sort_by, sort_order, limit, offset)
        stored = [s for job_status in wanted for s in jobfmt.STORE_STATUSES_OF[job_status]]
        where = f"status IN ({', '.join('?' * len(stored))})"
        params: list[Any] = list(stored)
        if workflow_id:
            where += " AND workflow_id = ?"
            params.append(workflow_id)
        key = "COALESCE(create_time, 0)" if sort_by == "created_at" else _DURATION_SQL
        direction = "DESC" if sort_order == "desc" else "ASC"
        with self._lock:
            total = self._rows(f"SELECT COUNT(*) FROM prompts WHERE {where}", params)[0][0]
            rows = self._rows(
                f"SELECT * FROM prompts WHERE {where} ORDER BY {key} {direction}, seq {direction} LIMIT ? OFFSET ?",
                [*params, -1 if limit is None else limit, offset],
            )
        page = [self._job_of_row(r) for r in rows]
        return {
            "jobs": page,
            "pagination": {"offset": offset, "limit": limit, "total": total, "has_more": offset + len(page) < total},
        }

    def job(self, prompt_id: str) -> dict[str, Any] | None:
        """GET /api/jobs/{id}: a finished job also carries outputs, execution_status and workflow;
        None when unknown (or cancelled, which ComfyUI does not keep)."""
        rows = self._rows("SELECT * FROM prompts WHERE prompt_id = ?", (prompt_id,))
        if not rows or rows[0]["status"] == "cancelled":
            return None
        row = rows[0]
        job = self._job_of_row(row)
        if row["status"] in FINISH_STATUSES:
            job["outputs"] = loads(row["outputs"], {})
            job["execution_status"] = history_status(row)
            job["workflow"] = {"prompt": json.loads(row["prompt"]), "extra_data": json.loads(row["extra_data"])}
        return job

    @staticmethod
    def _job_of_row(row: sqlite3.Row) -> dict[str, Any]:
        args = (row["prompt_id"], row["status"], row["number"], row["create_time"], row["workflow_id"])
        if row["status"] in FINISH_STATUSES:
            return jobfmt.history_job(*args, _summary_of_row(row))
        return jobfmt.queue_job(*args)

    # ----------------------------------------------------------------- lifecycle

    def close(self) -> None:
        """Close the database and release the process lock; wakes any thread in wait_for_work."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._cond.notify_all()
            self._sensitive.clear()
            self._conn.close()
            release_lock(self._lock_file)
            self._lock_file = None

    def __enter__(self) -> JobStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
