"""Load: many websocket clients connected to a live server while a thousand prompts (cheap
plain-Python test nodes, no torch) are queued and run.

What "no event lost" means follows ComfyUI's protocol (server/ws.py): execution events go only to
the client_id that submitted the prompt, `status` broadcasts go to every client. So each client
must receive, for every prompt it submitted, exactly ComfyUI's sequence -- execution_start,
execution_cached, executing 1, executing 2, executed 2 (with the right value), execution_success,
executing null -- in that order, and nothing of anybody else's prompts; and every client's last
`status` must say the queue is empty (the broadcasts reached everyone to the end). No client may
be dropped for falling behind. `progress_state` is a coalesced snapshot by design and is not
counted. Meanwhile a thread polls GET /queue and records its latency (p50/p99 printed).

Full (LOOM_SOAK_FULL=1): 50 clients x 20 prompts = 1,000. Reduced: 10 x 20 = 200."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.server.live_server import LiveServer, write_test_pack
from tests.soak.soak_utils import FULL, percentile, report, sized

pytestmark = [pytest.mark.slow, pytest.mark.asyncio, pytest.mark.timeout(1800 if FULL else 300)]

CLIENTS = sized(50, 10)
PER_CLIENT = 20
CORE = ("execution_start", "execution_cached", "executing", "executed", "execution_success")


def prompt_for(value: int) -> dict[str, Any]:
    return {
        "1": {"class_type": "LiveConst", "inputs": {"value": value}},
        "2": {"class_type": "LiveSink", "inputs": {"value": ["1", 0]}},
    }


class QueuePoller(threading.Thread):
    """GET /queue every 20 ms (bounded: at most 10,000 requests), recording seconds per answer."""

    def __init__(self, server: LiveServer) -> None:
        super().__init__(daemon=True)
        self.server = server
        self.latencies: list[float] = []
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set() and len(self.latencies) < 10_000:
            began = time.perf_counter()
            status, _ = self.server.request("GET", "/queue", timeout=30)
            self.latencies.append(time.perf_counter() - began)
            assert status == 200
            self.halt.wait(0.02)


async def listen(ws: aiohttp.ClientWebSocketResponse, expected: int, log: list[dict[str, Any]]) -> None:
    """Collect text messages until `expected` prompts have ended (executing null)."""
    ended = 0
    while ended < expected:
        msg = await ws.receive(timeout=300)
        if msg.type != aiohttp.WSMsgType.TEXT:
            raise AssertionError(f"websocket ended early: {msg.type} after {ended} prompts")
        message = json.loads(msg.data)
        log.append(message)
        if message["type"] == "executing" and message["data"].get("node") is None:
            ended += 1


async def test_many_clients_lose_no_event_while_a_thousand_prompts_run(tmp_path: Path) -> None:
    pack = write_test_pack(tmp_path / "packs")
    with LiveServer(tmp_path / "loom", "--custom-nodes-dir", str(pack)).start() as server:
        server.wait_ready("/object_info/LiveSink")
        names = [f"client{i}" for i in range(CLIENTS)]
        logs: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
        submitted: dict[str, dict[str, int]] = {name: {} for name in names}
        poller = QueuePoller(server)
        async with aiohttp.ClientSession() as session:
            sockets = {name: await session.ws_connect(server.ws_url(name), max_msg_size=0) for name in names}
            for ws in sockets.values():
                assert (await ws.receive_json(timeout=10))["type"] == "status"
            listeners = [asyncio.create_task(listen(sockets[n], PER_CLIENT, logs[n])) for n in names]
            poller.start()
            began = time.perf_counter()
            gate = asyncio.Semaphore(16)

            async def submit(name: str, value: int) -> None:
                async with (
                    gate,
                    session.post(
                        f"{server.url}/prompt", json={"prompt": prompt_for(value), "client_id": name}
                    ) as response,
                ):
                    body = await response.json()
                    assert response.status == 200, body
                    submitted[name][body["prompt_id"]] = value

            # Interleaved: client0's 1st, client1's 1st, ... so every client waits on the others.
            await asyncio.gather(*(submit(names[i % CLIENTS], i) for i in range(CLIENTS * PER_CLIENT)))
            queued = time.perf_counter() - began
            await asyncio.wait_for(asyncio.gather(*listeners), timeout=600)
            elapsed = time.perf_counter() - began
            poller.halt.set()
            poller.join(30)
            # Status broadcasts are sent after each prompt ends; let the last one land everywhere.
            await asyncio.sleep(0.5)
            for name, ws in sockets.items():
                while True:
                    try:
                        msg = await ws.receive(timeout=0.05)
                    except TimeoutError:
                        break
                    if msg.type == aiohttp.WSMsgType.TEXT:
                        logs[name].append(json.loads(msg.data))
                assert not ws.closed, f"{name} was disconnected"
                await ws.close()

        for name in names:
            check_client(name, logs[name], submitted[name])
        p50, p99 = percentile(poller.latencies, 50) * 1000, percentile(poller.latencies, 99) * 1000
        total = CLIENTS * PER_CLIENT
        report(
            f"ws load: {CLIENTS} clients, {total} prompts queued in {queued:.1f} s and run in {elapsed:.1f} s "
            f"({total / elapsed:.0f} prompts/s); GET /queue x{len(poller.latencies)}: p50 {p50:.1f} ms, "
            f"p99 {p99:.1f} ms, max {max(poller.latencies) * 1000:.1f} ms"
        )
        assert p99 < (2000 if FULL else 5000), f"GET /queue p99 {p99:.0f} ms"
        assert server.stop() == 0


def check_client(name: str, log: list[dict[str, Any]], mine: dict[str, int]) -> None:
    per_prompt: dict[str, list[tuple[str, Any]]] = {}
    for message in log:
        kind, data = message["type"], message["data"]
        if kind == "status" or kind == "progress_state":
            continue
        prompt_id = data.get("prompt_id")
        assert prompt_id in mine, f"{name} got {kind} of another client's prompt {prompt_id}"
        detail = data.get("node") if kind in ("executing", "executed") else None
        if kind == "executed":
            detail = (data["node"], data["output"]["value"])
        per_prompt.setdefault(prompt_id, []).append((kind, detail))
    assert set(per_prompt) == set(mine), f"{name}: events missing for {set(mine) - set(per_prompt)}"
    for prompt_id, events in per_prompt.items():
        value = mine[prompt_id]
        expected = [("execution_start", None), ("execution_cached", None), ("executing", "1"), ("executing", "2"),
                    ("executed", ("2", [value])), ("execution_success", None), ("executing", None)]  # fmt: skip
        assert events == expected, f"{name}, prompt {prompt_id}: {events}"
    statuses = [m["data"]["status"]["exec_info"]["queue_remaining"] for m in log if m["type"] == "status"]
    assert statuses and statuses[-1] == 0, f"{name}: last status {statuses[-1:]}"
