"""Core executor behaviour under every cache policy: order, caching, ids, inputs, outputs."""

from __future__ import annotations

from collections import Counter

import pytest

from core.graph_builder import GraphBuilder
from execution.dynamic import DynamicPrompt
from tests.harness import Runner
from tests.testing_nodes import tracking
from tests.testing_nodes.logic import Versioned


def _sum_graph(prefix: str, a: int = 3, b: int = 4) -> tuple[GraphBuilder, dict[str, object]]:
    graph = GraphBuilder(prefix=prefix)
    left = graph.node("StubInt", value=a)
    right = graph.node("StubInt", value=b)
    total = graph.node("IntMath", a=left.out(0), b=right.out(0), operation="add")
    doubled = graph.node("IntMath", a=total.out(0), b=2, operation="multiply")
    out = graph.node("Output", value=doubled.out(0))
    return graph, {"left": left, "right": right, "total": total, "doubled": doubled, "out": out}


def test_runs_producers_before_consumers(runner: Runner) -> None:
    graph, n = _sum_graph("order")
    result = runner.run(graph)
    assert result.status == "success"
    assert result.value(n["out"]) == 14
    ran = result.result.ran
    assert set(ran) == {node.id for node in n.values()}
    for consumer, producers in [("total", ["left", "right"]), ("doubled", ["total"]), ("out", ["doubled"])]:
        for producer in producers:
            assert ran.index(n[producer].id) < ran.index(n[consumer].id)


def test_second_run_is_fully_cached(runner: Runner) -> None:
    graph, n = _sum_graph("full")
    runner.run(graph)
    again = runner.run(graph)
    assert again.value(n["out"]) == 14  # cached output nodes still report their ui
    for node in n.values():
        assert again.was_cached(node) == runner.caches_results
        assert again.did_run(node) != runner.caches_results


def test_changing_one_widget_reruns_only_downstream(runner: Runner) -> None:
    graph, n = _sum_graph("partial")
    runner.run(graph)
    changed, m = _sum_graph("partial", b=10)
    result = runner.run(changed)
    assert result.value(m["out"]) == 26
    assert result.was_cached(m["left"]) == runner.caches_results
    for name in ("right", "total", "doubled", "out"):
        assert result.did_run(m[name]), name


def test_renumbered_graph_hits_the_cache(runner: Runner) -> None:
    graph, _ = _sum_graph("first")
    runner.run(graph)
    renumbered, m = _sum_graph("other-ids-")
    result = runner.run(renumbered)
    assert result.value(m["out"]) == 14
    assert all(result.was_cached(node) == runner.caches_results for node in m.values())


def test_output_nodes_run_as_soon_as_they_can(runner: Runner) -> None:
    graph = GraphBuilder(prefix="pref")
    quick = graph.node("StubInt", value=1)
    quick_out = graph.node("Output", value=quick.out(0))
    slow = graph.node("StubInt", value=2)
    middle = graph.node("IntMath", a=slow.out(0), b=1, operation="add")
    slow_out = graph.node("Output", value=middle.out(0))
    ran = runner.run(graph).result.ran
    assert ran.index(quick_out.id) < ran.index(slow.id)
    assert ran.index(slow.id) < ran.index(middle.id) < ran.index(slow_out.id)


def test_partial_execution_runs_only_the_targets_ancestors(runner: Runner, calls: Counter[str]) -> None:
    graph = GraphBuilder(prefix="targets")
    a = graph.node("Counter", value=1, label="a")
    b = graph.node("Counter", value=2, label="b")
    out_a = graph.node("Output", value=a.out(0))
    out_b = graph.node("Output", value=b.out(0))
    result = runner.run(graph, targets=[out_a])
    assert result.did_run(out_a) and result.did_run(a)
    assert not result.did_run(out_b) and not result.did_run(b)
    assert calls == Counter({"a": 1, "Output": 1})
    assert set(result.outputs) == {out_a.id}


def test_identical_nodes_share_one_result_unless_not_idempotent(runner: Runner, calls: Counter[str]) -> None:
    graph = GraphBuilder(prefix="same")
    twins = [graph.node("Counter", value=5, label="twin") for _ in range(2)]
    uniques = [graph.node("CounterUnique", value=5, label="unique") for _ in range(2)]
    for node in twins + uniques:
        graph.node("Output", value=node.out(0))
    result = runner.run(graph)
    assert result.status == "success"
    assert calls["twin"] == (1 if runner.caches_results else 2)
    assert calls["unique"] == 2


def test_node_version_is_part_of_the_key(runner: Runner, calls: Counter[str]) -> None:
    from nodes.compat import V1Node

    graph = GraphBuilder(prefix="ver")
    node = graph.node("Versioned", value=1)
    graph.node("Output", value=node.out(0))
    runner.run(graph)
    runner.run(graph)
    assert calls["Versioned"] == (1 if runner.caches_results else 2)

    class VersionedV2(Versioned):
        LOOM_VERSION = "2"

    runner.registry["Versioned"] = V1Node(VersionedV2, "Versioned")
    result = runner.run(graph)
    assert result.did_run(node)
    assert calls["Versioned"] == (2 if runner.caches_results else 3)


