"""Loom's queue controls: reorder pending prompts, pause/resume the worker, re-queue a failed or
interrupted prompt, cancel one prompt (pending or running) without disturbing the others, and the
configurable retention."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient

from core.config import Config
from execution.queue import JobStore
from server.app import services_for
from tests.server.helpers import long_prompt, output_prompt, post_prompt, wait_history, wait_running

pytestmark = pytest.mark.asyncio


async def pending_ids(client: TestClient) -> list[str]:
    queue = await (await client.get("/queue")).json()
    return [item[1] for item in queue["queue_pending"]]


async def queue_five(client: TestClient) -> None:
    for name in "abcde":
        await post_prompt(client, output_prompt(), prompt_id=name)


async def move(client: TestClient, prompt_id: str, **where: object) -> tuple[int, dict]:
    response = await client.post(f"/queue/{prompt_id}/move", json=where)
    return response.status, await response.json()


async def test_move_by_index_before_and_after(idle_client: TestClient) -> None:
    await queue_five(idle_client)
    status, body = await move(idle_client, "d", index=0)
    assert status == 200
    assert body["queue_pending"] == ["d", "a", "b", "c", "e"] == await pending_ids(idle_client)
    assert body["index"] == 0
    assert (await move(idle_client, "d", index=-1))[1]["queue_pending"] == ["a", "b", "c", "e", "d"]
    assert (await move(idle_client, "a", before="e"))[1]["queue_pending"] == ["b", "c", "a", "e", "d"]
    assert (await move(idle_client, "b", after="d"))[1]["queue_pending"] == ["c", "a", "e", "d", "b"]
    assert (await move(idle_client, "c", index=99))[1]["queue_pending"] == ["a", "e", "d", "b", "c"]
    # The numbers shown in /queue follow the new order (clients sort by them).
    queue = await (await idle_client.get("/api/queue")).json()
    numbers = [item[0] for item in queue["queue_pending"]]
    assert numbers == sorted(numbers) and len(set(numbers)) == 5


async def test_move_errors(idle_client: TestClient) -> None:
    await queue_five(idle_client)
    assert (await move(idle_client, "zzz", index=0))[0] == 404
    assert (await move(idle_client, "a", before="zzz"))[0] == 404
    assert (await move(idle_client, "a", before="a"))[0] == 409
    for bad in ({}, {"index": 1, "before": "b"}, {"index": "1"}, {"index": True}, {"after": 3}):
        status, body = await move(idle_client, "a", **bad)
        assert status == 400, bad
        assert "index" in body["error"]["message"] or "after" in body["error"]["message"]
    await idle_client.post("/queue", json={"delete": ["b"]})
    status, body = await move(idle_client, "b", index=0)
    assert status == 409 and "cancelled" in body["error"]["message"]


async def test_pause_holds_prompts_and_resume_runs_them(client: TestClient) -> None:
    ws = await client.ws_connect("/ws?clientId=p")
    await ws.receive_json(timeout=5)
    assert (await client.post("/queue", json={"pause": True})).status == 200
    status = await ws.receive_json(timeout=5)
    assert status["data"]["status"]["exec_info"] == {"queue_remaining": 0, "paused": True}
    pid = (await post_prompt(client, output_prompt(5)))["prompt_id"]
    await asyncio.sleep(0.4)  # the worker polls every 0.1 s: it had time to take it, and did not
    assert await pending_ids(client) == [pid]
    assert await (await client.get("/prompt")).json() == {"exec_info": {"queue_remaining": 1, "paused": True}}
    await client.post("/queue", json={"resume": True})
    assert (await wait_history(client, pid))["outputs"]["g2"] == {"value": [5]}
    assert await (await client.get("/prompt")).json() == {"exec_info": {"queue_remaining": 0}}
    assert (await client.post("/queue", json={"pause": True, "resume": True})).status == 400
    await ws.close()


async def test_pause_lets_the_running_prompt_finish(client: TestClient) -> None:
    running = (await post_prompt(client, long_prompt(steps=30, delay=0.01)))["prompt_id"]
    await wait_running(client, running)
    await client.post("/queue", json={"pause": True})
    waiting = (await post_prompt(client, output_prompt(1)))["prompt_id"]
    assert (await wait_history(client, running))["status"]["status_str"] == "success"
    await asyncio.sleep(0.3)
    assert await pending_ids(client) == [waiting]


async def test_requeue_a_failed_prompt_in_one_call(client: TestClient) -> None:
    failing = {
        "f1": {"class_type": "Fail", "inputs": {"message": "flaky"}},
        "f2": {"class_type": "Output", "inputs": {"value": ["f1", 0]}},
    }
    pid = (await post_prompt(client, failing, prompt_id="again"))["prompt_id"]
    assert (await wait_history(client, pid))["status"]["status_str"] == "error"
    response = await client.post(f"/api/jobs/{pid}/requeue")
    body = await response.json()
    assert response.status == 200 and body["prompt_id"] == pid and body["status"] == "pending"
    assert (await wait_history(client, pid))["status"]["status_str"] == "error"  # ran a second time
    job = await (await client.get(f"/api/jobs/{pid}")).json()
    assert job["status"] == "failed"
    assert (await client.post("/api/jobs/nope/requeue")).status == 404
    good = (await post_prompt(client, output_prompt()))["prompt_id"]
    await wait_history(client, good)
    refused = await client.post(f"/api/api/jobs/{good}/requeue")
    assert refused.status == 409 and "success" in (await refused.json())["error"]["message"]


async def test_requeue_an_interrupted_prompt(client: TestClient) -> None:
    pid = (await post_prompt(client, long_prompt(steps=300, delay=0.01)))["prompt_id"]
    await wait_running(client, pid)
    await client.post("/interrupt", json={"prompt_id": pid})
    history = await wait_history(client, pid)
    assert "execution_interrupted" in [m[0] for m in history["status"]["messages"]]
    assert (await client.post(f"/api/jobs/{pid}/requeue")).status == 200
    await wait_running(client, pid)
    await client.post(f"/api/jobs/{pid}/cancel")  # interrupt it again rather than wait 3 s


async def test_cancel_one_prompt_never_disturbs_the_others(client: TestClient) -> None:
    first = (await post_prompt(client, long_prompt(steps=40, delay=0.01, prefix="x"), prompt_id="first"))["prompt_id"]
    await wait_running(client, first)
    for name in ("second", "third", "fourth"):
        await post_prompt(client, output_prompt(len(name), prefix=name[:2]), prompt_id=name)
    cancel = await client.post("/api/jobs/third/cancel")
    assert await cancel.json() == {"prompt_id": "third", "cancelled": True, "interrupted": False}
    # ComfyUI's own way to drop a pending prompt; the running one is not affected by it either.
    await client.post("/queue", json={"delete": ["fourth", "first"]})
    assert (await wait_history(client, first))["status"]["status_str"] == "success"
    assert (await wait_history(client, "second"))["outputs"]["se2"] == {"value": [6]}
    assert await (await client.get("/history/third")).json() == {}
    assert await (await client.get("/history/fourth")).json() == {}

    slow = (await post_prompt(client, long_prompt(steps=500, delay=0.01, prefix="s"), prompt_id="slow"))["prompt_id"]
    await post_prompt(client, output_prompt(8, prefix="af"), prompt_id="after")
    await wait_running(client, slow)
    cancel = await client.post("/api/jobs/slow/cancel")
    assert await cancel.json() == {"prompt_id": "slow", "cancelled": False, "interrupted": True}
    slow_history = await wait_history(client, slow)
    assert slow_history["status"]["status_str"] == "error"
    assert (await wait_history(client, "after"))["status"]["status_str"] == "success"
    again = await client.post("/api/jobs/slow/cancel")
    assert again.status == 409 and "interrupted" in (await again.json())["error"]["message"]
    assert (await client.post("/api/jobs/ghost/cancel")).status == 404


async def test_retention_comes_from_the_config(tmp_path: Path) -> None:
    services = services_for(Config(base_dir=tmp_path, retention=2), {}, lambda: ({}, []))
    store: JobStore = services["store"]
    try:
        assert store.retention == 2
        for name in "abc":
            store.submit({}, outputs_to_execute=[], prompt_id=name)
            store.claim()
            store.finish(name, status="success", outputs={}, messages=[])
        assert list(store.history()) == ["b", "c"]
    finally:
        store.close()
