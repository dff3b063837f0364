"""In-process executor harness: ComfyUI's test client without the server, subprocess or sleeps.

    runner = Runner("lru100")
    graph = GraphBuilder(prefix="t")
    out = graph.node("Output", value=graph.node("StubInt", value=3).out(0))
    result = runner.run(graph)
    assert result.did_run(out) and result.value(out) == 3

A Runner owns one Executor and one cache policy for its whole life, so consecutive `run()` calls
see each other's cache exactly as consecutive prompts on a server would. Every run validates the
graph first (execution/validate.py) and executes what validation keeps.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from core.graph_builder import GraphBuilder, Node
from core.spec import NodeDefinition
from execution.cache import Cache, RamCache, make_cache
from execution.events import Event, FanOutSink, NodeExecuting, RecordingSink
from execution.executor import ExecutionResult, Executor
from execution.interrupt import InterruptFlag
from execution.validate import ValidationResult, validate_prompt_async
from nodes.compat import v1_definitions
from tests.testing_nodes import NODE_CLASS_MAPPINGS

POLICIES = ("classic", "lru0", "lru100", "ram", "none")
"""Cache settings every main test runs under (ComfyUI's harness: default, --cache-lru 0/100,
--cache-none; plus the RAM policy with plenty of fake free memory)."""

_ids = itertools.count()


def stub_registry(extra: Mapping[str, type] | None = None) -> dict[str, NodeDefinition]:
    """The stub pack (+ extra V1 classes) as a registry."""
    return dict(v1_definitions({**NODE_CLASS_MAPPINGS, **(extra or {})}))


def make_policy(name: str, available: Callable[[], float | None] | None = None) -> Cache:
    if name == "classic":
        return make_cache()
    if name == "lru0":
        return make_cache(lru=0)
    if name == "lru100":
        return make_cache(lru=100)
    if name == "ram":
        return RamCache(1.0, available=available or (lambda: 64 * 1024**3))
    if name == "none":
        return make_cache(none=True)
    raise ValueError(f"unknown cache policy {name!r}; expected one of {POLICIES}")


def node_id(node: Node | str) -> str:
    return node if isinstance(node, str) else node.id


@dataclass
class RunResult:
    result: ExecutionResult
    validation: ValidationResult
    events: RecordingSink

    def did_run(self, node: Node | str) -> bool:
        return node_id(node) in self.result.ran

    def was_cached(self, node: Node | str) -> bool:
        return node_id(node) in self.result.cached

    @property
    def status(self) -> str:
        return self.result.status

    @property
    def outputs(self) -> dict[str, dict[str, Any]]:
        return self.result.outputs

    @property
    def error(self) -> Any:
        return self.result.error

    def ui(self, node: Node | str) -> dict[str, Any]:
        return self.result.outputs[node_id(node)]

    def value(self, node: Node | str) -> Any:
        """What an Output stub showed: its single value, or the list for list-mapped calls."""
        shown = self.ui(node)["value"]
        return shown[0] if len(shown) == 1 else shown

    def executing(self) -> list[str]:
        """Node ids in the order their `executing` events came."""
        return [event.node_id for event in self.events.of_type(NodeExecuting)]

    def of_type(self, *kinds: type[Event]) -> list[Any]:
        return self.events.of_type(*kinds)


class Runner:
    """One executor + cache policy; `run()` validates and executes a graph."""

    def __init__(
        self,
        policy: str = "classic",
        *,
        extra_nodes: Mapping[str, type] | None = None,
        registry: Mapping[str, NodeDefinition] | None = None,
        cache: Cache | None = None,
        services: Mapping[str, Any] | None = None,
    ) -> None:
        self.policy = policy
        self.registry = dict(registry) if registry is not None else stub_registry(extra_nodes)
        self.cache = cache if cache is not None else make_policy(policy)
        self.interrupt = InterruptFlag()
        self.executor = Executor(self.registry, self.cache, services, self.interrupt)

    @property
    def caches_results(self) -> bool:
        return self.policy != "none"

    def run(
        self,
        graph: GraphBuilder | Mapping[str, Any],
        *,
        targets: Sequence[str | Node] | None = None,
        prompt_id: str | None = None,
        extra_data: Mapping[str, Any] | None = None,
        sink: Callable[[Event], None] | None = None,
    ) -> RunResult:
        return asyncio.run(
            self.run_async(graph, targets=targets, prompt_id=prompt_id, extra_data=extra_data, sink=sink)
        )

    async def run_async(
        self,
        graph: GraphBuilder | Mapping[str, Any],
        *,
        targets: Sequence[str | Node] | None = None,
        prompt_id: str | None = None,
        extra_data: Mapping[str, Any] | None = None,
        sink: Callable[[Event], None] | None = None,
    ) -> RunResult:
        prompt = graph.finalize() if isinstance(graph, GraphBuilder) else dict(graph)
        wanted = None if targets is None else [node_id(target) for target in targets]
        validation = await validate_prompt_async(prompt, self.registry, wanted)
        if not validation.ok:
            raise AssertionError(f"graph failed validation: {validation.error} {validation.node_errors}")
        recorder = RecordingSink()
        events = FanOutSink([recorder, sink]) if sink is not None else recorder
        result = await self.executor.execute_async(
            validation.prompt,
            prompt_id or f"prompt-{next(_ids)}",
            validation.outputs,
            extra_data=extra_data,
            events=events,
        )
        return RunResult(result, validation, recorder)


__all__ = ["POLICIES", "RunResult", "Runner", "make_policy", "node_id", "stub_registry"]
