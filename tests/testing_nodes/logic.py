"""Stub nodes for the executor's semantics: math, lazy inputs, variadic inputs, IS_CHANGED,
hidden inputs, raw links, failures, in-place mutation, output nodes."""

from __future__ import annotations

import asyncio
import itertools
import operator
from typing import Any

from tests.testing_nodes.tracking import FINGERPRINTS, record
from tests.testing_nodes.values import StubTensor

_MATH = {
    "add": operator.add,
    "subtract": operator.sub,
    "multiply": operator.mul,
    "divide": operator.floordiv,
    "modulo": operator.mod,
    "power": operator.pow,
}
_COMPARE = {"lt": operator.lt, "le": operator.le, "eq": operator.eq, "ne": operator.ne, "gt": operator.gt}
_changing = itertools.count()


def show(value: Any) -> Any:
    """A JSON-friendly view of a value for ui dicts (tensors by their mean)."""
    if isinstance(value, StubTensor):
        return round(value.mean(), 6)
    if isinstance(value, dict):
        return {key: show(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [show(item) for item in value]
    return value


def _number(value: Any) -> float:
    return value.mean() if isinstance(value, StubTensor) else value


class IntMath:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "a": ("INT", {"default": 0, "min": -(2**31), "max": 2**31}),
                "b": ("INT", {"default": 0, "min": -(2**31), "max": 2**31}),
                "operation": (list(_MATH),),
            }
        }

    RETURN_TYPES = ("INT",)
    FUNCTION = "compute"
    CATEGORY = "Testing/Logic"

    def compute(self, a: int, b: int, operation: str) -> tuple[int]:
        record("IntMath")
        return (_MATH[operation](a, b),)


class IntCompare:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"a": ("INT", {}), "b": ("INT", {}), "comparison": (list(_COMPARE),)}}

    RETURN_TYPES = ("BOOLEAN",)
    FUNCTION = "compare"
    CATEGORY = "Testing/Logic"

    def compare(self, a: int, b: int, comparison: str) -> tuple[bool]:
        record("IntCompare")
        return (_COMPARE[comparison](a, b),)


class VariadicSum:
    """Sums whatever is linked to it: its inputs are not declared (ComfyUI passes undeclared links)."""

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {}}

    RETURN_TYPES = ("*",)
    FUNCTION = "total"
    CATEGORY = "Testing/Logic"

    def total(self, **values: Any) -> tuple[Any]:
        record("VariadicSum")
        return (sum(_number(value) for value in values.values()),)


class LazyMix:
    """a * (1 - ratio) + b * ratio; only evaluates the side(s) the ratio needs."""

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "a": ("*", {"lazy": True}),
                "b": ("*", {"lazy": True}),
                "ratio": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 1.0}),
            }
        }

    RETURN_TYPES = ("*",)
    FUNCTION = "mix"
    CATEGORY = "Testing/Logic"

    def check_lazy_status(self, ratio: float, a: Any = None, b: Any = None) -> list[str]:
        needed = []
        if ratio < 1.0 and a is None:
            needed.append("a")
        if ratio > 0.0 and b is None:
            needed.append("b")
        return needed

    def mix(self, ratio: float, a: Any = None, b: Any = None) -> tuple[Any]:
        record("LazyMix")
        if ratio <= 0.0:
            return (a,)
        if ratio >= 1.0:
            return (b,)
        return (_number(a) * (1.0 - ratio) + _number(b) * ratio,)


class Accumulate:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"to_add": ("*",)}, "optional": {"accumulation": ("ACCUMULATION",)}}

    RETURN_TYPES = ("ACCUMULATION",)
    FUNCTION = "accumulate"
    CATEGORY = "Testing/Logic"

    def accumulate(self, to_add: Any, accumulation: dict[str, list[Any]] | None = None) -> tuple[dict[str, list[Any]]]:
        record("Accumulate")
        previous = accumulation["accum"] if accumulation is not None else []
        return ({"accum": [*previous, to_add]},)


class AccumulationSize:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"accumulation": ("ACCUMULATION",)}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "size"
    CATEGORY = "Testing/Logic"

    def size(self, accumulation: dict[str, list[Any]]) -> tuple[int]:
        return (len(accumulation["accum"]),)


class Counter:
    """Passes its value through and counts its calls under `label`."""

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"value": ("*",), "label": ("STRING", {"default": "counter"})}}

    RETURN_TYPES = ("*",)
    FUNCTION = "count"
    CATEGORY = "Testing/Logic"

    def count(self, value: Any, label: str) -> tuple[Any]:
        record(label)
        return (value,)


class CounterUnique(Counter):
    """A Counter whose id is part of its cache key: two identical ones never share a result."""

    NOT_IDEMPOTENT = True


