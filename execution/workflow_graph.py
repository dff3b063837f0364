"""The graph side of UI-workflow conversion: parsing graph levels and resolving links (spec §9).

A UI workflow is a tree of graph levels: the root workflow and, for frontend 1.x, subgraph
definitions whose instances appear as nodes. `Workspace` parses every level once into `UiGraph`
(nodes and links keyed by id) and answers one question for the converter: what feeds input k of
node n in scope s? The answer follows links through legacy Reroute nodes, bypassed nodes, subgraph
boundaries and PrimitiveNodes until it reaches a real node's output (a link), a constant, nothing,
or a muted node (the input is dropped). The walk is an explicit loop, never recursion, so a chain of
ten thousand reroutes or bypassed nodes resolves like a chain of two.

Plain stdlib: no torch, no imports from nodes/.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from core.errors import WorkflowError
from core.spec import ANY_TYPE, types_compatible

log = logging.getLogger(__name__)

MODE_NEVER = 2
"""litegraph's NEVER mode: the node is muted; it and its links are dropped."""
MODE_BYPASS = 4
"""litegraph's BYPASS mode: consumers are rewired to the node's input of the same type."""

SUBGRAPH_INPUT_ID = "-10"
SUBGRAPH_OUTPUT_ID = "-20"
"""Ids of the boundary pseudo-nodes inside a subgraph definition (litegraph constants)."""

PRIMITIVE_TYPE = "PrimitiveNode"
REROUTE_TYPES = frozenset({"Reroute"})
NOTE_TYPES = frozenset({"Note", "MarkdownNote"})
VIRTUAL_TYPES = REROUTE_TYPES | NOTE_TYPES | {PRIMITIVE_TYPE}
"""Frontend-only node types that are never emitted into the API prompt."""


@dataclass(frozen=True)
class UiLink:
    id: int
    origin_id: str
    origin_slot: int
    target_id: str
    target_slot: int
    type: Any = None


@dataclass(frozen=True)
class Constant:
    """An input resolved to a value rather than a link (PrimitiveNode, subgraph widget)."""

    value: Any


class _Removed:
    """The input must disappear: it was fed by a muted node (the frontend deletes such inputs)."""

    def __repr__(self) -> str:
        return "REMOVED"


REMOVED = _Removed()

Resolved = tuple[str, int] | Constant | _Removed | None
"""A link `(origin exec id, slot)`, a constant, REMOVED, or None: nothing feeds it (keep the widget)."""


@dataclass
class UiGraph:
    """One graph level: the root workflow or one subgraph definition."""

    label: str
    """How messages name this level: "workflow" or "subgraph 'Name' (<id>)"."""
    nodes: dict[str, dict[str, Any]]
    links: dict[int, UiLink]
    inputs: list[dict[str, Any]] = field(default_factory=list)
    outputs: list[dict[str, Any]] = field(default_factory=list)
    input_node_id: str = SUBGRAPH_INPUT_ID
    output_node_id: str = SUBGRAPH_OUTPUT_ID
    promoted: list[int] = field(default_factory=list)
    """Indices of subgraph inputs that feed an inner widget, in order: an instance's widgets_values
    holds one value per promoted input, in this order."""

    def output_link(self, slot: int) -> UiLink | None:
        """The inner link that feeds subgraph output `slot`."""
        if 0 <= slot < len(self.outputs):
            for raw_id in self.outputs[slot].get("linkIds") or ():
                link_id = _as_int(raw_id)
                link = self.links.get(link_id) if link_id is not None else None
                if link is not None:
                    return link
        for link in self.links.values():
            if link.target_id == self.output_node_id and link.target_slot == slot:
                return link
        return None


@dataclass(frozen=True, eq=False)
class Scope:
    """Where a node lives: a graph level plus the chain of subgraph instances leading to it."""

    graph: UiGraph
    path: tuple[str, ...] = ()
    parent: Scope | None = None
    instance: Mapping[str, Any] | None = None
    overrides: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    """Widget values an instance's `properties.proxyWidgets` pushes onto inner nodes: id -> name -> value."""
    entered: tuple[str, ...] = ()
    """Subgraph definition ids entered so far (guards against a subgraph containing itself)."""

    def exec_id(self, node_id: str) -> str:
        """The node's id in the API prompt: instance ids and the node id joined by ':'."""
        return ":".join((*self.path, node_id))


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            return None
    return None


