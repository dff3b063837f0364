"""Events: ComfyUI's websocket messages, the sinks, and what one prompt reports in what order."""

from __future__ import annotations

import pytest

from core.errors import Interrupted
from core.graph_builder import GraphBuilder
from execution.events import (
    Event,
    ExecutionBlocked,
    ExecutionCached,
    ExecutionError,
    ExecutionFinished,
    ExecutionInterrupted,
    ExecutionStart,
    ExecutionSuccess,
    FanOutSink,
    NodeExecuted,
    NodeExecuting,
    NodeFinished,
    NodePreview,
    NodeProgress,
    RecordingSink,
    exception_type_name,
    format_input_value,
)
from execution.interrupt import InterruptFlag
from tests.harness import Runner


def test_messages_have_comfyui_shapes() -> None:
    assert ExecutionStart("p", timestamp=5).to_message() == ("execution_start", {"prompt_id": "p", "timestamp": 5})
    assert ExecutionCached("p", ("1", "2"), timestamp=5).to_message() == (
        "execution_cached",
        {"nodes": ["1", "2"], "prompt_id": "p", "timestamp": 5},
    )
    assert NodeExecuting("p", "5.0.0.1", "5", "5", "5").to_message() == (
        "executing",
        {"node": "5.0.0.1", "display_node": "5", "prompt_id": "p"},
    )
    assert NodeProgress("p", "3", 2, 10).to_message() == (
        "progress",
        {"value": 2, "max": 10, "prompt_id": "p", "node": "3"},
    )
    assert NodeExecuted("p", "9", "9", {"images": []}).to_message() == (
        "executed",
        {"node": "9", "display_node": "9", "output": {"images": []}, "prompt_id": "p"},
    )
    kind, data = NodeFinished("p", "4", cached=True).to_message()
    assert kind == "progress_state" and data["nodes"]["4"]["state"] == "finished"
    assert ExecutionSuccess("p", timestamp=1).to_message() == ("execution_success", {"prompt_id": "p", "timestamp": 1})
    assert ExecutionFinished("p", "success").to_message() == ("executing", {"node": None, "prompt_id": "p"})
    assert ExecutionInterrupted("p", "3", "KSampler", ("1",), timestamp=2).to_message() == (
        "execution_interrupted",
        {"prompt_id": "p", "node_id": "3", "node_type": "KSampler", "executed": ["1"], "timestamp": 2},
    )
    kind, data = ExecutionBlocked("p", "3", "X", "why").to_message()
    assert data["exception_message"] == "Execution Blocked: why" and data["traceback"] == []
    kind, data = NodePreview("p", "3", image=b"jpeg", display_node_id="3").to_message()
    assert data["image"] == b"jpeg" and data["metadata"]["display_node_id"] == "3"


def test_execution_error_from_exception() -> None:
    try:
        raise Interrupted("stop")
    except Interrupted as exc:
        event = ExecutionError.from_exception("p", "3", "Fail", ["1"], exc, {"x": [1, object]}, ["1"])
    kind, data = event.to_message()
    assert kind == "execution_error"
    assert data["exception_type"] == "core.errors.Interrupted"
    assert data["exception_message"] == "stop"
    assert data["current_inputs"] == {"x": [1, str(object)]}
    assert data["current_outputs"] == ["1"] and data["executed"] == ["1"]
    assert any("raise Interrupted" in line for line in data["traceback"])
    assert exception_type_name(ValueError()) == "ValueError"
    assert format_input_value(None) is None and format_input_value([1]) == "[1]"


def test_fan_out_isolates_failing_sinks() -> None:
    recorder = RecordingSink()

    def broken(event: Event) -> None:
        raise RuntimeError("sink bug")

    fan = FanOutSink([broken, recorder])
    fan(ExecutionStart("p"))
    assert len(recorder.events) == 1
    fan.remove(broken)
    fan.add(recorder)
    fan(ExecutionSuccess("p"))
    assert [type(event) for event in recorder.events] == [ExecutionStart, ExecutionSuccess, ExecutionSuccess]
    assert recorder.of_type(ExecutionStart)[0].prompt_id == "p"
    assert recorder.messages()[0][0] == "execution_start"


def test_event_sequence_of_one_prompt() -> None:
    runner = Runner()
    graph = GraphBuilder(prefix="seq")
    value = graph.node("StubInt", value=1)
    out = graph.node("Output", value=value.out(0))
    first = runner.run(graph, prompt_id="one")
    kinds = [type(event).__name__ for event in first.events.events]
    assert kinds == [
        "ExecutionStart",
        "ExecutionCached",
        "NodeExecuting",
        "NodeFinished",
        "NodeExecuting",
        "NodeExecuted",
        "NodeFinished",
        "ExecutionSuccess",
        "ExecutionFinished",
    ]
    assert first.executing() == [value.id, out.id]
    assert [kind for kind, _ in first.result.messages] == ["execution_start", "execution_cached", "execution_success"]
    # Cached: no `executing`, the cached node ids in execution_cached, the output's ui re-sent.
    second = runner.run(graph, prompt_id="two")
    assert second.executing() == []
    assert second.of_type(ExecutionCached)[0].nodes == (value.id, out.id)
    assert [event.output for event in second.of_type(NodeExecuted)] == [{"value": [1]}]
    assert all(event.cached for event in second.of_type(NodeFinished))
    assert second.of_type(ExecutionFinished)[0].status == "success"


def test_progress_and_preview_events_name_the_running_node() -> None:
    runner = Runner()
    graph = GraphBuilder(prefix="prog")
    long = graph.node("LongRunning", steps=3, delay=0.0)
    graph.node("Output", value=long.out(0))
    result = runner.run(graph)
    progress = result.of_type(NodeProgress)
    assert [(event.node_id, event.value, event.max) for event in progress] == [(long.id, step, 3) for step in (1, 2, 3)]
    previews = result.of_type(NodePreview)
    assert [(event.node_id, event.image) for event in previews] == [(long.id, "preview 1")]


def test_interrupt_flag_unit() -> None:
    flag = InterruptFlag()
    flag.check("a")
    flag.request("a")
    assert flag.is_requested("a") and not flag.is_requested("b")
    flag.check("b")
    with pytest.raises(Interrupted, match="prompt a"):
        flag.check("a")
    flag.begin("a")  # a request for the prompt that starts survives
    assert flag.is_requested("a")
    flag.begin("b")
    assert not flag.is_requested("a")
    flag.request()
    assert flag.is_requested("anything")
    flag.clear()
    assert not flag.is_requested("anything")
    flag.request("x")
    flag.clear("x")
    assert not flag.is_requested("x")
