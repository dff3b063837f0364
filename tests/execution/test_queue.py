"""JobStore: ordering, cancel, history shape and paging, durability across restart and crash, locking,
retention, sensitive data, and the worker wake-up."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from execution.queue import JobStore, QueueItem
from execution.store import (
    SCHEMA_VERSION,
    DuplicatePromptError,
    InvalidQueryError,
    QueueError,
    SchemaError,
    StoreLockedError,
    UnknownPromptError,
    connect,
    migrate,
)

REPO = Path(__file__).resolve().parents[2]
PROMPT = {"1": {"class_type": "StubImage", "inputs": {"content": "BLACK"}}, "2": {"class_type": "SaveImage"}}


class FakeClock:
    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def store() -> JobStore:
    s = JobStore(":memory:", clock=FakeClock())
    yield s
    s.close()


def submit(store: JobStore, pid: str, **kw) -> QueueItem:
    return store.submit({**PROMPT, "tag": {"class_type": "Tag", "inputs": {"id": pid}}}, prompt_id=pid,
                        outputs_to_execute=["2"], **kw)  # fmt: skip


def run_one(store: JobStore, status: str = "success", outputs: dict | None = None) -> QueueItem:
    item = store.claim()
    assert item is not None
    store.finish(item.prompt_id, status=status, outputs=outputs or {}, messages=[["execution_start", {}]])
    return item


def drain_ids(store: JobStore) -> list[str]:
    ids = []
    while (item := store.claim()) is not None:
        ids.append(item.prompt_id)
    return ids


# ------------------------------------------------------------------ ordering


def test_numbers_follow_comfyui_counter_front_and_explicit(store: JobStore) -> None:
    a = submit(store, "a")
    b = submit(store, "b")
    f = submit(store, "f", front=True)
    x = submit(store, "x", number=1.5)
    c = submit(store, "c")
    # counter 0, 1, then front takes -2, an explicit number does not consume the counter, c gets 3
    assert [a.number, b.number, f.number, x.number, c.number] == [0, 1, -2, 1.5, 3]
    assert drain_ids(store) == ["f", "a", "b", "x", "c"]


def test_equal_numbers_run_in_submission_order(store: JobStore) -> None:
    for pid in ["z", "m", "a"]:
        submit(store, pid, number=7)
    assert drain_ids(store) == ["z", "m", "a"]


def test_generated_ids_are_unique_and_duplicates_are_refused(store: JobStore) -> None:
    ids = {store.submit(PROMPT, outputs_to_execute=["2"]).prompt_id for _ in range(20)}
    assert len(ids) == 20
    submit(store, "dup", number=-1)
    with pytest.raises(DuplicatePromptError, match="'dup'.*pending"):
        submit(store, "dup")
    run_one(store)  # "dup" runs first (number -1) and moves to history
    assert store.item("dup").status == "success"
    with pytest.raises(DuplicatePromptError, match="success"):
        submit(store, "dup")


def test_bad_submissions_are_refused_with_the_reason(store: JobStore) -> None:
    with pytest.raises(QueueError, match="finite"):
        submit(store, "n", number=float("nan"))
    with pytest.raises(QueueError, match="JSON object"):
        store.submit([1, 2], outputs_to_execute=[])  # type: ignore[arg-type]
    with pytest.raises(QueueError, match="cannot be stored as JSON"):
        store.submit({"1": {"inputs": {"x": object()}}}, prompt_id="obj", outputs_to_execute=[])
    assert store.remaining() == 0


def test_queue_lists_running_and_pending_as_comfy_tuples(store: JobStore) -> None:
    submit(store, "a", client_id="sock-1", extra_data={"extra_pnginfo": {"workflow": {"id": "w"}}})
    submit(store, "b")
    submit(store, "c", front=True)
    assert store.remaining() == 3
    claimed = store.claim("gpu0")
    assert claimed is not None and claimed.prompt_id == "c" and claimed.worker_id == "gpu0"
    running, pending = store.queue()
    assert [i.prompt_id for i in running] == ["c"]
    assert [i.prompt_id for i in pending] == ["a", "b"]
    number, pid, prompt, extra, targets = pending[0].as_comfy_tuple()
    assert (number, pid, targets) == (0, "a", ["2"])
    assert prompt["tag"]["inputs"]["id"] == "a"
    assert extra["client_id"] == "sock-1" and extra["extra_pnginfo"] == {"workflow": {"id": "w"}}
    assert extra["create_time"] == 1_700_000_000_000
    assert store.remaining() == 3


def test_cancel_only_touches_pending_and_clear_empties_the_queue(store: JobStore) -> None:
    for pid in "abcd":
        submit(store, pid)
    store.claim()  # a is running
    assert store.cancel(["b", "a", "nope", "b"]) == ["b"]
    running, pending = store.queue()
    assert [i.prompt_id for i in running] == ["a"]
    assert [i.prompt_id for i in pending] == ["c", "d"]
    assert store.clear_pending() == 2
    assert store.queue()[1] == []
    assert store.item("c").status == "cancelled"
    assert store.history() == {}  # ComfyUI keeps no history of deleted queue items
    assert store.remaining() == 1


def test_concurrent_workers_claim_each_prompt_exactly_once(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "q.db")
    for i in range(60):
        submit(store, f"p{i}")
    got: list[str] = []
    lock = threading.Lock()

    def worker(name: str) -> None:
        while (item := store.claim(name)) is not None:
            with lock:
                got.append(item.prompt_id)
            store.finish(item.prompt_id, status="success", outputs={}, messages=[])

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert sorted(got) == sorted(f"p{i}" for i in range(60))
    assert len(store.history()) == 60
    store.close()


# ------------------------------------------------------------------ finish / history


def test_finish_produces_the_comfyui_history_item(store: JobStore) -> None:
    submit(store, "a", extra_data={"extra_pnginfo": {"workflow": {"id": "w"}}})
    store.claim()
    outputs = {"2": {"images": [{"filename": "x_00001_.png", "subfolder": "", "type": "output"}]}}
    messages = [["execution_start", {"prompt_id": "a", "timestamp": 1}], ["execution_success", {"timestamp": 2}]]
    meta = {"2": {"node_id": "2", "display_node": "2", "parent_node": None, "real_node_id": "2"}}
    store.finish("a", status="success", outputs=outputs, messages=messages, meta=meta)
    entry = store.history_item("a")["a"]
    assert set(entry) == {"prompt", "outputs", "status", "meta"}
    number, pid, prompt, extra, targets = entry["prompt"]
    assert (number, pid, targets) == (0, "a", ["2"]) and prompt["2"] == PROMPT["2"]
    assert extra["extra_pnginfo"] == {"workflow": {"id": "w"}}
    assert entry["outputs"] == outputs
    assert entry["status"] == {"status_str": "success", "completed": True, "messages": messages}
    assert entry["meta"] == meta
    assert store.history() == {"a": entry}
    assert store.remaining() == 0


@pytest.mark.parametrize("status", ["error", "interrupted"])
def test_failed_and_interrupted_read_as_error_in_history(store: JobStore, status: str) -> None:
    submit(store, "a")
    run_one(store, status)
    assert store.history_item("a")["a"]["status"]["status_str"] == "error"
    assert store.history_item("a")["a"]["status"]["completed"] is False
    assert store.item("a").status == status


def test_finish_refuses_what_is_not_running(store: JobStore) -> None:
    submit(store, "a")
    with pytest.raises(QueueError, match="prompt a: it is pending, not running"):
        store.finish("a", status="success", outputs={}, messages=[])
    with pytest.raises(UnknownPromptError, match="ghost"):
        store.finish("ghost", status="success", outputs={}, messages=[])
    store.claim()
    with pytest.raises(QueueError, match="finish status"):
        store.finish("a", status="done", outputs={}, messages=[])
    assert store.item("a").status == "running"


def test_history_is_in_finish_order_and_unknown_ids_give_empty(store: JobStore) -> None:
    submit(store, "first")
    submit(store, "second")
    one, two = store.claim(), store.claim()
    store.finish(two.prompt_id, status="success", outputs={}, messages=[])
    store.finish(one.prompt_id, status="success", outputs={}, messages=[])
    assert list(store.history()) == ["second", "first"]
    assert store.history_item("missing") == {}
    submit(store, "queued")
    assert store.history_item("queued") == {}


def test_delete_and_clear_history_leave_the_queue_alone(store: JobStore) -> None:
    for pid in "abc":
        submit(store, pid)
    run_one(store)
    run_one(store)
    assert store.delete_history(["a", "c", "zzz"]) == 1  # c is pending: not history
    assert list(store.history()) == ["b"]
    assert store.clear_history() == 1
    assert store.history() == {}
    assert [i.prompt_id for i in store.queue()[1]] == ["c"]


@pytest.fixture
def six(store: JobStore) -> JobStore:
    for i in range(6):
        submit(store, f"h{i}")
        run_one(store)
    return store


# The windows ComfyUI's own history-paging tests check (spec §10.4), with exact expectations.
def test_history_offset_returns_different_items_than_the_beginning(six: JobStore) -> None:
    assert list(six.history(max_items=2, offset=0)) == ["h0", "h1"]
    assert list(six.history(max_items=2, offset=2)) == ["h2", "h3"]


def test_history_offset_beyond_or_at_length_is_empty(six: JobStore) -> None:
    assert six.history(offset=100) == {}
    assert six.history(offset=6) == {}


def test_history_offset_zero_equals_no_offset(six: JobStore) -> None:
    assert six.history(offset=0) == six.history()
    assert len(six.history()) == 6


def test_history_offset_without_max_items_skips_from_the_beginning(six: JobStore) -> None:
    assert list(six.history(offset=2)) == ["h2", "h3", "h4", "h5"]


def test_history_window_and_near_end(six: JobStore) -> None:
    assert list(six.history(max_items=2, offset=1)) == ["h1", "h2"]
    assert list(six.history(max_items=5, offset=5)) == ["h5"]


def test_history_max_items_alone_is_the_last_n(six: JobStore) -> None:
    assert list(six.history(max_items=2)) == ["h4", "h5"]
    assert list(six.history(max_items=2, offset=-1)) == ["h4", "h5"]
    assert list(six.history(max_items=50)) == [f"h{i}" for i in range(6)]
    assert six.history(max_items=0) == {}
    with pytest.raises(InvalidQueryError, match="max_items"):
        six.history(max_items=-1)


# ------------------------------------------------------------------ requeue


def test_requeue_puts_a_failed_prompt_back_in_its_place(store: JobStore) -> None:
    submit(store, "a")
    submit(store, "b")
    run_one(store, "error")
    item = store.requeue("a")
    assert (item.status, item.number, item.attempts) == ("pending", 0, 1)
    assert store.history_item("a") == {}
    assert drain_ids(store) == ["a", "b"]


def test_requeue_refuses_success_and_unknown_but_undoes_cancel(store: JobStore) -> None:
    submit(store, "ok")
    run_one(store)
    with pytest.raises(QueueError, match="it is success"):
        store.requeue("ok")
    with pytest.raises(UnknownPromptError):
        store.requeue("never")
    submit(store, "c")
    store.cancel(["c"])
    assert store.requeue("c").status == "pending"
    assert store.claim().prompt_id == "c"


# ------------------------------------------------------------------ durability


def test_restart_keeps_pending_in_order_and_interrupts_the_running_one(tmp_path: Path) -> None:
    db = tmp_path / "queue.db"
    clock = FakeClock()
    s = JobStore(db, clock=clock)
    for pid in ["a", "b", "c"]:
        submit(s, pid)
    submit(s, "d", front=True)
    assert s.claim().prompt_id == "d"
    s.close()  # no finish: as if the process stopped mid-prompt

    clock.advance(30)
    s = JobStore(db, clock=clock)
    running, pending = s.queue()
    assert running == []
    assert [i.prompt_id for i in pending] == ["a", "b", "c"]
    entry = s.history_item("d")["d"]
    assert entry["status"]["status_str"] == "error" and entry["status"]["completed"] is False
    (start, start_data), (event, data) = entry["status"]["messages"]
    assert start == "execution_start" and event == "execution_interrupted"
    assert "restart or crash" in data["reason"] and data["timestamp"] - start_data["timestamp"] == 30_000
    assert submit(s, "e").number == 4  # the counter survived the restart
    s.requeue("d")
    assert drain_ids(s) == ["d", "a", "b", "c", "e"]
    s.close()


def _child(code: str, db: Path) -> subprocess.Popen:
    script = textwrap.dedent(code).replace("DB", repr(str(db)))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-c", script], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def test_kill_9_mid_submit_loop_loses_no_acknowledged_prompt(tmp_path: Path) -> None:
    db = tmp_path / "queue.db"
    child = _child(
        """
        import sys
        from execution.queue import JobStore
        s = JobStore(DB)
        i = 0
        while True:
            s.submit({"1": {"class_type": "X", "inputs": {"i": i}}}, prompt_id=f"p{i}", outputs_to_execute=["1"])
            print(i, flush=True)
            i += 1
        """,
        db,
    )
    acked = -1
    while acked < 40:
        line = child.stdout.readline()
        assert line, child.stderr.read()
        acked = int(line)
    child.send_signal(signal.SIGKILL)
    child.communicate(timeout=10)  # reaps it and closes the pipes

    s = JobStore(db)  # the lock died with the process
    assert s._rows("PRAGMA integrity_check")[0][0] == "ok"
    _, pending = s.queue()
    ids = [i.prompt_id for i in pending]
    # Every acknowledged submit is there, in order; the child may have committed more before the
    # signal landed, but never with a gap or a torn row.
    assert len(ids) > acked
    assert ids == [f"p{i}" for i in range(len(ids))]
    assert s.item(ids[-1]).prompt["1"]["inputs"]["i"] == len(ids) - 1
    s.close()


def test_hard_exit_while_running_leaves_an_interrupted_item(tmp_path: Path) -> None:
    db = tmp_path / "queue.db"
    child = _child(
        """
        import os
        from execution.queue import JobStore
        s = JobStore(DB)
        for i in range(3):
            s.submit({"1": {"class_type": "X", "inputs": {}}}, prompt_id=f"p{i}", outputs_to_execute=["1"])
        s.claim("gpu0")
        os._exit(0)
        """,
        db,
    )
    _, err = child.communicate(timeout=30)
    assert child.returncode == 0, err
    s = JobStore(db)
    assert s.item("p0").status == "interrupted"
    assert [i.prompt_id for i in s.queue()[1]] == ["p1", "p2"]
    assert s.remaining() == 2
    s.close()


def test_a_second_opener_is_refused_until_the_first_closes(tmp_path: Path) -> None:
    db = tmp_path / "queue.db"
    first = JobStore(db)
    with pytest.raises(StoreLockedError, match=f"pid {os.getpid()}"):
        JobStore(db)
    child = _child(
        """
        from execution.queue import JobStore
        from execution.store import StoreLockedError
        try:
            JobStore(DB)
        except StoreLockedError as exc:
            print("refused:", exc)
        """,
        db,
    )
    out, err = child.communicate(timeout=30)
    assert out.startswith("refused:") and "another Loom process" in out, err
    submit(first, "kept")
    first.close()
    second = JobStore(db)
    assert [i.prompt_id for i in second.queue()[1]] == ["kept"]
    second.close()


def test_closed_store_refuses_work(tmp_path: Path) -> None:
    s = JobStore(tmp_path / "q.db")
    s.close()
    s.close()  # idempotent
    with pytest.raises(QueueError, match="closed"):
        submit(s, "a")
    assert s.wait_for_work(0.01) is False


# ------------------------------------------------------------------ retention, schema


def test_retention_drops_the_oldest_finished_entries(tmp_path: Path) -> None:
    s = JobStore(tmp_path / "q.db", retention=3)
    for i in range(5):
        submit(s, f"h{i}")
    submit(s, "waiting", number=100)
    for _ in range(5):
        run_one(s)
    assert list(s.history()) == ["h2", "h3", "h4"]
    assert s.item("h0") is None
    assert [i.prompt_id for i in s.queue()[1]] == ["waiting"]
    s.close()
    s = JobStore(tmp_path / "q.db", retention=2)  # a lower limit applies on open
    assert list(s.history()) == ["h3", "h4"]
    s.close()


def test_schema_is_versioned_and_newer_databases_are_refused(tmp_path: Path) -> None:
    db = tmp_path / "q.db"
    JobStore(db).close()
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(SchemaError, match="newer"):
        JobStore(db)
    JobStore(db.with_name("other.db")).close()  # the failed open released its lock: others unaffected
    with pytest.raises(SchemaError):
        JobStore(db)


def test_migrations_run_in_order_and_roll_back_on_failure(tmp_path: Path) -> None:
    conn = connect(tmp_path / "m.db")
    steps = {
        1: lambda c: c.execute("CREATE TABLE t (x)"),
        2: lambda c: c.execute("INSERT INTO t VALUES (2)"),
        3: lambda c: c.execute("INSERT INTO nowhere VALUES (3)"),
    }
    assert migrate(conn, steps, target=2) == 0
    assert conn.execute("SELECT x FROM t").fetchall()[0][0] == 2
    with pytest.raises(sqlite3.OperationalError):
        migrate(conn, steps, target=3)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 2
    with pytest.raises(SchemaError, match="no migration step to schema version 4"):
        migrate(conn, steps, target=4)
    assert conn.execute("SELECT COUNT(*) FROM t").fetchone()[0] == 1
    conn.close()


# ------------------------------------------------------------------ sensitive data


def test_sensitive_keys_never_reach_the_database_file(tmp_path: Path) -> None:
    db = tmp_path / "q.db"
    s = JobStore(db)
    secret, key = "tok-SECRET-9f3a", "key-SECRET-77c1"
    extra = {"auth_token_comfy_org": secret, "api_key_comfy_org": key, "extra_pnginfo": {"workflow": {}}}
    item = submit(s, "a", extra_data=extra, sensitive={"other_secret": "x-SECRET-x"})
    assert "auth_token_comfy_org" not in item.extra_data and item.sensitive == {}
    assert "SECRET" not in repr(s.queue()) + repr(item)
    claimed = s.claim()
    assert claimed.sensitive == {"auth_token_comfy_org": secret, "api_key_comfy_org": key, "other_secret": "x-SECRET-x"}
    assert "SECRET" not in repr(claimed)
    s.finish("a", status="success", outputs={}, messages=[])
    assert "SECRET" not in repr(s.history()) + repr(s.jobs()) + repr(s.job("a"))
    for f in tmp_path.iterdir():  # db, -wal, -shm and the lock file, while open
        assert b"SECRET" not in f.read_bytes(), f
    s.close()
    assert b"SECRET" not in db.read_bytes()


def test_tokens_of_a_prompt_pending_across_restart_are_gone(tmp_path: Path) -> None:
    db = tmp_path / "q.db"
    s = JobStore(db)
    submit(s, "a", extra_data={"auth_token_comfy_org": "tok"})
    s.close()
    s = JobStore(db)
    claimed = s.claim()
    assert claimed.prompt_id == "a" and claimed.sensitive == {}
    s.close()


# ------------------------------------------------------------------ worker wake-up


def test_a_blocked_worker_wakes_on_submit(store: JobStore) -> None:
    started, woke = threading.Event(), []

    def worker() -> None:
        started.set()
        t0 = time.monotonic()
        woke.append((store.wait_for_work(10), time.monotonic() - t0))

    thread = threading.Thread(target=worker)
    thread.start()
    started.wait(5)
    time.sleep(0.05)  # let it block
    assert woke == []
    submit(store, "a")
    thread.join(5)
    assert woke and woke[0][0] is True and woke[0][1] < 5
    assert store.wait_for_work(0) is True  # still pending: returns at once


def test_wait_for_work_times_out_and_close_releases_waiters(tmp_path: Path) -> None:
    s = JobStore(tmp_path / "q.db")
    t0 = time.monotonic()
    assert s.wait_for_work(0.05) is False
    assert time.monotonic() - t0 >= 0.04
    result: list[bool] = []
    thread = threading.Thread(target=lambda: result.append(s.wait_for_work(10)))
    thread.start()
    time.sleep(0.05)
    s.close()
    thread.join(5)
    assert result == [False]


@pytest.mark.parametrize("number", [2**80, -(2**70), 10**400, 1e300, float("nan"), "x"])
def test_numbers_sqlite_cannot_store_are_refused_clearly(store: JobStore, number) -> None:
    with pytest.raises(QueueError, match="number must be a finite number"):
        submit(store, "big", number=number)
    assert store.remaining() == 0
