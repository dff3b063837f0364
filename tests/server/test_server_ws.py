"""The websocket (spec §2): status on connect, the message sequence of a prompt, ComfyUI's targeting
rules, the feature_flags handshake, binary preview frames and `executing` on reconnect."""

from __future__ import annotations

import asyncio
import io

import pytest
from aiohttp.test_utils import TestClient

from server.protocol import PREVIEW_IMAGE, PREVIEW_IMAGE_WITH_METADATA, parse_frame
from tests.server.helpers import (
    is_done,
    long_prompt,
    output_prompt,
    post_prompt,
    receive_until,
    types_of,
)

pytestmark = pytest.mark.asyncio


def _without_progress(messages: list) -> list:
    return [m for m in messages if not (isinstance(m, dict) and m["type"] == "progress_state")]


async def test_status_first_with_sid(client: TestClient) -> None:
    ws = await client.ws_connect("/ws?clientId=abc")
    first = await ws.receive_json(timeout=5)
    assert first == {"type": "status", "data": {"status": {"exec_info": {"queue_remaining": 0}}, "sid": "abc"}}
    anonymous = await client.ws_connect("/ws")
    sid = (await anonymous.receive_json(timeout=5))["data"]["sid"]
    assert len(sid) == 32  # a generated uuid4 hex
    await ws.close()
    await anonymous.close()


async def test_message_sequence_for_one_prompt(client: TestClient) -> None:
    ws = await client.ws_connect("/ws?clientId=me")
    other = await client.ws_connect("/ws?clientId=someone-else")
    await ws.receive_json(timeout=5)
    await other.receive_json(timeout=5)
    pid = (await post_prompt(client, output_prompt(3), client_id="me"))["prompt_id"]
    messages = await receive_until(ws, is_done(pid))
    core = _without_progress(messages)
    assert types_of(core) == [
        "status",  # queued
        "status",  # taken by the worker
        "execution_start",
        "execution_cached",
        "executing",
        "executing",
        "executed",
        "execution_success",
        "status",  # finished
        "executing",  # {node: null}: history is written
    ]
    assert [m["data"]["node"] for m in core if m["type"] == "executing"] == ["g1", "g2", None]
    executed = next(m for m in core if m["type"] == "executed")
    assert executed["data"] == {"node": "g2", "display_node": "g2", "output": {"value": [3]}, "prompt_id": pid}
    assert core[-2]["data"]["status"]["exec_info"]["queue_remaining"] == 0
    states = [m for m in messages if isinstance(m, dict) and m["type"] == "progress_state"]
    assert states and states[-1]["data"]["nodes"]["g2"]["state"] == "finished"
    # The history is already there when `executing null` arrives.
    assert pid in await (await client.get(f"/history/{pid}")).json()
    # Another client sees only the queue changes.
    seen = await receive_until(
        other, lambda m: m["type"] == "status" and m["data"]["status"]["exec_info"]["queue_remaining"] == 0
    )
    assert set(types_of(seen)) == {"status"}
    await ws.close()
    await other.close()


async def test_cached_rerun_sends_cached_ids_and_executed(client: TestClient) -> None:
    ws = await client.ws_connect("/ws?clientId=me")
    await ws.receive_json(timeout=5)
    first = (await post_prompt(client, output_prompt(3), client_id="me"))["prompt_id"]
    await receive_until(ws, is_done(first))
    second = (await post_prompt(client, output_prompt(3), client_id="me"))["prompt_id"]
    core = _without_progress(await receive_until(ws, is_done(second)))
    cached = next(m for m in core if m["type"] == "execution_cached")
    assert sorted(cached["data"]["nodes"]) == ["g1", "g2"]
    assert [m["data"]["node"] for m in core if m["type"] == "executing"] == [None]  # nothing ran
    assert any(m["type"] == "executed" and m["data"]["node"] == "g2" for m in core)
    await ws.close()


async def test_prompt_without_client_id_broadcasts_only_b_events(client: TestClient) -> None:
    ws = await client.ws_connect("/ws?clientId=listener")
    await ws.receive_json(timeout=5)
    pid = (await post_prompt(client, long_prompt(steps=3, delay=0.0)))["prompt_id"]
    messages = await receive_until(
        ws, lambda m: m["type"] == "status" and m["data"]["status"]["exec_info"]["queue_remaining"] == 0
    )
    kinds = set(types_of(messages))
    assert {"progress", "progress_state", "status"} <= kinds
    assert not kinds & {"execution_start", "execution_cached", "executing", "executed", "execution_success"}
    progress = [m["data"] for m in messages if m["type"] == "progress"]
    assert progress[-1] == {"value": 3, "max": 3, "prompt_id": pid, "node": "l1"}
    await ws.close()


