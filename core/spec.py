"""The node contract: one internal NodeSpec and the NodeDefinition protocol.

Every node Loom can run -- a ComfyUI V1 class from a custom package (nodes/compat.py) or one of
Loom's own declarative nodes (nodes/api.py) -- is compiled to a `NodeSpec` (what the node declares:
inputs, outputs, flags) and wrapped in a `NodeDefinition` (how to call it). The executor and the
validator only ever see these two types, never the classes behind them; that is what keeps
`execution/` free of `nodes/` and torch.

Plain stdlib: no torch, no imports from the rest of Loom.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

ANY_TYPE = "*"
"""The wildcard socket type: matches every other type in either direction."""

WIDGET_TYPES = frozenset({"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"})
"""Types that the editor shows as widgets (constants) rather than sockets."""

HIDDEN_KINDS = frozenset(
    {"PROMPT", "DYNPROMPT", "EXTRA_PNGINFO", "UNIQUE_ID", "AUTH_TOKEN_COMFY_ORG", "API_KEY_COMFY_ORG"}
)
"""Values the executor fills in for hidden inputs (spec §3.1)."""

Section = Literal["required", "optional", "hidden"]


@dataclass(frozen=True)
class InputSpec:
    """One declared input.

    `type` is the socket type string ("INT", "IMAGE", "A,B", "*"); combos have type "COMBO" and
    their allowed values in `choices`. `options` is the option dict exactly as the node declared
    it (default, min, max, lazy, forceInput, rawLink, tooltip ...): the backend enforces only
    min/max/choices/lazy/rawLink, the rest is UI metadata passed through to /object_info.
    """

    name: str
    type: str
    section: Section = "required"
    options: Mapping[str, Any] = field(default_factory=dict)
    choices: tuple[Any, ...] | None = None
    legacy_combo: bool = False
    """True when the node declared its combo as a bare list (V1 style); /object_info keeps that."""
    hidden_kind: str | None = None
    """For hidden inputs declared as a plain string ("PROMPT", "UNIQUE_ID"...): what to inject."""

    @property
    def lazy(self) -> bool:
        return bool(self.options.get("lazy", False))

    @property
    def raw_link(self) -> bool:
        return bool(self.options.get("rawLink", False))

    @property
    def min(self) -> Any:
        return self.options.get("min")

    @property
    def max(self) -> Any:
        return self.options.get("max")

    @property
    def default(self) -> Any:
        return self.options.get("default")

    @property
    def is_combo(self) -> bool:
        return self.choices is not None

    @property
    def is_widget(self) -> bool:
        """Shown as a widget in the editor (and so stored in a UI workflow's widgets_values)."""
        if self.section == "hidden" or self.options.get("forceInput"):
            return False
        return self.is_combo or self.type in WIDGET_TYPES

    @property
    def linkable(self) -> bool:
        """Can receive a link. Hidden inputs only when declared with a tuple (spec §3.1)."""
        return self.hidden_kind is None

    def object_info(self) -> list[Any]:
        """The `[TYPE, {options}]` entry of /object_info (spec §3.7)."""
        options = dict(self.options)
        if self.is_combo:
            if self.legacy_combo:
                return [list(self.choices or ()), options] if options else [list(self.choices or ())]
            options["options"] = list(self.choices or ())
            return ["COMBO", options]
        if self.hidden_kind is not None:
            return [self.hidden_kind]
        return [self.type, options] if options else [self.type]


@dataclass(frozen=True)
class OutputSpec:
    type: str
    name: str | None = None
    is_list: bool = False
    tooltip: str | None = None

    @property
    def display_name(self) -> str:
        return self.name if self.name is not None else self.type


@dataclass(frozen=True)
class ValidateSignature:
    """How a node's custom validation (VALIDATE_INPUTS) wants to be called (spec §4.2).

    `params` are the input names it declares (only those are passed, and those skip the built-in
    min/max/combo checks); None means it takes **kwargs (every input is passed, every built-in check
    is skipped). `wants_input_types`: it has an `input_types` parameter, which receives the types of
    linked inputs and turns off the link type check for this node.
    """

    params: tuple[str, ...] | None
    wants_input_types: bool = False

    def takes(self, name: str) -> bool:
        return self.params is None or name in self.params


@dataclass(frozen=True)
class NodeSpec:
    """Everything the engine needs to know about a node type, nothing about how it runs."""

    id: str
    inputs: tuple[InputSpec, ...] = ()
    outputs: tuple[OutputSpec, ...] = ()
    display_name: str | None = None
    category: str = "sd"
    description: str = ""
    python_module: str = "nodes"
    version: str = "1"
    """Part of every cache key: bump it when the node's results change for the same inputs."""
    output_node: bool = False
    input_is_list: bool = False
    cacheable: bool = True
    """False: results are never reused (random or I/O nodes); same effect as IS_CHANGED = NaN."""
    not_idempotent: bool = False
    """The node id joins the cache key, so two identical nodes never share a result."""
    deprecated: bool = False
    experimental: bool = False
    api_node: bool = False
    output_tooltips: tuple[str | None, ...] | None = None
    has_fingerprint: bool = False
    """The node defines IS_CHANGED (`NodeDefinition.fingerprint` is meaningful)."""
    validation: ValidateSignature | None = None
    has_lazy_check: bool = False
    """The node defines check_lazy_status."""
    is_async: bool = False
    """FUNCTION is a coroutine function."""

    def input(self, name: str) -> InputSpec | None:
        for spec in self.inputs:
            if spec.name == name:
                return spec
        return None

    def section(self, section: Section) -> tuple[InputSpec, ...]:
        return tuple(spec for spec in self.inputs if spec.section == section)

    @property
    def widget_inputs(self) -> tuple[InputSpec, ...]:
        """Widget inputs in UI order: required, then optional (hidden never)."""
        return self.section("required") + self.section("optional")

    @property
    def needs_node_id(self) -> bool:
        """The node's id is part of its cache key (spec §4.4): NOT_IDEMPOTENT or hidden UNIQUE_ID."""
        return self.not_idempotent or any(spec.hidden_kind == "UNIQUE_ID" for spec in self.inputs)

    def object_info(self) -> dict[str, Any]:
        """This node's /object_info entry, in ComfyUI's V1 shape (spec §3.7)."""
        info: dict[str, Any] = {"input": {}, "input_order": {}}
        for section in ("required", "optional", "hidden"):
            specs = self.section(section)  # type: ignore[arg-type]
            if specs or section == "required":
                info["input"][section] = {spec.name: spec.object_info() for spec in specs}
                info["input_order"][section] = [spec.name for spec in specs]
        info.update(
            output=[out.type for out in self.outputs],
            output_is_list=[out.is_list for out in self.outputs],
            output_name=[out.display_name for out in self.outputs],
            name=self.id,
            display_name=self.display_name or self.id,
            description=self.description,
            python_module=self.python_module,
            category=self.category,
            output_node=self.output_node,
        )
        if self.output_tooltips is not None:
            info["output_tooltips"] = list(self.output_tooltips)
        for flag in ("deprecated", "experimental", "api_node"):
            if getattr(self, flag):
                info[flag] = True
        return info


class NodeDefinition(Protocol):
    """A runnable node type, as the registry hands it to the validator and the executor.

    Any method may return an awaitable instead of a value (async nodes); the executor awaits it.
    `inputs` dicts hold the resolved values of one call (one list element, unless the spec says
    input_is_list), keyed by input name; absent optional inputs are simply not in the dict.
    """

    @property
    def class_type(self) -> str: ...

    def spec(self) -> NodeSpec:
        """The current spec. May be recomputed (combo choices can list files that change), so
        callers fetch it once per prompt rather than holding it forever."""
        ...

    def create(self) -> Any:
        """A fresh node instance; the executor keeps one per (node id, class type)."""
        ...

    def fingerprint(self, inputs: Mapping[str, Any]) -> Any:
        """IS_CHANGED: a value that joins the cache key (NaN = never reuse). Constants only."""
        ...

    def validate(self, inputs: Mapping[str, Any], input_types: Mapping[str, str] | None) -> Any:
        """VALIDATE_INPUTS: True, or an error string / False."""
        ...

    def check_lazy(self, instance: Any, inputs: Mapping[str, Any]) -> Any:
        """check_lazy_status: names of lazy inputs still needed (unevaluated ones are None)."""
        ...

    def execute(self, instance: Any, inputs: Mapping[str, Any]) -> Any:
        """Run the node once: a tuple of outputs, a dict with result/ui/expand, or a blocker."""
        ...


NodeRegistryView = Mapping[str, NodeDefinition]
"""What the executor and validator receive: class_type -> definition (the registry is passed in)."""


def split_types(type_name: str) -> frozenset[str]:
    """The members of a comma union ("IMAGE,MASK" -> {"IMAGE", "MASK"})."""
    return frozenset(part.strip() for part in type_name.split(","))


def types_compatible(received: Any, expected: Any) -> bool:
    """ComfyUI's link type rule (spec §4.2, non-strict mode).

    Equal names match (compared with `!=`, so str subclasses that override it, as some packs do
    for "any" types, keep working); `*` on either side matches; a list received type (a combo
    output) matches COMBO; otherwise comma unions match when they intersect.
    """
    if not (received != expected):  # noqa: SIM202 -- deliberate, see docstring
        return True
    if received == ANY_TYPE or expected == ANY_TYPE:
        return True
    if isinstance(received, (list, tuple)):
        return expected == "COMBO"
    if not isinstance(received, str) or not isinstance(expected, str):
        return False
    return bool(split_types(received) & split_types(expected))


def output_types(spec: NodeSpec) -> Sequence[str]:
    return [out.type for out in spec.outputs]
