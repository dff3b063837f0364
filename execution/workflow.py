"""UI-format workflow JSON -> API prompt, as the ComfyUI frontend's graphToPrompt does (spec §9).

Saved workflows (the editor's "Save", PNG `workflow` chunks) describe the canvas: nodes with
positional widget values, links by id, reroutes, notes, muted and bypassed nodes, subgraphs. The
backend runs API prompts `{id: {class_type, inputs}}`. `workflow_to_prompt` converts the first into
the second with the node specs the server knows, so a saved workflow can be run headless:

- widget values are named through the spec (workflow_widgets.py);
- every linked input is resolved through reroutes, PrimitiveNodes, bypassed nodes and subgraph
  boundaries (workflow_graph.py); a link from a muted node removes the input;
- Reroute, PrimitiveNode, Note and MarkdownNote are never emitted, nor are muted (mode 2) or
  bypassed (mode 4) nodes; subgraph instances are flattened to `"<instance>:<inner>"` ids.

Anything that cannot be converted raises WorkflowError naming the nodes involved; every problem of
one kind is reported at once.

Plain stdlib: no torch, no imports from nodes/ (specs are looked up through the callable passed in).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Iterator, Mapping
from typing import Any

from core.errors import WorkflowError
from core.spec import NodeSpec
from execution.workflow_graph import (
    MODE_BYPASS,
    MODE_NEVER,
    REMOVED,
    REROUTE_TYPES,
    SUBGRAPH_INPUT_ID,
    SUBGRAPH_OUTPUT_ID,
    VIRTUAL_TYPES,
    Constant,
    Scope,
    UiGraph,
    Workspace,
    input_link_id,
    node_id_str,
    node_mode,
    parse_links,
    parse_nodes,
)
from execution.workflow_widgets import widget_values

log = logging.getLogger(__name__)

SpecLookup = Callable[[str], NodeSpec | None]

MAX_EXPANDED_NODES = 100_000
"""Most nodes a workflow may expand to. Subgraphs nest: a 2 kB file whose every level holds four
instances of the next expands to 4**depth nodes, so the walk is bounded, not the file size."""


def is_ui_workflow(data: Any) -> bool:
    """True for the editor's workflow format (a "nodes" list plus links or a schema version), False
    for an API prompt `{id: {class_type, inputs}}` or anything else."""
    if not isinstance(data, Mapping) or not isinstance(data.get("nodes"), list):
        return False
    return "links" in data or "version" in data


def workflow_to_prompt(
    workflow: Mapping[str, Any],
    specs: SpecLookup,
    *,
    passthrough_types: Collection[str] = (),
    max_nodes: int = MAX_EXPANDED_NODES,
) -> dict[str, dict[str, Any]]:
    """Convert a UI workflow (schema 0.4 or 1.x, with subgraphs) to an API prompt.

    `specs(class_type)` gives the NodeSpec of an installed node type, or None. `passthrough_types`
    names extra frontend-only node types (custom reroutes) that pass input k through to output k.
    A workflow whose subgraphs expand to more than `max_nodes` nodes raises WorkflowError.
    """
    if not isinstance(workflow, Mapping):
        raise WorkflowError(f"a workflow must be a JSON object, got {type(workflow).__name__}")
    if not isinstance(workflow.get("nodes"), list):
        raise WorkflowError("not a UI workflow: it has no 'nodes' list (an API prompt needs no conversion)")
    problems: list[str] = []
    root = UiGraph(
        label="workflow",
        nodes=parse_nodes(workflow["nodes"], "workflow", problems),
        links=parse_links(workflow.get("links"), "workflow", problems),
    )
    definitions = _parse_definitions(workflow, problems)
    if problems:
        raise WorkflowError("the workflow is malformed:\n  - " + "\n  - ".join(problems))
    workspace = Workspace(root, definitions, REROUTE_TYPES | frozenset(passthrough_types))
    return _convert(workspace, specs, _group_node_types(workflow), max_nodes)


def _convert(
    workspace: Workspace, specs: SpecLookup, group_nodes: Collection[str], max_nodes: int
) -> dict[str, dict[str, Any]]:
    prompt: dict[str, dict[str, Any]] = {}
    unknown: dict[str, list[str]] = {}
    for scope, node_id in _executable_nodes(workspace, max_nodes):
        node = scope.graph.nodes[node_id]
        spec = specs(node["type"])
        if spec is None:
            unknown.setdefault(node["type"], []).append(scope.exec_id(node_id))
            continue
        prompt[scope.exec_id(node_id)] = _emit(workspace, scope, node_id, spec)
    if unknown:
        raise WorkflowError(_unknown_message(unknown, group_nodes))
    return prompt


def _executable_nodes(workspace: Workspace, max_nodes: int) -> Iterator[tuple[Scope, str]]:
    """Every node that becomes a prompt entry, in execution order, subgraphs flattened in place.

    An explicit stack of graph levels, not recursion: nesting depth is whatever the file says.
    Every node visited counts against `max_nodes`, instances included.
    """
    virtual = VIRTUAL_TYPES | workspace.passthrough_types
    stack: list[tuple[Scope, Iterator[str]]] = [(workspace.root, iter(list(workspace.root.graph.nodes)))]
    visited = 0
    while stack:
        scope, remaining = stack[-1]
        node_id = next(remaining, None)
        if node_id is None:
            stack.pop()
            continue
        visited += 1
        if visited > max_nodes:
            raise WorkflowError(
                f"the workflow expands to more than {max_nodes} nodes (at node {scope.exec_id(node_id)}): its "
                "subgraphs contain instances of other subgraphs that multiply at every level"
            )
        node = scope.graph.nodes[node_id]
        if node["type"] in virtual or node_mode(node) in (MODE_NEVER, MODE_BYPASS):
            continue  # a muted or bypassed subgraph instance drops everything inside it too
        child = workspace.child_scope(scope, node_id)
        if child is not None:
            stack.append((child, iter(list(child.graph.nodes))))
            continue
        yield scope, node_id


def _emit(workspace: Workspace, scope: Scope, node_id: str, spec: NodeSpec) -> dict[str, Any]:
    node = scope.graph.nodes[node_id]
    where = f"node {scope.exec_id(node_id)} ({node['type']})"
    inputs = {name: _constant(value) for name, value in widget_values(node, spec, where).items()}
    for name, value in scope.overrides.get(node_id, {}).items():
        declared = spec.input(name)
        if declared is not None and declared.is_widget:
            inputs[name] = _constant(value)
    for index, entry in enumerate(node.get("inputs") or []):
        name = entry.get("name")
        if input_link_id(entry) is None or not isinstance(name, str):
            continue
        declared = spec.input(name)
        if declared is not None and not declared.linkable:
            continue  # hidden inputs are filled in by the executor, never by links
        target_type = entry.get("type") or (declared.type if declared is not None else None)
        resolved = workspace.resolve_input(scope, node_id, index, target_type)
        if resolved is REMOVED:
            inputs.pop(name, None)
        elif isinstance(resolved, Constant):
            inputs[name] = _constant(resolved.value)
        elif isinstance(resolved, tuple):
            inputs[name] = [resolved[0], resolved[1]]
        # None: nothing feeds the input; a widget keeps its own value, a socket stays empty.
    title = node.get("title")
    if not isinstance(title, str) or not title:
        title = spec.display_name or node["type"]
    return {"inputs": inputs, "class_type": node["type"], "_meta": {"title": title}}


def _constant(value: Any) -> Any:
    # A bare list would read as a link [id, slot]; the backend unwraps {"__value__": [...]}.
    return {"__value__": value} if isinstance(value, list) else value


def _unknown_message(unknown: Mapping[str, list[str]], group_nodes: Collection[str]) -> str:
    parts = []
    for node_type, ids in sorted(unknown.items()):
        nodes = ", ".join(ids)
        if node_type in group_nodes:
            parts.append(
                f"'{node_type}' (node {nodes}) is a legacy group node, which is not supported: "
                "convert it to a subgraph in the editor"
            )
        else:
            parts.append(f"'{node_type}' (node {nodes})")
    return "the workflow uses node types that are not installed: " + "; ".join(parts)


def _group_node_types(workflow: Mapping[str, Any]) -> frozenset[str]:
    """Type names of legacy group nodes ("workflow>Name"), defined in extra.groupNodes."""
    extra = workflow.get("extra")
    groups = extra.get("groupNodes") if isinstance(extra, Mapping) else None
    if not isinstance(groups, Mapping):
        return frozenset()
    return frozenset(f"{prefix}{name}" for name in groups for prefix in ("workflow>", "workflow/"))


def _parse_definitions(workflow: Mapping[str, Any], problems: list[str]) -> dict[str, UiGraph]:
    """Every subgraph definition by id, including ones nested in other definitions."""
    definitions: dict[str, UiGraph] = {}
    pending = list(_definition_list(workflow, "workflow", problems))
    while pending:
        raw = pending.pop(0)
        subgraph_id = raw.get("id")
        if not isinstance(subgraph_id, str) or not subgraph_id:
            problems.append(f"subgraph definition {raw.get('name')!r} has no 'id'")
            continue
        label = f"subgraph '{raw.get('name') or subgraph_id}' ({subgraph_id})"
        if subgraph_id in definitions:
            log.debug("%s is defined more than once; the first definition is used", label)
            continue
        definitions[subgraph_id] = _parse_definition(raw, label, problems)
        pending.extend(_definition_list(raw, label, problems))
    return definitions


def _definition_list(container: Mapping[str, Any], label: str, problems: list[str]) -> list[Mapping[str, Any]]:
    block = container.get("definitions")
    if block is None:
        return []
    raw = block.get("subgraphs") if isinstance(block, Mapping) else block
    if raw is None:
        return []
    if not isinstance(raw, list) or not all(isinstance(item, Mapping) for item in raw):
        problems.append(f"{label}: 'definitions.subgraphs' must be a list of objects")
        return []
    return raw


def _parse_definition(raw: Mapping[str, Any], label: str, problems: list[str]) -> UiGraph:
    io_lists = []
    for key in ("inputs", "outputs"):
        value = raw.get(key) or []
        if not isinstance(value, list) or not all(isinstance(item, Mapping) for item in value):
            problems.append(f"{label}: '{key}' must be a list of objects")
            value = []
        io_lists.append(list(value))
    graph = UiGraph(
        label=label,
        nodes=parse_nodes(raw.get("nodes"), label, problems),
        links=parse_links(raw.get("links"), label, problems),
        inputs=io_lists[0],
        outputs=io_lists[1],
        input_node_id=_io_node_id(raw.get("inputNode"), SUBGRAPH_INPUT_ID),
        output_node_id=_io_node_id(raw.get("outputNode"), SUBGRAPH_OUTPUT_ID),
    )
    graph.promoted = _promoted_inputs(graph)
    return graph


def _io_node_id(raw: Any, default: str) -> str:
    node_id = node_id_str(raw.get("id")) if isinstance(raw, Mapping) else None
    return node_id or default


def _promoted_inputs(graph: UiGraph) -> list[int]:
    """Subgraph inputs that feed a widget input inside: each becomes a widget on the instance."""
    promoted = []
    for slot in range(len(graph.inputs)):
        for link in graph.links.values():
            if link.origin_id != graph.input_node_id or link.origin_slot != slot:
                continue
            target = graph.nodes.get(link.target_id)
            entries = (target.get("inputs") or []) if target is not None else []
            if any(input_link_id(entry) == link.id and entry.get("widget") for entry in entries):
                promoted.append(slot)
                break
    return promoted
