"""String utility nodes, named and shaped as ComfyUI's comfy_extras/nodes_string.py.

Regex nodes follow ComfyUI's error behaviour: an invalid pattern makes RegexMatch answer False and
RegexExtract answer "", while RegexReplace fails the node (with the pattern and the reason).
"""

from __future__ import annotations

import re

from nodes.api import Boolean, Choice, InputSpec, Int, Node, NodeRuntime, NodeSpec, Output, String

CATEGORY = "utils/string"


def _text(name: str) -> InputSpec:
    return String(name, multiline=True)


def _flags(case_insensitive: bool, multiline: bool, dotall: bool) -> int:
    flags = 0
    if case_insensitive:
        flags |= re.IGNORECASE
    if multiline:
        flags |= re.MULTILINE
    if dotall:
        flags |= re.DOTALL
    return flags


class StringConcatenate(Node):
    spec = NodeSpec(
        id="StringConcatenate",
        display_name="Concatenate",
        category=CATEGORY,
        inputs=(_text("string_a"), _text("string_b"), String("delimiter", "", multiline=False)),
        outputs=(Output("STRING"),),
    )

    def run(self, ctx: NodeRuntime, string_a: str, string_b: str, delimiter: str) -> tuple[str]:
        return (delimiter.join((string_a, string_b)),)


class StringSubstring(Node):
    spec = NodeSpec(
        id="StringSubstring",
        display_name="Substring",
        category=CATEGORY,
        inputs=(_text("string"), Int("start"), Int("end")),
        outputs=(Output("STRING"),),
    )

    def run(self, ctx: NodeRuntime, string: str, start: int, end: int) -> tuple[str]:
        return (string[start:end],)  # Python slice semantics: negative indexes count from the end


class StringLength(Node):
    spec = NodeSpec(
        id="StringLength",
        display_name="Length",
        category=CATEGORY,
        inputs=(_text("string"),),
        outputs=(Output("INT", name="length"),),
    )

    def run(self, ctx: NodeRuntime, string: str) -> tuple[int]:
        return (len(string),)


_CASES = {
    "UPPERCASE": str.upper,
    "lowercase": str.lower,
    "Capitalize": str.capitalize,
    "Title Case": str.title,
}


class CaseConverter(Node):
    spec = NodeSpec(
        id="CaseConverter",
        display_name="Case Converter",
        category=CATEGORY,
        inputs=(_text("string"), Choice("mode", list(_CASES))),
        outputs=(Output("STRING"),),
    )

    def run(self, ctx: NodeRuntime, string: str, mode: str) -> tuple[str]:
        convert = _CASES.get(mode)
        return (convert(string) if convert is not None else string,)


_TRIMS = {"Both": str.strip, "Left": str.lstrip, "Right": str.rstrip}


class StringTrim(Node):
    spec = NodeSpec(
        id="StringTrim",
        display_name="Trim",
        category=CATEGORY,
        inputs=(_text("string"), Choice("mode", list(_TRIMS))),
        outputs=(Output("STRING"),),
    )

    def run(self, ctx: NodeRuntime, string: str, mode: str) -> tuple[str]:
        trim = _TRIMS.get(mode)
        return (trim(string) if trim is not None else string,)


class StringReplace(Node):
    spec = NodeSpec(
        id="StringReplace",
        display_name="Replace",
        category=CATEGORY,
        inputs=(_text("string"), _text("find"), _text("replace")),
        outputs=(Output("STRING"),),
    )

    def run(self, ctx: NodeRuntime, string: str, find: str, replace: str) -> tuple[str]:
        return (string.replace(find, replace),)


class StringContains(Node):
    spec = NodeSpec(
        id="StringContains",
        display_name="Contains",
        category=CATEGORY,
        inputs=(_text("string"), _text("substring"), Boolean("case_sensitive", True)),
        outputs=(Output("BOOLEAN", name="contains"),),
    )

    def run(self, ctx: NodeRuntime, string: str, substring: str, case_sensitive: bool) -> tuple[bool]:
        if not case_sensitive:
            string, substring = string.lower(), substring.lower()
        return (substring in string,)


_COMPARISONS = {
    "Starts With": str.startswith,
    "Ends With": str.endswith,
    "Equal": str.__eq__,
}


class StringCompare(Node):
    spec = NodeSpec(
        id="StringCompare",
        display_name="Compare",
        category=CATEGORY,
        inputs=(
            _text("string_a"),
            _text("string_b"),
            Choice("mode", list(_COMPARISONS)),
            Boolean("case_sensitive", True),
        ),
        outputs=(Output("BOOLEAN"),),
    )

    def run(self, ctx: NodeRuntime, string_a: str, string_b: str, mode: str, case_sensitive: bool) -> tuple[bool]:
        if not case_sensitive:
            string_a, string_b = string_a.lower(), string_b.lower()
        compare = _COMPARISONS.get(mode)
        if compare is None:
            raise ValueError(f"mode must be one of {list(_COMPARISONS)}, got {mode!r}")
        return (bool(compare(string_a, string_b)),)


