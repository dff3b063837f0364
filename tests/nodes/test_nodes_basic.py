"""Every built-in basic node: its ComfyUI shape and its behaviour through execute()."""

from __future__ import annotations

import json
import sys
from typing import Any

import pytest

from core.runtime import NodeRuntime, reset_current, set_current
from nodes.builtin import builtin_registry
from nodes.registry import NodeRegistry

REGISTRY: NodeRegistry = builtin_registry()

EXPECTED_NODES = {
    # class_type: (display name, category, output types, output names)
    "PrimitiveString": ("String", "utils/primitive", ["STRING"], ["STRING"]),
    "PrimitiveStringMultiline": ("String (Multiline)", "utils/primitive", ["STRING"], ["STRING"]),
    "PrimitiveInt": ("Int", "utils/primitive", ["INT"], ["INT"]),
    "PrimitiveFloat": ("Float", "utils/primitive", ["FLOAT"], ["FLOAT"]),
    "PrimitiveBoolean": ("Boolean", "utils/primitive", ["BOOLEAN"], ["BOOLEAN"]),
    "PreviewAny": ("Preview as Text", "utilities", ["STRING"], ["STRING"]),
    "ComfySwitchNode": ("Switch", "logic", ["*"], ["output"]),
    "StringConcatenate": ("Concatenate", "utils/string", ["STRING"], ["STRING"]),
    "StringSubstring": ("Substring", "utils/string", ["STRING"], ["STRING"]),
    "StringLength": ("Length", "utils/string", ["INT"], ["length"]),
    "CaseConverter": ("Case Converter", "utils/string", ["STRING"], ["STRING"]),
    "StringTrim": ("Trim", "utils/string", ["STRING"], ["STRING"]),
    "StringReplace": ("Replace", "utils/string", ["STRING"], ["STRING"]),
    "StringContains": ("Contains", "utils/string", ["BOOLEAN"], ["contains"]),
    "StringCompare": ("Compare", "utils/string", ["BOOLEAN"], ["BOOLEAN"]),
    "RegexMatch": ("Regex Match", "utils/string", ["BOOLEAN"], ["matches"]),
    "RegexExtract": ("Regex Extract", "utils/string", ["STRING"], ["STRING"]),
    "RegexReplace": ("Regex Replace", "utils/string", ["STRING"], ["STRING"]),
}


def run(class_type: str, **inputs: Any) -> Any:
    definition = REGISTRY[class_type]
    token = set_current(NodeRuntime(node_id="5", class_type=class_type))
    try:
        return definition.execute(definition.create(), inputs)
    finally:
        reset_current(token)


def test_every_basic_node_is_registered_with_comfyui_names_and_shapes() -> None:
    info = REGISTRY.object_info()
    assert set(EXPECTED_NODES) <= set(info)
    for class_type, (display, category, outputs, names) in EXPECTED_NODES.items():
        entry = info[class_type]
        assert (entry["display_name"], entry["category"], entry["output"], entry["output_name"]) == (
            display,
            category,
            outputs,
            names,
        ), class_type
        json.dumps(entry)  # every entry is plain JSON


def test_input_declarations_match_comfyui() -> None:
    info = REGISTRY.object_info()
    assert info["PrimitiveInt"]["input"]["required"]["value"] == [
        "INT",
        {"min": -sys.maxsize, "max": sys.maxsize, "control_after_generate": True},
    ]
    assert info["PrimitiveFloat"]["input"]["required"]["value"] == [
        "FLOAT",
        {"min": -sys.maxsize, "max": sys.maxsize, "step": 0.1},
    ]
    assert info["StringConcatenate"]["input_order"]["required"] == ["string_a", "string_b", "delimiter"]
    assert info["StringConcatenate"]["input"]["required"]["delimiter"] == [
        "STRING",
        {"default": "", "multiline": False},
    ]
    assert info["CaseConverter"]["input"]["required"]["mode"][1]["options"] == [
        "UPPERCASE",
        "lowercase",
        "Capitalize",
        "Title Case",
    ]
    extract = info["RegexExtract"]["input"]["required"]
    assert extract["group_index"] == ["INT", {"default": 1, "min": 0, "max": 100}]
    assert extract["mode"][1]["options"] == ["First Match", "All Matches", "First Group", "All Groups"]
    replace = info["RegexReplace"]
    assert replace["input_order"]["optional"] == ["case_insensitive", "multiline", "dotall", "count"]
    assert replace["description"] == "Find and replace text using regex patterns."
    assert info["PreviewAny"]["output_node"] is True
    assert info["ComfySwitchNode"]["experimental"] is True
    assert info["ComfySwitchNode"]["input"]["optional"]["on_true"] == ["*", {"lazy": True}]


