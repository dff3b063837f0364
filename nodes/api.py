"""The public API for node authors: the only module a custom node package needs to import.

Loom's declarative node form: a class with a `spec` (a core.spec.NodeSpec built from the input
and output builders below) and a `run(self, ctx, **inputs)` method that receives the node's
NodeRuntime as `ctx`::

    class Concat(Node):
        \"\"\"Join two strings.\"\"\"                      # the docstring becomes the description
        spec = NodeSpec(id="MyConcat", display_name="Concatenate", category="utils/string",
                        inputs=[String("a", multiline=True), String("b", multiline=True),
                                String("delimiter", default="")],
                        outputs=[Output("STRING")])

        def run(self, ctx, a, b, delimiter):
            return (delimiter.join([a, b]),)

Optional hooks, all looked up on the class: `fingerprint(cls, **inputs)` (ComfyUI's IS_CHANGED,
a classmethod), `validate(cls, **inputs)` (VALIDATE_INPUTS, a classmethod; its parameters decide
what it receives, exactly as for V1 nodes) and `check_lazy(self, ctx, **inputs)`
(check_lazy_status). `run` may be `async def`.

`DeclarativeNode(cls)` compiles such a class to the NodeDefinition protocol (core/spec.py), which
is all the executor ever sees. ComfyUI V1 classes keep working through nodes/compat.py.
"""

# The builders take ComfyUI's option names (min, max, round) as keyword arguments on purpose.
# ruff: noqa: A002

from __future__ import annotations

import dataclasses
import inspect
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, ClassVar

from core.errors import EngineError, Interrupted, ModelError, NodeError, ValidationError
from core.graph_builder import GraphBuilder, is_link
from core.runtime import ExecutionBlocker, NodeRuntime, current
from core.spec import ANY_TYPE, HIDDEN_KINDS, InputSpec, NodeSpec, OutputSpec, ValidateSignature
from nodes.compat import NodeContractError, validation_signature
from nodes.progress import ProgressBar

log = logging.getLogger(__name__)

ChoiceValues = Sequence[Any] | Callable[[], Iterable[Any]]


# --- input and output builders ---------------------------------------------------------------


def _options(
    *,
    tooltip: str | None,
    lazy: bool,
    force_input: bool,
    raw_link: bool,
    extra: Mapping[str, Any] | None,
    **declared: Any,
) -> dict[str, Any]:
    """The V1 option dict: only what the author set, under ComfyUI's key names."""
    options = {key: value for key, value in declared.items() if value is not None}
    if tooltip is not None:
        options["tooltip"] = tooltip
    if lazy:
        options["lazy"] = True
    if force_input:
        options["forceInput"] = True
    if raw_link:
        options["rawLink"] = True
    if extra:
        options.update(extra)
    return options


def _check_name(name: Any, builder: str) -> None:
    if not isinstance(name, str) or not name:
        raise NodeContractError(f"{builder}(): the input name must be a non-empty string, got {name!r}")


def Int(
    name: str,
    default: int | None = None,
    *,
    min: int | None = None,
    max: int | None = None,
    step: int | None = None,
    display: str | None = None,
    control_after_generate: bool | None = None,
    optional: bool = False,
    lazy: bool = False,
    tooltip: str | None = None,
    force_input: bool = False,
    raw_link: bool = False,
    extra: Mapping[str, Any] | None = None,
) -> InputSpec:
    """An INT widget. `control_after_generate=True` gives it the seed-style
    fixed/increment/randomize companion widget in the editor."""
    _check_name(name, "Int")
    options = _options(
        tooltip=tooltip, lazy=lazy, force_input=force_input, raw_link=raw_link, extra=extra,
        default=default, min=min, max=max, step=step, display=display,
        control_after_generate=control_after_generate,
    )  # fmt: skip
    return InputSpec(name=name, type="INT", section="optional" if optional else "required", options=options)


def Float(
    name: str,
    default: float | None = None,
    *,
    min: float | None = None,
    max: float | None = None,
    step: float | None = None,
    round: float | bool | None = None,
    display: str | None = None,
    optional: bool = False,
    lazy: bool = False,
    tooltip: str | None = None,
    force_input: bool = False,
    raw_link: bool = False,
    extra: Mapping[str, Any] | None = None,
) -> InputSpec:
    """A FLOAT widget. `round=False` turns off the editor's rounding to `step`."""
    _check_name(name, "Float")
    options = _options(
        tooltip=tooltip, lazy=lazy, force_input=force_input, raw_link=raw_link, extra=extra,
        default=default, min=min, max=max, step=step, round=round, display=display,
    )  # fmt: skip
    return InputSpec(name=name, type="FLOAT", section="optional" if optional else "required", options=options)


