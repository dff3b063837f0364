"""Nodes that misbehave on purpose, for the fault-injection tests (plain Python, no torch)."""

from __future__ import annotations

import threading
from typing import Any

from core.runtime import current

RELEASE = threading.Event()
"""Set by a test to let a BlockPlain node return."""
ENTERED = threading.Event()
"""Set by BlockPlain when it has started blocking."""


class BlockPlain:
    """Blocks in plain Python without ever calling check_interrupted or progress (a badly written
    custom node, or one stuck in a library call), until RELEASE is set or `seconds` pass."""

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"seconds": ("FLOAT", {"default": 5.0, "min": 0.0, "max": 600.0})}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "run"
    CATEGORY = "Testing/Faults"

    def run(self, seconds: float) -> tuple[int]:
        ENTERED.set()
        RELEASE.wait(seconds)
        return (1,)


class CheckingLoop:
    """Loops until interrupted, calling NodeRuntime.check_interrupted() (and nothing else) each turn."""

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"seconds": ("FLOAT", {"default": 30.0, "min": 0.0, "max": 600.0})}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "run"
    CATEGORY = "Testing/Faults"

    def run(self, seconds: float) -> tuple[int]:
        runtime = current()
        assert runtime is not None
        turns = 0
        ENTERED.set()
        while not RELEASE.wait(0.005):
            runtime.check_interrupted()
            turns += 1
            if turns * 0.005 > seconds:
                break
        return (turns,)


FAULT_NODES = {"BlockPlain": BlockPlain, "CheckingLoop": CheckingLoop}
