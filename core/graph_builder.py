"""GraphBuilder: build API-format graphs in code (tests, and nodes that expand into subgraphs).

Same interface as ComfyUI's `comfy_execution.graph_utils`, so expansion code written for it works.
The default prefix for ids of expanded nodes (`<parent id>.<call index>.<graph index>.`) is kept in
a context variable that the executor sets before each node call, instead of on the class, so
concurrently running async nodes never share it.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any

_default_prefix: ContextVar[tuple[str, int, int]] = ContextVar("loom_graph_prefix", default=("", 0, 0))


def is_link(value: Any) -> bool:
    """A link is `[source node id (str), output index (int)]` (spec §4.1)."""
    return (
        isinstance(value, (list, tuple))
        and len(value) == 2
        and isinstance(value[0], str)
        and isinstance(value[1], (int, float))
        and not isinstance(value[1], bool)
    )


class Node:
    def __init__(self, node_id: str, class_type: str, inputs: dict[str, Any]) -> None:
        self.id = node_id
        self.class_type = class_type
        self.inputs = inputs
        self.override_display_id: str | None = None

    def out(self, index: int) -> list[Any]:
        return [self.id, index]

    def set_input(self, key: str, value: Any) -> None:
        if value is None:
            self.inputs.pop(key, None)
        else:
            self.inputs[key] = value

    def get_input(self, key: str) -> Any:
        return self.inputs.get(key)

    def set_override_display_id(self, override_display_id: str) -> None:
        self.override_display_id = override_display_id

    def serialize(self) -> dict[str, Any]:
        serialized: dict[str, Any] = {"class_type": self.class_type, "inputs": self.inputs}
        if self.override_display_id is not None:
            serialized["override_display_id"] = self.override_display_id
        return serialized


class GraphBuilder:
    def __init__(self, prefix: str | None = None) -> None:
        self.prefix = GraphBuilder.alloc_prefix() if prefix is None else prefix
        self.nodes: dict[str, Node] = {}
        self.id_gen = 1

    @classmethod
    def set_default_prefix(cls, prefix_root: str, call_index: int, graph_index: int = 0) -> None:
        _default_prefix.set((prefix_root, call_index, graph_index))

    @classmethod
    def alloc_prefix(
        cls, root: str | None = None, call_index: int | None = None, graph_index: int | None = None
    ) -> str:
        default_root, default_call, default_graph = _default_prefix.get()
        root = default_root if root is None else root
        call_index = default_call if call_index is None else call_index
        if graph_index is None:
            graph_index = default_graph
            _default_prefix.set((default_root, default_call, default_graph + 1))
        return f"{root}.{call_index}.{graph_index}."

    def node(self, class_type: str, id: str | None = None, **kwargs: Any) -> Node:
        if id is None:
            id = str(self.id_gen)
            self.id_gen += 1
        node_id = self.prefix + id
        if node_id in self.nodes:
            return self.nodes[node_id]
        node = Node(node_id, class_type, kwargs)
        self.nodes[node_id] = node
        return node

    def lookup_node(self, id: str) -> Node | None:
        return self.nodes.get(self.prefix + id)

    def finalize(self) -> dict[str, dict[str, Any]]:
        return {node_id: node.serialize() for node_id, node in self.nodes.items()}

    def replace_node_output(self, node_id: str, index: int, new_value: Any) -> None:
        node_id = self.prefix + node_id
        to_remove = []
        for node in self.nodes.values():
            for key, value in node.inputs.items():
                if is_link(value) and value[0] == node_id and value[1] == index:
                    if new_value is None:
                        to_remove.append((node, key))
                    else:
                        node.inputs[key] = new_value
        for node, key in to_remove:
            del node.inputs[key]

    def remove_node(self, id: str) -> None:
        del self.nodes[self.prefix + id]