def node_id_str(value: Any) -> str | None:
    """A node id as the prompt spells it (ints and strings accepted, bools and the rest not)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, str) and value:
        return value
    return None


def parse_link(raw: Any) -> UiLink | None:
    """A link from either schema: 0.4 arrays or 1.0 objects. None when malformed."""
    if isinstance(raw, (list, tuple)) and len(raw) >= 5:
        fields = list(raw[:6]) + [None] * (6 - len(raw[:6]))
    elif isinstance(raw, Mapping):
        keys = ("id", "origin_id", "origin_slot", "target_id", "target_slot", "type")
        fields = [raw.get(key) for key in keys]
    else:
        return None
    link_id, origin_slot, target_slot = _as_int(fields[0]), _as_int(fields[2]), _as_int(fields[4])
    origin, target = node_id_str(fields[1]), node_id_str(fields[3])
    if link_id is None or origin_slot is None or target_slot is None or origin is None or target is None:
        return None
    return UiLink(link_id, origin, origin_slot, target, target_slot, fields[5])


def parse_links(raw: Any, label: str, problems: list[str]) -> dict[int, UiLink]:
    if raw is None:
        return {}
    if isinstance(raw, Mapping):  # some writers key links by id
        raw = list(raw.values())
    if not isinstance(raw, list):
        problems.append(f"{label}: 'links' must be a list, got {type(raw).__name__}")
        return {}
    links: dict[int, UiLink] = {}
    for index, entry in enumerate(raw):
        if entry is None:
            continue  # old litegraph versions leave holes where links were deleted
        link = parse_link(entry)
        if link is None:
            problems.append(f"{label}: link #{index} is malformed: {entry!r}")
        else:
            links[link.id] = link
    return links


def parse_nodes(raw: Any, label: str, problems: list[str]) -> dict[str, dict[str, Any]]:
    """Nodes by id, in execution order (the saved `order`, then list position)."""
    if not isinstance(raw, list):
        problems.append(f"{label}: 'nodes' must be a list, got {type(raw).__name__}")
        return {}
    nodes: list[tuple[Any, int, str, dict[str, Any]]] = []
    seen: set[str] = set()
    for index, node in enumerate(raw):
        problem = _node_problem(node, index)
        node_id = node_id_str(node.get("id")) if isinstance(node, Mapping) else None
        if problem is None and node_id in seen:
            problem = f"node {node_id}: the id is used by more than one node"
        if problem is not None:
            problems.append(f"{label}: {problem}")
            continue
        assert node_id is not None
        seen.add(node_id)
        order = node.get("order")
        sort_key = order if isinstance(order, (int, float)) and not isinstance(order, bool) else float("inf")
        nodes.append((sort_key, index, node_id, node))
    nodes.sort(key=lambda item: (item[0], item[1]))
    return {node_id: node for _, _, node_id, node in nodes}


def _node_problem(node: Any, index: int) -> str | None:
    if not isinstance(node, Mapping):
        return f"node #{index} must be an object, got {type(node).__name__}"
    node_id = node_id_str(node.get("id"))
    if node_id is None:
        return f"node #{index} has no usable 'id' (got {node.get('id')!r})"
    if not isinstance(node.get("type"), str) or not node["type"]:
        return f"node {node_id} has no 'type'"
    inputs = node.get("inputs")
    if inputs is not None and (not isinstance(inputs, list) or not all(isinstance(i, Mapping) for i in inputs)):
        return f"node {node_id} ({node['type']}): 'inputs' must be a list of objects"
    outputs = node.get("outputs")
    if outputs is not None and (not isinstance(outputs, list) or not all(isinstance(o, Mapping) for o in outputs)):
        return f"node {node_id} ({node['type']}): 'outputs' must be a list of objects"
    values = node.get("widgets_values")
    if values is not None and not isinstance(values, (list, Mapping)):
        return f"node {node_id} ({node['type']}): 'widgets_values' must be a list or an object"
    mode = node.get("mode", 0)
    if mode is not None and (isinstance(mode, bool) or not isinstance(mode, int)):
        return f"node {node_id} ({node['type']}): 'mode' must be an integer, got {mode!r}"
    return None


def node_mode(node: Mapping[str, Any]) -> int:
    return node.get("mode") or 0


def input_link_id(entry: Mapping[str, Any]) -> int | None:
    return _as_int(entry.get("link")) if entry.get("link") is not None else None


def bypass_input_index(node: Mapping[str, Any], slot: int, target_type: Any) -> int | None:
    """Which input of a bypassed node stands in for its output `slot` (frontend rule).

    The input at the same index when its type fits both the output and the consumer, else the first
    input of exactly the consumer's type, else the first input compatible with both; a wildcard
    consumer takes the same index (or the first input).
    """
    inputs = node.get("inputs") or []
    if not inputs:
        return None
    if target_type in (None, "", ANY_TYPE):
        return slot if 0 <= slot < len(inputs) else 0
    outputs = node.get("outputs") or []
    output_type = outputs[slot].get("type") if 0 <= slot < len(outputs) else target_type

    def fits(entry: Mapping[str, Any]) -> bool:
        kind = entry.get("type")
        return _loose_compatible(kind, output_type) and _loose_compatible(kind, target_type)

    if 0 <= slot < len(inputs) and fits(inputs[slot]):
        return slot
    for index, entry in enumerate(inputs):
        if entry.get("type") == target_type:
            return index
    for index, entry in enumerate(inputs):
        if fits(entry):
            return index
    return None


def _loose_compatible(a: Any, b: Any) -> bool:
    # litegraph treats an empty or missing type like the wildcard.
    if a in (None, "", 0) or b in (None, "", 0):
        return True
    return types_compatible(a, b) or types_compatible(b, a)


class Workspace:
    """Every graph level of one workflow, and link resolution across them."""

    def __init__(
        self,
        root: UiGraph,
        definitions: Mapping[str, UiGraph],
        passthrough_types: Collection[str] = REROUTE_TYPES,
    ) -> None:
        self.root = Scope(graph=root)
        self.definitions = definitions
        self.passthrough_types = frozenset(passthrough_types)
        self._children: dict[tuple[str, ...], Scope] = {}

    def child_scope(self, scope: Scope, node_id: str) -> Scope | None:
        """The scope inside a subgraph instance, or None when the node is not an instance."""
        node = scope.graph.nodes[node_id]
        definition = self.definitions.get(node["type"])
        if definition is None:
            return None
        path = (*scope.path, node_id)
        cached = self._children.get(path)
        if cached is not None:
            return cached
        if node["type"] in scope.entered:
            raise WorkflowError(f"node {scope.exec_id(node_id)}: {definition.label} contains an instance of itself")
        child = Scope(
            graph=definition,
            path=path,
            parent=scope,
            instance=node,
            overrides=_proxy_overrides(node),
            entered=(*scope.entered, node["type"]),
        )
        self._children[path] = child
        return child

    def resolve_input(self, scope: Scope, node_id: str, index: int, target_type: Any) -> Resolved:
        """What feeds input `index` of a node, following virtual and bypassed nodes and subgraphs."""
        visited: set[tuple[str, tuple[str, ...], str, int]] = set()
        state: tuple[str, Scope, str, int] | None = ("in", scope, node_id, index)
        result: Resolved = None
        while state is not None:
            kind, at_scope, at_node, slot = state
            key = (kind, at_scope.path, at_node, slot)
            if key in visited:
                name = (scope.graph.nodes[node_id].get("inputs") or [])[index].get("name")
                raise WorkflowError(
                    f"node {scope.exec_id(node_id)} input '{name}': its links loop back on themselves at node "
                    f"{at_scope.exec_id(at_node)} (through reroutes, bypassed nodes or subgraph boundaries)"
                )
            visited.add(key)
            if kind == "in":
                result, state = self._step_in(at_scope, at_node, slot)
            else:
                result, state = self._step_out(at_scope, at_node, slot, target_type)
        return result

    def _step_in(self, scope: Scope, node_id: str, slot: int) -> tuple[Resolved, Any]:
        inputs = scope.graph.nodes[node_id].get("inputs") or []
        if not 0 <= slot < len(inputs):  # a link's slot may be anything a file says, negative too
            return None, None
        link_id = input_link_id(inputs[slot])
        if link_id is None:
            return None, None
        link = scope.graph.links.get(link_id)
        if link is None:
            log.debug(
                "%s: node %s input %d names link %s, which does not exist; dropped",
                scope.graph.label,
                scope.exec_id(node_id),
                slot,
                link_id,
            )
            return None, None
        return self._follow(scope, link)

    def _follow(self, scope: Scope, link: UiLink) -> tuple[Resolved, Any]:
        if scope.instance is not None and link.origin_id == scope.graph.input_node_id:
            return self._leave_subgraph(scope, link.origin_slot)
        if link.origin_id not in scope.graph.nodes:
            log.debug(
                "%s: link %d comes from node %s, which does not exist; dropped",
                scope.graph.label,
                link.id,
                scope.exec_id(link.origin_id),
            )
            return None, None
        return None, ("out", scope, link.origin_id, link.origin_slot)

    def _leave_subgraph(self, scope: Scope, slot: int) -> tuple[Resolved, Any]:
        """A link from the subgraph's input node: continue with what feeds the instance."""
        assert scope.parent is not None and scope.instance is not None
        instance_id = scope.path[-1]
        index = instance_input_index(scope.graph, scope.instance, slot)
        inputs = scope.instance.get("inputs") or []
        if index is not None and input_link_id(inputs[index]) is not None:
            return None, ("in", scope.parent, instance_id, index)
        return instance_widget_value(scope.graph, scope.instance, slot), None

    def _step_out(self, scope: Scope, node_id: str, slot: int, target_type: Any) -> tuple[Resolved, Any]:
        node = scope.graph.nodes[node_id]
        node_type = node["type"]
        if node_type == PRIMITIVE_TYPE:
            # The frontend copies the primitive's value into every widget it feeds, whatever its mode.
            values = node.get("widgets_values")
            return (Constant(values[0]) if isinstance(values, list) and values else None), None
        if node_type in NOTE_TYPES:
            return None, None
        if node_mode(node) == MODE_BYPASS:
            index = bypass_input_index(node, slot, target_type)
            if index is None:
                log.debug(
                    "bypassed node %s has no input of type %s for output %d; input dropped",
                    scope.exec_id(node_id),
                    target_type,
                    slot,
                )
                return None, None
            return None, ("in", scope, node_id, index)
        if node_type in self.passthrough_types:
            return None, ("in", scope, node_id, slot)
        if node_mode(node) == MODE_NEVER:
            return REMOVED, None
        child = self.child_scope(scope, node_id)
        if child is not None:
            link = child.graph.output_link(slot)
            return (None, None) if link is None else self._follow(child, link)
        return (scope.exec_id(node_id), slot), None