@pytest.mark.parametrize(
    ("class_type", "value"),
    [
        ("PrimitiveString", "a b"),
        ("PrimitiveStringMultiline", "line 1\nline 2"),
        ("PrimitiveInt", -(2**40)),
        ("PrimitiveFloat", 2.5),
        ("PrimitiveBoolean", False),
    ],
)
def test_primitives_pass_their_value_through(class_type: str, value: Any) -> None:
    assert run(class_type, value=value) == (value,)


@pytest.mark.parametrize(
    ("source", "text"),
    [
        ("plain", "plain"),
        (3, "3"),
        (1.5, "1.5"),
        (True, "True"),
        (None, "None"),
        ({"a": [1, 2]}, json.dumps({"a": [1, 2]}, indent=4)),
        (object.__new__(type("Opaque", (), {"__str__": lambda self: "<opaque>"})), "<opaque>"),
    ],
)
def test_preview_any_shows_text_in_the_ui_and_returns_it(source: Any, text: str) -> None:
    assert run("PreviewAny", source=source) == {"ui": {"text": [text]}, "result": (text,)}


def test_preview_any_survives_values_that_cannot_be_printed() -> None:
    class Unprintable:
        def __str__(self) -> str:
            raise RuntimeError("no")

    result = run("PreviewAny", source=Unprintable())
    assert result["result"] == ("source exists, but could not be serialized.",)


def test_switch_lazily_asks_only_for_the_chosen_branch() -> None:
    switch = REGISTRY["ComfySwitchNode"]
    instance = switch.create()
    token = set_current(NodeRuntime(node_id="9", class_type="ComfySwitchNode"))
    try:
        # both connected, nothing evaluated yet (None): ask for the selected one only
        assert switch.check_lazy(instance, {"switch": True, "on_false": None, "on_true": None}) == ["on_true"]
        assert switch.check_lazy(instance, {"switch": False, "on_false": None, "on_true": None}) == ["on_false"]
        # the selected branch is available: nothing more is needed
        assert switch.check_lazy(instance, {"switch": True, "on_false": None, "on_true": "T"}) == []
        # only one input connected: that one is needed whatever the switch says
        assert switch.check_lazy(instance, {"switch": True, "on_false": None}) == ["on_false"]
        assert switch.check_lazy(instance, {"switch": False, "on_true": None}) == ["on_true"]
    finally:
        reset_current(token)
    assert run("ComfySwitchNode", switch=True, on_false="F", on_true="T") == ("T",)
    assert run("ComfySwitchNode", switch=False, on_false="F", on_true="T") == ("F",)
    assert run("ComfySwitchNode", switch=True, on_false="F") == ("F",)
    assert run("ComfySwitchNode", switch=False, on_true="T") == ("T",)


def test_switch_validation_needs_one_connected_branch() -> None:
    switch = REGISTRY["ComfySwitchNode"]
    assert "At least one of on_false or on_true" in switch.validate({"switch": True}, None)
    assert switch.validate({"switch": True, "on_true": None}, {"on_true": "IMAGE"}) is True
    assert switch.spec().has_lazy_check


@pytest.mark.parametrize(
    ("class_type", "inputs", "expected"),
    [
        ("StringConcatenate", {"string_a": "a", "string_b": "b", "delimiter": ", "}, "a, b"),
        ("StringConcatenate", {"string_a": "a", "string_b": "b", "delimiter": ""}, "ab"),
        ("StringSubstring", {"string": "abcdef", "start": 1, "end": 4}, "bcd"),
        ("StringSubstring", {"string": "abcdef", "start": -3, "end": 100}, "def"),
        ("StringLength", {"string": "héllo"}, 5),
        ("CaseConverter", {"string": "hello wORLD", "mode": "UPPERCASE"}, "HELLO WORLD"),
        ("CaseConverter", {"string": "hello wORLD", "mode": "lowercase"}, "hello world"),
        ("CaseConverter", {"string": "hello wORLD", "mode": "Capitalize"}, "Hello world"),
        ("CaseConverter", {"string": "hello wORLD", "mode": "Title Case"}, "Hello World"),
        ("StringTrim", {"string": "  x \n", "mode": "Both"}, "x"),
        ("StringTrim", {"string": "  x \n", "mode": "Left"}, "x \n"),
        ("StringTrim", {"string": "  x \n", "mode": "Right"}, "  x"),
        ("StringReplace", {"string": "a-b-c", "find": "-", "replace": "+"}, "a+b+c"),
        ("StringContains", {"string": "Hello", "substring": "ell", "case_sensitive": True}, True),
        ("StringContains", {"string": "Hello", "substring": "HELL", "case_sensitive": True}, False),
        ("StringContains", {"string": "Hello", "substring": "HELL", "case_sensitive": False}, True),
    ],
)
def test_string_nodes(class_type: str, inputs: dict[str, Any], expected: Any) -> None:
    assert run(class_type, **inputs) == (expected,)


