"""Big graphs: a 10,000-node chain (no recursion anywhere) and a 2,000-node wide graph."""

from __future__ import annotations

import sys

import pytest

from core.graph_builder import GraphBuilder
from tests.harness import Runner


@pytest.mark.parametrize("policy", ["classic", "none"])
def test_chain_of_10000_nodes(policy: str) -> None:
    runner = Runner(policy)
    graph = GraphBuilder(prefix="c")
    node = graph.node("StubInt", value=0)
    for _ in range(9_998):
        node = graph.node("IntMath", a=node.out(0), b=1, operation="add")
    out = graph.node("Output", value=node.out(0))
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(200)  # anything recursive on graph depth would blow up
    try:
        first = runner.run(graph)
        second = runner.run(graph)
    finally:
        sys.setrecursionlimit(limit)
    assert first.status == "success", first.error
    assert first.value(out) == 9_998
    assert len(first.result.ran) == 10_000
    assert second.value(out) == 9_998
    assert len(second.result.cached) == (10_000 if policy == "classic" else 0)


def test_wide_graph_of_2000_nodes() -> None:
    runner = Runner()
    graph = GraphBuilder(prefix="w")
    outs = [graph.node("Output", value=graph.node("StubInt", value=index).out(0)) for index in range(1_000)]
    result = runner.run(graph)
    assert result.status == "success"
    assert len(result.result.ran) == 2_000
    assert [result.value(out) for out in outs] == list(range(1_000))
