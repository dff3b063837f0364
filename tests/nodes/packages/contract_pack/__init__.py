"""Fixture: one good node and two that break the contract; only the broken ones fail."""

from nodes.api import Node, NodeSpec, Output


class ContractOk:
    CATEGORY = "tests"
    RETURN_TYPES = ("INT",)
    FUNCTION = "go"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {}}

    def go(self):
        return (1,)


class ContractNoComma:
    CATEGORY = "tests"
    RETURN_TYPES = "INT"  # the classic mistake: a string, not a tuple
    FUNCTION = "go"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {}}

    def go(self):
        return (1,)


class ContractBadRun(Node):
    spec = NodeSpec(id="ContractBadRun", outputs=[Output("INT")])

    def run(self, ctx, value):  # requires an input the spec does not declare
        return (value,)


NODE_CLASS_MAPPINGS = {"ContractOk": ContractOk, "ContractNoComma": ContractNoComma}
NODES = [ContractBadRun]
