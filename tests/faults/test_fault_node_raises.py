"""A node that raises: its prompt fails with the node's traceback, both in /history and in the
websocket `execution_error`, and the worker goes straight on to the next prompt."""

from __future__ import annotations

from typing import Any

import pytest

from core.graph_builder import GraphBuilder
from tests.server.helpers import is_done, output_prompt, post_prompt, receive_until, wait_history

pytestmark = pytest.mark.asyncio


def failing_prompt(message: str) -> dict[str, Any]:
    graph = GraphBuilder(prefix="f")
    graph.node("Output", value=graph.node("Fail", message=message).out(0))
    return graph.finalize()


async def test_raising_node_reports_its_traceback_and_the_next_prompt_runs(start: Any) -> None:
    client = await start()
    async with client.ws_connect("/ws?clientId=me") as ws:
        await ws.receive_json(timeout=10)  # the greeting status
        failed = (await post_prompt(client, failing_prompt("boom from a node"), client_id="me"))["prompt_id"]
        after = (await post_prompt(client, output_prompt(7), client_id="me"))["prompt_id"]
        messages = await receive_until(ws, is_done(failed))
        messages += await receive_until(ws, is_done(after))

    error = next(m["data"] for m in messages if isinstance(m, dict) and m["type"] == "execution_error")
    assert error["prompt_id"] == failed and error["node_id"] == "f1" and error["node_type"] == "Fail"
    assert error["exception_message"] == "boom from a node"
    assert error["exception_type"] == "ValueError"
    # The traceback is the node's own: it ends in the testing node's fail() frame.
    assert error["traceback"] and "raise ValueError(message)" in error["traceback"][-1]

    entry = await wait_history(client, failed)
    assert entry["status"]["status_str"] == "error" and entry["status"]["completed"] is False
    recorded = dict(entry["status"]["messages"])["execution_error"]
    assert recorded["traceback"] == error["traceback"]
    assert recorded["exception_message"] == "boom from a node"

    done = await wait_history(client, after)
    assert done["status"]["status_str"] == "success"
    assert done["outputs"]["g2"]["value"] == [7]
    assert any(m["type"] == "execution_success" and m["data"]["prompt_id"] == after for m in messages
               if isinstance(m, dict))  # fmt: skip