def String(
    name: str,
    default: str | None = None,
    *,
    multiline: bool | None = None,
    placeholder: str | None = None,
    dynamic_prompts: bool | None = None,
    optional: bool = False,
    lazy: bool = False,
    tooltip: str | None = None,
    force_input: bool = False,
    raw_link: bool = False,
    extra: Mapping[str, Any] | None = None,
) -> InputSpec:
    """A STRING widget (a text box when `multiline=True`)."""
    _check_name(name, "String")
    options = _options(
        tooltip=tooltip, lazy=lazy, force_input=force_input, raw_link=raw_link, extra=extra,
        default=default, multiline=multiline, placeholder=placeholder, dynamicPrompts=dynamic_prompts,
    )  # fmt: skip
    return InputSpec(name=name, type="STRING", section="optional" if optional else "required", options=options)


def Boolean(
    name: str,
    default: bool | None = None,
    *,
    label_on: str | None = None,
    label_off: str | None = None,
    optional: bool = False,
    lazy: bool = False,
    tooltip: str | None = None,
    force_input: bool = False,
    raw_link: bool = False,
    extra: Mapping[str, Any] | None = None,
) -> InputSpec:
    """A BOOLEAN toggle."""
    _check_name(name, "Boolean")
    options = _options(
        tooltip=tooltip, lazy=lazy, force_input=force_input, raw_link=raw_link, extra=extra,
        default=default, label_on=label_on, label_off=label_off,
    )  # fmt: skip
    return InputSpec(name=name, type="BOOLEAN", section="optional" if optional else "required", options=options)


@dataclasses.dataclass(frozen=True)
class ChoiceInput(InputSpec):
    """A combo whose choices come from a function, called each time the node's spec is requested
    (file lists: checkpoints, images in input/...). `DeclarativeNode.spec()` resolves it to a
    plain InputSpec, so nothing downstream ever sees the function."""

    source: Callable[[], Iterable[Any]] | None = None

    def resolve(self) -> InputSpec:
        if self.source is None:
            return self
        return InputSpec(
            name=self.name,
            type=self.type,
            section=self.section,
            options=self.options,
            choices=tuple(self.source()),
            legacy_combo=self.legacy_combo,
        )


def Choice(
    name: str,
    options: ChoiceValues,
    default: Any = None,
    *,
    control_after_generate: bool | None = None,
    image_upload: bool | None = None,
    image_folder: str | None = None,
    legacy: bool = False,
    optional: bool = False,
    lazy: bool = False,
    tooltip: str | None = None,
    raw_link: bool = False,
    extra: Mapping[str, Any] | None = None,
) -> InputSpec:
    """A combo (dropdown). `options` is a sequence, or a function returning one that is called
    every time the spec is requested. `legacy=True` renders it in /object_info as V1's bare list
    (`[[choices], {...}]`) instead of `["COMBO", {"options": [...]}]`."""
    _check_name(name, "Choice")
    declared = _options(
        tooltip=tooltip, lazy=lazy, force_input=False, raw_link=raw_link, extra=extra,
        default=default, control_after_generate=control_after_generate,
        image_upload=image_upload, image_folder=image_folder,
    )  # fmt: skip
    section = "optional" if optional else "required"
    if callable(options):
        return ChoiceInput(
            name=name, type="COMBO", section=section, options=declared, choices=(), legacy_combo=legacy, source=options
        )
    if isinstance(options, (str, bytes)) or not isinstance(options, Iterable):
        raise NodeContractError(f"Choice('{name}'): options must be a list of values or a function, got {options!r}")
    return InputSpec(
        name=name, type="COMBO", section=section, options=declared, choices=tuple(options), legacy_combo=legacy
    )


def Input(
    name: str,
    socket_type: str,
    *,
    optional: bool = False,
    hidden: bool = False,
    lazy: bool = False,
    tooltip: str | None = None,
    force_input: bool = False,
    raw_link: bool = False,
    default: Any = None,
    extra: Mapping[str, Any] | None = None,
) -> InputSpec:
    """A socket of any type: "IMAGE", "MODEL", "LATENT", "*" (anything), "IMAGE,MASK" (either),
    or a custom type name of your own. `hidden=True` declares a hidden but linkable input (V1's
    `"hidden": {"x": ("*",)}`), used by loop nodes."""
    _check_name(name, "Input")
    if not isinstance(socket_type, str) or not socket_type:
        raise NodeContractError(f"Input('{name}'): the type must be a type name string, got {socket_type!r}")
    options = _options(
        tooltip=tooltip, lazy=lazy, force_input=force_input, raw_link=raw_link, extra=extra, default=default
    )
    section = "hidden" if hidden else "optional" if optional else "required"
    return InputSpec(name=name, type=socket_type, section=section, options=options)


