"""Failures, interrupts and the executor staying usable afterwards."""

from __future__ import annotations

import threading
import time
from collections import Counter

from core.graph_builder import GraphBuilder
from execution.events import Event, ExecutionError, ExecutionInterrupted, NodeFinished
from tests.harness import Runner


def _failing_graph(prefix: str) -> tuple[GraphBuilder, dict[str, object]]:
    graph = GraphBuilder(prefix=prefix)
    value = graph.node("StubInt", value=4)
    image = graph.node("StubImage", content="WHITE", height=2, width=2, batch_size=1)
    fail = graph.node("Fail", message="no luck", value=value.out(0))
    after = graph.node("Counter", value=fail.out(0), label="after failure")
    out = graph.node("Output", value=after.out(0))
    graph.node("Output", value=image.out(0))
    return graph, {"value": value, "image": image, "fail": fail, "after": after, "out": out}


def test_error_event_fields(runner: Runner, calls: Counter[str]) -> None:
    graph, n = _failing_graph("err")
    result = runner.run(graph, prompt_id="p-err")
    assert result.status == "error"
    error = result.error
    assert isinstance(error, ExecutionError)
    assert error.prompt_id == "p-err"
    assert error.node_id == n["fail"].id
    assert error.node_type == "Fail"
    assert error.exception_type == "ValueError"
    assert error.exception_message == "no luck"
    assert error.traceback and all(isinstance(line, str) for line in error.traceback)
    assert any("raise ValueError(message)" in line for line in error.traceback)
    assert error.current_inputs == {"message": ["no luck"], "value": [4]}
    assert n["value"].id in error.executed
    assert n["value"].id in error.current_outputs
    assert calls["after failure"] == 0
    kind, data = error.to_message()
    assert kind == "execution_error" and data["node_id"] == n["fail"].id and "timestamp" in data
    assert result.result.messages[-1][0] == "execution_error"


def test_executor_is_reusable_after_an_error(runner: Runner, calls: Counter[str]) -> None:
    graph, n = _failing_graph("reuse")
    runner.run(graph)
    ok = GraphBuilder(prefix="reuse")
    value = ok.node("StubInt", value=4)
    out = ok.node("Output", value=value.out(0))
    result = runner.run(ok)
    assert result.status == "success"
    assert result.value(out) == 4
    # What finished before the failure stayed cached.
    assert result.was_cached(value) == runner.caches_results


def test_non_tensor_inputs_are_formatted_as_strings(runner: Runner) -> None:
    graph = GraphBuilder(prefix="fmt")
    image = graph.node("StubImage", content="BLACK", height=1, width=1, batch_size=1)
    fail = graph.node("Fail", message="x", value=image.out(0))
    graph.node("Output", value=fail.out(0))
    result = runner.run(graph)
    assert result.error.current_inputs["value"] == ["StubTensor(shape=(1, 1, 1, 3), mean=0.000)"]


def test_interrupt_between_nodes(runner: Runner, calls: Counter[str]) -> None:
    graph = GraphBuilder(prefix="intr")
    first = graph.node("Counter", value=1, label="first")
    second = graph.node("Counter", value=first.out(0), label="second")
    graph.node("Output", value=second.out(0))

    def stop_after_first(event: Event) -> None:
        if isinstance(event, NodeFinished) and event.node_id == first.id:
            runner.interrupt.request()

    result = runner.run(graph, sink=stop_after_first)
    assert result.status == "interrupted"
    assert isinstance(result.error, ExecutionInterrupted)
    assert result.error.node_id == second.id and result.error.node_type == "Counter"
    assert result.error.executed == (first.id,)
    assert calls["second"] == 0
    assert result.result.messages[-1][0] == "execution_interrupted"
    # The request was for that prompt only: the next one runs.
    assert runner.run(graph).status == "success"


def test_interrupt_inside_a_long_node(runner: Runner, calls: Counter[str]) -> None:
    graph = GraphBuilder(prefix="long")
    long = graph.node("LongRunning", steps=500, delay=0.01)
    graph.node("Output", value=long.out(0))
    timer = threading.Timer(0.15, runner.interrupt.request)
    timer.start()
    started = time.monotonic()
    try:
        result = runner.run(graph)
    finally:
        timer.cancel()
    assert result.status == "interrupted"
    assert result.error.node_id == long.id
    assert time.monotonic() - started < 2.0
    assert 1 <= calls["LongRunning.step"] < 500


def test_interrupt_while_async_nodes_sleep(runner: Runner) -> None:
    graph = GraphBuilder(prefix="asleep")
    slow = graph.node("Sleep", value=1, seconds=3.0)
    graph.node("Output", value=slow.out(0))
    timer = threading.Timer(0.1, runner.interrupt.request)
    timer.start()
    started = time.monotonic()
    try:
        result = runner.run(graph)
    finally:
        timer.cancel()
    assert result.status == "interrupted"
    assert time.monotonic() - started < 1.5


def test_interrupt_aimed_at_another_prompt_is_ignored(runner: Runner) -> None:
    graph = GraphBuilder(prefix="other")
    first = graph.node("Counter", value=1, label="first")
    graph.node("Output", value=first.out(0))

    def interrupt_someone_else(event: Event) -> None:
        runner.interrupt.request("somebody-else")

    assert runner.run(graph, prompt_id="mine", sink=interrupt_someone_else).status == "success"


def test_stale_interrupt_does_not_stop_the_next_prompt(runner: Runner) -> None:
    graph = GraphBuilder(prefix="stale")
    graph.node("Output", value=graph.node("StubInt", value=1).out(0))
    runner.interrupt.request()  # nothing is running: ComfyUI clears its flag when a prompt starts
    assert runner.run(graph).status == "success"


def test_run_prompt_validates_then_executes(calls: Counter[str]) -> None:
    from core.errors import ValidationError
    from execution.executor import Executor
    from execution.run import run_prompt
    from tests.harness import stub_registry

    registry = stub_registry()
    executor = Executor(registry)
    graph = GraphBuilder(prefix="rp")
    value = graph.node("StubInt", value=2)
    out = graph.node("Output", value=value.out(0))
    result = run_prompt(graph.finalize(), registry, executor=executor, prompt_id="rp1")
    assert result.success and result.outputs[out.id] == {"value": [2]}
    again = run_prompt(graph.finalize(), registry, executor=executor)
    assert again.cached == [value.id, out.id]
    broken = GraphBuilder(prefix="rp")
    broken.node("Output")  # required input missing
    try:
        run_prompt(broken.finalize(), registry)
    except ValidationError as exc:
        assert exc.result.node_errors
    else:
        raise AssertionError("an invalid prompt must raise ValidationError")
