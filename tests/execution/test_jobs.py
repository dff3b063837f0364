"""GET /api/jobs and /api/jobs/{id} shapes from JobStore.jobs()/job(), plus the pure helpers behind them."""

from __future__ import annotations

import pytest

from execution import jobs as jobfmt
from execution.queue import JobStore
from execution.store import InvalidQueryError

PROMPT = {"1": {"class_type": "SaveImage", "inputs": {}}}


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(clock: FakeClock) -> JobStore:
    s = JobStore(":memory:", clock=clock)
    yield s
    s.close()


def image(name: str, kind: str = "output") -> dict:
    return {"filename": name, "subfolder": "", "type": kind}


def add(store: JobStore, clock: FakeClock, pid: str, *, at: float, workflow: str | None = None) -> None:
    clock.now = at
    extra = {"extra_pnginfo": {"workflow": {"id": workflow}}} if workflow else None
    store.submit(PROMPT, prompt_id=pid, outputs_to_execute=["1"], extra_data=extra)


def run(store: JobStore, status: str = "success", outputs: dict | None = None, took_ms: int = 100) -> str:
    item = store.claim()
    assert item is not None
    messages = [
        ["execution_start", {"prompt_id": item.prompt_id, "timestamp": 5_000}],
        ["execution_success", {"prompt_id": item.prompt_id, "timestamp": 5_000 + took_ms}],
    ]
    store.finish(item.prompt_id, status=status, outputs=outputs or {}, messages=messages)
    return item.prompt_id


# ------------------------------------------------------------------ listing


def test_job_objects_for_each_status(store: JobStore, clock: FakeClock) -> None:
    for i, pid in enumerate(["done", "bad", "running", "waiting"]):
        add(store, clock, pid, at=10.0 + i, workflow="wf-1")
    run(store, outputs={"1": {"images": [image("a.png"), image("b.png")]}})
    run(store, "error")
    store.claim()
    jobs = {j["id"]: j for j in store.jobs()["jobs"]}
    assert jobs["waiting"] == {
        "id": "waiting", "status": "pending", "priority": 3, "create_time": 13_000, "outputs_count": 0,
        "workflow_id": "wf-1",
    }  # fmt: skip
    assert jobs["running"]["status"] == "in_progress" and jobs["running"]["outputs_count"] == 0
    done = jobs["done"]
    assert done["status"] == "completed" and done["priority"] == 0 and done["create_time"] == 10_000
    assert (done["execution_start_time"], done["execution_end_time"]) == (5_000, 5_100)
    assert done["outputs_count"] == 2
    assert done["preview_output"] == {**image("a.png"), "nodeId": "1", "mediaType": "images"}
    assert jobs["bad"]["status"] == "failed" and "preview_output" not in jobs["bad"]  # None keys dropped


def test_status_filter_accepts_csv_or_list_and_rejects_unknown(store: JobStore, clock: FakeClock) -> None:
    for i in range(4):
        add(store, clock, f"p{i}", at=float(i))
    run(store)
    run(store, "error")
    run(store, "interrupted")
    assert {j["id"] for j in store.jobs(status="completed")["jobs"]} == {"p0"}
    assert {j["id"] for j in store.jobs(status="failed")["jobs"]} == {"p1", "p2"}  # interrupted reads as failed
    assert {j["id"] for j in store.jobs(status=" Pending , completed")["jobs"]} == {"p0", "p3"}
    assert {j["id"] for j in store.jobs(status=["in_progress"])["jobs"]} == set()
    with pytest.raises(InvalidQueryError, match="Invalid status value.*running"):
        store.jobs(status="completed,running")


def test_sort_by_created_at_both_ways_with_stable_ties(store: JobStore, clock: FakeClock) -> None:
    add(store, clock, "late", at=30.0)
    add(store, clock, "early", at=10.0)
    add(store, clock, "tie-a", at=20.0)
    add(store, clock, "tie-b", at=20.0)
    run(store)  # history and queue are sorted together
    desc = [j["id"] for j in store.jobs()["jobs"]]
    asc = [j["id"] for j in store.jobs(sort_order="asc")["jobs"]]
    assert desc == ["late", "tie-b", "tie-a", "early"]
    assert asc == list(reversed(desc))


def test_sort_by_execution_duration(store: JobStore, clock: FakeClock) -> None:
    for i, took in enumerate([300, 100, 200]):
        add(store, clock, f"p{i}", at=float(i))
        run(store, took_ms=took)
    add(store, clock, "queued", at=9.0)  # no duration: sorts as 0
    order = [j["id"] for j in store.jobs(sort_by="execution_duration", sort_order="asc")["jobs"]]
    assert order == ["queued", "p1", "p2", "p0"]
    order = [j["id"] for j in store.jobs(sort_by="execution_duration")["jobs"]]
    assert order == ["p0", "p2", "p1", "queued"]


def test_duration_falls_back_to_claim_and_finish_times(store: JobStore, clock: FakeClock) -> None:
    add(store, clock, "quick", at=1.0)
    add(store, clock, "slow", at=2.0)
    for pid, seconds in [("quick", 1.5), ("slow", 4.0)]:
        assert store.claim().prompt_id == pid
        clock.now += seconds
        store.finish(pid, status="success", outputs={}, messages=[])  # a worker that sends no timestamps
    job = store.job("slow")
    assert job["execution_end_time"] - job["execution_start_time"] == 4_000
    assert [j["id"] for j in store.jobs(sort_by="execution_duration")["jobs"]] == ["slow", "quick"]


