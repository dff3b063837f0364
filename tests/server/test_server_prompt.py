"""POST/GET /prompt (spec §1.2): success shape, ComfyUI's 400 shapes, numbering, what gets stored."""

from __future__ import annotations

import pytest
from aiohttp.test_utils import TestClient

from tests.server.helpers import output_prompt, post_prompt, wait_history

pytestmark = pytest.mark.asyncio


async def test_post_prompt_runs_and_answers_comfyui_shape(client: TestClient) -> None:
    data = await post_prompt(client, output_prompt(5), client_id="me")
    assert set(data) == {"prompt_id", "number", "node_errors"}
    assert data["node_errors"] == {}
    assert isinstance(data["prompt_id"], str) and len(data["prompt_id"]) == 36  # a uuid4
    item = await wait_history(client, data["prompt_id"])
    assert item["status"]["status_str"] == "success"
    assert item["outputs"] == {"g2": {"value": [5]}}
    number, prompt_id, prompt, extra_data, outputs = item["prompt"]
    assert (number, prompt_id, outputs) == (data["number"], data["prompt_id"], ["g2"])
    assert prompt["g1"]["inputs"]["value"] == 5
    assert extra_data["client_id"] == "me"
    assert isinstance(extra_data["create_time"], int)


async def test_client_chosen_prompt_id_and_duplicate(client: TestClient) -> None:
    data = await post_prompt(client, output_prompt(), prompt_id="my-id")
    assert data["prompt_id"] == "my-id"
    again = await client.post("/prompt", json={"prompt": output_prompt(), "prompt_id": "my-id"})
    body = await again.json()
    assert again.status == 400
    assert "my-id" in body["error"]["message"] and body["node_errors"] == {}


async def test_no_prompt(client: TestClient) -> None:
    response = await client.post("/prompt", json={"client_id": "x"})
    body = await response.json()
    assert response.status == 400
    assert body["error"]["type"] == "no_prompt"
    assert body["node_errors"] == {}


async def test_malformed_json_is_400_not_500(client: TestClient) -> None:
    response = await client.post("/prompt", data=b'{"prompt": {', headers={"Content-Type": "application/json"})
    body = await response.json()
    assert response.status == 400
    assert body["error"]["type"] == "invalid_json"
    assert "line 1" in body["error"]["message"]
    not_object = await client.post("/prompt", json=[1, 2])
    assert not_object.status == 400
    assert "JSON object" in (await not_object.json())["error"]["message"]


async def test_unknown_class_is_invalid_prompt(client: TestClient) -> None:
    response = await client.post("/prompt", json={"prompt": {"1": {"class_type": "Nope", "inputs": {}}}})
    body = await response.json()
    assert response.status == 400
    assert body["error"]["type"] == "invalid_prompt"
    assert body["error"]["details"] == "Node ID '#1'"


async def test_failed_validation_lists_node_errors(client: TestClient) -> None:
    prompt = output_prompt()
    prompt["g1"]["inputs"]["value"] = "not a number"
    response = await client.post("/prompt", json={"prompt": prompt})
    body = await response.json()
    assert response.status == 400
    assert body["error"]["type"] == "prompt_outputs_failed_validation"
    errors = body["node_errors"]["g1"]["errors"]
    assert errors[0]["type"] == "invalid_input_type"
    assert body["node_errors"]["g1"]["dependent_outputs"] == ["g2"]


async def test_partial_execution_targets(client: TestClient) -> None:
    both = {**output_prompt(1, "a"), **output_prompt(2, "b")}
    empty = await client.post("/prompt", json={"prompt": both, "partial_execution_targets": []})
    assert empty.status == 400
    assert (await empty.json())["error"]["type"] == "prompt_no_outputs"
    bad = await client.post("/prompt", json={"prompt": both, "partial_execution_targets": "b2"})
    assert bad.status == 400
    data = await post_prompt(client, both, partial_execution_targets=["b2"])
    item = await wait_history(client, data["prompt_id"])
    assert item["prompt"][4] == ["b2"]
    assert item["outputs"] == {"b2": {"value": [2]}}


async def test_bad_field_types_are_400(client: TestClient) -> None:
    for body in (
        {"prompt": output_prompt(), "extra_data": "nope"},
        {"prompt": output_prompt(), "client_id": 5},
        {"prompt": output_prompt(), "prompt_id": ""},
        {"prompt": output_prompt(), "number": "abc"},
    ):
        response = await client.post("/prompt", json=body)
        assert response.status == 400, body
        assert "node_errors" in await response.json()


async def test_numbering_front_and_explicit(idle_client: TestClient) -> None:
    first = await post_prompt(idle_client, output_prompt(), prompt_id="first")
    second = await post_prompt(idle_client, output_prompt(), prompt_id="second")
    front = await post_prompt(idle_client, output_prompt(), prompt_id="front", front=True)
    explicit = await post_prompt(idle_client, output_prompt(), prompt_id="explicit", number=-100)
    assert second["number"] == first["number"] + 1
    assert front["number"] == -(second["number"] + 1)
    assert explicit["number"] == -100
    queue = await (await idle_client.get("/queue")).json()
    assert [item[1] for item in queue["queue_pending"]] == ["explicit", "front", "first", "second"]


async def test_get_prompt_counts_pending(idle_client: TestClient) -> None:
    assert await (await idle_client.get("/prompt")).json() == {"exec_info": {"queue_remaining": 0}}
    await post_prompt(idle_client, output_prompt())
    await post_prompt(idle_client, output_prompt())
    assert await (await idle_client.get("/prompt")).json() == {"exec_info": {"queue_remaining": 2}}


async def test_sensitive_extra_data_is_not_listed(idle_client: TestClient) -> None:
    extra = {"api_key_comfy_org": "secret-key", "extra_pnginfo": {"workflow": {"id": "wf"}}}
    await post_prompt(idle_client, output_prompt(), extra_data=extra, prompt_id="s")
    text = await (await idle_client.get("/queue")).text()
    assert "secret-key" not in text
    assert '"wf"' in text


async def test_python_urllib_style_script_is_accepted(client: TestClient) -> None:
    """ComfyUI's own example scripts POST JSON with urllib's default form content type."""
    import json

    response = await client.post(
        "/prompt",
        data=json.dumps({"prompt": output_prompt(7)}).encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status == 200
    item = await wait_history(client, (await response.json())["prompt_id"])
    assert item["outputs"]["g2"] == {"value": [7]}
