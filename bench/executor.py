"""Executor overhead on graphs of trivial nodes: `.venv/bin/python bench/executor.py`.

For each graph: validation time, then execution time for a first run (empty cache), a fully
cached re-run, and a re-run after changing one constant at a leaf -- each as microseconds per node
of the graph (so linear growth shows as a flat column). The node work itself is nothing (an
addition), so the figures are the engine's own cost. Median of --repeat runs. Events go to a no-op
sink, so building them is included, as on a server.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.graph_builder import GraphBuilder
from execution.cache import ClassicCache
from execution.executor import Executor
from execution.validate import validate_prompt_async
from nodes.compat import v1_definitions

TARGET_US_PER_NODE = 100.0
TARGET_CACHED_MS_2000 = 50.0


class Const:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"value": ("INT", {"default": 0})}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "run"

    def run(self, value: int) -> tuple[int]:
        return (value,)


class Add:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"a": ("INT", {"default": 0}), "b": ("INT", {"default": 0})}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "run"

    def run(self, a: int, b: int) -> tuple[int]:
        return (a + b,)


class Sink:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"value": ("INT", {})}}

    RETURN_TYPES = ()
    FUNCTION = "run"
    OUTPUT_NODE = True

    def run(self, value: int) -> dict[str, Any]:
        return {"ui": {"value": [value]}}


REGISTRY = v1_definitions({"Const": Const, "Add": Add, "Sink": Sink})


def wide(leaf_value: int = 0) -> dict[str, Any]:
    """1,000 constants, each feeding its own output node: 2,000 nodes."""
    graph = GraphBuilder(prefix="w")
    for index in range(1_000):
        value = leaf_value if index == 0 else index
        graph.node("Sink", value=graph.node("Const", value=value).out(0))
    return graph.finalize()


def tree(leaf_value: int = 0) -> dict[str, Any]:
    """A binary tree of Add nodes over 1,024 leaves, plus its output: 2,048 nodes."""
    graph = GraphBuilder(prefix="t")
    level = [graph.node("Const", value=leaf_value if index == 0 else index) for index in range(1_024)]
    while len(level) > 1:
        level = [
            graph.node("Add", a=left.out(0), b=right.out(0))
            for left, right in zip(level[::2], level[1::2], strict=True)
        ]
    graph.node("Sink", value=level[0].out(0))
    return graph.finalize()


def chain(length: int) -> Callable[[int], dict[str, Any]]:
    def build(leaf_value: int = 0) -> dict[str, Any]:
        graph = GraphBuilder(prefix="c")
        node = graph.node("Const", value=leaf_value)
        for _ in range(length - 2):
            node = graph.node("Add", a=node.out(0), b=1)
        graph.node("Sink", value=node.out(0))
        return graph.finalize()

    return build


GRAPHS: dict[str, Callable[[int], dict[str, Any]]] = {
    "wide 2,000": wide,
    "tree 2,047": tree,
    "chain 1,000": chain(1_000),
    "chain 10,000": chain(10_000),
}


def _ignore(event: object) -> None:
    return None


async def _timed(executor: Executor, prompt: dict[str, Any], outputs: list[str], tag: str) -> float:
    started = time.perf_counter()
    result = await executor.execute_async(prompt, tag, outputs, events=_ignore)
    elapsed = time.perf_counter() - started
    if not result.success:
        raise SystemExit(f"benchmark graph failed: {result.error}")
    return elapsed


async def measure(build: Callable[[int], dict[str, Any]], repeat: int) -> dict[str, float]:
    """Median seconds of validation, first run, cached re-run and one-leaf re-run over `repeat` runs
    (after one discarded warm-up run: first calls pay for imports and caches of their own)."""
    times: dict[str, list[float]] = {"validate": [], "first": [], "cached": [], "leaf": []}
    base, changed = build(0), build(12345)
    for index in range(repeat + 1):
        if index == 1:
            times = {key: [] for key in times}
        started = time.perf_counter()
        validation = await validate_prompt_async(base, REGISTRY)
        times["validate"].append(time.perf_counter() - started)
        changed_validation = await validate_prompt_async(changed, REGISTRY)
        executor = Executor(REGISTRY, ClassicCache())
        times["first"].append(await _timed(executor, validation.prompt, validation.outputs, "first"))
        times["cached"].append(await _timed(executor, validation.prompt, validation.outputs, "again"))
        times["leaf"].append(await _timed(executor, changed_validation.prompt, changed_validation.outputs, "leaf"))
    out = {key: statistics.median(values) for key, values in times.items()}
    out["nodes"] = len(base)
    return out


def run(quick: bool) -> list[dict[str, Any]]:
    """bench/run.py's rows: worst microseconds per node, the cached 2,000-node re-run, linearity."""
    from bench._common import row

    repeat = 3 if quick else 7
    rows = {name: asyncio.run(measure(build, repeat)) for name, build in GRAPHS.items()}
    per_node = {
        (name, key): r[key] * 1e6 / r["nodes"] for name, r in rows.items() for key in ("first", "cached", "leaf")
    }
    (graph, kind), worst = max(per_node.items(), key=lambda item: item[1])
    ratio = (rows["chain 10,000"]["first"] / 10_000) / (rows["chain 1,000"]["first"] / 1_000)
    validate = max(r["validate"] * 1e6 / r["nodes"] for r in rows.values())
    return [
        row("executor: worst time per trivial node", worst, "us", target=f"<= {TARGET_US_PER_NODE:.0f} us",
            limit=TARGET_US_PER_NODE, note=f"{graph}, {kind} run; median of {repeat}; validation {validate:.1f} us/node"),
        row("executor: fully cached re-run, 2,000 nodes", rows["wide 2,000"]["cached"] * 1000, "ms",
            target=f"<= {TARGET_CACHED_MS_2000:.0f} ms", limit=TARGET_CACHED_MS_2000,
            note=f"wide graph, in process; tree 2,047: {rows['tree 2,047']['cached'] * 1000:.1f} ms"),
        row("executor: per-node cost, 10,000 vs 1,000 chain", ratio, "x", target="linear (<= 1.5x)", limit=1.5,
            note="first runs, per node"),
    ]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure; the median is shown")
    parser.add_argument(
        "--gc-threshold",
        type=int,
        metavar="N",
        help="gc.set_threshold(N, 20, 20) first: how much of the growth is the GC",
    )
    args = parser.parse_args(argv)
    if args.gc_threshold:
        gc.set_threshold(args.gc_threshold, 20, 20)
    print(
        f"executor overhead, microseconds per node (median of {args.repeat}); target <= {TARGET_US_PER_NODE:.0f} us/node"
    )
    header = f"{'graph':<14}{'nodes':>7}{'validate':>10}{'first':>9}{'cached':>9}{'1 leaf':>9}   cached total"
    print(header)
    print("-" * len(header))
    rows = {}
    for name, build in GRAPHS.items():
        row = asyncio.run(measure(build, args.repeat))
        rows[name] = row
        nodes = row["nodes"]
        per = {key: row[key] * 1e6 / nodes for key in ("validate", "first", "cached", "leaf")}
        cached_ms = row["cached"] * 1000
        print(
            f"{name:<14}{nodes:>7.0f}{per['validate']:>10.1f}{per['first']:>9.1f}{per['cached']:>9.1f}"
            f"{per['leaf']:>9.1f}   {cached_ms:8.1f} ms"
        )
    print()
    worst = max(row[key] * 1e6 / row["nodes"] for row in rows.values() for key in ("first", "cached", "leaf"))
    wide_cached = rows["wide 2,000"]["cached"] * 1000
    ratio = (rows["chain 10,000"]["first"] / 10_000) / (rows["chain 1,000"]["first"] / 1_000)
    print(f"target <= {TARGET_US_PER_NODE:.0f} us/node (execution):    worst {worst:.1f} us/node")
    print(f"target cached re-run of 2,000 nodes <= {TARGET_CACHED_MS_2000:.0f} ms:    {wide_cached:.1f} ms (wide)")
    print(f"target linear growth (chain 10,000 vs 1,000, per node):    x{ratio:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
