from __future__ import annotations

from nodes.api import Int, Node, NodeSpec, Output

from ..helpers import SHOUT_SUFFIX  # a parent-relative import must resolve inside the package


class GoodDeclared(Node):
    """Doubles a number."""

    spec = NodeSpec(id="GoodDeclared", category="tests", inputs=[Int("value", 1)], outputs=[Output("INT")])

    def run(self, ctx, value):
        assert SHOUT_SUFFIX == "!"
        return (value * 2,)
