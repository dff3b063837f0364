"""Loom's stub node pack for executor tests, written as a ComfyUI V1 custom node package.

Plain Python values (a StubTensor stands in for torch tensors), so the executor's semantics are
tested in milliseconds. `tracking` records what ran.
"""

from __future__ import annotations

from tests.testing_nodes import flow, lists, logic, values

NODE_CLASS_MAPPINGS: dict[str, type] = {
    **values.NODE_CLASS_MAPPINGS,
    **logic.NODE_CLASS_MAPPINGS,
    **lists.NODE_CLASS_MAPPINGS,
    **flow.NODE_CLASS_MAPPINGS,
}
NODE_DISPLAY_NAME_MAPPINGS = {name: f"Test {name}" for name in NODE_CLASS_MAPPINGS}

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
