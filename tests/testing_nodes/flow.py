"""Stub nodes for async execution, interrupts and node expansion (spec §3.3, §3.4)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from core.graph_builder import GraphBuilder, is_link
from core.runtime import current
from tests.testing_nodes.tracking import SLEEPS, record

LOOP_SLOTS = 3


class Sleep:
    """async: sleeps `seconds` in three steps, reporting progress, then passes `value` through."""

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {"value": ("*",), "seconds": ("FLOAT", {"default": 0.1, "min": 0.0, "max": 10.0})},
            "hidden": {"unique_id": "UNIQUE_ID"},
        }

    RETURN_TYPES = ("*",)
    FUNCTION = "sleep"
    CATEGORY = "Testing/Flow"

    async def sleep(self, value: Any, seconds: float, unique_id: str) -> tuple[Any]:
        runtime = current()
        start = time.monotonic()
        for step in range(3):
            await asyncio.sleep(seconds / 3)
            if runtime is not None:
                runtime.progress(step + 1, 3)
        SLEEPS.append((unique_id, start, time.monotonic()))
        record("Sleep")
        return (value,)


class AsyncFail:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"message": ("STRING", {"default": "async boom"})}, "optional": {"value": ("*",)}}

    RETURN_TYPES = ("*",)
    FUNCTION = "fail"
    CATEGORY = "Testing/Flow"

    async def fail(self, message: str, value: Any = None) -> tuple[Any]:
        await asyncio.sleep(0.01)
        record("AsyncFail")
        raise RuntimeError(message)


class LongRunning:
    """A sync loop that reports progress and checks for interrupts at every step."""

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "steps": ("INT", {"default": 10, "min": 1, "max": 10000}),
                "delay": ("FLOAT", {"default": 0.01, "min": 0.0, "max": 1.0}),
            }
        }

    RETURN_TYPES = ("INT",)
    FUNCTION = "run"
    CATEGORY = "Testing/Flow"

    def run(self, steps: int, delay: float) -> tuple[int]:
        runtime = current()
        for step in range(steps):
            time.sleep(delay)
            record("LongRunning.step")
            if runtime is not None:
                runtime.progress(step + 1, steps, preview=f"preview {step + 1}" if step == 0 else None)
                runtime.check_interrupted()
        return (steps,)


class ParallelSleep:
    """Expands into three Sleep nodes summed by a VariadicSum: they run concurrently."""

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"value": ("INT", {}), "seconds": ("FLOAT", {"default": 0.1, "min": 0.0, "max": 10.0})}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "expand"
    CATEGORY = "Testing/Flow"

    def expand(self, value: int, seconds: float) -> dict[str, Any]:
        record("ParallelSleep")
        graph = GraphBuilder()
        sleeps = [graph.node("Sleep", value=value, seconds=seconds) for _ in range(3)]
        total = graph.node("VariadicSum", **{f"in{index}": node.out(0) for index, node in enumerate(sleeps)})
        return {"result": (total.out(0),), "expand": graph.finalize()}


class DynamicCycle:
    """Expands into two nodes that wait on each other (a cycle created at run time)."""

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"value": ("INT", {})}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "expand"
    CATEGORY = "Testing/Flow"

    def expand(self, value: int) -> dict[str, Any]:
        graph = GraphBuilder()
        first = graph.node("VariadicSum", seed=value)
        second = graph.node("VariadicSum", x=first.out(0))
        first.set_input("y", second.out(0))
        return {"result": (first.out(0),), "expand": graph.finalize()}


class WhileLoopOpen:
    """Start of a loop body: passes its initial values on; the close node links back to it."""

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        optional = {f"initial_value{slot}": ("*",) for slot in range(LOOP_SLOTS)}
        return {"required": {"condition": ("BOOLEAN", {"default": True})}, "optional": optional}

    RETURN_TYPES = ("FLOW_CONTROL",) + ("*",) * LOOP_SLOTS
    FUNCTION = "open"
    CATEGORY = "Testing/Flow"

    def open(self, condition: bool, **values: Any) -> tuple[Any, ...]:
        record("WhileLoopOpen")
        return ("stub", *(values.get(f"initial_value{slot}") for slot in range(LOOP_SLOTS)))


def _loop_body(dynprompt: Any, open_id: str, close_id: str) -> list[str]:
    """Nodes between the open and the close node (both included): upstream of close and
    downstream of open. Iterative, in discovery order."""
    upstream: dict[str, None] = {}
    stack = [close_id]
    while stack:
        node_id = stack.pop()
        if node_id in upstream:
            continue
        upstream[node_id] = None
        stack.extend(value[0] for value in dynprompt.get_node(node_id)["inputs"].values() if is_link(value))
    consumers: dict[str, list[str]] = {}
    for node_id in upstream:
        for value in dynprompt.get_node(node_id)["inputs"].values():
            if is_link(value) and value[0] in upstream:
                consumers.setdefault(value[0], []).append(node_id)
    body = {open_id: None}
    stack = [open_id]
    while stack:
        for consumer in consumers.get(stack.pop(), ()):
            if consumer not in body:
                body[consumer] = None
                stack.append(consumer)
    body[close_id] = None
    return list(body)


class WhileLoopClose:
    """End of a loop body: while `condition` holds, expands into a fresh copy of the body (including
    a copy of itself, which decides again), fed with the current values."""

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        optional = {f"initial_value{slot}": ("*",) for slot in range(LOOP_SLOTS)}
        return {
            "required": {
                "flow_control": ("FLOW_CONTROL", {"rawLink": True}),
                "condition": ("BOOLEAN", {"forceInput": True}),
            },
            "optional": optional,
            "hidden": {"dynprompt": "DYNPROMPT", "unique_id": "UNIQUE_ID"},
        }

    RETURN_TYPES = ("*",) * LOOP_SLOTS
    FUNCTION = "close"
    CATEGORY = "Testing/Flow"

    def close(self, flow_control: Any, condition: bool, dynprompt: Any, unique_id: str, **values: Any) -> Any:
        record("WhileLoopClose")
        current_values = [values.get(f"initial_value{slot}") for slot in range(LOOP_SLOTS)]
        if not condition:
            return tuple(current_values)
        open_id = flow_control[0]
        body = _loop_body(dynprompt, open_id, unique_id)

        def local(node_id: str) -> str:
            # The copy of this node gets a short fixed name so ids do not grow with every level.
            return "Recurse" if node_id == unique_id else node_id

        graph = GraphBuilder()
        for node_id in body:
            graph.node(dynprompt.get_node(node_id)["class_type"], local(node_id)).set_override_display_id(node_id)
        for node_id in body:
            copy = graph.lookup_node(local(node_id))
            for name, value in dynprompt.get_node(node_id)["inputs"].items():
                if is_link(value) and value[0] in body:
                    copy.set_input(name, graph.lookup_node(local(value[0])).out(value[1]))
                else:
                    copy.set_input(name, value)
        new_open = graph.lookup_node(open_id)
        for slot, value in enumerate(current_values):
            new_open.set_input(f"initial_value{slot}", value)
        recurse = graph.lookup_node("Recurse")
        return {"result": tuple(recurse.out(slot) for slot in range(LOOP_SLOTS)), "expand": graph.finalize()}


NODE_CLASS_MAPPINGS = {
    "Sleep": Sleep,
    "AsyncFail": AsyncFail,
    "LongRunning": LongRunning,
    "ParallelSleep": ParallelSleep,
    "DynamicCycle": DynamicCycle,
    "WhileLoopOpen": WhileLoopOpen,
    "WhileLoopClose": WhileLoopClose,
}