def Hidden(name: str, kind: str) -> InputSpec:
    """A value the executor fills in: "PROMPT", "DYNPROMPT", "EXTRA_PNGINFO", "UNIQUE_ID"...
    (a hidden UNIQUE_ID makes the node id part of the cache key, as in ComfyUI)."""
    _check_name(name, "Hidden")
    if kind not in HIDDEN_KINDS:
        raise NodeContractError(f"Hidden('{name}', {kind!r}): unknown kind; expected one of {sorted(HIDDEN_KINDS)}")
    return InputSpec(name=name, type=kind, section="hidden", hidden_kind=kind)


def Output(socket_type: str, name: str | None = None, is_list: bool = False, tooltip: str | None = None) -> OutputSpec:
    """An output socket. `name` is the label (default: the type); `is_list=True` means the
    value returned is a list whose elements downstream nodes receive one call at a time."""
    if not isinstance(socket_type, str) or not socket_type:
        raise NodeContractError(f"Output(): the type must be a type name string, got {socket_type!r}")
    return OutputSpec(type=socket_type, name=name, is_list=is_list, tooltip=tooltip)


# --- the declarative node class and its adapter ----------------------------------------------


class Node:
    """Base class of declarative nodes: set `spec` and define `run(self, ctx, ...)`.

    One instance is created per (node id, class) and reused across prompts while cached, so
    keep no per-call state on `self` and never modify input values in place (they may be
    cached results another node also reads).
    """

    spec: ClassVar[NodeSpec]

    def run(self, ctx: NodeRuntime, **inputs: Any) -> Any:
        raise NotImplementedError


_SCALARS = (str, bytes, int, float, bool, type(None))


def _check_result(class_type: str, outputs: int, result: Any) -> Any:
    # `return (x)` instead of `return (x,)` is the classic mistake; catch it with a clear message
    # rather than letting the executor index into a string or fail on an int.
    if outputs and isinstance(result, _SCALARS):
        raise NodeContractError(
            f"{class_type}.run() must return a tuple with one value per output, got {type(result).__name__} "
            f"{result!r} (did you forget the trailing comma: `return (value,)`?)"
        )
    return result


async def _checked(class_type: str, outputs: int, awaitable: Any) -> Any:
    return _check_result(class_type, outputs, await awaitable)


def _hook(cls: type, name: str, *, per_class: bool) -> Any:
    """The hook `name` if the class defines it; per-class hooks must not need an instance."""
    hook = getattr(cls, name, None)
    if hook is None:
        return None
    if per_class and inspect.isfunction(inspect.getattr_static(cls, name)):
        raise NodeContractError(f"{cls.__name__}.{name} must be a @classmethod (it is called without an instance)")
    if not callable(hook):
        raise NodeContractError(f"{cls.__name__}.{name} must be a method, got {hook!r}")
    return hook


def _run_parameters(cls: type, spec: NodeSpec) -> None:
    """Fail at registration when run() cannot accept the declared inputs (or needs undeclared ones)."""
    try:
        params = list(inspect.signature(cls.run).parameters.values())
    except (TypeError, ValueError):
        return
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    if len(params) < 2 or any(p.kind not in positional for p in params[:2]):
        raise NodeContractError(f"{cls.__name__}.run must be declared as run(self, ctx, <inputs>...)")
    declared = {spec_input.name for spec_input in spec.inputs}
    if params[1].name in declared:
        raise NodeContractError(
            f"{cls.__name__}.run must be declared as run(self, ctx, <inputs>...): its second parameter "
            f"'{params[1].name}' is an input, but the node's runtime context (ctx) comes first"
        )
    params = params[2:]
    takes_kwargs = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)
    names = {p.name for p in params}
    missing = sorted(declared - names) if not takes_kwargs else []
    if missing:
        raise NodeContractError(f"{cls.__name__}.run() has no parameter for input(s) {missing}; add them or **inputs")
    for param in params:
        needs_value = param.default is inspect.Parameter.empty and param.kind not in (
            inspect.Parameter.VAR_KEYWORD,
            inspect.Parameter.VAR_POSITIONAL,
        )
        if needs_value and param.name not in declared:
            raise NodeContractError(
                f"{cls.__name__}.run() requires '{param.name}', which the spec does not declare as an input"
            )


def _declared_spec(cls: type) -> NodeSpec:
    spec = cls.__dict__.get("spec", getattr(cls, "spec", None))
    if not isinstance(spec, NodeSpec):
        raise NodeContractError(f"{cls.__name__}.spec must be a NodeSpec, got {type(spec).__name__}")
    if not isinstance(spec.id, str) or not spec.id:
        raise NodeContractError(f"{cls.__name__}.spec.id must be a non-empty string (the class_type), got {spec.id!r}")
    for item in spec.inputs:
        if not isinstance(item, InputSpec):
            raise NodeContractError(f"{spec.id}: inputs must be built with Int/Float/String/.../Input, got {item!r}")
    for item in spec.outputs:
        if not isinstance(item, OutputSpec):
            raise NodeContractError(f"{spec.id}: outputs must be built with Output(), got {item!r}")
    names = [item.name for item in spec.inputs]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise NodeContractError(f"{spec.id}: input name(s) {duplicates} declared more than once")
    return spec