async def test_feature_flags_handshake(client: TestClient) -> None:
    ws = await client.ws_connect("/ws?clientId=ff")
    await ws.receive_json(timeout=5)
    await ws.send_json({"type": "feature_flags", "data": {"supports_preview_metadata": True}})
    reply = await ws.receive_json(timeout=5)
    assert reply["type"] == "feature_flags"
    assert reply["data"]["supports_preview_metadata"] is True
    assert reply["data"]["max_upload_size"] == 100 * 1024 * 1024
    assert reply["data"] == await (await client.get("/features")).json()
    await ws.close()


async def test_only_the_first_message_is_a_handshake(client: TestClient) -> None:
    ws = await client.ws_connect("/ws?clientId=late")
    await ws.receive_json(timeout=5)
    await ws.send_json({"type": "hello"})
    await ws.send_json({"type": "feature_flags", "data": {}})
    with pytest.raises(asyncio.TimeoutError):
        await ws.receive_json(timeout=0.3)
    await ws.close()


async def _preview_frame(client: TestClient, client_id: str, flags: bool) -> bytes:
    ws = await client.ws_connect(f"/ws?clientId={client_id}")
    await ws.receive_json(timeout=5)
    if flags:
        await ws.send_json({"type": "feature_flags", "data": {"supports_preview_metadata": True}})
        await ws.receive_json(timeout=5)
    prompt = {"p1": {"class_type": "PreviewRed", "inputs": {"size": 16}}}
    pid = (await post_prompt(client, prompt, client_id=client_id))["prompt_id"]
    messages = await receive_until(ws, is_done(pid))
    await ws.close()
    [frame] = [m for m in messages if isinstance(m, bytes)]
    return frame


async def test_preview_frame_with_metadata(client: TestClient) -> None:
    from PIL import Image

    event, meta, image = parse_frame(await _preview_frame(client, "modern", flags=True))
    assert event == PREVIEW_IMAGE_WITH_METADATA
    assert meta["node_id"] == "p1" and meta["image_type"] == "image/jpeg" and meta["display_node_id"] == "p1"
    with Image.open(io.BytesIO(image)) as decoded:
        assert decoded.size == (16, 16)
        red, green, blue = decoded.convert("RGB").getpixel((8, 8))
        assert red > 200 and green < 60 and blue < 60


async def test_legacy_preview_frame(client: TestClient) -> None:
    frame = await _preview_frame(client, "legacy", flags=False)
    event, meta, image = parse_frame(frame)
    assert event == PREVIEW_IMAGE and meta["image_type"] == "image/jpeg"
    assert frame[4:8] == b"\x00\x00\x00\x01" and image[:2] == b"\xff\xd8"  # JPEG from byte 8


async def test_reconnect_during_run_gets_executing(client: TestClient) -> None:
    first = await client.ws_connect("/ws?clientId=back")
    await first.receive_json(timeout=5)
    pid = (await post_prompt(client, long_prompt(steps=1000, delay=0.01), client_id="back"))["prompt_id"]
    await receive_until(first, lambda m: m["type"] == "executing" and m["data"]["node"] == "l1")
    await first.close()  # the browser tab reloads mid-run
    ws = await client.ws_connect("/ws?clientId=back")
    status = await ws.receive_json(timeout=5)
    executing = await ws.receive_json(timeout=5)
    assert status["type"] == "status" and status["data"]["sid"] == "back"
    assert executing["type"] == "executing"
    assert executing["data"]["prompt_id"] == pid and executing["data"]["node"] == "l1"
    await client.post("/interrupt", json={})
    await receive_until(ws, is_done(pid))
    await ws.close()


async def test_same_client_id_replaces_older_socket(client: TestClient) -> None:
    old = await client.ws_connect("/ws?clientId=dup")
    await old.receive_json(timeout=5)
    new = await client.ws_connect("/ws?clientId=dup")
    await new.receive_json(timeout=5)
    closing = await old.receive(timeout=5)
    assert closing.type.name in ("CLOSE", "CLOSED", "CLOSING")
    pid = (await post_prompt(client, output_prompt(), client_id="dup"))["prompt_id"]
    assert is_done(pid)((await receive_until(new, is_done(pid)))[-1])
    await new.close()
