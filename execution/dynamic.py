"""The graph while it runs: the prompt plus expanded nodes, and which node waits on which.

`DynamicPrompt` is the prompt as nodes see it (hidden input DYNPROMPT, spec §3.1): the original
nodes plus the "ephemeral" nodes added by expansion (spec §3.3), each with its parent (the node
that expanded it), its display id (what the UI highlights) and its real id (its top-level
ancestor in the submitted prompt). The method names are ComfyUI's, so loop nodes written for it
(while/for loops that walk the graph) work unchanged.

`Schedule` is the executor's ready queue (spec §4.3): staged nodes, how many unfinished producers
each still waits on, and ready nodes by preference (output and async nodes first, then nodes
feeding an output, then two hops away, then the rest). Everything is iterative: a 10,000-node
chain never recurses.

`RunState` gathers one prompt's run: the DynamicPrompt, the Schedule, every node's output values
and what the result will report; the helpers at the end turn input lists into calls and call
results into output lists (list mapping, spec §4.5).

Stdlib only.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from core.errors import GraphError, NodeError
from core.graph_builder import is_link
from core.runtime import ExecutionBlocker
from core.spec import InputSpec, NodeDefinition, NodeSpec
from execution.events import Event, EventSink, ExecutionError, ExecutionInterrupted
from execution.interrupt import InterruptFlag

log = logging.getLogger(__name__)


class NodeNotFoundError(GraphError):
    """A link or an expansion names a node id the graph does not have."""


class DynamicPrompt:
    """The submitted prompt plus the nodes expansion added while it runs."""

    def __init__(self, original_prompt: Mapping[str, Mapping[str, Any]]) -> None:
        self.original_prompt = original_prompt
        self.ephemeral_prompt: dict[str, Mapping[str, Any]] = {}
        self.ephemeral_parents: dict[str, str] = {}
        self.ephemeral_display: dict[str, str] = {}
        self._real: dict[str, str] = {}

    def get_node(self, node_id: str) -> Mapping[str, Any]:
        node = self.ephemeral_prompt.get(node_id)
        if node is None:
            node = self.original_prompt.get(node_id)
        if node is None:
            raise NodeNotFoundError(f"node '{node_id}' does not exist in the prompt (a link or expansion names it)")
        return node

    def has_node(self, node_id: str) -> bool:
        return node_id in self.ephemeral_prompt or node_id in self.original_prompt

    def is_ephemeral(self, node_id: str) -> bool:
        return node_id in self.ephemeral_prompt

    def add_ephemeral_node(
        self, node_id: str, node_info: Mapping[str, Any], parent_id: str, display_id: str | None = None
    ) -> None:
        """Add a node created by `parent_id`'s expansion. `display_id` defaults to the parent's."""
        self.ephemeral_prompt[node_id] = node_info
        self.ephemeral_parents[node_id] = parent_id
        display = self.get_display_node_id(display_id if display_id is not None else parent_id)
        self.ephemeral_display[node_id] = display
        self._real[node_id] = self.get_real_node_id(parent_id)

    def get_real_node_id(self, node_id: str) -> str:
        """The top-level node of the submitted prompt this node descends from (itself if static)."""
        return self._real.get(node_id, node_id)

    def get_parent_node_id(self, node_id: str) -> str | None:
        return self.ephemeral_parents.get(node_id)

    def get_display_node_id(self, node_id: str) -> str:
        return self.ephemeral_display.get(node_id, node_id)

    def all_node_ids(self) -> set[str]:
        return set(self.original_prompt) | set(self.ephemeral_prompt)

    def get_original_prompt(self) -> Mapping[str, Mapping[str, Any]]:
        return self.original_prompt

    def __repr__(self) -> str:
        return f"DynamicPrompt({len(self.original_prompt)} nodes + {len(self.ephemeral_prompt)} expanded)"


Links = Callable[[str], Iterable[tuple[str, int]]]


class Schedule:
    """Staged nodes, their blocking producers and the ready queue (ComfyUI's ExecutionList).

    `strong_links(node)` lists the (producer, slot) pairs a node needs before it can run (lazy
    inputs excluded); `available(node)` says whether a node's result already exists (ran or came
    from the cache), in which case it is never staged; `urgent(node)` marks output and async
    nodes, `is_output(node)` output nodes, for the pick order.
    """

    def __init__(
        self,
        strong_links: Links,
        available: Callable[[str], bool],
        urgent: Callable[[str], bool],
        is_output: Callable[[str], bool],
    ) -> None:
        self._strong_links = strong_links
        self._available = available
        self._urgent = urgent
        self._is_output = is_output
        self.staged: dict[str, None] = {}
        self.running: set[str] = set()
        self.waiting_on: dict[str, int] = {}
        self.consumers: dict[str, dict[str, None]] = {}
        self._ready: tuple[deque[str], ...] = (deque(), deque(), deque(), deque())

    def add_node(self, node_id: str) -> None:
        """Stage `node_id` and every unavailable producer it (transitively) needs."""
        if node_id in self.staged or self._available(node_id):
            return
        stack = [node_id]
        added: list[str] = []
        links: list[tuple[str, str]] = []
        while stack:
            current = stack.pop()
            if current in self.staged or self._available(current):
                continue
            self.staged[current] = None
            self.waiting_on[current] = 0
            added.append(current)
            needed = [producer for producer, _slot in self._strong_links(current) if not self._available(producer)]
            links.extend((producer, current) for producer in needed)
            stack.extend(reversed(needed))  # first input first, like ComfyUI's insertion order
        for producer, consumer in links:
            self._link(producer, consumer)
        for current in added:
            if self.waiting_on[current] == 0:
                self._push_ready(current)

    def add_strong_link(self, producer: str, slot: int, consumer: str) -> None:
        """`consumer` now also needs `producer` (a lazy input asked for, an expansion's result)."""
        if self._available(producer):
            return
        self.add_node(producer)
        self._link(producer, consumer)

    def _link(self, producer: str, consumer: str) -> None:
        if producer not in self.staged:
            return
        waiting = self.consumers.setdefault(producer, {})
        if consumer not in waiting:
            waiting[consumer] = None
            self.waiting_on[consumer] += 1

    def _push_ready(self, node_id: str) -> None:
        self._ready[self._rank(node_id)].append(node_id)

    def _rank(self, node_id: str) -> int:
        if self._urgent(node_id):
            return 0
        consumers = self.consumers.get(node_id, ())
        if any(self._is_output(consumer) for consumer in consumers):
            return 1
        for consumer in consumers:
            if any(self._is_output(second) for second in self.consumers.get(consumer, ())):
                return 2
        return 3

    def pop_ready(self) -> str | None:
        """The next node to run (now marked running), or None when nothing is ready."""
        for queue in self._ready:
            if queue:
                node_id = queue.popleft()
                self.running.add(node_id)
                return node_id
        return None

    def requeue(self, node_id: str) -> None:
        """A running node must run again later (it asked for lazy inputs, or it expanded)."""
        self.running.discard(node_id)
        if self.waiting_on.get(node_id, 0) == 0:
            self._push_ready(node_id)

    def complete(self, node_id: str) -> None:
        """`node_id` has its result: release every node that waited on it."""
        self.running.discard(node_id)
        self.staged.pop(node_id, None)
        self.waiting_on.pop(node_id, None)
        for consumer in self.consumers.pop(node_id, ()):
            remaining = self.waiting_on.get(consumer)
            if remaining is None:
                continue
            self.waiting_on[consumer] = remaining - 1
            if remaining == 1 and consumer not in self.running:
                self._push_ready(consumer)

    def has_pending(self) -> bool:
        return bool(self.staged)

    def find_cycle(self) -> list[str]:
        """A cycle among the staged nodes as [a, b, ..., a's producer] (each waits on the next),
        or [] if the nodes are stuck without one."""
        waits: dict[str, list[str]] = {}
        for producer, consumers in self.consumers.items():
            for consumer in consumers:
                waits.setdefault(consumer, []).append(producer)
        state: dict[str, int] = {}  # 1 = on the current path, 2 = fully explored
        for start in self.staged:
            if start in state:
                continue
            path = [start]
            iterators = [iter(waits.get(start, ()))]
            state[start] = 1
            while iterators:
                following = next(iterators[-1], None)
                if following is None:
                    state[path.pop()] = 2
                    iterators.pop()
                elif state.get(following) == 1:
                    return path[path.index(following) :]
                elif following not in state:
                    state[following] = 1
                    path.append(following)
                    iterators.append(iter(waits.get(following, ())))
        return []


class ClassInfo:
    """What the executor needs from a node class's spec, computed once per class per prompt."""

    __slots__ = ("declared", "definition", "hidden", "lazy", "list_outputs", "output_node", "raw", "spec", "urgent")

    def __init__(self, definition: NodeDefinition, spec: NodeSpec) -> None:
        self.definition = definition
        self.spec = spec
        self.declared: dict[str, InputSpec] = {item.name: item for item in spec.inputs}
        self.hidden = tuple((item.name, item.hidden_kind) for item in spec.inputs if item.hidden_kind is not None)
        self.lazy = frozenset(item.name for item in spec.inputs if item.lazy)
        self.raw = frozenset(item.name for item in spec.inputs if item.raw_link)
        self.list_outputs = tuple(out.is_list for out in spec.outputs)
        self.output_node = spec.output_node
        self.urgent = spec.output_node or spec.is_async


Expansion = tuple[list[tuple[Any, ...]], dict[int, Any], dict[str, Any] | None]
"""A node waiting for its subgraph: per-call results (may hold links), graphs by call, its ui."""


class RunState:
    """Everything about one prompt while it runs (the executor keeps nothing between prompts
    except the caches)."""

    def __init__(
        self,
        registry: Mapping[str, NodeDefinition],
        prompt: Mapping[str, Mapping[str, Any]],
        prompt_id: str,
        extra_data: Mapping[str, Any],
        sink: EventSink | None,
        interrupt: InterruptFlag,
    ) -> None:
        self.registry = registry
        self.prompt = prompt
        self.prompt_id = prompt_id
        self.extra_data = extra_data
        self.sink = sink
        self.interrupt = interrupt
        self.check_interrupt = functools.partial(interrupt.check, prompt_id)
        self.dyn = DynamicPrompt(prompt)
        self.infos: dict[str, ClassInfo] = {}
        self._node_infos: dict[str, ClassInfo] = {}
        self.keys: dict[str, str] = {}
        self.values: dict[str, list[list[Any]]] = {}
        """Outputs of every node that ran or came from the cache: one list per slot."""
        self.cached_ui: dict[str, dict[str, Any] | None] = {}
        self.inputs_of: dict[str, dict[str, list[Any]]] = {}
        """Inputs of nodes in progress, for the error report."""
        self.expansions: dict[str, Expansion] = {}
        self.reported_blocks: set[int] = set()
        self.tasks: dict[asyncio.Task[Any], str] = {}
        self.wake = asyncio.Event()
        self.failure: ExecutionError | ExecutionInterrupted | None = None
        # What the result reports.
        self.ran: list[str] = []
        self.cached: list[str] = []
        self.executed: dict[str, None] = {}
        self.outputs: dict[str, dict[str, Any]] = {}
        self.meta: dict[str, dict[str, Any]] = {}
        self.messages: list[tuple[str, dict[str, Any]]] = []
        self.schedule = Schedule(self.strong_links, self.values.__contains__, self.is_urgent, self.is_output)

    def info(self, class_type: str) -> ClassInfo:
        found = self.infos.get(class_type)
        if found is None:
            definition = self.registry.get(class_type)
            if definition is None:
                raise GraphError(f"node class '{class_type}' is not registered (is its custom node package loaded?)")
            found = self.infos[class_type] = ClassInfo(definition, definition.spec())
        return found

    def spec_of(self, class_type: str) -> NodeSpec:
        return self.info(class_type).spec

    def node_info(self, node_id: str) -> ClassInfo:
        found = self._node_infos.get(node_id)
        if found is None:
            found = self._node_infos[node_id] = self.info(self.dyn.get_node(node_id)["class_type"])
        return found

    def strong_links(self, node_id: str) -> list[tuple[str, int]]:
        lazy = self.node_info(node_id).lazy
        inputs = self.dyn.get_node(node_id).get("inputs", {})
        return [(value[0], int(value[1])) for name, value in inputs.items() if is_link(value) and name not in lazy]

    def is_urgent(self, node_id: str) -> bool:
        return self.node_info(node_id).urgent

    def is_output(self, node_id: str) -> bool:
        return self.node_info(node_id).output_node

    def emit(self, event: Event) -> None:
        if self.sink is None:
            return
        try:
            self.sink(event)
        except Exception:
            log.exception("event sink failed on %s; execution goes on", type(event).__name__)

    def record(self, event: Event) -> None:
        """Emit an event that also belongs in the history's status messages."""
        self.messages.append(event.to_message())
        self.emit(event)

    def ids(self, node_id: str) -> tuple[str, str | None, str]:
        """(display id, parent id, real id) of a node."""
        dyn = self.dyn
        return dyn.get_display_node_id(node_id), dyn.get_parent_node_id(node_id), dyn.get_real_node_id(node_id)

    def hidden_value(self, node_id: str, kind: str) -> Any:
        """What a hidden input of this kind receives (spec §3.1); unknown kinds get None."""
        if kind == "PROMPT":
            return self.prompt
        if kind == "DYNPROMPT":
            return self.dyn
        if kind == "UNIQUE_ID":
            return node_id
        if kind == "EXTRA_PNGINFO":
            return self.extra_data.get("extra_pnginfo")
        if kind == "AUTH_TOKEN_COMFY_ORG":
            return self.extra_data.get("auth_token_comfy_org")
        if kind == "API_KEY_COMFY_ORG":
            return self.extra_data.get("api_key_comfy_org")
        return None


# --- list mapping (spec §4.5) -----------------------------------------------------------------------


def call_sets(inputs: dict[str, list[Any]], input_is_list: bool) -> list[dict[str, Any]]:
    """One call per element of the longest input, shorter inputs repeating their last element;
    INPUT_IS_LIST gets one call with whole lists. An empty input list means no call at all
    (ComfyUI would crash on it)."""
    if input_is_list:
        return [dict(inputs)]
    if not inputs:
        return [{}]
    lengths = [len(values) for values in inputs.values()]
    if min(lengths) == 0:
        return []
    count = max(lengths)
    if count == 1:
        return [{name: values[0] for name, values in inputs.items()}]
    return [
        {name: values[index] if index < len(values) else values[-1] for name, values in inputs.items()}
        for index in range(count)
    ]


def first_blocker(args: Mapping[str, Any], linked: Iterable[str]) -> ExecutionBlocker | None:
    for name in linked:
        value = args.get(name)
        if isinstance(value, ExecutionBlocker):
            return value
    return None


def merge_ui(merged: dict[str, Any] | None, ui: Mapping[str, Any]) -> dict[str, Any]:
    """ui dicts of list-mapped calls: lists concatenate per key, anything else: last wins."""
    if merged is None:
        return dict(ui)
    for key, value in ui.items():
        if isinstance(value, list) and isinstance(merged.get(key), list):
            merged[key] = merged[key] + value
        else:
            merged[key] = value
    return merged


def split_result(node_id: str, class_type: str, outputs: int, returned: Any) -> tuple[tuple[Any, ...], Any, Any]:
    """One call's return value -> (values per output, ui, expand graph)."""
    ui = graph = None
    result = returned
    if isinstance(returned, dict):
        # An output node may return only {"ui": ...}; its sockets (if any) then carry None.
        result, ui, graph = returned.get("result", (None,) * outputs), returned.get("ui"), returned.get("expand")
    if isinstance(result, ExecutionBlocker):
        return (result,) * outputs, ui, graph
    if result is None:
        result = ()
    if not isinstance(result, (tuple, list)):
        raise NodeError(
            node_id,
            class_type,
            f"returned {type(returned).__name__}; a node must return a tuple with one value per output "
            "(did you forget the trailing comma: `return (value,)`?), a dict with result/ui/expand, "
            "or an ExecutionBlocker",
        )
    if len(result) < outputs:
        raise NodeError(node_id, class_type, f"returned {len(result)} value(s) but declares {outputs} output(s)")
    return tuple(result[:outputs]), ui, graph


def merge_outputs(per_call: Sequence[tuple[Any, ...]], list_outputs: tuple[bool, ...]) -> list[list[Any]]:
    """Per-call results -> one list per output slot (OUTPUT_IS_LIST outputs concatenate)."""
    merged: list[list[Any]] = []
    for slot, is_list in enumerate(list_outputs):
        if not is_list:
            merged.append([result[slot] for result in per_call])
            continue
        values: list[Any] = []
        for result in per_call:
            value = result[slot]
            if isinstance(value, (list, tuple)):
                values.extend(value)
            else:  # a blocker (or a stray single value) stands for one element
                values.append(value)
        merged.append(values)
    return merged


__all__ = [
    "ClassInfo",
    "DynamicPrompt",
    "NodeNotFoundError",
    "RunState",
    "Schedule",
    "call_sets",
    "first_blocker",
    "merge_outputs",
    "merge_ui",
    "split_result",
]
