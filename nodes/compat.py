"""ComfyUI V1 node classes -> NodeSpec + NodeDefinition (spec §3.1).

A V1 node is a class with INPUT_TYPES/RETURN_TYPES/FUNCTION and friends. `V1Node(cls)` reads those
attributes (nothing else) and exposes them through the NodeDefinition protocol, so the executor
never touches the class directly.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from core.errors import EngineError
from core.spec import HIDDEN_KINDS, InputSpec, NodeSpec, OutputSpec, ValidateSignature


class NodeContractError(EngineError):
    """A node class breaks the V1 contract in a way that makes it unusable."""


def _compile_input(class_name: str, section: str, name: str, entry: Any) -> InputSpec:
    if section == "hidden" and isinstance(entry, str):
        # Plain string: a value the executor injects ("PROMPT", "UNIQUE_ID"...). Unknown kinds are
        # kept: the executor passes None for them, as ComfyUI does.
        return InputSpec(name=name, type=entry, section="hidden", hidden_kind=entry)
    if isinstance(entry, (str, list)):
        entry = (entry,)  # tolerate the common `"name": "INT"` / bare-list shorthand
    if not isinstance(entry, (tuple, list)) or not entry:
        raise NodeContractError(
            f"{class_name}.INPUT_TYPES: input '{name}' must be (TYPE,) or (TYPE, {{options}}), got {entry!r}"
        )
    type_name = entry[0]
    options = entry[1] if len(entry) > 1 and isinstance(entry[1], Mapping) else {}
    if isinstance(type_name, (list, tuple)):
        return InputSpec(
            name=name,
            type="COMBO",
            section=section,  # type: ignore[arg-type]
            options=dict(options),
            choices=tuple(type_name),
            legacy_combo=True,
        )
    if type_name == "COMBO":
        choices = tuple(options.get("options", ()))
        opts = {key: value for key, value in options.items() if key != "options"}
        return InputSpec(name=name, type="COMBO", section=section, options=opts, choices=choices)  # type: ignore[arg-type]
    if not isinstance(type_name, str):
        raise NodeContractError(
            f"{class_name}.INPUT_TYPES: input '{name}' has type {type_name!r}; expected a type name "
            "string or a list of choices"
        )
    return InputSpec(name=name, type=type_name, section=section, options=dict(options))  # type: ignore[arg-type]


def compile_inputs(cls: type, input_types: Any) -> tuple[InputSpec, ...]:
    class_name = cls.__name__
    if not isinstance(input_types, Mapping):
        raise NodeContractError(f"{class_name}.INPUT_TYPES() must return a dict, got {type(input_types).__name__}")
    specs: list[InputSpec] = []
    for section in ("required", "optional", "hidden"):
        entries = input_types.get(section) or {}
        if not isinstance(entries, Mapping):
            raise NodeContractError(f"{class_name}.INPUT_TYPES()['{section}'] must be a dict")
        for name, entry in entries.items():
            specs.append(_compile_input(class_name, section, name, entry))
    return tuple(specs)


def compile_outputs(cls: type) -> tuple[OutputSpec, ...]:
    return_types = getattr(cls, "RETURN_TYPES", ())
    if isinstance(return_types, str):
        raise NodeContractError(
            f"{cls.__name__}.RETURN_TYPES must be a tuple, got the string {return_types!r} "
            f"(did you forget a trailing comma: ({return_types!r},)?)"
        )
    names = getattr(cls, "RETURN_NAMES", None) or ()
    is_list = getattr(cls, "OUTPUT_IS_LIST", None) or ()
    tooltips = getattr(cls, "OUTPUT_TOOLTIPS", None) or ()
    outputs = []
    for index, type_name in enumerate(return_types):
        if isinstance(type_name, (list, tuple)):
            type_name = "COMBO"  # an output carrying a combo's choice list
        outputs.append(
            OutputSpec(
                type=str(type_name),
                name=names[index] if index < len(names) else None,
                is_list=bool(is_list[index]) if index < len(is_list) else False,
                tooltip=tooltips[index] if index < len(tooltips) else None,
            )
        )
    return tuple(outputs)


def _validate_signature(cls: type) -> ValidateSignature | None:
    validate = getattr(cls, "VALIDATE_INPUTS", None)
    if validate is None:
        return None
    return validation_signature(validate)


def validation_signature(validate: Any) -> ValidateSignature:
    """How to call a custom validation function (VALIDATE_INPUTS, or a declarative `validate`)."""
    try:
        params = inspect.signature(validate).parameters.values()
    except (TypeError, ValueError):
        return ValidateSignature(params=None)
    names = []
    takes_kwargs = False
    for param in params:
        if param.kind is inspect.Parameter.VAR_KEYWORD:
            takes_kwargs = True
        elif param.kind is not inspect.Parameter.VAR_POSITIONAL and param.name not in ("self", "cls", "s"):
            names.append(param.name)
    wants_types = "input_types" in names
    named = tuple(name for name in names if name != "input_types")
    return ValidateSignature(params=None if takes_kwargs else named, wants_input_types=wants_types)


def is_v1_node_class(obj: Any) -> bool:
    return inspect.isclass(obj) and hasattr(obj, "INPUT_TYPES") and hasattr(obj, "FUNCTION")


class V1Node:
    """NodeDefinition for a ComfyUI V1 class."""

    def __init__(
        self,
        cls: type,
        class_type: str | None = None,
        display_name: str | None = None,
        python_module: str | None = None,
    ) -> None:
        if not is_v1_node_class(cls):
            raise NodeContractError(f"{cls!r} is not a V1 node class (needs INPUT_TYPES and FUNCTION)")
        self.cls = cls
        self._class_type = class_type or cls.__name__
        self._display_name = display_name
        self._python_module = python_module or getattr(cls, "RELATIVE_PYTHON_MODULE", None) or "nodes"
        function = getattr(cls, str(cls.FUNCTION), None)
        if function is None:
            raise NodeContractError(f"{cls.__name__}.FUNCTION names '{cls.FUNCTION}', which the class does not define")
        self._function_name = str(cls.FUNCTION)
        self._fixed = dict(
            outputs=compile_outputs(cls),
            category=getattr(cls, "CATEGORY", "sd"),
            description=getattr(cls, "DESCRIPTION", "") or "",
            output_node=bool(getattr(cls, "OUTPUT_NODE", False)),
            input_is_list=bool(getattr(cls, "INPUT_IS_LIST", False)),
            not_idempotent=bool(getattr(cls, "NOT_IDEMPOTENT", False)),
            deprecated=bool(getattr(cls, "DEPRECATED", False)),
            experimental=bool(getattr(cls, "EXPERIMENTAL", False)),
            api_node=bool(getattr(cls, "API_NODE", False)),
            version=str(getattr(cls, "LOOM_VERSION", "1")),
            output_tooltips=tuple(cls.OUTPUT_TOOLTIPS) if getattr(cls, "OUTPUT_TOOLTIPS", None) else None,
            has_fingerprint=hasattr(cls, "IS_CHANGED"),
            validation=_validate_signature(cls),
            has_lazy_check=hasattr(cls, "check_lazy_status"),
            is_async=inspect.iscoroutinefunction(function),
        )
        self.spec()  # fail at registration, not at the first prompt, if INPUT_TYPES is broken

    @property
    def class_type(self) -> str:
        return self._class_type

    def spec(self) -> NodeSpec:
        # INPUT_TYPES is called every time: V1 nodes list files in it (checkpoint names...).
        return NodeSpec(
            id=self._class_type,
            inputs=compile_inputs(self.cls, self.cls.INPUT_TYPES()),
            display_name=self._display_name,
            python_module=self._python_module,
            **self._fixed,
        )

    def create(self) -> Any:
        return self.cls()

    def fingerprint(self, inputs: Mapping[str, Any]) -> Any:
        return self.cls.IS_CHANGED(**inputs)

    def validate(self, inputs: Mapping[str, Any], input_types: Mapping[str, str] | None) -> Any:
        signature = self._fixed["validation"]
        if signature is None:
            return True
        kwargs = {name: value for name, value in inputs.items() if signature.takes(name)}
        if signature.wants_input_types:
            kwargs["input_types"] = dict(input_types or {})
        return self.cls.VALIDATE_INPUTS(**kwargs)

    def check_lazy(self, instance: Any, inputs: Mapping[str, Any]) -> Any:
        return instance.check_lazy_status(**inputs)

    def execute(self, instance: Any, inputs: Mapping[str, Any]) -> Any:
        return getattr(instance, self._function_name)(**inputs)

    def __repr__(self) -> str:
        return f"V1Node({self._class_type})"


def v1_definitions(
    mappings: Mapping[str, type],
    display_names: Mapping[str, str] | None = None,
    python_module: str | None = None,
) -> dict[str, V1Node]:
    """Definitions for a package's NODE_CLASS_MAPPINGS (+ NODE_DISPLAY_NAME_MAPPINGS)."""
    display_names = display_names or {}
    return {
        class_type: V1Node(cls, class_type, display_names.get(class_type), python_module)
        for class_type, cls in mappings.items()
    }


__all__ = [
    "HIDDEN_KINDS",
    "NodeContractError",
    "V1Node",
    "is_v1_node_class",
    "v1_definitions",
    "validation_signature",
]
