"""Node expansion (spec §3.3): while loops by recursive expansion, parallel subgraphs, cycles."""

from __future__ import annotations

import time
from collections import Counter

import pytest

from core.graph_builder import GraphBuilder
from execution.events import NodeExecuting
from tests.harness import Runner


def _while_graph(prefix: str, iterations: int) -> tuple[GraphBuilder, dict[str, object]]:
    """count = 0; items = []; do { count += 1; items.append(count) } while count < iterations"""
    graph = GraphBuilder(prefix=prefix)
    start = graph.node("StubInt", value=0)
    loop_open = graph.node("WhileLoopOpen", condition=True, initial_value0=start.out(0))
    count = graph.node("IntMath", a=loop_open.out(1), b=1, operation="add")
    items = graph.node("Accumulate", to_add=count.out(0), accumulation=loop_open.out(2))
    again = graph.node("IntCompare", a=count.out(0), b=iterations, comparison="lt")
    loop_close = graph.node(
        "WhileLoopClose",
        flow_control=loop_open.out(0),
        condition=again.out(0),
        initial_value0=count.out(0),
        initial_value1=items.out(0),
    )
    out_count = graph.node("Output", value=loop_close.out(0))
    out_items = graph.node("Output", value=loop_close.out(1))
    return graph, {"open": loop_open, "count": count, "close": loop_close, "out": out_count, "items": out_items}


@pytest.mark.parametrize("iterations", [1, 2, 3, 4])
def test_while_loop_runs_the_body_n_times(runner: Runner, calls: Counter[str], iterations: int) -> None:
    graph, n = _while_graph("loop", iterations)
    result = runner.run(graph)
    assert result.status == "success", result.error
    assert result.value(n["out"]) == iterations
    assert result.value(n["items"]) == {"accum": list(range(1, iterations + 1))}
    assert calls["IntMath"] == iterations
    assert calls["WhileLoopClose"] == iterations  # each expansion adds one copy of the close node
    # Expanded copies are shown under the original node they copy, and belong to the close node.
    executing = {event.node_id: event for event in result.of_type(NodeExecuting)}
    copies = [event for node_id, event in executing.items() if node_id.startswith(n["close"].id + ".")]
    # Each extra iteration copies the open, add, accumulate, compare and close nodes.
    assert len(copies) == 5 * (iterations - 1)
    for event in copies:
        assert event.real_node_id == n["close"].id
        assert event.display_node_id in {node.id for node in graph.nodes.values()}
        assert event.parent_node_id is not None


def test_while_loop_result_is_cached_with_its_parent(runner: Runner, calls: Counter[str]) -> None:
    graph, n = _while_graph("loopcache", 3)
    runner.run(graph)
    again = runner.run(graph)
    assert again.value(n["out"]) == 3
    assert calls["IntMath"] == (3 if runner.caches_results else 6)
    assert again.was_cached(n["close"]) == runner.caches_results


def test_parallel_sleep_expansion_runs_concurrently(runner: Runner) -> None:
    graph = GraphBuilder(prefix="psleep")
    parallel = graph.node("ParallelSleep", value=2, seconds=0.3)
    out = graph.node("Output", value=parallel.out(0))
    started = time.monotonic()
    result = runner.run(graph)
    elapsed = time.monotonic() - started
    assert result.value(out) == 6
    assert elapsed < 0.8, f"three 0.3 s sleeps took {elapsed:.2f} s: they did not overlap"
    sleeps = [node_id for node_id in result.result.ran if node_id.startswith(parallel.id + ".")]
    assert len(sleeps) == 4  # three Sleep + the VariadicSum


def test_cycle_created_by_expansion_is_an_error_on_the_expanding_node(runner: Runner) -> None:
    graph = GraphBuilder(prefix="dyncycle")
    cyclic = graph.node("DynamicCycle", value=1)
    graph.node("Output", value=cyclic.out(0))
    result = runner.run(graph)
    assert result.status == "error"
    assert result.error.exception_type == "graph.DependencyCycleError"
    assert result.error.node_id == cyclic.id
    assert "cycle" in result.error.exception_message


def test_expansion_with_duplicate_ids_fails_clearly(runner: Runner) -> None:
    class Duplicate:
        @classmethod
        def INPUT_TYPES(cls) -> dict:
            return {"required": {}}

        RETURN_TYPES = ("INT",)
        FUNCTION = "expand"

        def expand(self) -> dict:
            graph = GraphBuilder(prefix="")
            node = graph.node("StubInt", id="dup1", value=1)
            return {"result": (node.out(0),), "expand": graph.finalize()}

    from nodes.compat import V1Node

    runner.registry["Duplicate"] = V1Node(Duplicate, "Duplicate")
    graph = GraphBuilder(prefix="")
    graph.node("StubInt", id="dup1", value=5)
    parent = graph.node("Duplicate", id="parent")
    graph.node("Output", id="out", value=parent.out(0))
    result = runner.run(graph)
    assert result.status == "error"
    assert result.error.node_id == "parent"
    assert "dup1" in result.error.exception_message and "already exists" in result.error.exception_message