class CustomIsChanged:
    """IS_CHANGED by `mode`: constant, NaN (always re-run), raises (treated as NaN), or a value
    that changes on every call."""

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"value": ("*",), "mode": (["constant", "nan", "raise", "changing"],)}}

    RETURN_TYPES = ("*",)
    FUNCTION = "passthrough"
    CATEGORY = "Testing/Logic"

    @classmethod
    def IS_CHANGED(cls, **inputs: Any) -> Any:
        FINGERPRINTS.append(dict(inputs))
        mode = inputs.get("mode")
        if mode == "nan":
            return float("nan")
        if mode == "raise":
            raise RuntimeError("IS_CHANGED exploded")
        if mode == "changing":
            return next(_changing)
        return "constant"

    def passthrough(self, value: Any, mode: str) -> tuple[Any]:
        record("CustomIsChanged")
        return (value,)


class AsyncIsChanged:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"value": ("*",), "token": ("STRING", {"default": "a"})}}

    RETURN_TYPES = ("*",)
    FUNCTION = "passthrough"
    CATEGORY = "Testing/Logic"

    @classmethod
    async def IS_CHANGED(cls, value: Any = None, token: str = "") -> Any:
        await asyncio.sleep(0)
        FINGERPRINTS.append({"value": value, "token": token})
        return token

    def passthrough(self, value: Any, token: str) -> tuple[Any]:
        record("AsyncIsChanged")
        return (value,)


class Versioned:
    LOOM_VERSION = "1"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"value": ("INT", {})}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "run"
    CATEGORY = "Testing/Logic"

    def run(self, value: int) -> tuple[int]:
        record("Versioned")
        return (value,)


class Output:
    """An output node: shows its value in the ui (`{"value": [...]}`)."""

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"value": ("*",)}}

    RETURN_TYPES = ()
    FUNCTION = "show"
    OUTPUT_NODE = True
    CATEGORY = "Testing/Logic"

    def show(self, value: Any) -> dict[str, Any]:
        record("Output")
        return {"ui": {"value": [show(value)]}}


class HiddenInputs:
    """Reports what its hidden inputs received."""

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {},
            "hidden": {
                "prompt": "PROMPT",
                "dynprompt": "DYNPROMPT",
                "extra_pnginfo": "EXTRA_PNGINFO",
                "unique_id": "UNIQUE_ID",
                "mystery": "NOT_A_KIND",
                "linked": ("*",),
            },
        }

    RETURN_TYPES = ()
    FUNCTION = "report"
    OUTPUT_NODE = True
    CATEGORY = "Testing/Logic"

    def report(self, **hidden: Any) -> dict[str, Any]:
        return {
            "ui": {
                "unique_id": [hidden.get("unique_id")],
                "prompt_ids": sorted(hidden.get("prompt") or {}),
                "dynprompt": [type(hidden.get("dynprompt")).__name__],
                "extra_pnginfo": [hidden.get("extra_pnginfo")],
                "mystery": [hidden.get("mystery", "absent")],
                "linked": [hidden.get("linked", "absent")],
            }
        }


class RawLinkEcho:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"link": ("*", {"rawLink": True})}}

    RETURN_TYPES = ()
    FUNCTION = "echo"
    OUTPUT_NODE = True
    CATEGORY = "Testing/Logic"

    def echo(self, link: Any) -> dict[str, Any]:
        return {"ui": {"link": [list(link)]}}


class Fail:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"message": ("STRING", {"default": "boom"})}, "optional": {"value": ("*",)}}

    RETURN_TYPES = ("*",)
    FUNCTION = "fail"
    CATEGORY = "Testing/Logic"

    def fail(self, message: str, value: Any = None) -> tuple[Any]:
        record("Fail")
        raise ValueError(message)


class Mutator:
    """Modifies its input in place (the bug the mutation guard exists for), by `mode`."""

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"value": ("*",), "mode": (["tensor", "dict", "list"],)}}

    RETURN_TYPES = ("*",)
    FUNCTION = "mutate"
    CATEGORY = "Testing/Logic"

    def mutate(self, value: Any, mode: str) -> tuple[Any]:
        record("Mutator")
        if mode == "tensor":
            value.fill_(9.0)
        elif mode == "dict":
            value["mutated"] = True
        else:
            value.append("mutated")
        return (value,)


NODE_CLASS_MAPPINGS = {
    "IntMath": IntMath,
    "IntCompare": IntCompare,
    "VariadicSum": VariadicSum,
    "LazyMix": LazyMix,
    "Accumulate": Accumulate,
    "AccumulationSize": AccumulationSize,
    "Counter": Counter,
    "CounterUnique": CounterUnique,
    "CustomIsChanged": CustomIsChanged,
    "AsyncIsChanged": AsyncIsChanged,
    "Versioned": Versioned,
    "Output": Output,
    "HiddenInputs": HiddenInputs,
    "RawLinkEcho": RawLinkEcho,
    "Fail": Fail,
    "Mutator": Mutator,
}
