"""The declarative node form compiles to the same NodeSpec / object_info as V1 classes."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from core.runtime import NodeRuntime, reset_current, set_current
from core.spec import ValidateSignature
from nodes.api import (
    ANY_TYPE,
    Boolean,
    Choice,
    DeclarativeNode,
    ExecutionBlocker,
    Float,
    Hidden,
    Input,
    Int,
    Node,
    NodeContractError,
    NodeSpec,
    Output,
    String,
)
from nodes.compat import V1Node

# --- a V1 class and its declarative twin ------------------------------------------------------


class V1Twin:
    DESCRIPTION = "Blend two images."
    CATEGORY = "image/blend"
    RETURN_TYPES = ("IMAGE", "INT")
    RETURN_NAMES = ("image", "count")
    OUTPUT_IS_LIST = (False, True)
    OUTPUT_TOOLTIPS = ("the blended image", None)
    FUNCTION = "blend"
    OUTPUT_NODE = True
    NOT_IDEMPOTENT = True

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "image_a": ("IMAGE", {"tooltip": "first"}),
                "image_b": ("IMAGE", {"lazy": True}),
                "factor": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 1.0, "step": 0.01, "round": False}),
                "steps": ("INT", {"default": 20, "min": 1, "max": 10000, "control_after_generate": True}),
                "mode": ("COMBO", {"options": ["normal", "multiply"], "default": "normal"}),
                "legacy_mode": (["a", "b"],),
                "label": ("STRING", {"default": "x", "multiline": True, "dynamicPrompts": False}),
                "flag": ("BOOLEAN", {"default": True, "label_on": "yes", "label_off": "no"}),
            },
            "optional": {
                "mask": ("MASK", {"forceInput": True}),
                "anything": ("*", {"rawLink": True}),
            },
            "hidden": {"prompt": "PROMPT", "unique_id": "UNIQUE_ID", "loop": ("*",)},
        }

    @classmethod
    def VALIDATE_INPUTS(cls, factor: float, input_types: dict[str, str]) -> bool:
        return True

    @classmethod
    def IS_CHANGED(cls, **inputs: Any) -> str:
        return ""

    def check_lazy_status(self, **inputs: Any) -> list[str]:
        return []

    def blend(self, **inputs: Any) -> tuple[Any, ...]:
        return (None, [1])


class DeclarativeTwin(Node):
    """Blend two images."""

    spec = NodeSpec(
        id="Twin",
        category="image/blend",
        output_node=True,
        not_idempotent=True,
        inputs=[
            Input("image_a", "IMAGE", tooltip="first"),
            Input("image_b", "IMAGE", lazy=True),
            Float("factor", 0.5, min=0.0, max=1.0, step=0.01, round=False),
            Int("steps", 20, min=1, max=10000, control_after_generate=True),
            Choice("mode", ["normal", "multiply"], "normal"),
            Choice("legacy_mode", ["a", "b"], legacy=True),
            String("label", "x", multiline=True, dynamic_prompts=False),
            Boolean("flag", True, label_on="yes", label_off="no"),
            Input("mask", "MASK", optional=True, force_input=True),
            Input("anything", ANY_TYPE, optional=True, raw_link=True),
            Hidden("prompt", "PROMPT"),
            Hidden("unique_id", "UNIQUE_ID"),
            Input("loop", ANY_TYPE, hidden=True),
        ],
        outputs=[Output("IMAGE", "image", tooltip="the blended image"), Output("INT", "count", is_list=True)],
    )

    @classmethod
    def validate(cls, factor: float, input_types: dict[str, str]) -> bool:
        return True

    @classmethod
    def fingerprint(cls, **inputs: Any) -> str:
        return ""

    def check_lazy(self, ctx: NodeRuntime, **inputs: Any) -> list[str]:
        return []

    def run(self, ctx: NodeRuntime, **inputs: Any) -> tuple[Any, ...]:
        return (None, [1])


def test_declarative_twin_has_the_same_object_info_as_the_v1_class() -> None:
    v1 = V1Node(V1Twin, "Twin").spec().object_info()
    declarative = DeclarativeNode(DeclarativeTwin).spec().object_info()
    assert declarative == v1
    # and survives JSON as the same document (what /object_info actually sends)
    assert json.loads(json.dumps(declarative)) == json.loads(json.dumps(v1))
    assert declarative["input"]["required"]["mode"] == [
        "COMBO",
        {"default": "normal", "options": ["normal", "multiply"]},
    ]
    assert declarative["input"]["required"]["legacy_mode"] == [["a", "b"]]
    assert declarative["input"]["hidden"] == {"prompt": ["PROMPT"], "unique_id": ["UNIQUE_ID"], "loop": ["*"]}


def test_declarative_twin_has_the_same_engine_flags_as_the_v1_class() -> None:
    v1 = V1Node(V1Twin, "Twin").spec()
    declarative = DeclarativeNode(DeclarativeTwin).spec()
    for flag in ("has_fingerprint", "has_lazy_check", "validation", "needs_node_id", "output_tooltips", "outputs"):
        assert getattr(declarative, flag) == getattr(v1, flag), flag
    assert declarative.validation == ValidateSignature(params=("factor",), wants_input_types=True)
    assert declarative.inputs == v1.inputs


def test_docstring_becomes_the_description_and_version_is_a_string() -> None:
    class Described(Node):
        """First line.

        Second paragraph."""

        spec = NodeSpec(id="Described", version=3, inputs=[], outputs=[])

        def run(self, ctx: NodeRuntime) -> tuple[()]:
            return ()

    class Undocumented(Node):
        spec = NodeSpec(id="Undocumented")

        def run(self, ctx: NodeRuntime) -> tuple[()]:
            return ()

    spec = DeclarativeNode(Described).spec()
    assert spec.description == "First line.\n\nSecond paragraph."
    assert spec.version == "3"
    assert isinstance(spec.inputs, tuple) and isinstance(spec.outputs, tuple)
    # the base class docstring is never inherited as a description
    assert DeclarativeNode(Undocumented).spec().description == ""


def test_only_options_the_author_set_are_emitted() -> None:
    assert Int("seed").options == {}
    assert Int("seed", optional=True).section == "optional"
    assert String("text", tooltip="t", lazy=True, force_input=True, raw_link=True).options == {
        "tooltip": "t",
        "lazy": True,
        "forceInput": True,
        "rawLink": True,
    }
    assert Float("x", extra={"display": "slider", "custom": 1}).options == {"display": "slider", "custom": 1}
    assert Hidden("p", "EXTRA_PNGINFO").hidden_kind == "EXTRA_PNGINFO"


@pytest.mark.parametrize(
    "build",
    [
        lambda: Hidden("x", "NOT_A_KIND"),
        lambda: Input("x", ""),
        lambda: Int(""),
        lambda: Choice("x", "abc"),
        lambda: Output(""),
    ],
)
def test_builders_reject_malformed_declarations(build: Any) -> None:
    with pytest.raises(NodeContractError):
        build()


def test_choice_options_from_a_function_are_listed_again_on_every_spec_request() -> None:
    files = ["a.png"]

    class Loader(Node):
        spec = NodeSpec(id="Loader", inputs=[Choice("image", lambda: list(files), image_upload=True)])

        def run(self, ctx: NodeRuntime, image: str) -> tuple[()]:
            return ()

    definition = DeclarativeNode(Loader)
    assert definition.spec().input("image").choices == ("a.png",)
    files.append("b.png")
    entry = definition.spec().object_info()["input"]["required"]["image"]
    assert entry == ["COMBO", {"image_upload": True, "options": ["a.png", "b.png"]}]
    assert type(definition.spec().input("image")).__name__ == "InputSpec"  # resolved, no function inside


def test_a_failing_choices_function_fails_registration() -> None:
    def listing() -> list[str]:
        raise OSError("models folder missing")

    class Broken(Node):
        spec = NodeSpec(id="Broken", inputs=[Choice("name", listing)])

        def run(self, ctx: NodeRuntime, name: str) -> tuple[()]:
            return ()

    with pytest.raises(OSError, match="models folder missing"):
        DeclarativeNode(Broken)


class Adder(Node):
    spec = NodeSpec(
        id="Adder",
        inputs=[Int("a"), Int("b", optional=True), Hidden("node_id", "UNIQUE_ID")],
        outputs=[Output("INT", "sum")],
    )

    @classmethod
    def fingerprint(cls, a: Any = None, b: Any = None, **_: Any) -> Any:
        return (a, b)

    @classmethod
    def validate(cls, a: Any) -> bool | str:
        return True if a is None or a >= 0 else f"a must not be negative, got {a}"

    def check_lazy(self, ctx: NodeRuntime, **inputs: Any) -> list[str]:
        return [ctx.node_id]

    def run(self, ctx: NodeRuntime, a: int, node_id: str, b: int = 10) -> tuple[int]:
        ctx.progress(1, 1)
        return (a + b,)


def test_execute_passes_the_current_runtime_as_ctx(run_node: Any) -> None:
    seen: list[tuple[Any, ...]] = []
    runtime = NodeRuntime(node_id="42", class_type="Adder", report_progress=lambda *args: seen.append(args))
    assert run_node(DeclarativeNode(Adder), {"a": 1, "node_id": "42"}, runtime) == (11,)
    assert run_node(DeclarativeNode(Adder), {"a": 1, "b": 2, "node_id": "42"}, runtime) == (3,)
    assert seen == [(1, 1, None), (1, 1, None)]


def test_execute_outside_the_executor_gets_a_detached_runtime() -> None:
    definition = DeclarativeNode(Adder)
    assert definition.execute(definition.create(), {"a": 2, "node_id": "x"}) == (12,)


def test_hooks_are_called_with_the_v1_conventions() -> None:
    definition = DeclarativeNode(Adder)
    spec = definition.spec()
    assert spec.has_fingerprint and spec.has_lazy_check and spec.needs_node_id
    assert spec.validation == ValidateSignature(params=("a",))
    assert definition.fingerprint({"a": 1, "b": None}) == (1, None)
    # validate receives only the inputs it names
    assert definition.validate({"a": -1, "b": 5}, None) == "a must not be negative, got -1"
    assert definition.validate({"a": None, "b": 5}, {"a": "INT"}) is True
    instance = definition.create()
    token = set_current(NodeRuntime(node_id="7", class_type="Adder"))
    try:
        assert definition.check_lazy(instance, {"a": 1}) == ["7"]
    finally:
        reset_current(token)


def test_nodes_without_hooks_report_none_and_pass_validation() -> None:
    class Plain(Node):
        spec = NodeSpec(id="Plain", inputs=[Int("a")], outputs=[Output("INT")])

        def run(self, ctx: NodeRuntime, a: int) -> tuple[int]:
            return (a,)

    definition = DeclarativeNode(Plain)
    spec = definition.spec()
    assert not spec.has_fingerprint and not spec.has_lazy_check and spec.validation is None and not spec.is_async
    assert definition.validate({"a": 1}, None) is True


def test_async_run_is_flagged_and_awaited(run_node: Any) -> None:
    class Sleepy(Node):
        spec = NodeSpec(id="Sleepy", inputs=[Float("seconds", 0.0)], outputs=[Output("FLOAT")])

        async def run(self, ctx: NodeRuntime, seconds: float) -> tuple[float]:
            await asyncio.sleep(seconds)
            return (seconds,)

    definition = DeclarativeNode(Sleepy)
    assert definition.spec().is_async
    assert run_node(definition, {"seconds": 0.001}) == (0.001,)


def test_returning_a_bare_value_instead_of_a_tuple_is_explained(run_node: Any) -> None:
    class NoComma(Node):
        spec = NodeSpec(id="NoComma", outputs=[Output("STRING")])

        def run(self, ctx: NodeRuntime) -> str:
            return "oops"

    class AsyncNoComma(Node):
        spec = NodeSpec(id="AsyncNoComma", outputs=[Output("INT")])

        async def run(self, ctx: NodeRuntime) -> int:
            return 3

    with pytest.raises(NodeContractError, match="trailing comma"):
        run_node(DeclarativeNode(NoComma))
    with pytest.raises(NodeContractError, match="AsyncNoComma"):
        run_node(DeclarativeNode(AsyncNoComma))


def test_dicts_lists_and_blockers_are_returned_as_they_are(run_node: Any) -> None:
    blocker = ExecutionBlocker("no image")

    class Results(Node):
        spec = NodeSpec(id="Results", inputs=[Int("kind")], outputs=[Output("INT")])

        def run(self, ctx: NodeRuntime, kind: int) -> Any:
            return [{"ui": {"text": ["x"]}, "result": (1,)}, [5], blocker][kind]

    definition = DeclarativeNode(Results)
    assert run_node(definition, {"kind": 0}) == {"ui": {"text": ["x"]}, "result": (1,)}
    assert run_node(definition, {"kind": 1}) == [5]
    assert run_node(definition, {"kind": 2}) is blocker


class _Base(Node):
    spec = NodeSpec(id="Base", inputs=[Int("a")], outputs=[Output("INT")])


def _contract_violations() -> list[tuple[type, str]]:
    class NoRun(_Base):
        pass

    class MissingParameter(_Base):
        def run(self, ctx: NodeRuntime) -> tuple[int]:
            return (1,)

    class UndeclaredParameter(_Base):
        def run(self, ctx: NodeRuntime, a: int, b: int) -> tuple[int]:
            return (a + b,)

    class NoCtx(_Base):
        def run(self, a: int) -> tuple[int]:  # type: ignore[override]
            return (a,)

    class InstanceFingerprint(_Base):
        def fingerprint(self, **inputs: Any) -> Any:
            return None

        def run(self, ctx: NodeRuntime, a: int) -> tuple[int]:
            return (a,)

    class NotASpec(Node):
        spec = {"id": "x"}  # type: ignore[assignment]

        def run(self, ctx: NodeRuntime) -> tuple[()]:
            return ()

    class DuplicateInputs(Node):
        spec = NodeSpec(id="Dup", inputs=[Int("a"), Float("a")])

        def run(self, ctx: NodeRuntime, a: Any) -> tuple[()]:
            return ()

    class RawTupleInput(Node):
        spec = NodeSpec(id="Raw", inputs=[("a", "INT")])  # type: ignore[list-item]

        def run(self, ctx: NodeRuntime, **inputs: Any) -> tuple[()]:
            return ()

    return [
        (NoRun, "must define run"),
        (MissingParameter, "no parameter for input"),
        (UndeclaredParameter, "requires 'b'"),
        (NoCtx, r"run\(self, ctx"),
        (InstanceFingerprint, "must be a @classmethod"),
        (NotASpec, "must be a NodeSpec"),
        (DuplicateInputs, "declared more than once"),
        (RawTupleInput, "must be built with"),
        (V1Twin, "not a declarative node"),
    ]


@pytest.mark.parametrize(("cls", "message"), _contract_violations(), ids=lambda value: getattr(value, "__name__", ""))
def test_contract_violations_fail_at_registration_with_a_clear_message(cls: type, message: str) -> None:
    with pytest.raises(NodeContractError, match=message):
        DeclarativeNode(cls)


def test_run_with_kwargs_accepts_any_inputs_and_optional_extras_need_defaults(run_node: Any) -> None:
    class Variadic(Node):
        spec = NodeSpec(id="Variadic", inputs=[Int("a")], outputs=[Output("INT")])

        def run(self, ctx: NodeRuntime, a: int, extra: int = 0, **more: int) -> tuple[int]:
            return (a + extra + sum(more.values()),)

    assert run_node(DeclarativeNode(Variadic), {"a": 1, "x": 2, "y": 3}) == (6,)


def test_python_module_and_display_name_overrides() -> None:
    definition = DeclarativeNode(Adder, python_module="custom_nodes.pack", display_name="Add")
    info = definition.spec().object_info()
    assert info["python_module"] == "custom_nodes.pack"
    assert info["display_name"] == "Add"
    assert DeclarativeNode(Adder).spec().object_info()["display_name"] == "Adder"
