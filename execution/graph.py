"""Plain helpers over API-format prompts (spec §4.1): shape checks, links, copies.

A prompt is `{node_id: {"class_type": str, "inputs": {name: value}, "_meta": ...}}`; a value that
is a 2-element list `[source node id, output index]` is a link, anything else a constant (a
constant that is itself a list travels wrapped as `{"__value__": [...]}`).

Stdlib only: no torch, no imports from nodes/.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

VALUE_WRAPPER = "__value__"
"""Key of the wrapper the editor puts around list-valued widget constants (spec §4.1)."""


def invalid_prompt(message: str, node_id: Any = None) -> dict[str, Any]:
    """A top-level `invalid_prompt` error (spec §1.2); details name the node as ComfyUI does."""
    return {
        "type": "invalid_prompt",
        "message": message,
        "details": f"Node ID '#{node_id}'" if node_id is not None else "",
        "extra_info": {},
    }


def prompt_shape_error(prompt: Any, registry: Mapping[str, Any]) -> dict[str, Any] | None:
    """The first structural problem that makes the whole prompt unusable, or None.

    Checked in prompt order, as ComfyUI does: the prompt must be a dict of dicts, every node needs
    a known `class_type`, and `inputs` (when present) must be a dict. ComfyUI rejects the whole
    prompt for an unknown class, even if no output depends on that node; we keep that.
    """
    if not isinstance(prompt, Mapping):
        return invalid_prompt(
            f"Cannot execute because the prompt is not a JSON object of nodes (got {type(prompt).__name__})."
        )
    for node_id, node in prompt.items():
        if not isinstance(node_id, str):
            return invalid_prompt(f"Cannot execute because node id {node_id!r} is not a string.", node_id)
        if type(node) is not dict and not isinstance(node, Mapping):  # type() first: ABC checks are slow
            return invalid_prompt(
                f"Cannot execute because node #{node_id} is not a JSON object (got {type(node).__name__}).",
                node_id,
            )
        if "class_type" not in node:
            return invalid_prompt("Cannot execute because a node is missing the class_type property.", node_id)
        class_type = node["class_type"]
        if not isinstance(class_type, str) or class_type not in registry:
            return invalid_prompt(f"Cannot execute because node {class_type} does not exist.", node_id)
        inputs = node.get("inputs", {})
        if type(inputs) is not dict and not isinstance(inputs, Mapping):
            return invalid_prompt(
                f"Cannot execute because the inputs of node #{node_id} ({class_type}) are not a JSON object "
                f"(got {type(inputs).__name__}).",
                node_id,
            )
    return None


def copy_prompt(prompt: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """A copy deep enough that rewriting input values never touches the caller's prompt.

    Node dicts and their `inputs` dicts are new; the values themselves are shared (validation only
    ever replaces them, never mutates them). A node without `inputs` gets an empty dict.
    """
    copied: dict[str, dict[str, Any]] = {}
    for node_id, node in prompt.items():
        node_copy = dict(node)
        node_copy["inputs"] = dict(node.get("inputs") or {})
        copied[node_id] = node_copy
    return copied


def link_slot(value: Any) -> int | None:
    """The output index of a link's second element, or None if it cannot be one.

    ints and integral floats (JSON numbers like 1.0) are accepted, as ComfyUI's `is_link` does;
    bools are not (they are ints to Python but never slots).
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def parse_link(value: Any) -> tuple[str, int] | None:
    """`(source id, slot)` if `value` is a well-formed link, else None."""
    if type(value) is list and len(value) == 2:  # the JSON fast path: validation runs per prompt
        source, slot = value
        if type(source) is str and type(slot) is int:
            return source, slot
    if not isinstance(value, (list, tuple)) or len(value) != 2 or not isinstance(value[0], str):
        return None
    slot = link_slot(value[1])
    return None if slot is None else (value[0], slot)


def unwrap_value(value: Any) -> Any:
    """Unwrap `{"__value__": [...]}` (a list constant the editor wrapped so it is not a link)."""
    if isinstance(value, dict) and VALUE_WRAPPER in value:
        return value[VALUE_WRAPPER]
    return value


def cycle_in_flow_order(path: list[str]) -> list[str]:
    """A cycle found on a DFS stack, listed in data-flow order and closed.

    `path[0]` is the node that was re-entered and each `path[i]` consumes `path[i + 1]`, while the
    last node consumes `path[0]` again. Data therefore flows path[0] -> path[-1] -> ... -> path[1]
    -> path[0].
    """
    return [path[0], *reversed(path[1:]), path[0]]
