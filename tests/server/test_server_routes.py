"""The route table: every API route also under /api, node and model listings, system stats without
torch, and a registry that is still loading (or failed to load) when requests arrive."""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from core.paths import ModelPaths
from server.routes import API_ROUTES
from tests.server.helpers import output_prompt, post_prompt, server_registry, wait_history

pytestmark = pytest.mark.asyncio

STABLE_GETS = ("/prompt", "/queue", "/history", "/object_info", "/object_info/StubInt", "/features", "/models")


async def test_every_api_route_is_also_under_api(idle_client: TestClient) -> None:
    app_paths = {resource.canonical for resource in idle_client.app.router.resources()}
    for _, path, _ in API_ROUTES:
        assert path in app_paths and "/api" + path in app_paths, path
    for path in STABLE_GETS:
        bare, prefixed = await idle_client.get(path), await idle_client.get("/api" + path)
        assert bare.status == prefixed.status == 200, path
        assert await bare.json() == await prefixed.json(), path


async def test_api_prefixed_post_prompt_runs(client: TestClient) -> None:
    response = await client.post("/api/prompt", json={"prompt": output_prompt(8)})
    assert response.status == 200
    item = await wait_history(client, (await response.json())["prompt_id"])
    assert item["outputs"]["g2"] == {"value": [8]}
    assert await (await client.get("/api/history")).json() == await (await client.get("/history")).json()


async def test_object_info(idle_client: TestClient) -> None:
    info = await (await idle_client.get("/object_info")).json()
    assert set(server_registry()) == set(info)
    stub = info["StubInt"]
    assert stub["input"]["required"]["value"][0] == "INT"
    assert stub["output"] == ["INT"] and stub["output_node"] is False and stub["name"] == "StubInt"
    assert info["Output"]["output_node"] is True
    assert await (await idle_client.get("/object_info/StubInt")).json() == {"StubInt": stub}
    assert await (await idle_client.get("/object_info/Nope")).json() == {}


async def test_models_and_embeddings(start, tmp_path: Path) -> None:
    models = tmp_path / "models"
    (models / "checkpoints" / "sd").mkdir(parents=True)
    (models / "checkpoints" / "a.safetensors").write_bytes(b"")
    (models / "checkpoints" / "sd" / "b.ckpt").write_bytes(b"")
    (models / "checkpoints" / "notes.txt").write_text("not a model")
    (models / "embeddings").mkdir()
    (models / "embeddings" / "easyneg.pt").write_bytes(b"")
    client = await start(run_worker=False, paths=ModelPaths(models))
    kinds = await (await client.get("/models")).json()
    assert "checkpoints" in kinds and "loras" in kinds
    assert await (await client.get("/models/checkpoints")).json() == ["a.safetensors", "sd/b.ckpt"]
    assert await (await client.get("/models/loras")).json() == []
    unknown = await client.get("/models/nope")
    assert unknown.status == 404 and "nope" in (await unknown.json())["error"]["message"]
    assert await (await client.get("/embeddings")).json() == ["easyneg"]


async def test_system_stats_never_imports_torch(idle_client: TestClient) -> None:
    had_torch = "torch" in sys.modules
    stats = await (await idle_client.get("/system_stats")).json()
    assert ("torch" in sys.modules) == had_torch
    system = stats["system"]
    assert system["ram_total"] > 0 and 0 <= system["ram_free"] <= system["ram_total"]
    assert system["python_version"] == sys.version and system["argv"] == sys.argv
    if not had_torch:
        assert stats["devices"] == [] and system["pytorch_version"] is None
    else:
        assert stats["devices"] and system["pytorch_version"]


async def test_features(idle_client: TestClient) -> None:
    features = await (await idle_client.get("/features")).json()
    assert features == {"supports_preview_metadata": True, "max_upload_size": 100 * 1024 * 1024}


async def test_page_is_served_while_nodes_load(start) -> None:
    release = threading.Event()

    def slow_loader() -> tuple[dict[str, Any], list[Any]]:
        release.wait(10)
        return server_registry(), []

    client = await start(registry=None, registry_loader=slow_loader)
    started = time.monotonic()
    assert (await client.get("/")).status == 200
    assert (await client.get("/prompt")).status == 200
    assert time.monotonic() - started < 2
    waiting = asyncio.ensure_future(client.get("/object_info"))
    await asyncio.sleep(0.1)
    assert not waiting.done()  # waits for the registry rather than answering without it
    release.set()
    info = await (await waiting).json()
    assert "StubInt" in info
    pid = (await post_prompt(client, output_prompt(2)))["prompt_id"]
    assert (await wait_history(client, pid))["status"]["status_str"] == "success"


async def test_registry_that_failed_to_load_answers_503(start) -> None:
    def broken_loader() -> tuple[dict[str, Any], list[Any]]:
        raise RuntimeError("a built-in node module is broken")

    client = await start(registry=None, registry_loader=broken_loader, run_worker=False)
    for response in (await client.get("/object_info"), await client.post("/prompt", json={"prompt": output_prompt()})):
        body = await response.json()
        assert response.status == 503
        assert "a built-in node module is broken" in body["error"]["message"]
    assert (await client.get("/")).status == 200
