"""Websocket clients that go away mid-run -- one closing politely, one whose TCP connection is
torn down without a close frame: the prompt they submitted runs to the end and is in /history,
and another client connected all along still gets the status broadcasts and every event of its
own prompt; the hub forgets the departed clients."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from server.app import HUB
from tests.server.helpers import is_done, long_prompt, output_prompt, post_prompt, receive_until, types_of, wait_history

pytestmark = pytest.mark.asyncio


def abort(ws: Any) -> None:
    """Drop the connection under the websocket: no close frame, as a killed browser tab."""
    ws._response.connection.transport.abort()


@pytest.mark.parametrize("how", ["close", "abort"])
async def test_client_leaving_mid_run_loses_nothing_for_anyone(start: Any, how: str) -> None:
    client = await start()
    hub = client.server.app[HUB]
    watcher = await client.ws_connect("/ws?clientId=watcher")
    leaver = await client.ws_connect("/ws?clientId=leaver")
    try:
        await watcher.receive_json(timeout=10)
        await leaver.receive_json(timeout=10)
        running = (await post_prompt(client, long_prompt(steps=60, delay=0.01), client_id="leaver"))["prompt_id"]
        # Wait until the leaver is receiving progress of its prompt, then leave.
        await receive_until(leaver, lambda m: isinstance(m, dict) and m["type"] == "progress")
        if how == "close":
            await leaver.close()
        else:
            abort(leaver)
        own = (await post_prompt(client, output_prompt(9), client_id="watcher"))["prompt_id"]

        entry = await wait_history(client, running)
        assert entry["status"]["status_str"] == "success"
        assert entry["outputs"]["l2"]["value"] == [60]
        messages = await receive_until(watcher, is_done(own))
        kinds = types_of(messages)
        # The watcher saw the queue change (broadcast) and all of its own prompt's events, none of
        # the leaver's execution events (ComfyUI sends those to their client only).
        assert "status" in kinds
        own_events = [m["type"] for m in messages if isinstance(m, dict) and m["data"].get("prompt_id") == own]
        assert own_events[0] == "execution_start" and own_events[-1] == "executing"
        assert {"execution_cached", "executing", "executed", "execution_success"} <= set(own_events)
        assert not any(isinstance(m, dict) and m["data"].get("prompt_id") == running and m["type"] != "status"
                       for m in messages)  # fmt: skip
        assert (await wait_history(client, own))["status"]["status_str"] == "success"
        for _ in range(100):
            if "leaver" not in hub.clients:
                break
            await asyncio.sleep(0.02)
        assert set(hub.clients) == {"watcher"}
    finally:
        await watcher.close()
        if not leaver.closed:
            await leaver.close()