def _regex_flag_inputs(optional: bool = False) -> tuple[InputSpec, ...]:
    return (
        Boolean("case_insensitive", True, optional=optional),
        Boolean("multiline", False, optional=optional),
    )


class RegexMatch(Node):
    spec = NodeSpec(
        id="RegexMatch",
        display_name="Regex Match",
        category=CATEGORY,
        inputs=(_text("string"), _text("regex_pattern"), *_regex_flag_inputs(), Boolean("dotall", False)),
        outputs=(Output("BOOLEAN", name="matches"),),
    )

    def run(
        self, ctx: NodeRuntime, string: str, regex_pattern: str, case_insensitive: bool, multiline: bool, dotall: bool
    ) -> tuple[bool]:
        try:
            found = re.search(regex_pattern, string, _flags(case_insensitive, multiline, dotall)) is not None
        except re.error:
            found = False
        return (found,)


def _extract(string: str, pattern: str, mode: str, flags: int, group_index: int) -> str:
    if mode == "First Match":
        match = re.search(pattern, string, flags)
        return match.group(0) if match else ""
    if mode == "All Matches":
        # Like re.findall's whole matches; with groups in the pattern ComfyUI joins the first group.
        found = re.findall(pattern, string, flags)
        return "\n".join(item[0] if isinstance(item, tuple) else item for item in found)
    if mode == "First Group":
        match = re.search(pattern, string, flags)
        if match and len(match.groups()) >= group_index:
            return match.group(group_index) or ""
        return ""
    if mode == "All Groups":
        parts = []
        for match in re.finditer(pattern, string, flags):
            if match.groups() and len(match.groups()) >= group_index:
                parts.append(match.group(group_index) or "")
        return "\n".join(parts)
    return ""


class RegexExtract(Node):
    spec = NodeSpec(
        id="RegexExtract",
        display_name="Regex Extract",
        category=CATEGORY,
        inputs=(
            _text("string"),
            _text("regex_pattern"),
            Choice("mode", ["First Match", "All Matches", "First Group", "All Groups"]),
            *_regex_flag_inputs(),
            Boolean("dotall", False),
            Int("group_index", 1, min=0, max=100),
        ),
        outputs=(Output("STRING"),),
    )

    def run(
        self,
        ctx: NodeRuntime,
        string: str,
        regex_pattern: str,
        mode: str,
        case_insensitive: bool,
        multiline: bool,
        dotall: bool,
        group_index: int,
    ) -> tuple[str]:
        try:
            result = _extract(string, regex_pattern, mode, _flags(case_insensitive, multiline, dotall), group_index)
        except re.error:
            result = ""
        return (result,)


class RegexReplace(Node):
    spec = NodeSpec(
        id="RegexReplace",
        display_name="Regex Replace",
        category=CATEGORY,
        description="Find and replace text using regex patterns.",
        inputs=(
            _text("string"),
            _text("regex_pattern"),
            _text("replace"),
            *_regex_flag_inputs(optional=True),
            Boolean(
                "dotall",
                False,
                optional=True,
                tooltip="When enabled, the dot (.) character will match any character including newline "
                "characters. When disabled, dots won't match newlines.",
            ),
            Int(
                "count",
                0,
                min=0,
                max=100,
                optional=True,
                tooltip="Maximum number of replacements to make. Set to 0 to replace all occurrences (default). "
                "Set to 1 to replace only the first match, 2 for the first two matches, etc.",
            ),
        ),
        outputs=(Output("STRING"),),
    )

    def run(
        self,
        ctx: NodeRuntime,
        string: str,
        regex_pattern: str,
        replace: str,
        case_insensitive: bool = True,
        multiline: bool = False,
        dotall: bool = False,
        count: int = 0,
    ) -> tuple[str]:
        flags = _flags(case_insensitive, multiline, dotall)
        try:
            return (re.sub(regex_pattern, replace, string, count=count, flags=flags),)
        except re.error as exc:
            raise ValueError(f"RegexReplace: regex_pattern {regex_pattern!r} is not a valid pattern: {exc}") from exc


NODES = [
    StringConcatenate,
    StringSubstring,
    StringLength,
    CaseConverter,
    StringTrim,
    StringReplace,
    StringContains,
    StringCompare,
    RegexMatch,
    RegexExtract,
    RegexReplace,
]
