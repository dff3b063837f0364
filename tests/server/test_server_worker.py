"""The worker thread through the app: interrupt (global and per prompt), /free, surviving an executor
crash, and graceful shutdown (running prompt recorded as interrupted, websockets closed 1001)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import WSCloseCode, WSMsgType
from aiohttp.test_utils import TestClient

from execution.executor import Executor
from execution.queue import JobStore
from tests.server.helpers import (
    is_done,
    long_prompt,
    output_prompt,
    post_prompt,
    receive_until,
    server_registry,
    wait_history,
    wait_running,
)

pytestmark = pytest.mark.asyncio


async def test_global_interrupt_stops_the_running_prompt(client: TestClient) -> None:
    ws = await client.ws_connect("/ws?clientId=i")
    await ws.receive_json(timeout=5)
    pid = (await post_prompt(client, long_prompt(steps=1000, delay=0.01), client_id="i"))["prompt_id"]
    await wait_running(client, pid)
    response = await client.post("/interrupt")  # no body at all: interrupt whatever runs
    assert response.status == 200
    messages = await receive_until(ws, is_done(pid), timeout=5)
    interrupted = [m for m in messages if isinstance(m, dict) and m["type"] == "execution_interrupted"]
    assert interrupted and interrupted[0]["data"]["node_id"] == "l1"
    item = await wait_history(client, pid)
    assert item["status"]["status_str"] == "error" and item["status"]["completed"] is False
    assert [m[0] for m in item["status"]["messages"]][-1] == "execution_interrupted"
    job = await (await client.get(f"/api/jobs/{pid}")).json()
    assert job["status"] == "failed"
    await ws.close()


async def test_interrupt_for_another_prompt_is_ignored(client: TestClient) -> None:
    pid = (await post_prompt(client, long_prompt(steps=40, delay=0.01)))["prompt_id"]
    await wait_running(client, pid)
    await client.post("/interrupt", json={"prompt_id": "not-this-one"})
    assert (await wait_history(client, pid))["status"]["status_str"] == "success"
    target = (await post_prompt(client, long_prompt(steps=1000, delay=0.01, prefix="m")))["prompt_id"]
    await wait_running(client, target)
    await client.post("/interrupt", json={"prompt_id": target})
    item = await wait_history(client, target, timeout=5)
    assert item["status"]["messages"][-1][0] == "execution_interrupted"


async def test_free_memory_clears_the_cache(client: TestClient) -> None:
    async def cached_nodes() -> list[str]:
        pid = (await post_prompt(client, output_prompt(6)))["prompt_id"]
        item = await wait_history(client, pid)
        return sorted(dict(item["status"]["messages"])["execution_cached"]["nodes"])

    assert await cached_nodes() == []
    assert await cached_nodes() == ["g1", "g2"]
    response = await client.post("/free", json={"unload_models": True, "free_memory": True})
    assert response.status == 200
    assert await cached_nodes() == []


class CrashOnce:
    """An executor stand-in that raises on its first prompt (a bug in Loom), then works."""

    def __init__(self) -> None:
        self.inner = Executor(server_registry())
        self.cache = self.inner.cache
        self.calls = 0

    def execute(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        if self.calls == 1:
            raise RuntimeError("executor bug")
        return self.inner.execute(*args, **kwargs)


async def test_worker_survives_an_executor_crash(start) -> None:
    client = await start(executor=CrashOnce())
    ws = await client.ws_connect("/ws?clientId=c")
    await ws.receive_json(timeout=5)
    crashed = (await post_prompt(client, output_prompt(1), client_id="c"))["prompt_id"]
    messages = await receive_until(ws, is_done(crashed))
    errors = [m["data"] for m in messages if isinstance(m, dict) and m["type"] == "execution_error"]
    assert errors and "executor bug" in errors[0]["exception_message"]
    item = await wait_history(client, crashed)
    assert item["status"]["status_str"] == "error"
    assert [m[0] for m in item["status"]["messages"]] == ["execution_start", "execution_error"]
    fine = (await post_prompt(client, output_prompt(2)))["prompt_id"]
    assert (await wait_history(client, fine))["status"]["status_str"] == "success"
    await ws.close()


async def test_shutdown_interrupts_records_and_closes_sockets(start, tmp_path: Path) -> None:
    client = await start()
    # A socket outside the TestClient, so the TestClient's close does not close it first.
    async with aiohttp.ClientSession() as session:
        ws = await session.ws_connect(client.make_url("/ws?clientId=watcher"))
        await ws.receive_json(timeout=5)
        pid = (await post_prompt(client, long_prompt(steps=1000, delay=0.03), client_id="watcher"))["prompt_id"]
        await wait_running(client, pid)
        pending = (await post_prompt(client, output_prompt(), prompt_id="still-pending"))["prompt_id"]

        async def read_until_closed() -> Any:
            while True:
                msg = await ws.receive(timeout=15)
                if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.CLOSING):
                    return msg

        reader = asyncio.create_task(read_until_closed())
        await client.close()
        closed = await reader
        assert ws.close_code == WSCloseCode.GOING_AWAY or closed.data == WSCloseCode.GOING_AWAY
    store = JobStore(tmp_path / "user" / "loom.db")
    try:
        assert store.item(pid).status == "interrupted"
        messages = store.history_item(pid)[pid]["status"]["messages"]
        assert messages[-1][0] == "execution_interrupted"
        assert "reason" not in messages[-1][1]  # recorded by the worker, not by crash recovery
        assert store.item(pending).status == "pending"
    finally:
        store.close()


class FakeModels:
    def __init__(self) -> None:
        self.unloaded = 0

    def unload_all(self) -> None:
        self.unloaded += 1


async def test_free_unload_models_reaches_the_model_manager(start) -> None:
    models = FakeModels()
    client = await start(models=models)
    await client.post("/free", json={"unload_models": True})
    await wait_history(client, (await post_prompt(client, output_prompt()))["prompt_id"])
    assert models.unloaded == 1
    await wait_history(client, (await post_prompt(client, output_prompt(5)))["prompt_id"])
    assert models.unloaded == 1  # flags are consumed once