class DeclarativeNode:
    """NodeDefinition for a declarative `Node` subclass."""

    def __init__(self, cls: type, *, python_module: str | None = None, display_name: str | None = None) -> None:
        if not (inspect.isclass(cls) and issubclass(cls, Node)):
            raise NodeContractError(f"{cls!r} is not a declarative node (a subclass of nodes.api.Node)")
        if cls.run is Node.run:
            raise NodeContractError(f"{cls.__name__} must define run(self, ctx, ...)")
        self.cls = cls
        declared = _declared_spec(cls)
        _run_parameters(cls, declared)
        self._fingerprint = _hook(cls, "fingerprint", per_class=True)
        self._validate = _hook(cls, "validate", per_class=True)
        self._check_lazy = _hook(cls, "check_lazy", per_class=False)
        self._validation: ValidateSignature | None = (
            validation_signature(self._validate) if self._validate is not None else None
        )
        outputs = tuple(declared.outputs)
        tooltips = declared.output_tooltips
        if tooltips is None and any(out.tooltip is not None for out in outputs):
            tooltips = tuple(out.tooltip for out in outputs)
        own_doc = cls.__dict__.get("__doc__")
        self._spec = dataclasses.replace(
            declared,
            inputs=tuple(declared.inputs),
            outputs=outputs,
            version=str(declared.version),
            description=declared.description or (inspect.cleandoc(own_doc) if own_doc else ""),
            display_name=display_name or declared.display_name,
            python_module=python_module or declared.python_module,
            output_tooltips=tuple(tooltips) if tooltips is not None else None,
            has_fingerprint=self._fingerprint is not None,
            validation=self._validation,
            has_lazy_check=self._check_lazy is not None,
            is_async=inspect.iscoroutinefunction(cls.run),
        )
        self._dynamic = any(isinstance(item, ChoiceInput) for item in self._spec.inputs)
        self.spec()  # a failing choices function should fail registration, not the first prompt

    @property
    def class_type(self) -> str:
        return self._spec.id

    def spec(self) -> NodeSpec:
        if not self._dynamic:
            return self._spec
        inputs = tuple(item.resolve() if isinstance(item, ChoiceInput) else item for item in self._spec.inputs)
        return dataclasses.replace(self._spec, inputs=inputs)

    def create(self) -> Any:
        return self.cls()

    def _runtime(self) -> NodeRuntime:
        runtime = current()
        if runtime is None:
            # Called outside the executor (a quick test, a script): give run() a usable ctx
            # whose progress and interrupt checks do nothing.
            runtime = NodeRuntime(node_id="(detached)", class_type=self.class_type)
        return runtime

    def fingerprint(self, inputs: Mapping[str, Any]) -> Any:
        if self._fingerprint is None:
            return None
        return self._fingerprint(**inputs)

    def validate(self, inputs: Mapping[str, Any], input_types: Mapping[str, str] | None) -> Any:
        if self._validate is None or self._validation is None:
            return True
        kwargs = {name: value for name, value in inputs.items() if self._validation.takes(name)}
        if self._validation.wants_input_types:
            kwargs["input_types"] = dict(input_types or {})
        return self._validate(**kwargs)

    def check_lazy(self, instance: Any, inputs: Mapping[str, Any]) -> Any:
        if self._check_lazy is None:
            return []
        return instance.check_lazy(self._runtime(), **inputs)

    def execute(self, instance: Any, inputs: Mapping[str, Any]) -> Any:
        result = instance.run(self._runtime(), **inputs)
        outputs = len(self._spec.outputs)
        if inspect.isawaitable(result):
            return _checked(self.class_type, outputs, result)
        return _check_result(self.class_type, outputs, result)

    def __repr__(self) -> str:
        return f"DeclarativeNode({self.class_type})"


def is_declarative_node_class(obj: Any) -> bool:
    return inspect.isclass(obj) and issubclass(obj, Node) and obj is not Node


__all__ = [
    "ANY_TYPE",
    "HIDDEN_KINDS",
    "Boolean",
    "Choice",
    "ChoiceInput",
    "DeclarativeNode",
    "EngineError",
    "ExecutionBlocker",
    "Float",
    "GraphBuilder",
    "Hidden",
    "Input",
    "InputSpec",
    "Int",
    "Interrupted",
    "ModelError",
    "Node",
    "NodeContractError",
    "NodeError",
    "NodeRuntime",
    "NodeSpec",
    "Output",
    "OutputSpec",
    "ProgressBar",
    "String",
    "ValidationError",
    "current",
    "is_declarative_node_class",
    "is_link",
]
