"""Stub nodes for list semantics (spec §4.5) and ExecutionBlocker (spec §3.2)."""

from __future__ import annotations

from typing import Any

from core.runtime import ExecutionBlocker
from tests.testing_nodes.tracking import record


class MakeList:
    """Outputs the list [start, start + 1, ...] (OUTPUT_IS_LIST): consumers run once per element."""

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "count": ("INT", {"default": 3, "min": 0, "max": 1000}),
                "start": ("INT", {"default": 0, "min": -1000, "max": 1000}),
            }
        }

    RETURN_TYPES = ("INT",)
    OUTPUT_IS_LIST = (True,)
    FUNCTION = "make"
    CATEGORY = "Testing/Lists"

    def make(self, count: int, start: int) -> tuple[list[int]]:
        record("MakeList")
        return (list(range(start, start + count)),)


class ListSum:
    """INPUT_IS_LIST: one call with whole lists (constants too). Returns the sum and the count."""

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"values": ("INT", {})}, "optional": {"offset": ("INT", {"default": 0})}}

    RETURN_TYPES = ("INT", "INT")
    RETURN_NAMES = ("sum", "count")
    INPUT_IS_LIST = True
    FUNCTION = "total"
    CATEGORY = "Testing/Lists"

    def total(self, values: list[int], offset: list[int] | None = None) -> tuple[int, int]:
        record("ListSum")
        return (sum(values) + sum(offset or [0]), len(values))


class Blocker:
    """Blocks its output (optionally only when the value equals `only_value`)."""

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "value": ("*",),
                "block": ("BOOLEAN", {"default": True}),
                "message": ("STRING", {"default": ""}),
            },
            "optional": {"only_value": ("INT", {})},
        }

    RETURN_TYPES = ("*",)
    FUNCTION = "run"
    CATEGORY = "Testing/Lists"

    def run(self, value: Any, block: bool, message: str, only_value: int | None = None) -> tuple[Any]:
        record("Blocker")
        if block and (only_value is None or value == only_value):
            return (ExecutionBlocker(message or None),)
        return (value,)


NODE_CLASS_MAPPINGS = {"MakeList": MakeList, "ListSum": ListSum, "Blocker": Blocker}
