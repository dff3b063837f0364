"""`from server import PromptServer` for custom node packages: routes registered at import time (after
the app started) are served, under /api too, through the same security middleware; send_sync
reaches the websocket."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from core.config import Config
from nodes.loader import load_custom_nodes
from nodes.registry import NodeRegistry
from tests.server.helpers import receive_until, wait_history

pytestmark = pytest.mark.asyncio

PACK = """
from aiohttp import web

from server import PromptServer

routes = PromptServer.instance.routes


@routes.get("/route_pack/hello/{name}")
async def hello(request):
    return web.json_response({"hello": request.match_info["name"]})


@routes.post("/route_pack/echo")
async def echo(request):
    return web.json_response({"echo": await request.json()})


class Announce:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"text": ("STRING", {"default": "hi"})}}

    RETURN_TYPES = ()
    FUNCTION = "run"
    OUTPUT_NODE = True
    CATEGORY = "test"

    def run(self, text):
        server = PromptServer.instance
        server.send_sync("route_pack.announce", {"text": text, "client": server.client_id}, server.client_id)
        return {}


NODE_CLASS_MAPPINGS = {"Announce": Announce}
"""


def loader_for(folder: Path) -> Any:
    (folder / "route_pack").mkdir(parents=True)
    (folder / "route_pack" / "__init__.py").write_text(PACK)

    def load() -> tuple[NodeRegistry, list[Any]]:
        registry = NodeRegistry()
        reports = load_custom_nodes(registry, [folder], run_prestartup=False)
        assert all(report.ok for report in reports), [report.error for report in reports]
        return registry, reports

    return load


async def ready(client: TestClient) -> None:
    assert "Announce" in await (await client.get("/object_info")).json()  # waits for the packages


async def test_package_routes_are_served(start, tmp_path: Path) -> None:
    client = await start(registry=None, registry_loader=loader_for(tmp_path / "packs"))
    await ready(client)
    for path in ("/route_pack/hello/ada", "/api/route_pack/hello/ada"):
        response = await client.get(path)
        assert response.status == 200, path
        assert await response.json() == {"hello": "ada"}
    echo = await client.post("/route_pack/echo", json={"x": 1})
    assert await echo.json() == {"echo": {"x": 1}}
    assert (await client.get("/route_pack/nothing")).status == 404
    assert (await client.put("/route_pack/echo", json={})).status == 404
    assert (await client.get("/")).status == 200  # the page still wins its own path


async def test_package_routes_pass_the_security_middleware(start, tmp_path: Path) -> None:
    config = Config(base_dir=tmp_path, listen="0.0.0.0", auth_token="tok")
    client = await start(registry=None, registry_loader=loader_for(tmp_path / "packs"), config=config)
    bearer = {"Authorization": "Bearer tok"}
    assert "Announce" in await (await client.get("/object_info", headers=bearer)).json()
    assert (await client.get("/route_pack/hello/x")).status == 401
    assert (await client.get("/route_pack/hello/x", headers=bearer)).status == 200
    foreign = {**bearer, "Origin": "https://evil.example"}
    assert (await client.post("/route_pack/echo", json={}, headers=foreign)).status == 403


async def test_send_sync_reaches_the_websocket(start, tmp_path: Path) -> None:
    client = await start(registry=None, registry_loader=loader_for(tmp_path / "packs"))
    await ready(client)
    ws = await client.ws_connect("/ws?clientId=fan")
    other = await client.ws_connect("/ws?clientId=other")
    await ws.receive_json(timeout=5)
    await other.receive_json(timeout=5)
    prompt = {"1": {"class_type": "Announce", "inputs": {"text": "hey"}}}
    response = await client.post("/prompt", json={"prompt": prompt, "client_id": "fan"})
    pid = (await response.json())["prompt_id"]
    messages = await receive_until(ws, lambda m: isinstance(m, dict) and m["type"] == "route_pack.announce")
    assert messages[-1]["data"] == {"text": "hey", "client": "fan"}  # PromptServer.instance.client_id
    await wait_history(client, pid)
    seen = await receive_until(
        other, lambda m: m["type"] == "status" and m["data"]["status"]["exec_info"]["queue_remaining"] == 0
    )
    assert "route_pack.announce" not in [m["type"] for m in seen]  # sent to its prompt's client only
    await ws.close()
    await other.close()
