"""A node that hangs.

- A node that loops calling `NodeRuntime.check_interrupted()`: POST /interrupt ends it within one
  turn; the prompt is recorded as interrupted and the next prompt runs.
- A node that blocks in plain Python and never checks: Python cannot stop a thread from outside, so
  the interrupt is *recorded* and takes effect at the next node boundary -- the blocked call runs to
  its end, the nodes after it never start, the prompt is recorded as interrupted, and the queue goes
  on. Meanwhile the HTTP server keeps answering (the worker is a thread of its own). A node that
  never returns is recovered by a restart (see test_fault_custom_packages.py, which stops a live
  server stuck in such a node and restarts it).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from core.graph_builder import GraphBuilder
from tests.faults import fault_nodes
from tests.server.helpers import output_prompt, post_prompt, wait_history, wait_running

pytestmark = pytest.mark.asyncio


def prompt_of(node: str, seconds: float) -> dict[str, Any]:
    graph = GraphBuilder(prefix="h")
    graph.node("Output", value=graph.node(node, seconds=seconds).out(0))
    return graph.finalize()


async def wait_entered(timeout: float = 10.0) -> None:
    assert await asyncio.to_thread(fault_nodes.ENTERED.wait, timeout), "the node never started"


async def test_interrupt_ends_a_node_that_checks_and_the_next_prompt_runs(start: Any) -> None:
    client = await start()
    hung = (await post_prompt(client, prompt_of("CheckingLoop", 120.0)))["prompt_id"]
    after = (await post_prompt(client, output_prompt(5)))["prompt_id"]
    await wait_running(client, hung)
    await wait_entered()
    asked = time.perf_counter()
    assert (await client.post("/interrupt", json={})).status == 200
    entry = await wait_history(client, hung)
    assert time.perf_counter() - asked < 5.0
    status = entry["status"]
    assert status["status_str"] == "error" and not status["completed"]
    interrupted = dict(status["messages"])["execution_interrupted"]
    assert interrupted["node_id"] == "h1" and interrupted["node_type"] == "CheckingLoop"
    assert (await wait_history(client, after))["status"]["status_str"] == "success"


async def test_a_node_blocking_without_checks_is_interrupted_at_the_next_node(start: Any) -> None:
    client = await start()
    hung = (await post_prompt(client, prompt_of("BlockPlain", 60.0)))["prompt_id"]
    after = (await post_prompt(client, output_prompt(6)))["prompt_id"]
    await wait_running(client, hung)
    await wait_entered()
    assert (await client.post("/interrupt", json={})).status == 200

    # The node is still blocked: the prompt keeps running, yet the server answers at once.
    await asyncio.sleep(0.3)
    began = time.perf_counter()
    queue = await (await client.get("/queue")).json()
    assert time.perf_counter() - began < 1.0
    assert [item[1] for item in queue["queue_running"]] == [hung]
    assert [item[1] for item in queue["queue_pending"]] == [after]

    fault_nodes.RELEASE.set()  # the blocking call returns on its own
    entry = await wait_history(client, hung)
    status = entry["status"]
    assert status["status_str"] == "error" and not status["completed"]
    messages = dict(status["messages"])
    assert "execution_error" not in messages
    # The blocked node finished; the interrupt stopped the prompt before its Output node ran.
    assert messages["execution_interrupted"]["node_id"] == "h2"
    assert messages["execution_interrupted"]["executed"] == ["h1"]
    assert entry["outputs"] == {}

    done = await wait_history(client, after)
    assert done["status"]["status_str"] == "success" and done["outputs"]["g2"]["value"] == [6]
