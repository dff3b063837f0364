"""A websocket client that falls behind during a large graph gets the latest `progress_state`
snapshots instead of a backlog, and is not disconnected."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp.test_utils import TestClient

from core.graph_builder import GraphBuilder
from server.ws import CLIENT_QUEUE_LIMIT
from tests.server.helpers import is_done, receive_until, wait_history

pytestmark = pytest.mark.asyncio


async def test_slow_client_gets_coalesced_progress_state(client: TestClient) -> None:
    nodes = CLIENT_QUEUE_LIMIT - 400  # each node: one `executing` and two progress_state snapshots
    graph = GraphBuilder(prefix="n")
    node = graph.node("StubInt", value=1)
    for _ in range(nodes - 2):
        node = graph.node("IntMath", a=node.out(0), b=1, operation="add")
    graph.node("Output", value=node.out(0))
    ws = await client.ws_connect("/ws?clientId=slow")
    await ws.receive_json(timeout=5)
    response = await client.post("/prompt", json={"prompt": graph.finalize(), "client_id": "slow"})
    pid = (await response.json())["prompt_id"]
    await wait_history(client, pid, timeout=120)  # the whole run happens while the client reads nothing
    messages = await receive_until(ws, is_done(pid), timeout=60)
    kinds = [m["type"] for m in messages if isinstance(m, dict)]
    assert kinds.count("executing") == nodes + 1  # every node, then {node: null}
    states = [m for m in messages if isinstance(m, dict) and m["type"] == "progress_state"]
    assert 0 < len(states) < nodes  # far fewer than the 2 per node produced
    assert all(s["data"]["nodes"][f"n{nodes}"]["state"] == "finished" for s in states[-1:])
    assert "execution_success" in kinds
    await asyncio.sleep(0)
    assert not ws.closed
    await ws.close()
