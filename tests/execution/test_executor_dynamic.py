"""DynamicPrompt ids and the Schedule's order, preferences and cycle detection."""

from __future__ import annotations

from collections.abc import Iterable

import pytest

from core.spec import NodeSpec, OutputSpec
from execution.dynamic import DynamicPrompt, NodeNotFoundError, Schedule, call_sets, merge_outputs, split_result


def test_dynamic_prompt_tracks_parents_display_and_real_ids() -> None:
    dyn = DynamicPrompt({"5": {"class_type": "Loop", "inputs": {}}})
    dyn.add_ephemeral_node("5.0.0.1", {"class_type": "A", "inputs": {}}, "5")
    dyn.add_ephemeral_node("5.0.0.2", {"class_type": "B", "inputs": {}}, "5", display_id="3")
    dyn.add_ephemeral_node("5.0.0.1.0.0.7", {"class_type": "C", "inputs": {}}, "5.0.0.1", display_id="5.0.0.2")
    assert dyn.get_real_node_id("5.0.0.1.0.0.7") == "5"
    assert dyn.get_parent_node_id("5.0.0.1.0.0.7") == "5.0.0.1"
    assert dyn.get_display_node_id("5.0.0.1") == "5"
    assert dyn.get_display_node_id("5.0.0.1.0.0.7") == "3"  # follows the display chain to a static node
    assert dyn.get_display_node_id("5") == "5" and dyn.get_parent_node_id("5") is None
    assert dyn.all_node_ids() == {"5", "5.0.0.1", "5.0.0.2", "5.0.0.1.0.0.7"}
    assert dyn.is_ephemeral("5.0.0.2") and not dyn.is_ephemeral("5")
    with pytest.raises(NodeNotFoundError, match="'missing'"):
        dyn.get_node("missing")


def _schedule(
    links: dict[str, list[str]], outputs: Iterable[str] = (), urgent: Iterable[str] = (), done: Iterable[str] = ()
) -> tuple[Schedule, set[str]]:
    available = set(done)
    outputs, urgent = set(outputs), set(urgent)
    schedule = Schedule(
        lambda node: [(producer, 0) for producer in links.get(node, [])],
        available.__contains__,
        lambda node: node in urgent or node in outputs,
        outputs.__contains__,
    )
    return schedule, available


def _drain(schedule: Schedule, available: set[str]) -> list[str]:
    order = []
    while (node := schedule.pop_ready()) is not None:
        order.append(node)
        available.add(node)
        schedule.complete(node)
    return order


def test_schedule_runs_producers_first_and_skips_available_nodes() -> None:
    links = {"out": ["sum"], "sum": ["a", "b"], "a": ["src"], "b": ["src"]}
    schedule, available = _schedule(links, outputs=["out"], done=["src"])
    schedule.add_node("out")
    assert "src" not in schedule.staged
    order = _drain(schedule, available)
    assert order == ["a", "b", "sum", "out"]
    assert not schedule.has_pending()


def test_schedule_prefers_outputs_then_their_feeders() -> None:
    links = {"o1": ["x"], "o2": ["m"], "m": ["y"], "far": []}
    schedule, available = _schedule(links, outputs=["o1", "o2"])
    for node in ("far", "o2", "o1"):
        schedule.add_node(node)
    order = _drain(schedule, available)
    # y is two hops from an output, x one hop; far feeds nothing; o1 runs the moment x is done.
    assert order.index("x") < order.index("y") < order.index("far")
    assert order.index("o1") == order.index("x") + 1


def test_schedule_deep_chain_without_recursion() -> None:
    links = {str(index): [str(index - 1)] for index in range(1, 20_000)}
    schedule, available = _schedule(links, outputs=["19999"])
    schedule.add_node("19999")
    assert _drain(schedule, available) == [str(index) for index in range(20_000)]


def test_schedule_lazy_requests_and_cycles() -> None:
    schedule, available = _schedule({"mix": []})
    schedule.add_node("mix")
    assert schedule.pop_ready() == "mix"
    schedule.add_strong_link("branch", 0, "mix")  # what check_lazy_status asked for
    schedule.requeue("mix")
    assert _drain(schedule, available) == ["branch", "mix"]

    cyclic, _ = _schedule({"a": ["b"], "b": ["c"], "c": ["a"], "out": ["a"]})
    cyclic.add_node("out")
    assert cyclic.pop_ready() is None and cyclic.has_pending()
    cycle = cyclic.find_cycle()
    assert sorted(cycle) == ["a", "b", "c"]


def test_call_sets_and_merging() -> None:
    assert call_sets({"a": [1, 2, 3], "b": [10]}, False) == [{"a": 1, "b": 10}, {"a": 2, "b": 10}, {"a": 3, "b": 10}]
    assert call_sets({"a": [1, 2]}, True) == [{"a": [1, 2]}]
    assert call_sets({}, False) == [{}]
    assert call_sets({"a": [], "b": [1]}, False) == []
    assert merge_outputs([([1, 2], "x"), ([3], "y")], (True, False)) == [[1, 2, 3], ["x", "y"]]
    spec = NodeSpec(id="N", outputs=(OutputSpec("INT"),))
    assert split_result("1", spec.id, 1, {"ui": {"a": [1]}}) == ((None,), {"a": [1]}, None)
    with pytest.raises(Exception, match="trailing comma"):
        split_result("1", "N", 1, 5)
    with pytest.raises(Exception, match="declares 2 output"):
        split_result("1", "N", 2, (1,))