def test_undeclared_linked_inputs_are_passed_and_constants_dropped(runner: Runner) -> None:
    graph = GraphBuilder(prefix="var")
    one = graph.node("StubInt", value=1)
    two = graph.node("StubInt", value=20)
    total = graph.node("VariadicSum", first=one.out(0), second=two.out(0), ignored=300)
    out = graph.node("Output", value=total.out(0))
    assert runner.run(graph).value(out) == 21


def test_hidden_inputs_are_injected(runner: Runner) -> None:
    graph = GraphBuilder(prefix="hid")
    value = graph.node("StubInt", value=7)
    report = graph.node("HiddenInputs", linked=value.out(0))
    result = runner.run(graph, extra_data={"extra_pnginfo": {"workflow": {"id": "w1"}}})
    ui = result.ui(report)
    assert ui["unique_id"] == [report.id]
    assert ui["prompt_ids"] == sorted([value.id, report.id])
    assert ui["dynprompt"] == [DynamicPrompt.__name__]
    assert ui["extra_pnginfo"] == [{"workflow": {"id": "w1"}}]
    assert ui["mystery"] == [None]  # unknown hidden kinds receive None
    assert ui["linked"] == [7]  # a hidden input declared with a tuple is an optional linkable input


def test_absent_optional_hidden_link_is_not_passed(runner: Runner) -> None:
    graph = GraphBuilder(prefix="hid2")
    report = graph.node("HiddenInputs")
    assert runner.run(graph).ui(report)["linked"] == ["absent"]


def test_raw_link_input_receives_the_link_itself(runner: Runner) -> None:
    graph = GraphBuilder(prefix="raw")
    value = graph.node("StubInt", value=7)
    echo = graph.node("RawLinkEcho", link=value.out(0))
    result = runner.run(graph)
    assert result.ui(echo)["link"] == [[value.id, 0]]
    assert result.did_run(value)  # the producer still runs first, as in ComfyUI


@pytest.mark.parametrize("mode", ["constant", "nan", "raise", "changing"])
def test_is_changed_decides_reuse(runner: Runner, calls: Counter[str], mode: str) -> None:
    graph = GraphBuilder(prefix="isc")
    upstream = graph.node("StubInt", value=3)
    checked = graph.node("CustomIsChanged", value=upstream.out(0), mode=mode)
    after = graph.node("Counter", value=checked.out(0), label="after")
    graph.node("Output", value=after.out(0))
    runner.run(graph)
    second = runner.run(graph)
    reused = runner.caches_results and mode == "constant"
    assert second.was_cached(checked) == reused
    assert second.was_cached(after) == reused  # the key of everything downstream changes too
    assert second.was_cached(upstream) == runner.caches_results
    assert calls["CustomIsChanged"] == (1 if reused else 2)
    # IS_CHANGED runs once per prompt with constants only: the linked value arrives as None.
    seen = list(tracking.FINGERPRINTS)
    assert seen == [{"value": None, "mode": mode}] * 2


def test_is_changed_runs_for_nodes_no_output_needs(runner: Runner) -> None:
    graph = GraphBuilder(prefix="isc2")
    graph.node("CustomIsChanged", value=1, mode="constant")
    graph.node("Output", value=2)
    runner.run(graph)
    assert tracking.FINGERPRINTS == [{"value": 1, "mode": "constant"}]


def test_async_is_changed(runner: Runner, calls: Counter[str]) -> None:
    graph = GraphBuilder(prefix="aisc")
    node = graph.node("AsyncIsChanged", value=1, token="a")
    graph.node("Output", value=node.out(0))
    runner.run(graph)
    runner.run(graph)
    assert calls["AsyncIsChanged"] == (1 if runner.caches_results else 2)
    node.set_input("token", "b")
    runner.run(graph)
    assert calls["AsyncIsChanged"] == (2 if runner.caches_results else 3)
    assert [entry["token"] for entry in tracking.FINGERPRINTS] == ["a", "a", "b"]


def test_node_instances_are_kept_per_node_unless_cache_none(runner: Runner) -> None:
    created: list[object] = []

    class Remember:
        @classmethod
        def INPUT_TYPES(cls) -> dict:
            return {"required": {"value": ("INT", {})}}

        RETURN_TYPES = ("INT",)
        FUNCTION = "run"

        def __init__(self) -> None:
            created.append(self)

        def run(self, value: int) -> tuple[int]:
            return (value,)

    from nodes.compat import V1Node

    runner.registry["Remember"] = V1Node(Remember, "Remember")
    graph = GraphBuilder(prefix="obj")
    node = graph.node("Remember", value=1)
    graph.node("Output", value=node.out(0))
    runner.run(graph)
    node.set_input("value", 2)
    runner.run(graph)
    assert len(created) == (2 if runner.policy == "none" else 1)