@pytest.mark.parametrize(
    ("mode", "a", "b", "case_sensitive", "expected"),
    [
        ("Starts With", "Hello", "He", True, True),
        ("Starts With", "Hello", "he", True, False),
        ("Starts With", "Hello", "he", False, True),
        ("Ends With", "Hello", "llo", True, True),
        ("Ends With", "Hello", "He", True, False),
        ("Equal", "abc", "abc", True, True),
        ("Equal", "abc", "ABC", True, False),
        ("Equal", "abc", "ABC", False, True),
    ],
)
def test_string_compare(mode: str, a: str, b: str, case_sensitive: bool, expected: bool) -> None:
    result = run("StringCompare", string_a=a, string_b=b, mode=mode, case_sensitive=case_sensitive)
    assert result == (expected,)


def _flags(case_insensitive: bool = True, multiline: bool = False, dotall: bool = False) -> dict[str, bool]:
    return {"case_insensitive": case_insensitive, "multiline": multiline, "dotall": dotall}


def test_regex_match_flags_and_invalid_patterns() -> None:
    assert run("RegexMatch", string="Hello", regex_pattern="^h", **_flags()) == (True,)
    assert run("RegexMatch", string="Hello", regex_pattern="^h", **_flags(case_insensitive=False)) == (False,)
    assert run("RegexMatch", string="a\nb", regex_pattern="^b", **_flags()) == (False,)
    assert run("RegexMatch", string="a\nb", regex_pattern="^b", **_flags(multiline=True)) == (True,)
    assert run("RegexMatch", string="a\nb", regex_pattern="a.b", **_flags(dotall=True)) == (True,)
    assert run("RegexMatch", string="abc", regex_pattern="(unclosed", **_flags()) == (False,)


@pytest.mark.parametrize(
    ("mode", "pattern", "group_index", "expected"),
    [
        ("First Match", r"\d+", 1, "12"),
        ("All Matches", r"\d+", 1, "12\n345"),
        ("All Matches", r"(\d)(\d)", 1, "1\n3"),  # with groups: the first group of each match
        ("First Group", r"(\w)(\d+)", 2, "12"),
        ("First Group", r"(\w)(\d+)", 0, "a12"),
        ("First Group", r"(\w)(\d+)", 3, ""),  # no such group
        ("All Groups", r"([a-z])(\d+)", 1, "a\nb"),
        ("All Matches", r"zzz", 1, ""),
        ("First Match", r"(bad", 1, ""),  # invalid pattern: empty, like ComfyUI
    ],
)
def test_regex_extract(mode: str, pattern: str, group_index: int, expected: str) -> None:
    result = run(
        "RegexExtract", string="a12 b345", regex_pattern=pattern, mode=mode, group_index=group_index, **_flags()
    )
    assert result == (expected,)


def test_regex_replace_defaults_count_and_errors() -> None:
    assert run("RegexReplace", string="A1 b2 c3", regex_pattern=r"[a-z]\d", replace="_") == ("_ _ _",)
    assert run("RegexReplace", string="A1 b2 c3", regex_pattern=r"[a-z]\d", replace="_", case_insensitive=False) == (
        "A1 _ _",
    )
    assert run("RegexReplace", string="a1 a2 a3", regex_pattern=r"a(\d)", replace=r"<\1>", count=2) == ("<1> <2> a3",)
    assert run("RegexReplace", string="x\ny", regex_pattern="x.y", replace="-", dotall=True) == ("-",)
    with pytest.raises(ValueError, match="regex_pattern '\\(bad' is not a valid pattern"):
        run("RegexReplace", string="x", regex_pattern="(bad", replace="")