def instance_input_index(definition: UiGraph, instance: Mapping[str, Any], slot: int) -> int | None:
    """The instance input matching subgraph input `slot` (by name: saved instances may omit
    unlinked widget inputs, so positions are not reliable)."""
    inputs = instance.get("inputs") or []
    name = definition.inputs[slot].get("name") if 0 <= slot < len(definition.inputs) else None
    if name is not None:
        for index, entry in enumerate(inputs):
            if entry.get("name") == name:
                return index
        return None
    return slot if 0 <= slot < len(inputs) else None


def instance_widget_value(definition: UiGraph, instance: Mapping[str, Any], slot: int) -> Constant | None:
    """The value an instance's promoted widget gives subgraph input `slot`, if it has one."""
    values = instance.get("widgets_values")
    name = definition.inputs[slot].get("name") if 0 <= slot < len(definition.inputs) else None
    if isinstance(values, Mapping):
        return Constant(values[name]) if name in values else None
    if not isinstance(values, list):
        return None
    proxies = _proxy_entries(instance)
    if proxies is not None:
        # proxyWidgets entries ["-1", name] stand for promoted subgraph inputs.
        for index, (target, widget) in enumerate(proxies):
            if target == "-1" and widget == name and index < len(values):
                return Constant(values[index])
        return None
    if slot in definition.promoted:
        position = definition.promoted.index(slot)
        if position < len(values):
            return Constant(values[position])
    return None


def _proxy_entries(instance: Mapping[str, Any]) -> list[tuple[str, str]] | None:
    properties = instance.get("properties")
    raw = properties.get("proxyWidgets") if isinstance(properties, Mapping) else None
    if not isinstance(raw, list):
        return None
    entries = []
    for entry in raw:
        if isinstance(entry, (list, tuple)) and len(entry) >= 2 and isinstance(entry[1], str):
            entries.append((node_id_str(entry[0]) or "", entry[1]))
        else:
            entries.append(("", ""))  # keep positions aligned with widgets_values
    return entries


def _proxy_overrides(instance: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Inner widget values an instance overrides through `properties.proxyWidgets` (frontend 1.2x+)."""
    proxies = _proxy_entries(instance)
    values = instance.get("widgets_values")
    overrides: dict[str, dict[str, Any]] = {}
    if proxies is None or not isinstance(values, list):
        return overrides
    for (target, widget), value in zip(proxies, values, strict=False):
        if target and target != "-1" and widget:
            overrides.setdefault(target, {})[widget] = value
    return overrides
