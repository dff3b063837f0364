"""Prompt validation (execution/validate.py) against ComfyUI's rules and error shapes (spec §4.2)."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import pytest

from core.graph_builder import GraphBuilder
from core.runtime import ExecutionBlocker
from execution.validate import ValidationResult, validate_prompt, validate_prompt_async
from tests.execution import validation_nodes as vn


@pytest.fixture(autouse=True)
def _fresh_recorders() -> None:
    vn.reset_calls()


@pytest.fixture
def registry() -> dict[str, Any]:
    return vn.registry()


def node(class_type: str, **inputs: Any) -> dict[str, Any]:
    return {"class_type": class_type, "inputs": inputs}


def image(content: str = "WHITE", height: Any = 8, width: Any = 8) -> dict[str, Any]:
    return node("StubImage", content=content, height=height, width=width)


def errors_of(result: ValidationResult, node_id: str) -> list[dict[str, Any]]:
    return result.node_errors[node_id]["errors"]


def only_error(result: ValidationResult, node_id: str) -> dict[str, Any]:
    errors = errors_of(result, node_id)
    assert len(errors) == 1, errors
    return errors[0]


def assert_error_shape(error: dict[str, Any]) -> None:
    assert set(error) == {"type", "message", "details", "extra_info"}


# -- whole-prompt rejections --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prompt", "node_id", "fragment"),
    [
        ({"1": ["not", "a", "node"]}, "1", "node #1 is not a JSON object"),
        ({"1": {"inputs": {}}}, "1", "missing the class_type property"),
        ({"1": node("NoSuchNode")}, "1", "node NoSuchNode does not exist"),
        ({"1": {"class_type": ["PreviewImage"], "inputs": {}}}, "1", "does not exist"),
        ({"1": {"class_type": "PreviewImage", "inputs": [1, 2]}}, "1", "inputs of node #1 (PreviewImage)"),
    ],
)
def test_malformed_nodes_reject_the_whole_prompt(registry, prompt, node_id, fragment) -> None:
    result = validate_prompt(prompt, registry)
    assert not result.ok
    assert result.error["type"] == "invalid_prompt"
    assert fragment in result.error["message"]
    assert result.error["details"] == f"Node ID '#{node_id}'"
    assert result.node_errors == {} and result.outputs == []


@pytest.mark.parametrize("prompt", [None, [], "prompt", 3])
def test_prompt_that_is_not_a_dict_is_invalid(registry, prompt) -> None:
    result = validate_prompt(prompt, registry)
    assert result.error["type"] == "invalid_prompt"
    assert type(prompt).__name__ in result.error["message"]


def test_non_string_node_id_is_invalid(registry) -> None:
    result = validate_prompt({5: image()}, registry)
    assert result.error["type"] == "invalid_prompt"
    assert "5" in result.error["message"]


def test_unknown_class_rejects_prompt_even_when_no_output_needs_it(registry) -> None:
    prompt = {"1": image(), "2": node("PreviewImage", images=["1", 0]), "3": node("Gone")}
    result = validate_prompt(prompt, registry)
    assert result.error["type"] == "invalid_prompt"
    assert result.error["details"] == "Node ID '#3'"


def test_missing_inputs_key_counts_as_no_inputs(registry) -> None:
    result = validate_prompt({"1": {"class_type": "StubAny"}, "2": node("AnySink", value=["1", 0])}, registry)
    assert result.ok
    assert result.prompt["1"]["inputs"] == {}


# -- outputs, partial execution -----------------------------------------------------------------


def test_valid_prompt(registry) -> None:
    prompt = {"1": image(), "2": node("PreviewImage", images=["1", 0])}
    result = validate_prompt(prompt, registry)
    assert result.ok and result.error is None
    assert result.outputs == ["2"]
    assert result.node_errors == {}


def test_no_output_nodes(registry) -> None:
    result = validate_prompt({"1": image()}, registry)
    assert not result.ok
    assert result.error == {
        "type": "prompt_no_outputs",
        "message": "Prompt has no outputs",
        "details": "",
        "extra_info": {},
    }


def test_empty_prompt_has_no_outputs(registry) -> None:
    assert validate_prompt({}, registry).error["type"] == "prompt_no_outputs"


def two_outputs() -> dict[str, Any]:
    return {
        "1": image(),
        "2": node("PreviewImage", images=["1", 0]),
        "3": image(content="PURPLE"),
        "4": node("PreviewImage", images=["3", 0]),
    }


def test_partial_targets_select_outputs(registry) -> None:
    result = validate_prompt(two_outputs(), registry, partial_execution_targets=["2"])
    # Output 4's broken ancestor is not even looked at: it is not a target.
    assert result.ok and result.outputs == ["2"] and result.node_errors == {}


def test_partial_targets_ignore_non_outputs_and_empty_list_means_no_outputs(registry) -> None:
    assert validate_prompt(two_outputs(), registry, partial_execution_targets=[]).error["type"] == "prompt_no_outputs"
    result = validate_prompt(two_outputs(), registry, partial_execution_targets=["1", "99"])
    assert result.error["type"] == "prompt_no_outputs"


def test_invalid_output_is_dropped_and_valid_one_runs(registry) -> None:
    result = validate_prompt(two_outputs(), registry)
    assert result.ok and result.error is None
    assert result.outputs == ["2"]
    assert list(result.node_errors) == ["3"]  # only nodes with their own errors; output 4 has none
    entry = result.node_errors["3"]
    assert entry["class_type"] == "StubImage"
    assert entry["dependent_outputs"] == ["4"]
    assert entry["errors"][0]["type"] == "value_not_in_list"


def test_all_outputs_failing_rejects_prompt_with_every_message(registry) -> None:
    prompt = {
        "1": image(height=0),
        "2": node("PreviewImage", images=["1", 0]),
        "3": node("PreviewImage"),
    }
    result = validate_prompt(prompt, registry)
    assert not result.ok and result.outputs == []
    assert result.error["type"] == "prompt_outputs_failed_validation"
    assert result.error["message"] == "Prompt outputs failed validation"
    assert result.error["details"].split("\n") == [
        "Value 0 smaller than min of 1: height",
        "Required input is missing: images",
    ]
    assert result.node_errors["1"]["dependent_outputs"] == ["2"]
    assert result.node_errors["3"]["dependent_outputs"] == ["3"]


def test_shared_failing_ancestor_lists_every_dependent_output_once(registry) -> None:
    prompt = {
        "1": image(width=99999),
        "2": node("PreviewImage", images=["1", 0]),
        "3": node("ImageChain", image=["1", 0]),
        "4": node("PreviewImage", images=["3", 0]),
        "5": image(),
        "6": node("PreviewImage", images=["5", 0]),
    }
    result = validate_prompt(prompt, registry)
    assert result.outputs == ["6"]
    assert list(result.node_errors) == ["1"]
    assert result.node_errors["1"]["dependent_outputs"] == ["2", "4"]
    assert only_error(result, "1")["type"] == "value_bigger_than_max"


def test_dependent_outputs_only_name_outputs_that_depend_on_the_node(registry) -> None:
    # ComfyUI appends every failed output to every failed node seen so far; we do not.
    prompt = {
        "1": image(height=-1),
        "2": node("PreviewImage", images=["1", 0]),
        "3": image(width=-1),
        "4": node("PreviewImage", images=["3", 0]),
    }
    result = validate_prompt(prompt, registry)
    assert result.node_errors["1"]["dependent_outputs"] == ["2"]
    assert result.node_errors["3"]["dependent_outputs"] == ["4"]


def test_nodes_no_output_needs_are_not_validated_or_converted(registry) -> None:
    prompt = {"1": image(), "2": node("PreviewImage", images=["1", 0]), "3": image(height="oops")}
    result = validate_prompt(prompt, registry)
    assert result.ok and result.node_errors == {}
    assert result.prompt["3"]["inputs"]["height"] == "oops"


# -- per-input errors ---------------------------------------------------------------------------


def test_required_input_missing(registry) -> None:
    result = validate_prompt({"1": node("PreviewImage")}, registry)
    error = only_error(result, "1")
    assert error == {
        "type": "required_input_missing",
        "message": "Required input is missing",
        "details": "images",
        "extra_info": {"input_name": "images"},
    }


def test_missing_optional_input_is_fine(registry) -> None:
    result = validate_prompt(
        {"1": image(), "2": node("ImageChain", image=["1", 0]), "3": node("PreviewImage", images=["2", 0])}, registry
    )
    assert result.ok


@pytest.mark.parametrize("value", [["1", 0, 0], ["1"], [], ["1", "0"], ["1", 0.5], ["1", True], [1, 0]])
def test_bad_linked_input(registry, value) -> None:
    result = validate_prompt({"1": image(), "2": node("PreviewImage", images=value)}, registry)
    error = only_error(result, "2")
    assert error["type"] == "bad_linked_input"
    assert error["message"] == "Bad linked input, must be a length-2 list of [node_id, slot_index]"
    assert error["details"] == "images"
    assert error["extra_info"] == {"input_name": "images", "input_config": ["IMAGE"], "received_value": value}


def test_integral_float_slot_is_a_link(registry) -> None:
    assert validate_prompt({"1": image(), "2": node("PreviewImage", images=["1", 0.0])}, registry).ok


def test_link_to_missing_node_on_output(registry) -> None:
    prompt = {"2": node("PreviewImage", images=["99", 0]), "3": image(), "4": node("PreviewImage", images=["3", 0])}
    result = validate_prompt(prompt, registry)
    assert result.ok and result.outputs == ["4"]  # the other output still runs
    error = only_error(result, "2")
    assert_error_shape(error)
    # Clearer than ComfyUI (which raises -> exception_during_validation): a located input error.
    assert error["type"] == "bad_linked_input"
    assert error["message"] == "Bad linked input, the linked node does not exist"
    assert error["details"] == "images, linked to node #99, which is not in the prompt"
    assert error["extra_info"]["input_name"] == "images"
    assert error["extra_info"]["received_value"] == ["99", 0]


def test_link_to_missing_node_on_ancestor_is_reported_on_the_ancestor_input(registry) -> None:
    prompt = {"2": node("ImageChain", image=["99", 0]), "3": node("PreviewImage", images=["2", 0])}
    result = validate_prompt(prompt, registry)
    assert not result.ok
    assert list(result.node_errors) == ["2"]
    error = only_error(result, "2")
    assert error["type"] == "bad_linked_input"
    assert error["extra_info"]["input_name"] == "image"  # the ancestor's own input, not the consumer's
    assert "#99" in error["details"]
    assert result.node_errors["2"]["dependent_outputs"] == ["3"]


def test_missing_link_does_not_hide_other_errors_of_the_node(registry) -> None:
    prompt = {"1": node("TypedSink", steps=500, cfg=1.0, text="", flag=True, image=["99", 0])}
    types = [error["type"] for error in errors_of(validate_prompt(prompt, registry), "1")]
    assert types == ["value_bigger_than_max", "bad_linked_input"]


def test_link_slot_out_of_range(registry) -> None:
    result = validate_prompt({"1": image(), "2": node("PreviewImage", images=["1", 3])}, registry)
    error = only_error(result, "2")
    assert error["type"] == "bad_linked_input"
    assert error["details"] == "images, node #1 (StubImage) has no output 3 (it has 1)"
    assert error["extra_info"]["received_value"] == ["1", 3]


def test_negative_slot_is_out_of_range(registry) -> None:
    result = validate_prompt({"1": image(), "2": node("PreviewImage", images=["1", -1])}, registry)
    assert only_error(result, "2")["type"] == "bad_linked_input"


def test_return_type_mismatch_stops_at_the_link(registry) -> None:
    prompt = {"1": node("StubMask", value=5.0), "2": node("PreviewImage", images=["1", 0])}
    result = validate_prompt(prompt, registry)
    # The mask's own bad value is not reported: validation does not go through a mismatched link.
    assert list(result.node_errors) == ["2"]
    error = only_error(result, "2")
    assert error == {
        "type": "return_type_mismatch",
        "message": "Return type mismatch between linked nodes",
        "details": "images, received_type(MASK) mismatch input_type(IMAGE)",
        "extra_info": {
            "input_name": "images",
            "input_config": ["IMAGE"],
            "received_type": "MASK",
            "linked_node": ["1", 0],
        },
    }


@pytest.mark.parametrize(
    ("source", "sink", "ok"),
    [
        (node("StubAny"), node("PreviewImage", images=["1", 0]), True),  # * received
        (image(), node("AnySink", value=["1", 0]), True),  # * expected
        (image(), node("UnionSink", value=["1", 0]), True),  # member of IMAGE,FLOAT
        (node("StubMask", value=0.5), node("UnionSink", value=["1", 0]), False),
        (node("StubInt", value=1), node("UnionSink", value=["1", 0]), False),
        (node("ComboSource"), node("ComboSink", sampler=["1", 0]), True),  # COMBO output -> legacy combo
        (node("ComboSource"), node("ComboSink", sampler="euler", scheduler=["1", 0]), True),
        (node("ListTyped"), node("ComboSink", sampler=["1", 0]), True),  # list received type vs COMBO
        (node("ListTyped"), node("PreviewImage", images=["1", 0]), False),
        (node("ComboSource"), node("TypedSink", steps=["1", 0], cfg=1.0, text="", flag=True), False),
    ],
)
def test_link_type_matching(registry, source, sink, ok) -> None:
    result = validate_prompt({"1": source, "2": sink}, registry)
    assert result.ok is ok
    if not ok:
        assert only_error(result, "2")["type"] == "return_type_mismatch"


def test_legacy_combo_mismatch_names_the_choices(registry) -> None:
    result = validate_prompt({"1": image(), "2": node("ComboSink", sampler=["1", 0])}, registry)
    assert only_error(result, "2")["details"] == "sampler, received_type(IMAGE) mismatch input_type(['euler', 'heun'])"


def typed(**overrides: Any) -> dict[str, Any]:
    inputs = {"steps": 20, "cfg": 7.0, "text": "hi", "flag": True}
    inputs.update(overrides)
    return node("TypedSink", **inputs)


def test_constants_are_converted_in_the_result_prompt_only(registry) -> None:
    prompt = {"1": typed(steps="12", cfg="7.5", text=5, flag=0)}
    original = copy.deepcopy(prompt)
    result = validate_prompt(prompt, registry)
    assert result.ok
    inputs = result.prompt["1"]["inputs"]
    assert inputs == {"steps": 12, "cfg": 7.5, "text": "5", "flag": False}
    assert [type(inputs[name]) for name in ("steps", "cfg", "text", "flag")] == [int, float, str, bool]
    assert prompt == original  # the caller's prompt is untouched


def test_float_to_int_truncates_like_comfyui(registry) -> None:
    result = validate_prompt({"1": typed(steps=12.9)}, registry)
    assert result.prompt["1"]["inputs"]["steps"] == 12


@pytest.mark.parametrize(
    ("name", "value", "type_name"),
    [("steps", "twelve", "INT"), ("cfg", "warm", "FLOAT"), ("steps", None, "INT"), ("cfg", [1, 2, 3], "FLOAT")],
)
def test_invalid_input_type(registry, name, value, type_name) -> None:
    if isinstance(value, list):
        value = {"__value__": value}  # a list constant must be wrapped, then fails float()
    result = validate_prompt({"1": typed(**{name: value})}, registry)
    error = only_error(result, "1")
    assert error["type"] == "invalid_input_type"
    assert error["message"] == f"Failed to convert an input value to a {type_name} value"
    received = value["__value__"] if isinstance(value, dict) else value
    assert error["details"].startswith(f"{name}, {received}, ")
    extra = error["extra_info"]
    assert extra["input_name"] == name and extra["received_value"] == received
    assert extra["exception_message"] and extra["exception_message"] in error["details"]
    assert set(extra) == {"input_name", "input_config", "received_value", "exception_message"}


def test_value_wrapper_is_unwrapped(registry) -> None:
    prompt = {"1": typed(items={"__value__": [1, 2, 3]})}
    result = validate_prompt(prompt, registry)
    assert result.ok
    assert result.prompt["1"]["inputs"]["items"] == [1, 2, 3]
    assert prompt["1"]["inputs"]["items"] == {"__value__": [1, 2, 3]}


def test_unwrapped_list_constant_is_not_mistaken_for_a_link(registry) -> None:
    result = validate_prompt({"1": typed(items={"__value__": ["1", 0]})}, registry)
    assert result.ok and result.prompt["1"]["inputs"]["items"] == ["1", 0]


def test_unwrapped_string_constant_is_converted(registry) -> None:
    result = validate_prompt({"1": typed(text={"__value__": ["a", "b"]})}, registry)
    assert result.prompt["1"]["inputs"]["text"] == "['a', 'b']"


def test_plain_list_constant_is_a_bad_link(registry) -> None:
    result = validate_prompt({"1": typed(items=[1, 2, 3])}, registry)
    assert only_error(result, "1")["type"] == "bad_linked_input"


@pytest.mark.parametrize(
    ("value", "kind", "message"),
    [
        (0, "value_smaller_than_min", "Value 0 smaller than min of 1"),
        ("0", "value_smaller_than_min", "Value 0 smaller than min of 1"),  # checked after conversion
        (101, "value_bigger_than_max", "Value 101 bigger than max of 100"),
    ],
)
def test_min_max(registry, value, kind, message) -> None:
    error = only_error(validate_prompt({"1": typed(steps=value)}, registry), "1")
    assert error == {
        "type": kind,
        "message": message,
        "details": "steps",
        "extra_info": {
            "input_name": "steps",
            "input_config": ["INT", {"default": 20, "min": 1, "max": 100}],
            "received_value": int(value),
        },
    }


def test_bounds_are_inclusive(registry) -> None:
    assert validate_prompt({"1": typed(steps=1, cfg=30.0)}, registry).ok


def test_every_input_error_of_a_node_is_reported_at_once(registry) -> None:
    prompt = {"1": node("TypedSink", steps=0, cfg="hot", image=["99", 0])}
    result = validate_prompt(prompt, registry)
    types = [error["type"] for error in errors_of(result, "1")]
    assert types == [
        "value_smaller_than_min",
        "invalid_input_type",
        "required_input_missing",
        "required_input_missing",
        "bad_linked_input",
    ]
    assert [error["details"] for error in errors_of(result, "1")][2:4] == ["text", "flag"]


def test_value_not_in_legacy_list(registry) -> None:
    error = only_error(validate_prompt({"1": node("ComboSink", sampler="dpm")}, registry), "1")
    assert error == {
        "type": "value_not_in_list",
        "message": "Value not in list",
        "details": "sampler: 'dpm' not in ['euler', 'heun']",
        "extra_info": {"input_name": "sampler", "input_config": [["euler", "heun"]], "received_value": "dpm"},
    }


def test_value_not_in_combo_options(registry) -> None:
    result = validate_prompt({"1": node("ComboSink", sampler="euler", scheduler="exotic")}, registry)
    error = only_error(result, "1")
    assert error["details"] == "scheduler: 'exotic' not in ['normal', 'karras']"
    assert error["extra_info"]["input_config"] == ["COMBO", {"default": "normal", "options": ["normal", "karras"]}]


def test_long_choice_lists_are_summarised(registry) -> None:
    result = validate_prompt({"1": node("ComboSink", sampler="euler", ckpt_name="missing.ckpt")}, registry)
    error = only_error(result, "1")
    assert error["details"] == "ckpt_name: 'missing.ckpt' not in (list of length 25)"
    assert error["extra_info"]["input_config"] is None


def test_valid_combo_values(registry) -> None:
    prompt = {"1": node("ComboSink", sampler="heun", scheduler="karras", ckpt_name=vn.ComboSink.LONG[-1])}
    assert validate_prompt(prompt, registry).ok


# -- ancestors ----------------------------------------------------------------------------------


def test_downstream_of_failed_node_is_not_listed(registry) -> None:
    prompt = {
        "1": image(content="GREY"),
        "2": node("ImageChain", image=["1", 0]),
        "3": node("ImageChain", image=["2", 0]),
        "4": node("PreviewImage", images=["3", 0]),
    }
    result = validate_prompt(prompt, registry)
    assert list(result.node_errors) == ["1"]
    assert result.node_errors["1"]["dependent_outputs"] == ["4"]


def test_exception_in_ancestor_validation(registry) -> None:
    # RaisingValidate is an output too, but reached first as PreviewImage's ancestor.
    prompt = {"1": node("PreviewImage", images=["2", 0]), "2": node("RaisingValidate", value=3)}
    result = validate_prompt(prompt, registry)
    assert not result.ok
    error = only_error(result, "2")
    assert error["type"] == "exception_during_inner_validation"
    assert error["details"] == "cannot check 3"
    assert error["extra_info"]["exception_type"] == "ZeroDivisionError"
    assert error["extra_info"]["linked_node"] == ["2", 0]
    assert "input_name" not in error["extra_info"]  # the consumer's input is not this node's
    assert any("VALIDATE_INPUTS" in line for line in error["extra_info"]["traceback"])
    assert result.node_errors["2"]["dependent_outputs"] == ["1", "2"]


def test_exception_in_output_validation(registry) -> None:
    result = validate_prompt({"2": node("RaisingValidate", value=3)}, registry)
    error = only_error(result, "2")
    assert error["type"] == "exception_during_validation"
    assert error["details"] == "cannot check 3"
    assert error["extra_info"]["exception_type"] == "ZeroDivisionError"


def test_broken_spec_fails_only_the_outputs_that_use_it(registry) -> None:
    prompt = {
        "1": node("BrokenSpec"),
        "2": node("PreviewImage", images=["1", 0]),
        "3": image(),
        "4": node("PreviewImage", images=["3", 0]),
    }
    result = validate_prompt(prompt, registry)
    assert result.ok and result.outputs == ["4"]
    error = only_error(result, "1")
    assert error["type"] == "exception_during_inner_validation"
    assert error["extra_info"]["exception_type"] == "OSError"
    assert "models folder is unreadable" in error["details"]


def test_spec_is_fetched_once_per_class(registry) -> None:
    prompt = {
        "1": image(),
        "2": node("CountingSink", images=["1", 0]),
        "3": node("CountingSink", images=["1", 0]),
        "4": node("CountingSink", images=["1", 0]),
    }
    result = validate_prompt(prompt, registry)
    assert result.outputs == ["2", "3", "4"]
    assert registry["CountingSink"].spec_calls == 1
    validate_prompt(prompt, registry)
    assert registry["CountingSink"].spec_calls == 2  # once per validation, not cached forever


# -- VALIDATE_INPUTS ----------------------------------------------------------------------------


def test_named_validate_inputs_skips_builtin_checks_only_for_named_inputs(registry) -> None:
    prompt = {"1": image(), "2": node("NamedValidate", low="50", high=50, link=["1", 0], choice="zzz")}
    result = validate_prompt(prompt, registry)
    error = only_error(result, "2")
    assert error["type"] == "value_bigger_than_max" and error["details"] == "high"
    # Only the named inputs, constants converted, links as None.
    assert vn.NamedValidate.calls == [{"low": 50, "link": None, "choice": "zzz"}]


def test_absent_inputs_are_not_passed_to_validate_inputs(registry) -> None:
    validate_prompt({"2": node("NamedValidate", low=1, high=2)}, registry)
    assert vn.NamedValidate.calls == [{"low": 1, "link": "absent", "choice": "absent"}]


@pytest.mark.parametrize(("verdict", "suffix"), [("low is odd", " - low is odd"), (False, ""), (None, " - None")])
def test_custom_validation_failed_once_per_passed_input(registry, verdict, suffix) -> None:
    vn.NamedValidate.verdict = verdict
    prompt = {"1": image(), "2": node("NamedValidate", low=1, high=2, link=["1", 0])}
    errors = errors_of(validate_prompt(prompt, registry), "2")
    assert errors == [
        {
            "type": "custom_validation_failed",
            "message": "Custom validation failed for node",
            "details": f"{name}{suffix}",
            "extra_info": {"input_name": name},
        }
        for name in ("low", "link")
    ]


def test_execution_blocker_from_validate_inputs_counts_as_valid(registry) -> None:
    vn.NamedValidate.verdict = ExecutionBlocker(None)
    assert validate_prompt({"2": node("NamedValidate", low=1, high=2)}, registry).ok


def test_kwargs_validate_inputs_gets_everything_and_skips_all_builtin_checks(registry) -> None:
    prompt = {
        "1": image(),
        "2": node("KwargsValidate", value=-5, choice="zzz", image=["1", 0], extra="dropped", unique_id="x"),
    }
    result = validate_prompt(prompt, registry)
    assert result.ok
    assert vn.KwargsValidate.calls == [{"value": -5, "choice": "zzz", "image": None, "unique_id": "2", "prompt": None}]


def test_kwargs_validate_inputs_still_requires_required_inputs(registry) -> None:
    result = validate_prompt({"2": node("KwargsValidate", value=1)}, registry)
    assert [error["details"] for error in errors_of(result, "2")] == ["choice"]


def test_input_types_turns_off_the_link_type_check(registry) -> None:
    prompt = {"1": node("StubMask", value=0.5), "2": node("TypesValidate", value=["1", 0])}
    result = validate_prompt(prompt, registry)
    assert result.ok
    assert vn.TypesValidate.calls == [{"input_types": {"value": "MASK"}}]


def test_input_types_rejection_is_reported_under_input_types(registry) -> None:
    prompt = {"1": node("StubInt", value=1), "2": node("TypesValidate", value=["1", 0])}
    error = only_error(validate_prompt(prompt, registry), "2")
    assert error["type"] == "custom_validation_failed"
    assert error["details"] == "input_types - value must be IMAGE or MASK, got INT"
    assert error["extra_info"] == {"input_name": "input_types"}


@pytest.mark.parametrize(("value", "ok"), [(3, True), (-1, False)])
def test_async_validate_inputs_is_awaited(registry, value, ok) -> None:
    result = asyncio.run(validate_prompt_async({"1": node("AsyncValidate", value=str(value))}, registry))
    assert result.ok is ok
    assert vn.AsyncValidate.calls == [{"value": value}]
    if not ok:
        assert only_error(result, "1")["details"] == "value - value must not be negative"


def test_async_validate_inputs_that_raises(registry) -> None:
    result = validate_prompt({"1": node("AsyncValidate", value="ten")}, registry)
    assert [error["type"] for error in errors_of(result, "1")] == ["invalid_input_type", "exception_during_validation"]
    assert errors_of(result, "1")[1]["extra_info"]["exception_type"] == "TypeError"
    assert vn.AsyncValidate.calls == [{"value": "ten"}]  # the unconverted value, as ComfyUI passes it


def test_validate_inputs_without_parameters(registry) -> None:
    assert validate_prompt({"1": node("BareValidate", value=1)}, registry).ok
    assert vn.BareValidate.calls == [{}]
    vn.BareValidate.verdict = "not today"
    error = only_error(validate_prompt({"1": node("BareValidate", value=1)}, registry), "1")
    # ComfyUI would drop this failure (no input to attach it to); we report it once.
    assert error == {
        "type": "custom_validation_failed",
        "message": "Custom validation failed for node",
        "details": "not today",
        "extra_info": {},
    }


def test_input_is_list_node_sees_wrapped_values(registry) -> None:
    vn.ListValidate.verdict = "no"
    result = validate_prompt({"1": node("ListValidate", value="4")}, registry)
    assert vn.ListValidate.calls == [{"value": [4]}]
    assert only_error(result, "1")["details"] == "value - no"


# -- hidden, undeclared, lazy and raw inputs ----------------------------------------------------


def test_hidden_constants_are_not_validated(registry) -> None:
    prompt = {"1": image(), "2": node("HiddenSink", images=["1", 0], unique_id=[1, 2, 3], carry="whatever")}
    result = validate_prompt(prompt, registry)
    assert result.ok
    assert result.prompt["2"]["inputs"]["carry"] == "whatever"


def test_tuple_typed_hidden_input_is_linkable_and_checked(registry) -> None:
    good = {"1": image(), "2": node("HiddenSink", images=["1", 0], carry=["1", 0])}
    assert validate_prompt(good, registry).ok
    mismatch = {
        "1": image(),
        "3": node("StubMask", value=0.5),
        "2": node("HiddenSink", images=["1", 0], carry=["3", 0]),
    }
    assert only_error(validate_prompt(mismatch, registry), "2")["type"] == "return_type_mismatch"
    bad_source = {"1": image(), "3": image(height=0), "2": node("HiddenSink", images=["1", 0], carry=["3", 0])}
    result = validate_prompt(bad_source, registry)
    assert list(result.node_errors) == ["3"]


def test_undeclared_constants_are_ignored(registry) -> None:
    prompt = {"1": image(), "2": node("VariadicSink", input1=["1", 0], input2="anything", input3=[1, 2, 3])}
    result = validate_prompt(prompt, registry)
    assert result.ok
    assert result.prompt["2"]["inputs"]["input3"] == [1, 2, 3]


def test_undeclared_links_must_point_to_existing_nodes(registry) -> None:
    prompt = {"1": image(), "2": node("VariadicSink", input1=["1", 0], input2=["42", 0])}
    error = only_error(validate_prompt(prompt, registry), "2")
    assert error["type"] == "bad_linked_input"
    assert error["extra_info"]["input_name"] == "input2" and "#42" in error["details"]


def test_undeclared_links_are_followed_without_type_check(registry) -> None:
    prompt = {
        "1": image(),
        "2": node("VariadicSink", input1=["1", 0], input2=["3", 0], input3=["4", 5]),
        "3": node("StubMask", value=2.0),
        "4": node("StubInt", value=1),
    }
    result = validate_prompt(prompt, registry)
    assert only_error(result, "3")["type"] == "value_bigger_than_max"
    assert only_error(result, "2")["details"] == "input3, node #4 (StubInt) has no output 5 (it has 1)"
    assert result.node_errors["2"]["errors"][0]["extra_info"]["input_config"] is None


def test_lazy_and_raw_link_inputs_are_validated_like_others(registry) -> None:
    good = {"1": image(), "2": node("LazyRawSink", lazy_in=["1", 0], raw=["1", 0])}
    assert validate_prompt(good, registry).ok
    bad = {"1": node("StubInt", value=1), "2": node("LazyRawSink", lazy_in=["1", 0], raw=["1", 0])}
    assert [error["details"].split(",")[0] for error in errors_of(validate_prompt(bad, registry), "2")] == [
        "lazy_in",
        "raw",
    ]


# -- graph shape: depth and cycles --------------------------------------------------------------


def chain(length: int, *, bad_root: bool = False) -> dict[str, Any]:
    graph = GraphBuilder(prefix="")
    previous = graph.node("StubImage", content="GREY" if bad_root else "WHITE", height=8, width=8)
    for _ in range(length):
        previous = graph.node("ImageChain", image=previous.out(0))
    graph.node("PreviewImage", images=previous.out(0))
    return graph.finalize()


def test_ten_thousand_node_chain_validates_without_recursion(registry) -> None:
    prompt = chain(10_000)
    result = validate_prompt(prompt, registry)
    assert result.ok
    assert result.outputs == [str(10_002)]


def test_ten_thousand_node_chain_reports_its_root_error(registry) -> None:
    result = validate_prompt(chain(10_000, bad_root=True), registry)
    assert not result.ok
    assert list(result.node_errors) == ["1"]
    assert result.node_errors["1"]["dependent_outputs"] == ["10002"]


def test_cycle_is_reported_on_every_node_in_it(registry) -> None:
    prompt = {
        "1": image(),
        "2": node("ImageChain", image=["4", 0]),  # the back edge: 2 <- 4 <- 3 <- 2
        "3": node("ImageChain", image=["2", 0]),
        "4": node("ImageChain", image=["3", 0]),
        "5": node("PreviewImage", images=["4", 0]),
        "6": image(),
        "7": node("PreviewImage", images=["6", 0]),
    }
    result = validate_prompt(prompt, registry)
    assert result.ok and result.outputs == ["7"]
    assert set(result.node_errors) == {"2", "3", "4"}
    for node_id in ("2", "3", "4"):
        entry = result.node_errors[node_id]
        assert entry["dependent_outputs"] == ["5"]
        error = only_error(result, node_id)
        assert error["type"] == "dependency_cycle"
        assert error["extra_info"]["input_name"] == "image"
        assert sorted(error["extra_info"]["cycle"][:-1]) == ["2", "3", "4"]
        assert "#2" in error["details"] and "#3" in error["details"] and "#4" in error["details"]
    # The cycle is listed in data-flow order: each node feeds the next.
    flow = only_error(result, "2")["extra_info"]["cycle"]
    for source, consumer in zip(flow, flow[1:], strict=False):
        assert prompt[consumer]["inputs"]["image"] == [source, 0]
    # Each node's error names the link it takes from the cycle.
    for node_id in ("2", "3", "4"):
        assert only_error(result, node_id)["extra_info"]["linked_node"] == prompt[node_id]["inputs"]["image"]


def test_self_loop_is_a_cycle(registry) -> None:
    prompt = {"1": node("ImageChain", image=["1", 0]), "2": node("PreviewImage", images=["1", 0])}
    result = validate_prompt(prompt, registry)
    assert not result.ok
    error = only_error(result, "1")
    assert error["type"] == "dependency_cycle"
    assert error["extra_info"]["cycle"] == ["1", "1"]
    assert result.error["type"] == "prompt_outputs_failed_validation"
    assert "Dependency cycle" in result.error["details"]


def test_cycle_reached_from_two_outputs_is_reported_once_per_node(registry) -> None:
    prompt = {
        "1": node("ImageChain", image=["2", 0]),
        "2": node("ImageChain", image=["1", 0]),
        "3": node("PreviewImage", images=["1", 0]),
        "4": node("PreviewImage", images=["2", 0]),
    }
    result = validate_prompt(prompt, registry)
    assert set(result.node_errors) == {"1", "2"}
    for node_id in ("1", "2"):
        assert len(errors_of(result, node_id)) == 1
        assert result.node_errors[node_id]["dependent_outputs"] == ["3", "4"]


def test_diamond_is_not_a_cycle(registry) -> None:
    prompt = {
        "1": image(),
        "2": node("ImageChain", image=["1", 0]),
        "3": node("ImageChain", image=["1", 0]),
        "4": node("ImageChain", image=["2", 0], mask=["5", 0]),
        "5": node("StubMask", value=0.1),
        "6": node("VariadicSink", input1=["4", 0], other=["3", 0]),
    }
    assert validate_prompt(prompt, registry).ok


# -- sync wrapper -------------------------------------------------------------------------------


def test_sync_wrapper_refuses_to_run_inside_an_event_loop(registry) -> None:
    async def inside() -> None:
        with pytest.raises(RuntimeError, match="validate_prompt_async"):
            validate_prompt({"1": image()}, registry)

    asyncio.run(inside())
