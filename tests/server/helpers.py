"""Helpers for the server tests: prompts built with GraphBuilder, polling, websocket reading."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType
from aiohttp.test_utils import TestClient

from core.config import Config
from core.graph_builder import GraphBuilder
from core.paths import ModelPaths
from core.runtime import current
from execution.queue import JobStore
from nodes.compat import v1_definitions
from tests.testing_nodes import NODE_CLASS_MAPPINGS


class PreviewRed:
    """An output node that reports one step of progress with a small red PIL preview image."""

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"size": ("INT", {"default": 8, "min": 1, "max": 64})}}

    RETURN_TYPES = ()
    FUNCTION = "run"
    OUTPUT_NODE = True
    CATEGORY = "Testing/Server"

    def run(self, size: int) -> dict[str, Any]:
        from PIL import Image

        runtime = current()
        assert runtime is not None
        runtime.progress(1, 1, preview=Image.new("RGB", (size, size), (255, 0, 0)))
        return {"ui": {"size": [size]}}


SERVER_NODES = {"PreviewRed": PreviewRed}


def server_registry() -> dict[str, Any]:
    return dict(v1_definitions({**NODE_CLASS_MAPPINGS, **SERVER_NODES}))


def make_services(tmp_path: Path, **overrides: Any) -> dict[str, Any]:
    """Services for create_app under tmp_path; the store file is tmp_path/user/loom.db."""
    config = overrides.pop("config", None) or Config(base_dir=tmp_path)
    services: dict[str, Any] = {
        "config": config,
        "registry": server_registry(),
        "paths": ModelPaths(tmp_path / "models"),
        "output_dir": tmp_path / "output",
        "input_dir": tmp_path / "input",
        "temp_dir": tmp_path / "temp",
    }
    services.update(overrides)
    if "store" not in services:
        services["store"] = JobStore(tmp_path / "user" / "loom.db")
    return services


def output_prompt(value: int = 3, prefix: str = "g") -> dict[str, Any]:
    """StubInt(value) -> Output: node ids `<prefix>1` (int) and `<prefix>2` (output)."""
    graph = GraphBuilder(prefix=prefix)
    graph.node("Output", value=graph.node("StubInt", value=value).out(0))
    return graph.finalize()


def long_prompt(steps: int = 400, delay: float = 0.01, prefix: str = "l") -> dict[str, Any]:
    """LongRunning -> Output: runs steps * delay seconds, checking for interrupts at every step."""
    graph = GraphBuilder(prefix=prefix)
    graph.node("Output", value=graph.node("LongRunning", steps=steps, delay=delay).out(0))
    return graph.finalize()


async def post_prompt(client: TestClient, prompt: dict[str, Any], **body: Any) -> dict[str, Any]:
    response = await client.post("/prompt", json={"prompt": prompt, **body})
    data = await response.json()
    assert response.status == 200, data
    return data


async def wait_history(client: TestClient, prompt_id: str, timeout: float = 10.0) -> dict[str, Any]:
    """Poll /history/{id} until the prompt has finished; its history item."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = await client.get(f"/history/{prompt_id}")
        data = await response.json()
        if prompt_id in data:
            return data[prompt_id]
        await asyncio.sleep(0.02)
    raise AssertionError(f"prompt {prompt_id} did not finish within {timeout} s")


async def wait_running(client: TestClient, prompt_id: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        queue = await (await client.get("/queue")).json()
        if any(item[1] == prompt_id for item in queue["queue_running"]):
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"prompt {prompt_id} did not start within {timeout} s")


async def receive_until(ws: Any, done: Callable[[Any], bool], timeout: float = 10.0) -> list[Any]:
    """Messages (dicts for JSON, bytes for binary frames) up to and including the first `done` one."""
    received: list[Any] = []
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(
                f"timed out; received {[m.get('type') if isinstance(m, dict) else m for m in received]}"
            )
        msg = await ws.receive(timeout=left)
        if msg.type == WSMsgType.TEXT:
            item: Any = json.loads(msg.data)
        elif msg.type == WSMsgType.BINARY:
            item = msg.data
        else:
            raise AssertionError(f"websocket ended: {msg.type} {msg.data!r}; received {received}")
        received.append(item)
        if done(item):
            return received


def is_done(prompt_id: str) -> Callable[[Any], bool]:
    """The `executing {node: null}` of this prompt: the end of its run."""
    return lambda m: (
        isinstance(m, dict)
        and m["type"] == "executing"
        and m["data"]["node"] is None
        and m["data"]["prompt_id"] == prompt_id
    )


def types_of(messages: list[Any]) -> list[str]:
    return [m["type"] if isinstance(m, dict) else "binary" for m in messages]
