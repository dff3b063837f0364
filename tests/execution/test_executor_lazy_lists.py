"""Lazy inputs, list mapping (spec §4.5) and ExecutionBlocker (spec §3.2), under every policy."""

from __future__ import annotations

from collections import Counter

import pytest

from core.graph_builder import GraphBuilder
from execution.events import ExecutionBlocked
from tests.harness import Runner


def _lazy_graph(prefix: str, ratio: float) -> tuple[GraphBuilder, dict[str, object]]:
    graph = GraphBuilder(prefix=prefix)
    a = graph.node("Counter", value=graph.node("StubInt", value=10).out(0), label="branch a")
    b = graph.node("Counter", value=graph.node("StubInt", value=20).out(0), label="branch b")
    mix = graph.node("LazyMix", a=a.out(0), b=b.out(0), ratio=ratio)
    out = graph.node("Output", value=mix.out(0))
    return graph, {"a": a, "b": b, "mix": mix, "out": out}


@pytest.mark.parametrize(
    ("ratio", "expected", "branches"),
    [(0.0, 10, {"branch a"}), (1.0, 20, {"branch b"}), (0.5, 15.0, {"branch a", "branch b"})],
)
def test_lazy_inputs_evaluate_only_what_is_asked(
    runner: Runner, calls: Counter[str], ratio: float, expected: float, branches: set[str]
) -> None:
    graph, n = _lazy_graph("lazy", ratio)
    result = runner.run(graph)
    assert result.value(n["out"]) == expected
    assert {label for label in ("branch a", "branch b") if calls[label]} == branches
    assert result.did_run(n["a"]) == ("branch a" in branches)
    assert result.did_run(n["b"]) == ("branch b" in branches)
    # The mixer was entered once to ask, then again with the inputs it asked for.
    assert result.executing().count(n["mix"].id) == 2


def test_lazy_branch_evaluated_later_when_the_widget_changes(runner: Runner, calls: Counter[str]) -> None:
    graph, n = _lazy_graph("lazy2", 0.0)
    runner.run(graph)
    n["mix"].set_input("ratio", 1.0)
    result = runner.run(graph)
    assert result.value(n["out"]) == 20
    assert calls["branch b"] == 1
    assert calls["branch a"] == 1  # ran for the first prompt only: the second does not need it


def test_output_list_maps_consumers_per_element(runner: Runner, calls: Counter[str]) -> None:
    graph = GraphBuilder(prefix="list")
    items = graph.node("MakeList", count=4, start=1)
    tripled = graph.node("IntMath", a=items.out(0), b=3, operation="multiply")
    out = graph.node("Output", value=tripled.out(0))
    result = runner.run(graph)
    assert result.value(out) == [3, 6, 9, 12]  # ui lists of the 4 calls concatenate
    assert calls["IntMath"] == 4 and calls["Output"] == 4


def test_shorter_lists_repeat_their_last_element(runner: Runner) -> None:
    graph = GraphBuilder(prefix="longest")
    three = graph.node("MakeList", count=3, start=10)  # 10 11 12
    two = graph.node("MakeList", count=2, start=100)  # 100 101 (101 repeats)
    total = graph.node("IntMath", a=three.out(0), b=two.out(0), operation="add")
    out = graph.node("Output", value=total.out(0))
    assert runner.run(graph).value(out) == [110, 112, 113]


def test_input_is_list_gets_one_call_with_whole_lists(runner: Runner, calls: Counter[str]) -> None:
    graph = GraphBuilder(prefix="inlist")
    items = graph.node("MakeList", count=5, start=1)
    total = graph.node("ListSum", values=items.out(0), offset=100)
    out_sum = graph.node("Output", value=total.out(0))
    out_count = graph.node("Output", value=total.out(1))
    result = runner.run(graph)
    assert result.value(out_sum) == 115 and result.value(out_count) == 5
    assert calls["ListSum"] == 1


def test_empty_list_means_no_call(runner: Runner, calls: Counter[str]) -> None:
    graph = GraphBuilder(prefix="empty")
    items = graph.node("MakeList", count=0, start=1)
    doubled = graph.node("IntMath", a=items.out(0), b=2, operation="multiply")
    total = graph.node("ListSum", values=doubled.out(0))
    out = graph.node("Output", value=total.out(0))
    result = runner.run(graph)
    assert result.status == "success"
    assert calls["IntMath"] == 0
    assert result.value(out) == 0


def test_blocker_stops_consumers_and_output_nodes(runner: Runner, calls: Counter[str]) -> None:
    graph = GraphBuilder(prefix="block")
    value = graph.node("StubInt", value=1)
    blocked = graph.node("Blocker", value=value.out(0), block=True, message="")
    after = graph.node("Counter", value=blocked.out(0), label="after block")
    out = graph.node("Output", value=after.out(0))
    free = graph.node("Output", value=value.out(0))
    result = runner.run(graph)
    assert result.status == "success"
    assert calls["after block"] == 0
    assert out.id not in result.outputs  # an output fed a blocker simply does not run
    assert result.value(free) == 1
    assert not result.of_type(ExecutionBlocked)  # no message: blocks silently


def test_blocker_message_is_reported_once(runner: Runner) -> None:
    graph = GraphBuilder(prefix="blockmsg")
    blocked = graph.node("Blocker", value=graph.node("StubInt", value=1).out(0), block=True, message="not today")
    first = graph.node("Counter", value=blocked.out(0), label="c1")
    graph.node("Output", value=first.out(0))
    graph.node("Output", value=blocked.out(0))
    result = runner.run(graph)
    reports = result.of_type(ExecutionBlocked)
    assert len(reports) == 1
    kind, data = reports[0].to_message()
    assert kind == "execution_error" and data["exception_type"] == "ExecutionBlocked"
    assert data["exception_message"] == "Execution Blocked: not today"


def test_blocker_blocks_only_affected_list_elements(runner: Runner, calls: Counter[str]) -> None:
    graph = GraphBuilder(prefix="blocklist")
    items = graph.node("MakeList", count=4, start=0)
    blocked = graph.node("Blocker", value=items.out(0), block=True, message="", only_value=2)
    plus = graph.node("IntMath", a=blocked.out(0), b=10, operation="add")
    out = graph.node("Output", value=plus.out(0))
    result = runner.run(graph)
    assert result.value(out) == [10, 11, 13]
    assert calls["IntMath"] == 3
