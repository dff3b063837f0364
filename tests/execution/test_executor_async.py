"""Async nodes (spec §3.4): independent ones overlap, errors propagate, progress stays per node."""

from __future__ import annotations

import time
from collections import Counter

from core.graph_builder import GraphBuilder
from execution.events import NodeProgress
from tests.harness import Runner
from tests.testing_nodes import tracking


def test_independent_async_nodes_overlap(runner: Runner) -> None:
    graph = GraphBuilder(prefix="par")
    sleeps = [graph.node("Sleep", value=index, seconds=0.3) for index in range(3)]
    outs = [graph.node("Output", value=node.out(0)) for node in sleeps]
    started = time.monotonic()
    result = runner.run(graph)
    elapsed = time.monotonic() - started
    assert [result.value(out) for out in outs] == [0, 1, 2]
    # A loose bound: sequential would be >= 0.9 s.
    assert elapsed < 0.8, f"3 x 0.3 s sleeps took {elapsed:.2f} s"
    intervals = {node_id: (start, end) for node_id, start, end in tracking.SLEEPS}
    latest_start = max(start for start, _ in intervals.values())
    earliest_end = min(end for _, end in intervals.values())
    assert latest_start < earliest_end  # all three were sleeping at the same moment


def test_sync_nodes_keep_running_while_async_nodes_wait(runner: Runner, calls: Counter[str]) -> None:
    graph = GraphBuilder(prefix="mixed")
    slow = graph.node("Sleep", value=1, seconds=0.3)
    quick = graph.node("Counter", value=graph.node("StubInt", value=2).out(0), label="quick")
    both = graph.node("VariadicSum", a=slow.out(0), b=quick.out(0))
    out = graph.node("Output", value=both.out(0))
    result = runner.run(graph)
    assert result.value(out) == 3
    ran = result.result.ran
    # The Sleep started first (async nodes are preferred) but finished after the sync branch.
    assert result.executing().index(slow.id) < result.executing().index(quick.id)
    assert ran.index(quick.id) < ran.index(slow.id) < ran.index(both.id)


def test_async_node_downstream_of_async_node(runner: Runner) -> None:
    graph = GraphBuilder(prefix="chain")
    first = graph.node("Sleep", value=5, seconds=0.05)
    second = graph.node("Sleep", value=first.out(0), seconds=0.05)
    out = graph.node("Output", value=second.out(0))
    result = runner.run(graph)
    assert result.value(out) == 5
    assert result.result.ran.index(first.id) < result.result.ran.index(second.id)


def test_async_error_fails_the_prompt_and_cancels_the_rest(runner: Runner, calls: Counter[str]) -> None:
    graph = GraphBuilder(prefix="aerr")
    failing = graph.node("AsyncFail", message="async trouble")
    graph.node("Output", value=failing.out(0))
    slow = graph.node("Sleep", value=1, seconds=2.0)
    graph.node("Output", value=slow.out(0))
    started = time.monotonic()
    result = runner.run(graph)
    assert time.monotonic() - started < 1.5  # the 2 s sleep was cancelled, not awaited
    assert result.status == "error"
    assert result.error.node_id == failing.id
    assert result.error.exception_type == "RuntimeError"
    assert result.error.exception_message == "async trouble"
    assert calls["Sleep"] == 0


def test_async_progress_is_reported_for_the_right_node(runner: Runner) -> None:
    graph = GraphBuilder(prefix="aprog")
    sleeps = [graph.node("Sleep", value=index, seconds=0.06) for index in range(2)]
    for node in sleeps:
        graph.node("Output", value=node.out(0))
    result = runner.run(graph)
    progress = result.of_type(NodeProgress)
    for node in sleeps:
        mine = [(event.value, event.max) for event in progress if event.node_id == node.id]
        assert mine == [(1, 3), (2, 3), (3, 3)]
