"""GET /queue with a long queue while the worker drains it: JobStore.queue() keeps the decoded JSON
of queued rows between calls (their JSON columns never change after submit), so reading 1,000
pending prompts costs the query, not 3,000 json.loads. The items stay exactly what a fresh decode
gives -- numbers, statuses and order after moves, claims, cancels and requeues -- and the kept
decodes never outgrow the rows still queued. The latency of queue() with a worker thread claiming
and finishing concurrently is reported (p50/p99)."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from execution.queue import JobStore
from execution.store import item_of_row
from tests.soak.soak_utils import percentile, report, sized

pytestmark = pytest.mark.slow

PENDING = sized(1000, 500)


def prompt(i: int) -> dict:
    return {"1": {"class_type": "LiveConst", "inputs": {"value": i}}, "2": {"class_type": "LiveSink", "inputs": {}}}


def fresh(store: JobStore) -> tuple[list, list]:
    running = store._rows("SELECT * FROM prompts WHERE status = 'running' ORDER BY started_at, seq")
    pending = store._rows("SELECT * FROM prompts WHERE status = 'pending' ORDER BY number, seq")
    return [item_of_row(r) for r in running], [item_of_row(r) for r in pending]


def test_queue_reads_stay_exact_after_every_change(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "q.db")
    try:
        for i in range(20):
            store.submit(prompt(i), prompt_id=f"p{i}", outputs_to_execute=["2"])
        assert store.queue() == fresh(store)
        store.move("p19", index=0)
        store.move("p3", after="p10")
        assert store.queue() == fresh(store)
        assert store.claim("0").prompt_id == "p19"
        store.cancel(["p4", "p5"])
        assert store.queue() == fresh(store)
        store.finish("p19", status="error", outputs={}, messages=[], meta={})
        store.requeue("p19")
        store.requeue("p4")
        running, pending = store.queue()
        assert (running, pending) == fresh(store)
        by_id = {item.prompt_id: item for item in pending}
        assert {"p19", "p4"} <= set(by_id) and "p5" not in by_id
        assert by_id["p4"].prompt["1"]["inputs"]["value"] == 4 and by_id["p19"].attempts == 1
        assert set(store._parsed) == {
            row["seq"] for row in store._rows("SELECT seq FROM prompts WHERE status IN ('pending', 'running')")
        }
    finally:
        store.close()


def test_queue_reads_stay_fast_while_the_worker_drains_a_long_queue(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "q.db")
    try:
        for i in range(PENDING):
            store.submit(prompt(i), prompt_id=f"p{i}", outputs_to_execute=["2"])
        halt = threading.Event()

        def drain() -> None:
            while not halt.is_set():
                item = store.claim("0")
                if item is None:
                    return
                store.finish(item.prompt_id, status="success", outputs={"2": {"value": [1]}}, messages=[], meta={})

        worker = threading.Thread(target=drain, daemon=True)
        worker.start()
        latencies = []
        for _ in range(40):
            began = time.perf_counter()
            running, pending = store.queue()
            json.dumps({"queue_running": [i.as_comfy_tuple() for i in running],
                        "queue_pending": [i.as_comfy_tuple() for i in pending]})  # fmt: skip
            latencies.append(time.perf_counter() - began)
            time.sleep(0.01)
        halt.set()
        worker.join(30)
        assert len(store._parsed) <= PENDING
        p50, p99 = percentile(latencies, 50) * 1000, percentile(latencies, 99) * 1000
        report(
            f"JobStore.queue() + JSON with {PENDING} queued and a worker draining: p50 {p50:.1f} ms, p99 {p99:.1f} ms"
        )
        assert p50 < 500
    finally:
        store.close()
