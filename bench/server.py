"""Server figures against real `main.py` processes: `.venv/bin/python bench/server.py`.

- cold start: from spawning `main.py` to the first 200 of `/` (the page) and of `/object_info`
  (which waits until every node package is loaded; torch is imported by then);
- POST /prompt latency for a 2,000-node chain of trivial nodes (parse, limits, validation, queue);
- end to end for that graph: first run, then a fully cached re-run (POST to `executing: null` over
  the websocket);
- throughput: 200 small prompts (3 nodes, distinct values so each really runs) queued at once, from
  the first POST to the last `executing: null`.

Nodes come from the live-test pack (tests/server/live_server.py), so node work is nothing and the
figures are Loom's own cost. Prints a table; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp

from tests.server.live_server import LiveServer, follow, write_test_pack


def chain(length: int, start: int = 0) -> dict[str, Any]:
    prompt: dict[str, Any] = {"0": {"class_type": "LiveConst", "inputs": {"value": start}}}
    for i in range(1, length - 1):
        prompt[str(i)] = {"class_type": "LiveAdd", "inputs": {"a": [str(i - 1), 0], "b": 1}}
    prompt[str(length - 1)] = {"class_type": "LiveSink", "inputs": {"value": [str(length - 2), 0]}}
    return prompt


def small(value: int) -> dict[str, Any]:
    return {
        "1": {"class_type": "LiveConst", "inputs": {"value": value}},
        "2": {"class_type": "LiveAdd", "inputs": {"a": ["1", 0], "b": 1}},
        "3": {"class_type": "LiveSink", "inputs": {"value": ["2", 0]}},
    }


def cold_start(base: Path, packs: Path, runs: int) -> tuple[list[float], list[float]]:
    page, info = [], []
    for run in range(runs):
        server = LiveServer(base / f"cold{run}", "--custom-nodes-dir", str(packs))
        started = time.perf_counter()
        server.start()
        try:
            server.wait_ready("/", timeout=180)
            page.append(time.perf_counter() - started)
            server.wait_ready("/object_info", timeout=180)
            info.append(time.perf_counter() - started)
        finally:
            server.stop()
    return page, info


async def timed_run(server: LiveServer, ws: Any, prompt: dict[str, Any], client_id: str) -> tuple[float, float]:
    """(POST latency, POST -> executing null) in seconds."""
    started = time.perf_counter()
    prompt_id = server.queue_prompt(prompt, client_id=client_id)
    posted = time.perf_counter() - started
    messages = await follow(ws, prompt_id, timeout=600)
    assert any(m["type"] == "execution_success" for m in messages), messages[-2:]
    return posted, time.perf_counter() - started


async def post_latency(server: LiveServer, graph: dict[str, Any], repeats: int) -> list[float]:
    """POST /prompt alone, queue paused so the worker does not compete for the CPU."""
    server.request("POST", "/queue", {"pause": True})
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        server.queue_prompt(graph)
        times.append(time.perf_counter() - started)
    server.request("POST", "/queue", {"clear": True})
    server.request("POST", "/queue", {"resume": True})
    return times


async def throughput(server: LiveServer, ws: Any, count: int, client_id: str) -> tuple[float, float]:
    """(seconds to POST all, seconds from the first POST to the last one done)."""
    base = 1000 + int(time.time()) % 100_000  # values not run before: nothing is cached
    started = time.perf_counter()
    ids = [server.queue_prompt(small(base + i), client_id=client_id) for i in range(count)]
    submitted = time.perf_counter() - started
    waiting = set(ids)
    while waiting:
        msg = await ws.receive(timeout=600)
        if msg.type != aiohttp.WSMsgType.TEXT:
            continue
        data = msg.json()
        if data["type"] == "executing" and data["data"].get("node") is None:
            waiting.discard(data["data"].get("prompt_id"))
    return submitted, time.perf_counter() - started


async def warm_figures(base: Path, packs: Path, nodes: int, repeats: int, count: int) -> dict[str, Any]:
    server = LiveServer(base / "warm", "--custom-nodes-dir", str(packs), "--max-nodes", str(max(nodes, 10_000)))
    server.start()
    try:
        server.wait_ready("/object_info", timeout=180)
        graph = chain(nodes)
        figures: dict[str, Any] = {"post": await post_latency(server, graph, repeats)}
        client_id = uuid.uuid4().hex
        async with aiohttp.ClientSession() as session, session.ws_connect(server.ws_url(client_id)) as ws:
            await ws.receive_json()
            first = await timed_run(server, ws, graph, client_id)
            cached = [await timed_run(server, ws, graph, client_id) for _ in range(repeats)]
            figures.update(first=first, cached=cached)
            figures["throughput"] = await throughput(server, ws, count, client_id)
        return figures
    finally:
        server.stop()


def ms(values: list[float]) -> str:
    return f"{statistics.median(values) * 1000:9.1f} ms (best {min(values) * 1000:.1f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, default=2000)
    parser.add_argument("--prompts", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--cold-runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="loom-bench-") as tmp:
        base = Path(tmp)
        packs = write_test_pack(base / "packs")
        page, info = cold_start(base, packs, args.cold_runs)
        warm = asyncio.run(warm_figures(base, packs, args.nodes, args.repeat, args.prompts))
    submitted, total = warm["throughput"]
    rows = [
        ("cold start to first page (GET /)", ms(page)),
        ("cold start to first /object_info", ms(info)),
        (f"POST /prompt, {args.nodes}-node chain", ms(warm["post"])),
        (f"{args.nodes}-node chain, first run (POST to executing null)", ms([warm["first"][1]])),
        (f"{args.nodes}-node chain, fully cached re-run (end to end)", ms([c[1] for c in warm["cached"]])),
        (f"{args.prompts} small prompts: all POSTed", f"{submitted * 1000:9.1f} ms"),
        (
            f"{args.prompts} small prompts: first POST to last done",
            f"{total * 1000:9.1f} ms ({args.prompts / total:.0f} prompts/s)",
        ),
    ]
    width = max(len(name) for name, _ in rows)
    print(f"{'measure':<{width}}  value (median of {args.repeat}; cold start of {args.cold_runs})")
    print("-" * (width + 40))
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


if __name__ == "__main__":
    main()
