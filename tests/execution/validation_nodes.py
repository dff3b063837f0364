"""V1-style stub node classes for the validation tests (plain Python, nothing ever runs them).

`registry()` returns a fresh {class_type: NodeDefinition} built through nodes/compat.py, the same
path a custom node pack takes. `Recorder` classes keep what VALIDATE_INPUTS received in `calls`
(a class attribute: tests clear it through `reset_calls()`).
"""

from __future__ import annotations

from typing import Any

from core.spec import InputSpec, NodeSpec, OutputSpec
from nodes.compat import v1_definitions


class _Stub:
    CATEGORY = "testing"
    FUNCTION = "run"

    def run(self, **kwargs: Any) -> tuple[Any, ...]:
        raise AssertionError("validation tests never execute nodes")


class StubImage(_Stub):
    RETURN_TYPES = ("IMAGE",)

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "content": (["WHITE", "BLACK", "NOISE"],),
                "height": ("INT", {"default": 512, "min": 1, "max": 4096}),
                "width": ("INT", {"default": 512, "min": 1, "max": 4096}),
            }
        }


class StubMask(_Stub):
    RETURN_TYPES = ("MASK",)

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"value": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 1.0})}}


class StubInt(_Stub):
    RETURN_TYPES = ("INT",)

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"value": ("INT", {"default": 0})}}


class StubAny(_Stub):
    RETURN_TYPES = ("*",)

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {}}


class ComboSource(_Stub):
    """A node whose output carries a combo's choice list (compat turns the list into COMBO)."""

    RETURN_TYPES = (["euler", "heun"],)

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {}}


class ImageChain(_Stub):
    """IMAGE in, IMAGE out: for chains and cycles."""

    RETURN_TYPES = ("IMAGE",)

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"image": ("IMAGE",)}, "optional": {"mask": ("MASK",)}}


class PreviewImage(_Stub):
    OUTPUT_NODE = True
    RETURN_TYPES = ()

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"images": ("IMAGE",)}}


class UnionSink(_Stub):
    OUTPUT_NODE = True
    RETURN_TYPES = ()

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"value": ("IMAGE,FLOAT",)}}


class AnySink(_Stub):
    OUTPUT_NODE = True
    RETURN_TYPES = ()

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"value": ("*",)}}


class ComboSink(_Stub):
    """Every kind of combo: legacy list, new-style COMBO, and a long list (> 20 choices)."""

    OUTPUT_NODE = True
    RETURN_TYPES = ()
    LONG = [f"model_{index:02d}.safetensors" for index in range(25)]

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {"sampler": (["euler", "heun"],)},
            "optional": {
                "scheduler": ("COMBO", {"options": ["normal", "karras"], "default": "normal"}),
                "ckpt_name": (cls.LONG,),
            },
        }


class TypedSink(_Stub):
    """One constant of each converted widget type, with ranges."""

    OUTPUT_NODE = True
    RETURN_TYPES = ()

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "steps": ("INT", {"default": 20, "min": 1, "max": 100}),
                "cfg": ("FLOAT", {"default": 7.0, "min": 0.0, "max": 30.0}),
                "text": ("STRING", {"multiline": True}),
                "flag": ("BOOLEAN", {"default": False}),
            },
            "optional": {"items": ("LIST",), "image": ("IMAGE",)},
        }


class Recorder(_Stub):
    calls: list[dict[str, Any]] = []
    verdict: Any = True


class NamedValidate(Recorder):
    """VALIDATE_INPUTS names `low`: `low` skips min/max, `high` does not; `link` is linked."""

    OUTPUT_NODE = True
    RETURN_TYPES = ()

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "low": ("INT", {"min": 0, "max": 10}),
                "high": ("INT", {"min": 0, "max": 10}),
            },
            "optional": {"link": ("IMAGE",), "choice": (["a", "b"],)},
        }

    @classmethod
    def VALIDATE_INPUTS(cls, low: Any, link: Any = "absent", choice: Any = "absent") -> Any:
        cls.calls.append({"low": low, "link": link, "choice": choice})
        return cls.verdict


class KwargsValidate(Recorder):
    """**kwargs: every input passed, every built-in range/choice check skipped."""

    OUTPUT_NODE = True
    RETURN_TYPES = ()

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {"value": ("INT", {"min": 0, "max": 10}), "choice": (["a", "b"],)},
            "optional": {"image": ("IMAGE",)},
            "hidden": {"unique_id": "UNIQUE_ID", "prompt": "PROMPT"},
        }

    @classmethod
    def VALIDATE_INPUTS(cls, **kwargs: Any) -> Any:
        cls.calls.append(dict(kwargs))
        return cls.verdict


class TypesValidate(Recorder):
    """Takes `input_types`: the link type check is off, the node judges types itself."""

    OUTPUT_NODE = True
    RETURN_TYPES = ()

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"value": ("IMAGE",)}}

    @classmethod
    def VALIDATE_INPUTS(cls, input_types: dict[str, Any]) -> Any:
        cls.calls.append({"input_types": input_types})
        if input_types.get("value") not in ("IMAGE", "MASK"):
            return f"value must be IMAGE or MASK, got {input_types.get('value')}"
        return True


