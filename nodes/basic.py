"""Basic nodes that need no torch: primitives, "Preview as Text" and the Switch.

Names, inputs, defaults, ranges, categories and output names follow ComfyUI's
comfy_extras/nodes_primitive.py, nodes_preview_any.py and nodes_logic.py, so workflows that use
them load unchanged. ComfyUI's String inputs always carry `multiline`, so ours set it explicitly.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from nodes.api import ANY_TYPE, Boolean, Float, Input, Int, Node, NodeRuntime, NodeSpec, Output, String

_LARGEST = sys.maxsize  # ComfyUI's bound for the primitive number widgets


class PrimitiveString(Node):
    spec = NodeSpec(
        id="PrimitiveString",
        display_name="String",
        category="utils/primitive",
        inputs=(String("value", multiline=False),),
        outputs=(Output("STRING"),),
    )

    def run(self, ctx: NodeRuntime, value: str) -> tuple[str]:
        return (value,)


class PrimitiveStringMultiline(Node):
    spec = NodeSpec(
        id="PrimitiveStringMultiline",
        display_name="String (Multiline)",
        category="utils/primitive",
        inputs=(String("value", multiline=True),),
        outputs=(Output("STRING"),),
    )

    def run(self, ctx: NodeRuntime, value: str) -> tuple[str]:
        return (value,)


class PrimitiveInt(Node):
    spec = NodeSpec(
        id="PrimitiveInt",
        display_name="Int",
        category="utils/primitive",
        inputs=(Int("value", min=-_LARGEST, max=_LARGEST, control_after_generate=True),),
        outputs=(Output("INT"),),
    )

    def run(self, ctx: NodeRuntime, value: int) -> tuple[int]:
        return (value,)


class PrimitiveFloat(Node):
    spec = NodeSpec(
        id="PrimitiveFloat",
        display_name="Float",
        category="utils/primitive",
        inputs=(Float("value", min=-_LARGEST, max=_LARGEST, step=0.1),),
        outputs=(Output("FLOAT"),),
    )

    def run(self, ctx: NodeRuntime, value: float) -> tuple[float]:
        return (value,)


class PrimitiveBoolean(Node):
    spec = NodeSpec(
        id="PrimitiveBoolean",
        display_name="Boolean",
        category="utils/primitive",
        inputs=(Boolean("value"),),
        outputs=(Output("BOOLEAN"),),
    )

    def run(self, ctx: NodeRuntime, value: bool) -> tuple[bool]:
        return (value,)


def preview_text(source: Any) -> str:
    """How PreviewAny shows a value: strings as they are, numbers and booleans with str(),
    anything JSON can encode as indented JSON, the rest (tensors, models) with str()."""
    if source is None:
        return "None"
    if isinstance(source, str):
        return source
    if isinstance(source, (int, float, bool)):
        return str(source)
    try:
        return json.dumps(source, indent=4)
    except (TypeError, ValueError):
        pass
    try:
        return str(source)
    except Exception:  # a value whose __str__ itself fails still must not fail the preview
        return "source exists, but could not be serialized."


class PreviewAny(Node):
    """Shows any value as text in the editor (and returns that text)."""

    spec = NodeSpec(
        id="PreviewAny",
        display_name="Preview as Text",
        category="utilities",
        inputs=(Input("source", ANY_TYPE),),
        outputs=(Output("STRING"),),
        output_node=True,
    )

    def run(self, ctx: NodeRuntime, source: Any = None) -> dict[str, Any]:
        text = preview_text(source)
        return {"ui": {"text": [text]}, "result": (text,)}


class ComfySwitchNode(Node):
    """Passes on_true or on_false through depending on `switch`; only the chosen branch runs."""

    spec = NodeSpec(
        id="ComfySwitchNode",
        display_name="Switch",
        category="logic",
        experimental=True,
        inputs=(
            Boolean("switch"),
            Input("on_false", ANY_TYPE, optional=True, lazy=True),
            Input("on_true", ANY_TYPE, optional=True, lazy=True),
        ),
        outputs=(Output(ANY_TYPE, name="output"),),
    )

    # `...` marks an input that is not connected at all (absent from the call), as opposed to
    # None, which the executor passes for a connected lazy input it has not evaluated yet.

    @classmethod
    def validate(cls, switch: Any = None, on_false: Any = ..., on_true: Any = ...) -> bool | str:
        if on_false is ... and on_true is ...:
            return "At least one of on_false or on_true must be connected to Switch node"
        return True

    def check_lazy(self, ctx: NodeRuntime, switch: bool, on_false: Any = ..., on_true: Any = ...) -> list[str]:
        if on_false is ...:
            return ["on_true"]
        if on_true is ...:
            return ["on_false"]
        wanted = "on_true" if switch else "on_false"
        return [wanted] if (on_true if switch else on_false) is None else []

    def run(self, ctx: NodeRuntime, switch: bool, on_false: Any = ..., on_true: Any = ...) -> tuple[Any]:
        if on_true is ...:
            return (on_false,)
        if on_false is ...:
            return (on_true,)
        return (on_true if switch else on_false,)


NODES = [
    PrimitiveString,
    PrimitiveStringMultiline,
    PrimitiveInt,
    PrimitiveFloat,
    PrimitiveBoolean,
    PreviewAny,
    ComfySwitchNode,
]