def test_pagination_windows_totals_and_has_more(store: JobStore, clock: FakeClock) -> None:
    for i in range(5):
        add(store, clock, f"p{i}", at=float(i))
        run(store)
    first = store.jobs(limit=2, offset=0)
    second = store.jobs(limit=2, offset=2)
    last = store.jobs(limit=2, offset=4)
    assert [j["id"] for j in first["jobs"]] == ["p4", "p3"]
    assert [j["id"] for j in second["jobs"]] == ["p2", "p1"]
    assert [j["id"] for j in last["jobs"]] == ["p0"]
    assert first["pagination"] == {"offset": 0, "limit": 2, "total": 5, "has_more": True}
    assert last["pagination"] == {"offset": 4, "limit": 2, "total": 5, "has_more": False}
    everything = store.jobs(offset=-3)
    assert everything["pagination"] == {"offset": 0, "limit": None, "total": 5, "has_more": False}
    assert len(everything["jobs"]) == 5
    assert store.jobs(offset=10)["jobs"] == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"limit": 0}, "limit must be a positive integer"),
        ({"sort_by": "name"}, "sort_by must be"),
        ({"sort_order": "up"}, "sort_order must be"),
    ],
)
def test_bad_query_parameters(store: JobStore, kwargs: dict, message: str) -> None:
    with pytest.raises(InvalidQueryError, match=message):
        store.jobs(**kwargs)


def test_workflow_filter_counts_only_matches(store: JobStore, clock: FakeClock) -> None:
    add(store, clock, "a", at=1.0, workflow="wf-a")
    add(store, clock, "b", at=2.0, workflow="wf-b")
    add(store, clock, "c", at=3.0, workflow="wf-a")
    run(store)
    page = store.jobs(workflow_id="wf-a")
    assert [j["id"] for j in page["jobs"]] == ["c", "a"] and page["pagination"]["total"] == 2
    assert store.jobs(workflow_id="")["pagination"]["total"] == 3  # empty means no filter, as in ComfyUI


# ------------------------------------------------------------------ single job


def test_job_by_id_carries_outputs_status_and_workflow(store: JobStore, clock: FakeClock) -> None:
    add(store, clock, "a", at=1.0, workflow="wf")
    outputs = {"1": {"images": [image("x.png")]}}
    run(store, outputs=outputs)
    job = store.job("a")
    assert job["id"] == "a" and job["status"] == "completed"
    assert job["outputs"] == outputs
    assert job["execution_status"]["status_str"] == "success" and len(job["execution_status"]["messages"]) == 2
    assert job["workflow"]["prompt"] == PROMPT
    assert job["workflow"]["extra_data"]["extra_pnginfo"] == {"workflow": {"id": "wf"}}


def test_job_by_id_for_queued_missing_and_cancelled(store: JobStore, clock: FakeClock) -> None:
    add(store, clock, "q", at=1.0)
    add(store, clock, "gone", at=2.0)
    assert store.job("q") == {"id": "q", "status": "pending", "priority": 0, "create_time": 1_000, "outputs_count": 0}
    store.cancel(["gone"])
    assert store.job("gone") is None
    assert store.job("nonexistent-job-id") is None
    assert [j["id"] for j in store.jobs()["jobs"]] == ["q"]


def test_execution_error_is_reported(store: JobStore, clock: FakeClock) -> None:
    add(store, clock, "e", at=1.0)
    store.claim()
    error = {"prompt_id": "e", "node_id": "1", "exception_message": "boom", "timestamp": 7}
    store.finish(
        "e", status="error", outputs={}, messages=[["execution_start", {"timestamp": 3}], ["execution_error", error]]
    )
    job = store.job("e")
    assert job["status"] == "failed" and job["execution_error"] == error
    assert (job["execution_start_time"], job["execution_end_time"]) == (3, 7)


# ------------------------------------------------------------------ pure helpers


def test_outputs_summary_counts_items_and_prefers_saved_outputs() -> None:
    outputs = {
        "3": {"images": [image("tmp.png", "temp")], "animated": [True]},
        "4": {"text": ["not a dict"], "gifs": [{"filename": "a.mp4", "format": "video/h264-mp4", "type": "output"}]},
        "5": "not a dict",
    }
    count, preview = jobfmt.outputs_summary(outputs)
    assert count == 2  # animated flags and non-dict items are not outputs
    assert preview["filename"] == "a.mp4" and preview["nodeId"] == "4" and preview["mediaType"] == "gifs"


def test_outputs_summary_falls_back_to_temp_and_3d_files() -> None:
    assert jobfmt.outputs_summary({"9": {"images": [image("p.png", "temp")]}})[1]["filename"] == "p.png"
    count, preview = jobfmt.outputs_summary({"2": {"3d": [{"filename": "Mesh.GLB", "type": "output"}]}})
    assert count == 1 and preview["mediaType"] == "3d"
    assert jobfmt.outputs_summary({"2": {"latents": [{"filename": "x.latent"}]}}) == (1, None)


def test_workflow_id_tolerates_missing_levels() -> None:
    assert jobfmt.workflow_id_of({}) is None
    assert jobfmt.workflow_id_of({"extra_pnginfo": "junk"}) is None
    assert jobfmt.workflow_id_of({"extra_pnginfo": {"workflow": {"id": 12}}}) == "12"