class AsyncValidate(Recorder):
    OUTPUT_NODE = True
    RETURN_TYPES = ()

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"value": ("INT",)}}

    @classmethod
    async def VALIDATE_INPUTS(cls, value: Any) -> Any:
        cls.calls.append({"value": value})
        return True if value >= 0 else "value must not be negative"


class RaisingValidate(_Stub):
    OUTPUT_NODE = True
    RETURN_TYPES = ("IMAGE",)

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"value": ("INT",)}}

    @classmethod
    def VALIDATE_INPUTS(cls, value: Any) -> Any:
        raise ZeroDivisionError(f"cannot check {value}")


class ListValidate(Recorder):
    """INPUT_IS_LIST: VALIDATE_INPUTS sees each value wrapped in a list, as FUNCTION does."""

    OUTPUT_NODE = True
    INPUT_IS_LIST = True
    RETURN_TYPES = ()

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"value": ("INT",)}}

    @classmethod
    def VALIDATE_INPUTS(cls, value: Any) -> Any:
        cls.calls.append({"value": value})
        return cls.verdict


class BareValidate(Recorder):
    """VALIDATE_INPUTS takes nothing: a failure cannot be attached to any input."""

    OUTPUT_NODE = True
    RETURN_TYPES = ()

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"value": ("INT",)}}

    @classmethod
    def VALIDATE_INPUTS(cls) -> Any:
        cls.calls.append({})
        return cls.verdict


class HiddenSink(_Stub):
    """Hidden inputs: a plain kind (injected) and a tuple-typed one (linkable, like optional)."""

    OUTPUT_NODE = True
    RETURN_TYPES = ()

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {"images": ("IMAGE",)},
            "hidden": {"unique_id": "UNIQUE_ID", "carry": ("IMAGE",)},
        }


class VariadicSink(_Stub):
    """Reads undeclared linked inputs (like ComfyUI's TestVariadicAverage)."""

    OUTPUT_NODE = True
    RETURN_TYPES = ()

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"input1": ("IMAGE",)}}


class LazyRawSink(_Stub):
    OUTPUT_NODE = True
    RETURN_TYPES = ()

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"lazy_in": ("IMAGE", {"lazy": True}), "raw": ("IMAGE", {"rawLink": True})}}


MAPPINGS: dict[str, type] = {
    cls.__name__: cls
    for cls in (
        StubImage,
        StubMask,
        StubInt,
        StubAny,
        ComboSource,
        ImageChain,
        PreviewImage,
        UnionSink,
        AnySink,
        ComboSink,
        TypedSink,
        NamedValidate,
        KwargsValidate,
        TypesValidate,
        AsyncValidate,
        RaisingValidate,
        ListValidate,
        BareValidate,
        HiddenSink,
        VariadicSink,
        LazyRawSink,
    )
}


def reset_calls() -> None:
    for cls in MAPPINGS.values():
        if issubclass(cls, Recorder):
            cls.calls = []
            cls.verdict = True


class HandMade:
    """A NodeDefinition written by hand (not V1): counts spec() calls, can break its spec."""

    def __init__(self, class_type: str, spec: NodeSpec, broken: bool = False) -> None:
        self._class_type = class_type
        self._spec = spec
        self.broken = broken
        self.spec_calls = 0

    @property
    def class_type(self) -> str:
        return self._class_type

    def spec(self) -> NodeSpec:
        self.spec_calls += 1
        if self.broken:
            raise OSError("models folder is unreadable")
        return self._spec

    def create(self) -> Any:
        return object()

    def fingerprint(self, inputs: Any) -> Any:
        return None

    def validate(self, inputs: Any, input_types: Any) -> Any:
        return True

    def check_lazy(self, instance: Any, inputs: Any) -> Any:
        return []

    def execute(self, instance: Any, inputs: Any) -> Any:
        raise AssertionError("never executed")


def list_typed_source() -> HandMade:
    """An output whose type is a Python list (a raw combo output, as some packs declare it)."""
    spec = NodeSpec(id="ListTyped", outputs=(OutputSpec(type=["x", "y"]),))  # type: ignore[arg-type]
    return HandMade("ListTyped", spec)


def counting_sink() -> HandMade:
    spec = NodeSpec(
        id="CountingSink",
        inputs=(InputSpec(name="images", type="IMAGE"),),
        output_node=True,
    )
    return HandMade("CountingSink", spec)


def registry() -> dict[str, Any]:
    definitions: dict[str, Any] = dict(v1_definitions(MAPPINGS))
    definitions["ListTyped"] = list_typed_source()
    definitions["CountingSink"] = counting_sink()
    definitions["BrokenSpec"] = HandMade(
        "BrokenSpec", NodeSpec(id="BrokenSpec", outputs=(OutputSpec(type="IMAGE"),)), broken=True
    )
    return definitions
