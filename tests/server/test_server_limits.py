"""Prompt limits checked before queueing (size, node count, image size / batch / steps caps) and the
audit rule that errors sent to clients carry no paths of this machine."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from core.config import Config
from core.graph_builder import GraphBuilder
from server.app import STORE
from server.http import private_roots, redact, redact_value
from tests.server.helpers import output_prompt, server_registry


def chain(length: int) -> dict[str, Any]:
    graph = GraphBuilder(prefix="c")
    node = graph.node("StubInt", value=1)
    for _ in range(length - 2):
        node = graph.node("IntMath", a=node.out(0), b=1, operation="add")
    graph.node("Output", value=node.out(0))
    return graph.finalize()


async def queued(client: TestClient) -> int:
    return (await (await client.get("/prompt")).json())["exec_info"]["queue_remaining"]


@pytest.mark.asyncio
async def test_node_count_limit(start, tmp_path: Path) -> None:
    client = await start(run_worker=False, config=Config(base_dir=tmp_path, max_nodes=50))
    response = await client.post("/prompt", json={"prompt": chain(51)})
    body = await response.json()
    assert response.status == 400
    assert body["error"]["type"] == "prompt_over_server_limits" and body["node_errors"] == {}
    assert "51 nodes" in body["error"]["message"] and "--max-nodes" in body["error"]["message"]
    assert (await client.post("/prompt", json={"prompt": chain(50)})).status == 200
    assert await queued(client) == 1


@pytest.mark.asyncio
async def test_prompt_size_limit(start, tmp_path: Path) -> None:
    client = await start(run_worker=False, config=Config(base_dir=tmp_path, max_prompt_size_mb=0.002))
    big = {"prompt": output_prompt(), "extra_data": {"extra_pnginfo": {"workflow": "x" * 3000}}}
    response = await client.post("/prompt", json=big)
    assert response.status == 413
    assert "--max-prompt-size" in (await response.json())["error"]["message"]
    assert (await client.post("/prompt", json={"prompt": output_prompt()})).status == 200


def sized(width: Any, height: Any, batch: Any, steps: Any) -> dict[str, Any]:
    # Custom nodes are capped too: the server only knows input names. `Sized` stands in for any
    # node with these inputs (validation is not reached: limits are checked first).
    return {
        "1": {"class_type": "Sized", "inputs": {"width": width, "height": height, "batch_size": batch}},
        "2": {"class_type": "Sampler", "inputs": {"steps": steps, "seed": 10**12}},
    }


@pytest.mark.asyncio
async def test_value_caps_name_node_and_input(start, tmp_path: Path) -> None:
    config = Config(base_dir=tmp_path, max_image_size=1024, max_batch_size=4, max_steps=100)
    client = await start(run_worker=False, config=config)
    response = await client.post("/prompt", json={"prompt": sized(2048, 512, 8, 150)})
    body = await response.json()
    assert response.status == 400
    errors = {
        node: [e["extra_info"]["input_name"] for e in entry["errors"]] for node, entry in body["node_errors"].items()
    }
    assert errors == {"1": ["width", "batch_size"], "2": ["steps"]}
    first = body["node_errors"]["1"]["errors"][0]
    assert first["details"] == "width 2048 > 1024 (--max-image-size)" and first["extra_info"]["received_value"] == 2048
    assert body["node_errors"]["2"]["class_type"] == "Sampler"
    assert "node 1 (Sized): width 2048 > 1024" in body["error"]["message"]
    assert await queued(client) == 0


@pytest.mark.asyncio
async def test_links_and_values_within_caps_pass(start, tmp_path: Path) -> None:
    config = Config(base_dir=tmp_path, max_image_size=1024, max_batch_size=4, max_steps=100)
    client = await start(run_worker=False, config=config)
    prompt = sized(["9", 0], 1024, True, 100)  # a link, the cap itself, a boolean
    response = await client.post("/prompt", json={"prompt": prompt})
    # Past the limits, validation refuses the unknown classes: the limits did not.
    assert response.status == 400 and (await response.json())["error"]["type"] == "invalid_prompt"


@pytest.mark.asyncio
async def test_zero_disables_a_cap(start, tmp_path: Path) -> None:
    config = Config(base_dir=tmp_path, max_image_size=0, max_batch_size=0, max_steps=0)
    client = await start(run_worker=False, config=config)
    response = await client.post("/prompt", json={"prompt": sized(10**6, 10**6, 10**6, 10**6)})
    assert (await response.json())["error"]["type"] == "invalid_prompt"


def test_redaction() -> None:
    roots = private_roots([("<models>", "/srv/loom/models"), ("<loom>", "/srv/loom"), ("~", "/home/ada")])
    text = "cannot open /srv/loom/models/x.ckpt or /srv/loom/user/a.json or /home/ada/.cache/y"
    assert redact(text, roots) == "cannot open <models>/x.ckpt or <loom>/user/a.json or ~/.cache/y"
    nested = {"a": [{"b": "/srv/loom/z"}, 3, None], "c": "/srv/loom/models"}
    assert redact_value(nested, roots) == {"a": [{"b": "<loom>/z"}, 3, None], "c": "<models>"}
    assert nested["c"] == "/srv/loom/models"  # the input is not changed
    deep: Any = "/srv/loom/deep"
    for _ in range(5000):  # far deeper than Python's recursion limit
        deep = [deep]
    out = redact_value(deep, roots)
    for _ in range(5000):
        out = out[0]
    assert out == "<loom>/deep"


class LeakyValidate:
    """A custom node whose validation message names a file on the server."""

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"name": ("STRING", {"default": ""})}}

    RETURN_TYPES = ()
    FUNCTION = "run"
    OUTPUT_NODE = True
    CATEGORY = "Testing/Server"
    WHERE = ""

    @classmethod
    def VALIDATE_INPUTS(cls, name: str) -> bool | str:
        return f"cannot read {cls.WHERE}/models/checkpoints/{name}"

    def run(self, name: str) -> dict[str, Any]:
        return {}


class Broken:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {}}

    RETURN_TYPES = ()
    FUNCTION = "run"
    OUTPUT_NODE = True
    CATEGORY = "Testing/Server"


@pytest.mark.asyncio
async def test_error_messages_carry_no_server_paths(start, tmp_path: Path, monkeypatch) -> None:
    from nodes.compat import v1_definitions

    monkeypatch.setattr(LeakyValidate, "WHERE", str(tmp_path))
    registry = {**server_registry(), **v1_definitions({"LeakyValidate": LeakyValidate})}
    client = await start(run_worker=False, registry=registry)
    response = await client.post(
        "/prompt", json={"prompt": {"1": {"class_type": "LeakyValidate", "inputs": {"name": "a"}}}}
    )
    text = await response.text()
    assert response.status == 400 and str(tmp_path) not in text
    assert "cannot read <models>/a" in text

    metadata = await client.get("/view_metadata/checkpoints", params={"filename": "../../../etc/x.safetensors"})
    assert metadata.status == 404 and str(tmp_path) not in await metadata.text()

    # An unexpected failure: the client gets a reference, the log gets the traceback.
    def explode(*_: Any) -> None:
        raise OSError(f"[Errno 13] Permission denied: '{tmp_path}/user/loom.db'")

    monkeypatch.setattr(client.app[STORE], "remaining", explode)
    response = await client.get("/prompt")
    body = json.loads(await response.text())
    assert response.status == 500 and str(tmp_path) not in json.dumps(body)
    assert "reference" in body["error"]["message"]
