"""Queue, history and jobs routes (spec §1.1) over the durable store, and restart durability."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient

from tests.server.helpers import output_prompt, post_prompt, wait_history

pytestmark = pytest.mark.asyncio


async def _pending_ids(client: TestClient) -> list[str]:
    queue = await (await client.get("/queue")).json()
    return [item[1] for item in queue["queue_pending"]]


async def test_queue_listing_shape(idle_client: TestClient) -> None:
    data = await post_prompt(idle_client, output_prompt(4), client_id="c1", prompt_id="p1")
    queue = await (await idle_client.get("/queue")).json()
    assert queue["queue_running"] == []
    [item] = queue["queue_pending"]
    assert len(item) == 5  # never the sensitive 6th element
    number, prompt_id, prompt, extra_data, outputs = item
    assert (number, prompt_id, outputs) == (data["number"], "p1", ["g2"])
    assert prompt["g1"] == {"class_type": "StubInt", "inputs": {"value": 4}}
    assert extra_data["client_id"] == "c1"


async def test_queue_delete_and_clear(idle_client: TestClient) -> None:
    for name in ("a", "b", "c"):
        await post_prompt(idle_client, output_prompt(), prompt_id=name)
    response = await idle_client.post("/queue", json={"delete": ["b", "unknown"]})
    assert response.status == 200
    assert await _pending_ids(idle_client) == ["a", "c"]
    await idle_client.post("/queue", json={"clear": True})
    assert await _pending_ids(idle_client) == []
    assert await (await idle_client.get("/prompt")).json() == {"exec_info": {"queue_remaining": 0}}


async def test_queue_bad_bodies(idle_client: TestClient) -> None:
    bad_delete = await idle_client.post("/queue", json={"delete": "a"})
    assert bad_delete.status == 400
    assert "delete" in (await bad_delete.json())["error"]["message"]
    bad_json = await idle_client.post("/queue", data=b"{", headers={"Content-Type": "application/json"})
    assert bad_json.status == 400


async def test_history_after_runs_and_paging(client: TestClient) -> None:
    ids = []
    for value in range(4):
        ids.append((await post_prompt(client, output_prompt(value), prompt_id=f"h{value}"))["prompt_id"])
        await wait_history(client, ids[-1])
    history = await (await client.get("/history")).json()
    assert list(history) == ids  # oldest first
    item = history["h2"]
    assert set(item) == {"prompt", "outputs", "status", "meta"}
    assert item["outputs"] == {"g2": {"value": [2]}}
    assert item["status"]["completed"] is True
    assert [m[0] for m in item["status"]["messages"]] == ["execution_start", "execution_cached", "execution_success"]
    assert item["meta"]["g2"]["node_id"] == "g2"
    assert list(await (await client.get("/history?max_items=2")).json()) == ["h2", "h3"]
    assert list(await (await client.get("/history?offset=1&max_items=2")).json()) == ["h1", "h2"]
    assert list(await (await client.get("/history?offset=1")).json()) == ["h1", "h2", "h3"]
    assert await (await client.get("/history?offset=4")).json() == {}
    bad = await client.get("/history?max_items=two")
    assert bad.status == 400
    assert "max_items" in (await bad.json())["error"]["message"]


async def test_history_item_delete_and_clear(client: TestClient) -> None:
    for name in ("x", "y", "z"):
        await wait_history(client, (await post_prompt(client, output_prompt(), prompt_id=name))["prompt_id"])
    assert list(await (await client.get("/history/y")).json()) == ["y"]
    assert await (await client.get("/history/nope")).json() == {}
    await client.post("/history", json={"delete": ["y"]})
    assert list(await (await client.get("/history")).json()) == ["x", "z"]
    await client.post("/history", json={"clear": True})
    assert await (await client.get("/history")).json() == {}


async def test_failed_prompt_history_and_worker_survives(client: TestClient) -> None:
    failing = {
        "f1": {"class_type": "Fail", "inputs": {"message": "kaput"}},
        "f2": {"class_type": "Output", "inputs": {"value": ["f1", 0]}},
    }
    bad = await post_prompt(client, failing)
    item = await wait_history(client, bad["prompt_id"])
    assert item["status"]["status_str"] == "error"
    assert item["status"]["completed"] is False
    error = dict(item["status"]["messages"])["execution_error"]
    assert error["node_id"] == "f1" and "kaput" in error["exception_message"]
    good = await post_prompt(client, output_prompt(9))
    assert (await wait_history(client, good["prompt_id"]))["outputs"]["g2"] == {"value": [9]}


async def test_jobs_api(client: TestClient) -> None:
    done = await post_prompt(
        client, output_prompt(1), prompt_id="j1", extra_data={"extra_pnginfo": {"workflow": {"id": "wf-1"}}}
    )
    await wait_history(client, done["prompt_id"])
    jobs = await (await client.get("/api/jobs")).json()
    assert jobs["pagination"] == {"offset": 0, "limit": None, "total": 1, "has_more": False}
    [job] = jobs["jobs"]
    assert job["id"] == "j1" and job["status"] == "completed" and job["workflow_id"] == "wf-1"
    assert job["outputs_count"] == 0  # only dict items (files) count; this ui holds a plain int
    filtered = await (await client.get("/api/jobs?status=pending,failed")).json()
    assert filtered["jobs"] == []
    one = await (await client.get("/api/jobs/j1")).json()
    assert one["outputs"] == {"g2": {"value": [1]}}
    assert one["workflow"]["prompt"]["g1"]["inputs"]["value"] == 1
    missing = await client.get("/api/jobs/nope")
    assert missing.status == 404 and await missing.json() == {"error": "Job not found"}
    for query in ("status=bogus", "sort_by=name", "limit=0", "limit=x"):
        response = await client.get(f"/api/jobs?{query}")
        assert response.status == 400, query
        assert isinstance((await response.json())["error"], str)
    # ComfyUI declares these routes with the /api prefix already: the mirror is /api/api/jobs.
    assert (await client.get("/api/api/jobs")).status == 200


async def test_restart_keeps_pending_jobs(start, tmp_path: Path) -> None:
    first = await start(run_worker=False)
    for name in ("r1", "r2", "r3"):
        await post_prompt(first, output_prompt(), prompt_id=name)
    await first.close()  # app cleanup: worker stopped, store closed
    second = await start(run_worker=False)
    assert await _pending_ids(second) == ["r1", "r2", "r3"]
    await second.close()
    third = await start()  # with a worker: the restored prompts run
    item = await wait_history(third, "r3")
    assert item["status"]["status_str"] == "success"
