"""Server figures against real `main.py` processes: `.venv/bin/python bench/server.py`.

- cold start: from spawning `main.py` to the first 200 of `/` (the page) and of `/object_info`
  (which waits until every node package is loaded; torch is imported by then);
- POST /prompt latency for a 2,000-node chain of trivial nodes (parse, limits, validation, queue);
- end to end for that graph: first run, then a fully cached re-run (POST to `executing: null` over
  the websocket);
- the default workflow (ComfyUI's txt2img graph, tiny checkpoint, 64 px, 2 steps): a fully cached
  re-run through the server, POST /prompt to `executing: null` on the websocket (target <= 10 ms);
- throughput: 200 small prompts (3 nodes, distinct values so each really runs) queued at once, from
  the first POST to the last `executing: null`.

Nodes come from the live-test pack (tests/server/live_server.py), so node work is nothing and the
figures are Loom's own cost. Prints a table; asserts nothing. `run(quick)` gives bench/run.py its rows.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
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


def default_workflow(checkpoint: str, size: int = 64, steps: int = 2) -> dict[str, Any]:
    """ComfyUI's default txt2img graph in API form (node ids as ComfyUI numbers them); the image
    size and step count are cut so that the first, uncached run is short -- a cached re-run does
    no node work at any size."""
    return {
        "3": {"class_type": "KSampler", "inputs": {"seed": 156680208700286, "steps": steps, "cfg": 8.0,
              "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0, "model": ["4", 0],
              "positive": ["6", 0], "negative": ["7", 0], "latent_image": ["5", 0]}},
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": checkpoint}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": size, "height": size, "batch_size": 1}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["4", 1],
              "text": "beautiful scenery nature glass bottle landscape, purple galaxy bottle"}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "text, watermark", "clip": ["4", 1]}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "ComfyUI", "images": ["8", 0]}},
    }  # fmt: skip


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


async def default_workflow_figures(
    base: Path, checkpoint: Path, repeats: int, user_dir: Path | None = None
) -> dict[str, Any]:
    """The default workflow on the tiny checkpoint: first run, then fully cached re-runs end to end
    (POST /prompt to `executing: null` on the websocket, execution_success checked). `user_dir`
    moves the user folder (which holds the queue's database) elsewhere, e.g. onto a tmpfs."""
    folder = base / "models" / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / "bench_sd15.safetensors").is_file():  # a copy: paths must resolve inside models/
        shutil.copy(checkpoint, folder / "bench_sd15.safetensors")
    server = LiveServer(base, *(["--user-dir", str(user_dir)] if user_dir else []))
    server.start()
    try:
        server.wait_ready("/object_info", timeout=180)
        graph = default_workflow("bench_sd15.safetensors")
        client_id = uuid.uuid4().hex
        async with aiohttp.ClientSession() as session, session.ws_connect(server.ws_url(client_id)) as ws:
            await ws.receive_json()
            first = await timed_run(server, ws, graph, client_id)
            cached = [(await timed_run(server, ws, graph, client_id))[1] for _ in range(repeats)]
        return {"first": first[1], "cached": cached}
    finally:
        server.stop()


def run(quick: bool) -> list[dict[str, Any]]:
    """bench/run.py's rows: cold start, the default workflow's cached re-run, the 2,000-node chain."""
    from bench._common import row, sd15_checkpoint

    cold_runs, repeats, prompts = (2, 5, 50) if quick else (5, 15, 200)
    with tempfile.TemporaryDirectory(prefix="loom-bench-") as tmp:
        base = Path(tmp)
        packs = write_test_pack(base / "packs")
        page, info = cold_start(base, packs, cold_runs)
        tiny = sd15_checkpoint(quick=True)
        default = asyncio.run(default_workflow_figures(base / "default", tiny, repeats))
        shm = Path("/dev/shm")
        if shm.is_dir():  # the same with the queue's database where fsync costs nothing
            with tempfile.TemporaryDirectory(prefix="loom-bench-", dir=shm) as user:
                default["tmpfs"] = asyncio.run(default_workflow_figures(base / "default", tiny, repeats, Path(user)))
        warm = asyncio.run(warm_figures(base, packs, 2000, repeats, prompts))
    submitted, total = warm["throughput"]
    med = statistics.median
    return [
        row("server: cold start to first page", med(page) * 1000, "ms", target="<= 1500 ms", limit=1500,
            note=f"spawn main.py to GET / answering 200; median of {cold_runs}"),
        row("server: cold start to ready to run", med(info) * 1000, "ms", target="<= 3000 ms plus model load",
            limit=3000, note="to GET /object_info answering 200 (node packs loaded, torch imported)"),
        row("server: default workflow, cached re-run", med(default["cached"]) * 1000, "ms", target="<= 10 ms",
            limit=10, note=f"POST /prompt to executing null; median of {repeats}; first run "
            f"{default['first']:.2f} s (tiny checkpoint, 64 px, 2 steps)"),
        *([row("server: default workflow, cached re-run, queue on tmpfs", med(default["tmpfs"]["cached"]) * 1000,
               "ms", note="diagnostic: the same with --user-dir on /dev/shm (the queue's SQLite file commits "
               "with synchronous=FULL, an fsync per state change)")] if "tmpfs" in default else []),
        row("server: 2,000-node chain, cached re-run", med([c[1] for c in warm["cached"]]) * 1000, "ms",
            note=f"end to end; POST alone {med(warm['post']) * 1000:.1f} ms; first run {warm['first'][1] * 1000:.0f} ms"),
        row("server: small prompts throughput", prompts / total, "prompts/s",
            note=f"{prompts} 3-node prompts queued at once ({submitted * 1000:.0f} ms to POST all)"),
    ]  # fmt: skip


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
