"""Prompt validation: ComfyUI's rules and error shapes (spec §1.2, §4.1, §4.2), without recursion.

`validate_prompt_async(prompt, registry)` checks an API-format prompt against the node registry and
returns a `ValidationResult`: the runnable output node ids, ComfyUI's `node_errors` payload and a
copy of the prompt whose constants are converted (INT -> int() ...) and unwrapped (`__value__`).

How it walks the graph: each output is validated through the ancestors its links reach, with a
result memoised per node, like ComfyUI -- but with an explicit stack instead of recursion, so a
10,000-node chain validates, and a static cycle is reported as `dependency_cycle` on every node in
it instead of crashing. All checks of a node are local (ancestors only decide whether it is *ok*),
so a node is checked when first reached and settled when its last ancestor is.

Deliberate differences from ComfyUI, all in the direction of saying more:
- a link to a missing node, or an input check that raises, becomes an error on that input and the
  node's other inputs are still checked (ComfyUI abandons the node on the first exception);
- a link whose output slot does not exist is `bad_linked_input` (ComfyUI raises IndexError);
- links on undeclared inputs and on linkable hidden inputs are followed and their sources validated
  (ComfyUI skips them in validation but runs them);
- `dependent_outputs` lists only outputs that really depend on the node, and the top-level
  `prompt_outputs_failed_validation` details list the errors of every reported node;
- a VALIDATE_INPUTS that fails while receiving no input still produces one error (ComfyUI: none);
- constants are single values: VALIDATE_INPUTS is called once per node, never mapped over lists
  (an INPUT_IS_LIST node receives each value wrapped in a one-element list, as at execution).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
import traceback
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from core.runtime import ExecutionBlocker
from core.spec import InputSpec, NodeDefinition, NodeSpec, ValidateSignature, types_compatible
from execution.graph import copy_prompt, cycle_in_flow_order, parse_link, prompt_shape_error, unwrap_value

log = logging.getLogger(__name__)

COMBO_LIST_LIMIT = 20
"""Above this many choices a `value_not_in_list` error leaves the list out (model folders are long)."""

_CONVERTERS: dict[str, Any] = {"INT": int, "FLOAT": float, "STRING": str, "BOOLEAN": bool}

Error = dict[str, Any]
Edge = tuple[str, InputSpec | None, Any]
"""How a node was first reached: (consumer's input name, its declaration, the link value)."""


@dataclass(repr=False)
class ValidationResult:
    ok: bool
    """True if at least one output is runnable."""
    error: Error | None
    """Top-level {"type", "message", "details", "extra_info"} when not ok."""
    node_errors: dict[str, dict[str, Any]] = field(default_factory=dict)
    """{node_id: {"errors": [...], "dependent_outputs": [...], "class_type": str}} (may be
    non-empty when ok: failing outputs are dropped, the others run)."""
    outputs: list[str] = field(default_factory=list)
    """Valid output node ids to execute, in prompt order."""
    prompt: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Copy of the prompt with validated constants converted and `__value__` wrappers removed."""

    def __repr__(self) -> str:
        # Short on purpose: asyncio and logging repr results, and a prompt can hold 10,000 nodes.
        kind = self.error["type"] if self.error else None
        return (
            f"ValidationResult(ok={self.ok}, error={kind!r}, outputs={len(self.outputs)}, "
            f"node_errors={len(self.node_errors)}, nodes={len(self.prompt)})"
        )


@dataclass(frozen=True)
class _ClassInfo:
    """One class's spec, fetched once per validation (spec() may list folders)."""

    definition: NodeDefinition
    spec: NodeSpec | None
    spec_error: Exception | None
    checked: tuple[InputSpec, ...] = ()
    """Inputs validated per node: required, optional, then hidden ones that accept links."""
    declared: Mapping[str, InputSpec] = field(default_factory=dict)


def _error(kind: str, message: str, details: str, extra_info: dict[str, Any]) -> Error:
    return {"type": kind, "message": message, "details": details, "extra_info": extra_info}


def _input_config(decl: InputSpec | None) -> Any:
    return decl.object_info() if decl is not None else None


def _full_type_name(cls: type) -> str:
    module = cls.__module__
    return cls.__qualname__ if module in (None, "builtins") else f"{module}.{cls.__qualname__}"


def _load_classes(
    prompt: Mapping[str, Mapping[str, Any]], registry: Mapping[str, NodeDefinition]
) -> dict[str, _ClassInfo]:
    classes: dict[str, _ClassInfo] = {}
    for node in prompt.values():
        class_type = node["class_type"]
        if class_type in classes:
            continue
        definition = registry[class_type]
        try:
            spec = definition.spec()
        except Exception as exc:  # a broken INPUT_TYPES fails the nodes using it, not the server
            log.warning("node class %s cannot describe its inputs", class_type, exc_info=exc)
            classes[class_type] = _ClassInfo(definition, None, exc)
            continue
        linkable_hidden = tuple(decl for decl in spec.section("hidden") if decl.linkable)
        checked = spec.section("required") + spec.section("optional") + linkable_hidden
        declared = {decl.name: decl for decl in spec.inputs}
        classes[class_type] = _ClassInfo(definition, spec, None, checked, declared)
    return classes


class _NodeCheck:
    """The local checks of one node: its inputs, its links' ends, its VALIDATE_INPUTS."""

    __slots__ = (
        "children",
        "class_type",
        "errors",
        "info",
        "inputs",
        "node_id",
        "received_types",
        "signature",
        "validator",
    )

    def __init__(self, validator: _Validator, node_id: str) -> None:
        self.validator = validator
        self.node_id = node_id
        node = validator.prompt[node_id]
        self.class_type: str = node["class_type"]
        self.info: _ClassInfo = validator.classes[self.class_type]
        self.inputs: dict[str, Any] = node["inputs"]
        self.errors: list[Error] = []
        self.children: list[tuple[str, Edge]] = []
        self.received_types: dict[str, Any] = {}
        spec = self.info.spec
        self.signature: ValidateSignature | None = spec.validation if spec is not None else None

    def check_inputs(self) -> None:
        """Every check but VALIDATE_INPUTS (synchronous: most nodes need no coroutine at all)."""
        if self.info.spec is None:
            self._add_exception(self.info.spec_error)  # type: ignore[arg-type]
            return
        for decl in self.info.checked:
            try:
                self._check_input(decl)
            except Exception as exc:  # ComfyUI's exception_during_(inner_)validation, per input
                self._add_exception(exc)
        declared = self.info.declared
        for name, value in self.inputs.items():
            if name in declared:
                continue
            link = parse_link(value)
            if link is not None:
                try:
                    # Variadic nodes read undeclared links: they run, so their sources are checked.
                    self._follow_link(name, None, value, link)
                except Exception as exc:
                    self._add_exception(exc)

    async def check_custom(self) -> None:
        """The node's VALIDATE_INPUTS, if it has one (it may be async)."""
        if self.signature is None:
            return
        try:
            await self._custom_validation(self.signature)
        except Exception as exc:
            self._add_exception(exc)

    def _add_exception(self, exc: Exception) -> None:
        # Debug only: the error (traceback included) reaches the client and the failure summary.
        log.debug("validating node %s (%s) raised", self.node_id, self.class_type, exc_info=exc)
        self.errors.append(self.validator.exception_error(self.node_id, exc))

    def _check_input(self, decl: InputSpec) -> None:
        name = decl.name
        if name not in self.inputs:
            if decl.section == "required":
                self.errors.append(
                    _error("required_input_missing", "Required input is missing", name, {"input_name": name})
                )
            return
        value = self.inputs[name]
        if isinstance(value, (list, tuple)):
            link = parse_link(value)
            if link is not None:
                self._follow_link(name, decl, value, link)
            elif decl.section != "hidden":
                message = "Bad linked input, must be a length-2 list of [node_id, slot_index]"
                self._bad_link(name, decl, value, message, name)
        elif decl.section != "hidden":  # hidden constants are not validated (a linkable one's links are)
            self._check_constant(decl, value)

    def _bad_link(self, name: str, decl: InputSpec | None, value: Any, message: str, details: str) -> None:
        extra = {"input_name": name, "input_config": _input_config(decl), "received_value": value}
        self.errors.append(_error("bad_linked_input", message, details, extra))

    def _follow_link(self, name: str, decl: InputSpec | None, value: Any, link: tuple[str, int]) -> None:
        """Check where a well-formed link points; queue its source for validation if it is usable."""
        source_id, slot = link
        source = self.validator.prompt.get(source_id)
        if source is None:
            details = f"{name}, linked to node #{source_id}, which is not in the prompt"
            self._bad_link(name, decl, value, "Bad linked input, the linked node does not exist", details)
            return
        source_spec = self.validator.classes[source["class_type"]].spec
        if source_spec is not None:  # else the source's own check reports its broken spec
            outputs = source_spec.outputs
            if not 0 <= slot < len(outputs):
                details = (
                    f"{name}, node #{source_id} ({source['class_type']}) has no output {slot} (it has {len(outputs)})"
                )
                self._bad_link(name, decl, value, "Bad linked input, the linked node has no such output", details)
                return
            received = outputs[slot].type
            self.received_types[name] = received
            wants_types = self.signature is not None and self.signature.wants_input_types
            if decl is not None and not wants_types and not types_compatible(received, decl.type):
                self._type_mismatch(decl, value, received)
                return
        self.children.append((source_id, (name, decl, value)))

    def _type_mismatch(self, decl: InputSpec, value: Any, received: Any) -> None:
        expected = list(decl.choices or ()) if decl.legacy_combo else decl.type
        extra = {
            "input_name": decl.name,
            "input_config": _input_config(decl),
            "received_type": received,
            "linked_node": value,
        }
        details = f"{decl.name}, received_type({received}) mismatch input_type({expected})"
        self.errors.append(_error("return_type_mismatch", "Return type mismatch between linked nodes", details, extra))

    def _check_constant(self, decl: InputSpec, value: Any) -> None:
        name = decl.name
        unwrapped = unwrap_value(value)
        if unwrapped is not value:
            self.inputs[name] = value = unwrapped
        converter = _CONVERTERS.get(decl.type)
        if converter is not None:
            try:
                converted = converter(value)
            except Exception as exc:
                extra = {
                    "input_name": name,
                    "input_config": _input_config(decl),
                    "received_value": value,
                    "exception_message": str(exc),
                }
                message = f"Failed to convert an input value to a {decl.type} value"
                self.errors.append(_error("invalid_input_type", message, f"{name}, {value}, {exc}", extra))
                return
            self.inputs[name] = value = converted
        if self.signature is not None and self.signature.takes(name):
            return  # the node's VALIDATE_INPUTS owns this input's range and choices (spec §4.2)
        self._check_range_and_choices(decl, value)

    def _check_range_and_choices(self, decl: InputSpec, value: Any) -> None:
        name = decl.name
        options = decl.options
        minimum, maximum = options.get("min"), options.get("max")
        if minimum is not None and value < minimum:
            message = f"Value {value} smaller than min of {minimum}"
            self._value_error("value_smaller_than_min", message, name, decl, value)
            return
        if maximum is not None and value > maximum:
            message = f"Value {value} bigger than max of {maximum}"
            self._value_error("value_bigger_than_max", message, name, decl, value)
            return
        choices = decl.choices
        if choices is not None and value not in choices:
            long = len(choices) > COMBO_LIST_LIMIT
            listed = f"(list of length {len(choices)})" if long else str(list(choices))
            details = f"{name}: '{value}' not in {listed}"
            self._value_error("value_not_in_list", "Value not in list", details, decl, value, config=not long)

    def _value_error(
        self, kind: str, message: str, details: str, decl: InputSpec, value: Any, *, config: bool = True
    ) -> None:
        """An error about a constant; `config=False` leaves input_config out (huge choice lists)."""
        extra = {
            "input_name": decl.name,
            "input_config": decl.object_info() if config else None,
            "received_value": value,
        }
        self.errors.append(_error(kind, message, details, extra))

    def _validation_inputs(self, signature: ValidateSignature) -> dict[str, Any]:
        """What VALIDATE_INPUTS receives: the inputs it names (all for **kwargs), constants only.

        Linked inputs arrive as None (rawLink ones as the link itself); absent inputs and
        undeclared constants are not passed; hidden UNIQUE_ID is the node id, other hidden values
        do not exist yet at validation and are None.
        """
        declared = self.info.declared
        passed: dict[str, Any] = {}
        for name, value in self.inputs.items():
            decl = declared.get(name)
            is_link = parse_link(value) is not None
            if (decl is None and not is_link) or (decl is not None and decl.hidden_kind is not None):
                continue
            if signature.takes(name):
                passed[name] = None if is_link and (decl is None or not decl.raw_link) else value
        for decl in self.info.spec.section("hidden"):  # type: ignore[union-attr]
            if decl.hidden_kind is not None and signature.takes(decl.name):
                passed[decl.name] = self.node_id if decl.hidden_kind == "UNIQUE_ID" else None
        if self.info.spec.input_is_list:  # type: ignore[union-attr]
            passed = {name: [value] for name, value in passed.items()}
        return passed

    async def _custom_validation(self, signature: ValidateSignature) -> None:
        passed = self._validation_inputs(signature)
        input_types = dict(self.received_types) if signature.wants_input_types else None
        result = self.info.definition.validate(passed, input_types)
        if inspect.isawaitable(result):
            result = await result
        if result is True or isinstance(result, ExecutionBlocker):
            return
        suffix = "" if result is False else f" - {result}"
        # ComfyUI reports one error per argument it passed, `input_types` included.
        names = list(passed) + (["input_types"] if signature.wants_input_types else [])
        if not names:
            self.errors.append(_error("custom_validation_failed", "Custom validation failed for node", str(result), {}))
        for name in names:
            self.errors.append(
                _error(
                    "custom_validation_failed",
                    "Custom validation failed for node",
                    f"{name}{suffix}",
                    {"input_name": name},
                )
            )


class _Validator:
    """Validates outputs one by one, sharing per-node results between them."""

    def __init__(self, prompt: dict[str, dict[str, Any]], classes: dict[str, _ClassInfo]) -> None:
        self.prompt = prompt
        self.classes = classes
        self.errors: dict[str, list[Error]] = {}
        self.links: dict[str, list[tuple[str, Edge]]] = {}
        """The links each node's validation went on through (their sources can make it fail)."""
        self.ok: dict[str, bool] = {}
        self.reached_by: dict[str, Edge | None] = {}
        self.in_cycle: set[str] = set()

    def exception_error(self, node_id: str, exc: Exception) -> Error:
        """ComfyUI's shape: an output checked as a root gets exception_during_validation, an
        ancestor gets exception_during_inner_validation described by the link that reached it."""
        tb = traceback.format_tb(exc.__traceback__)
        exc_type = _full_type_name(type(exc))
        edge = self.reached_by.get(node_id)
        if edge is None:
            extra: dict[str, Any] = {"exception_type": exc_type, "traceback": tb}
            return _error("exception_during_validation", "Exception when validating node", str(exc), extra)
        # The edge names the CONSUMER's input; the error is listed under this (ancestor) node, so
        # no input_name here: an editor would highlight an input this node does not have.
        _name, _decl, link = edge
        extra = {
            "exception_message": str(exc),
            "exception_type": exc_type,
            "traceback": tb,
            "linked_node": link,
        }
        return _error("exception_during_inner_validation", "Exception when validating inner node", str(exc), extra)

    def _enter(self, node_id: str, stack: list[list[Any]], on_stack: dict[str, int]) -> _NodeCheck:
        """Run a node's synchronous checks and push it; the caller awaits its VALIDATE_INPUTS."""
        check = _NodeCheck(self, node_id)
        check.check_inputs()
        self.errors[node_id] = check.errors
        self.links[node_id] = check.children
        on_stack[node_id] = len(stack)
        stack.append([node_id, check.children, 0])
        return check

    async def validate_output(self, output_id: str) -> bool:
        """Depth-first post-order walk with an explicit stack (never recursion on graph depth)."""
        if output_id in self.ok:
            return self.ok[output_id]
        self.reached_by[output_id] = None
        stack: list[list[Any]] = []  # frames: [node id, [(source id, edge)], next child index]
        on_stack: dict[str, int] = {}
        check = self._enter(output_id, stack, on_stack)
        if check.signature is not None:
            await check.check_custom()
        while stack:
            frame = stack[-1]
            node_id, children = frame[0], frame[1]
            while frame[2] < len(children):
                source_id, edge = children[frame[2]]
                frame[2] += 1
                if source_id in self.ok:
                    continue
                if source_id in on_stack:
                    self._mark_cycle(stack, on_stack[source_id], edge)
                    continue
                self.reached_by[source_id] = edge
                check = self._enter(source_id, stack, on_stack)
                if check.signature is not None:
                    await check.check_custom()
                break
            else:  # every source settled (or on the stack): settle this node
                stack.pop()
                del on_stack[node_id]
                # A source still on the stack (a cycle) is not in `ok` yet: that counts as failed.
                ok = self.ok
                self.ok[node_id] = not self.errors[node_id] and all(ok.get(s, False) for s, _ in children)
        return self.ok[output_id]

    def _mark_cycle(self, stack: list[list[Any]], start: int, closing_edge: Edge) -> None:
        """Report a back edge's cycle on every node in it (each node once, for its first cycle)."""
        path = [frame[0] for frame in stack[start:]]
        flow = cycle_in_flow_order(path)
        chain = " -> ".join(f"#{node_id}" for node_id in flow)
        for index, node_id in enumerate(path):
            if node_id in self.in_cycle:
                continue
            self.in_cycle.add(node_id)
            # The link each node takes from the previous node in the cycle: the edge its successor
            # on the stack was entered by, or the back edge for the last one.
            name, _, link = self.reached_by[path[index + 1]] if index + 1 < len(path) else closing_edge  # type: ignore[misc]
            extra = {"input_name": name, "linked_node": link, "cycle": flow}
            details = f"{name}: node #{node_id} depends on its own output through {chain}"
            self.errors[node_id].append(_error("dependency_cycle", "Dependency cycle in the graph", details, extra))

    def failing_ancestry(self, output_id: str) -> list[str]:
        """The output and every failed node its failure comes from (iteratively)."""
        seen = {output_id}
        order: list[str] = []
        pending = [output_id]
        while pending:
            node_id = pending.pop()
            order.append(node_id)
            for source, _ in self.links.get(node_id, ()):
                if source not in seen and not self.ok.get(source, False):
                    seen.add(source)
                    pending.append(source)
        return order

    def node_errors(self, failed_outputs: list[str]) -> dict[str, dict[str, Any]]:
        """ComfyUI's node_errors: only nodes with their own errors, with the outputs they sink."""
        result: dict[str, dict[str, Any]] = {}
        for output_id in failed_outputs:
            for node_id in self.failing_ancestry(output_id):
                errors = self.errors.get(node_id)
                if not errors:
                    continue
                entry = result.get(node_id)
                if entry is None:
                    class_type = self.prompt[node_id]["class_type"]
                    entry = result[node_id] = {"errors": errors, "dependent_outputs": [], "class_type": class_type}
                entry["dependent_outputs"].append(output_id)
        return result


def _select_outputs(
    prompt: Mapping[str, Mapping[str, Any]], classes: Mapping[str, _ClassInfo], targets: list[str] | None
) -> list[str]:
    wanted = None if targets is None else {target for target in targets if isinstance(target, str)}
    outputs = []
    for node_id, node in prompt.items():
        spec = classes[node["class_type"]].spec
        if spec is not None and spec.output_node is True and (wanted is None or node_id in wanted):
            outputs.append(node_id)
    return outputs


def _log_failures(node_errors: Mapping[str, Mapping[str, Any]], failed: list[str]) -> None:
    for output_id in failed:
        log.info("output #%s failed validation and will not run", output_id)
    for node_id, entry in node_errors.items():
        for error in entry["errors"]:
            log.info("  * %s #%s: %s: %s", entry["class_type"], node_id, error["message"], error["details"])


async def validate_prompt_async(
    prompt: Any,
    registry: Mapping[str, NodeDefinition],
    partial_execution_targets: list[str] | None = None,
) -> ValidationResult:
    """Validate an API-format prompt (spec §4.2) against `registry` (class_type -> definition).

    Never raises for a bad prompt: every problem is in the result, in ComfyUI's error shapes.
    """
    started = time.perf_counter()
    shape_error = prompt_shape_error(prompt, registry)
    if shape_error is not None:
        return ValidationResult(ok=False, error=shape_error)
    work = copy_prompt(prompt)
    classes = _load_classes(work, registry)
    outputs = _select_outputs(work, classes, partial_execution_targets)
    if not outputs:
        error = _error("prompt_no_outputs", "Prompt has no outputs", "", {})
        return ValidationResult(ok=False, error=error, prompt=work)
    validator = _Validator(work, classes)
    good: list[str] = []
    failed: list[str] = []
    for output_id in outputs:
        (good if await validator.validate_output(output_id) else failed).append(output_id)
    node_errors = validator.node_errors(failed)
    _log_failures(node_errors, failed)
    log.debug("validated %d nodes in %.2f ms", len(validator.ok), (time.perf_counter() - started) * 1000)
    if not good:
        lines = [
            f"{error['message']}: {error['details']}" for entry in node_errors.values() for error in entry["errors"]
        ]
        error = _error("prompt_outputs_failed_validation", "Prompt outputs failed validation", "\n".join(lines), {})
        return ValidationResult(ok=False, error=error, node_errors=node_errors, prompt=work)
    return ValidationResult(ok=True, error=None, node_errors=node_errors, outputs=good, prompt=work)


def validate_prompt(
    prompt: Any,
    registry: Mapping[str, NodeDefinition],
    partial_execution_targets: list[str] | None = None,
) -> ValidationResult:
    """Synchronous `validate_prompt_async` for code without an event loop (CLI, tests)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(validate_prompt_async(prompt, registry, partial_execution_targets))
    raise RuntimeError(
        "validate_prompt() was called inside a running event loop; await validate_prompt_async() instead"
    )


__all__ = ["COMBO_LIST_LIMIT", "ValidationResult", "validate_prompt", "validate_prompt_async"]
