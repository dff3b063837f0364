"""Fuzzing POST /prompt with hypothesis: valid API prompts built from the stub nodes' specs, then
broken on purpose (wrong types, missing and extra fields, dangling and self links, cycles, huge
numbers, deep nesting, unicode, unknown classes, links to missing outputs, bad widget values), and
raw bodies that are not JSON at all (NaN, Infinity, truncation, bad UTF-8, 10 MB strings).

Every answer must be a 200 (the prompt was fine) or a 4xx carrying ComfyUI's error object, and for
validation failures `node_errors` naming existing node ids and, for input errors, the input. Never a
500, never a hang; afterwards the server still runs a good prompt.
"""

from __future__ import annotations

import json
import time
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz.fuzz_support import LoopServer, assert_json_error, count, fuzz_settings
from tests.server.helpers import output_prompt, server_registry

REGISTRY = server_registry()
CLASS_NAMES = sorted(REGISTRY)
SAFE_CLASSES = ("StubInt", "StubFloat", "StubString", "IntMath", "StubImage", "MakeList")
OUTPUT_TYPES = {name: [o.type for o in REGISTRY[name].spec().outputs] for name in SAFE_CLASSES}
INPUT_ERRORS = frozenset(
    {
        "required_input_missing",
        "bad_linked_input",
        "return_type_mismatch",
        "invalid_input_type",
        "value_smaller_than_min",
        "value_bigger_than_max",
        "value_not_in_list",
        "value_over_server_limit",
    }
)
TEN_MB = "x" * (10 * 1024 * 1024)
HUNDRED_KB = "y" * (100 * 1024)

# ---------------------------------------------------------------------- strategies

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
weird_ids = st.one_of(st.text(min_size=0, max_size=12), st.sampled_from(["0", "-1", "1e3", " ", "🎨", "a:b", "../x"]))


DEEP_MARK = "@@deep@@"


def request_text(body: Any) -> str:
    """The JSON text of a request body, with deep-nesting markers expanded."""
    text = json.dumps(body)
    while DEEP_MARK in text:
        start = text.index(f'"{DEEP_MARK}')
        end = text.index('"', start + 1)
        depth = int(text[start + 1 + len(DEEP_MARK) : end])
        text = text[:start] + "[" * depth + "1" + "]" * depth + text[end + 1 :]
    return text


def _value_for(decl: Any, draw: Any) -> Any:
    if decl.choices is not None:
        return draw(st.sampled_from(list(decl.choices)))
    low, high = decl.options.get("min"), decl.options.get("max")
    if decl.type == "INT":
        return draw(st.integers(min_value=int(low if low is not None else -1000), max_value=int(high or 1000)))
    if decl.type == "FLOAT":
        lo, hi = float(low if low is not None else -1e6), float(high if high is not None else 1e6)
        return draw(st.floats(min_value=lo, max_value=hi, allow_nan=False))
    if decl.type == "STRING":
        return draw(st.text(max_size=30))
    if decl.type == "BOOLEAN":
        return draw(st.booleans())
    return None


@st.composite
def valid_prompts(draw: Any) -> dict[str, Any]:
    """A prompt every check accepts: safe stub nodes, in-range values, links to earlier INT outputs."""
    prompt: dict[str, Any] = {}
    ints: list[str] = []
    for index in range(draw(st.integers(min_value=1, max_value=6))):
        class_type = draw(st.sampled_from(SAFE_CLASSES))
        node_id = str(index + 1)
        inputs = {}
        for decl in REGISTRY[class_type].spec().inputs:
            if decl.section == "hidden":
                continue
            if decl.type == "INT" and ints and draw(st.booleans()):
                inputs[decl.name] = [draw(st.sampled_from(ints)), 0]
            else:
                inputs[decl.name] = _value_for(decl, draw)
        prompt[node_id] = {"class_type": class_type, "inputs": inputs}
        if OUTPUT_TYPES[class_type][:1] == ["INT"]:
            ints.append(node_id)
    source = draw(st.sampled_from(sorted(prompt)))
    prompt[str(len(prompt) + 1)] = {"class_type": "Output", "inputs": {"value": [source, 0]}}
    return prompt


def _pick(draw: Any, prompt: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    node_id = draw(st.sampled_from(sorted(prompt)))
    return node_id, prompt[node_id]


def _inputs(node: Any) -> dict[str, Any] | None:
    inputs = node.get("inputs") if isinstance(node, dict) else None
    return inputs if isinstance(inputs, dict) else None


def mutate(draw: Any, prompt: dict[str, Any]) -> str:
    """Break the prompt in one way; the name of the way."""
    if not prompt:
        prompt[draw(weird_ids)] = draw(json_values)
        return "refill"
    node_id, node = _pick(draw, prompt)
    if not isinstance(node, dict):
        prompt[node_id] = node = {"class_type": draw(st.sampled_from(CLASS_NAMES)), "inputs": {}}
    inputs = _inputs(node)
    names = sorted(inputs) if inputs else []
    kind = draw(st.sampled_from(MUTATIONS))
    if kind == "drop_input" and names:
        del inputs[draw(st.sampled_from(names))]
    elif kind == "extra_input" and inputs is not None:
        inputs[draw(st.text(max_size=10))] = draw(json_values)
    elif kind == "wrong_type" and names:
        inputs[draw(st.sampled_from(names))] = draw(json_values)
    elif kind == "huge_number" and names:
        huge = st.sampled_from([2**63, -(2**64), 10**300, 1e308, -1e308, 2**53 + 1, 0.1])
        inputs[draw(st.sampled_from(names))] = draw(huge)
    elif kind == "dangling_link" and names:
        inputs[draw(st.sampled_from(names))] = [draw(weird_ids.filter(lambda i: i not in prompt)), 0]
    elif kind == "self_link" and names:
        inputs[draw(st.sampled_from(names))] = [node_id, draw(st.integers(min_value=-1, max_value=3))]
    elif kind == "cycle" and names:
        other = draw(st.sampled_from(sorted(prompt)))
        inputs[draw(st.sampled_from(names))] = [other, 0]
        other_inputs = _inputs(prompt[other])
        if other_inputs:
            other_inputs[draw(st.sampled_from(sorted(other_inputs)))] = [node_id, 0]
    elif kind == "missing_output" and names:
        slot = draw(st.one_of(st.integers(min_value=1, max_value=2**40), st.integers(max_value=-1), st.floats()))
        inputs[draw(st.sampled_from(names))] = [draw(st.sampled_from(sorted(prompt))), slot]
    elif kind == "malformed_link" and names:
        link = draw(st.sampled_from([[], ["1"], ["1", 0, 0], [["1"], 0], [1, 0], ["1", "0"], [None, None], [{}, 0]]))
        inputs[draw(st.sampled_from(names))] = link
    elif kind == "unknown_class":
        node["class_type"] = draw(st.one_of(st.text(max_size=15), st.sampled_from(CLASS_NAMES), json_values))
    elif kind == "drop_class":
        node.pop("class_type", None)
    elif kind == "node_not_object":
        prompt[node_id] = draw(json_values.filter(lambda v: not isinstance(v, dict)))
    elif kind == "inputs_not_object":
        node["inputs"] = draw(json_values.filter(lambda v: not isinstance(v, dict)))
    elif kind == "drop_node":
        del prompt[node_id]
    elif kind == "weird_id":
        prompt[draw(weird_ids)] = prompt.pop(node_id)
    elif kind == "deep_value" and names:
        # A marker replaced by the nesting in the request text (json.dumps itself stops near 1,000).
        inputs[draw(st.sampled_from(names))] = f"{DEEP_MARK}{draw(st.sampled_from([50, 254, 256, 400, 5000]))}"
    elif kind == "wrapped_value" and names:
        inputs[draw(st.sampled_from(names))] = {"__value__": draw(json_values)}
    elif kind == "unicode_value" and names:
        inputs[draw(st.sampled_from(names))] = draw(st.text(alphabet=st.characters(codec="utf-8"), max_size=40))
    elif kind == "big_string" and names:
        # 10 MB strings are slow to send: one big-string case in ten, 100 kB otherwise.
        big = draw(st.integers(min_value=0, max_value=9)) == 0
        inputs[draw(st.sampled_from(names))] = TEN_MB if big else HUNDRED_KB
    elif kind == "meta":
        node["_meta"] = draw(json_values)
    return kind


MUTATIONS = (
    "drop_input",
    "extra_input",
    "wrong_type",
    "huge_number",
    "dangling_link",
    "self_link",
    "cycle",
    "missing_output",
    "malformed_link",
    "unknown_class",
    "drop_class",
    "node_not_object",
    "inputs_not_object",
    "drop_node",
    "weird_id",
    "deep_value",
    "wrapped_value",
    "unicode_value",
    "big_string",
    "meta",
)

body_fields = st.fixed_dictionaries(
    {},
    optional={
        "client_id": st.one_of(st.text(max_size=10), json_values),
        "prompt_id": st.one_of(st.text(max_size=10), json_values),
        "number": st.one_of(st.integers(min_value=-(2**80), max_value=2**80), st.floats(allow_nan=False), json_values),
        "front": json_values,
        "extra_data": st.one_of(st.dictionaries(st.text(max_size=8), json_values, max_size=3), json_values),
        "partial_execution_targets": st.one_of(st.lists(st.text(max_size=3), max_size=3), json_values),
    },
)
extra_fields = st.dictionaries(st.text(max_size=8).filter(lambda k: k != "prompt"), json_values, max_size=2)


# ---------------------------------------------------------------------- checks


def check_prompt_answer(answer: Any, prompt: Any, mutated: bool) -> None:
    if answer.status == 200:
        body = answer.json()
        assert isinstance(body["prompt_id"], str) and body["prompt_id"], answer.describe()
        return
    if not mutated:
        raise AssertionError(f"a valid prompt was refused: {answer.describe()}\n{json.dumps(prompt)[:2000]}")
    body = assert_json_error(answer, "POST /prompt")
    assert isinstance(body.get("node_errors"), dict), f"no node_errors: {answer.describe()}"
    for node_id, entry in body["node_errors"].items():
        assert isinstance(prompt, dict) and node_id in prompt, f"node_errors names unknown node {node_id!r}"
        assert entry["errors"], entry
        for error in entry["errors"]:
            assert error["message"] and "type" in error and isinstance(error["extra_info"], dict), error
            if error["type"] in INPUT_ERRORS:
                name = error["extra_info"].get("input_name")
                assert isinstance(name, str), f"{error['type']} without input_name: {error}"
                declared = {decl.name for decl in REGISTRY[entry["class_type"]].spec().inputs}
                assert name in declared or name in (prompt[node_id].get("inputs") or {}), (name, error)


def post(server: LoopServer, body: Any) -> Any:
    return server.request("POST", "/prompt", data=request_text(body), headers={"Content-Type": "application/json"})


# ---------------------------------------------------------------------- fuzzers


@fuzz_settings(0.25)
@given(data=st.data())
def test_fuzz_api_prompts(fuzz_server: LoopServer, data: st.DataObject) -> None:
    prompt = data.draw(valid_prompts(), label="prompt")
    mutations = [mutate(data.draw, prompt) for _ in range(data.draw(st.integers(min_value=0, max_value=3)))]
    count("api prompts")
    answer = post(fuzz_server, {"prompt": prompt})
    check_prompt_answer(answer, prompt, mutated=bool(mutations))


@fuzz_settings(0.08)
@given(prompt=st.one_of(valid_prompts(), json_values), fields=body_fields, extra=extra_fields)
def test_fuzz_prompt_request_bodies(
    fuzz_server: LoopServer, prompt: Any, fields: dict[str, Any], extra: dict[str, Any]
) -> None:
    count("prompt request bodies")
    answer = post(fuzz_server, {**extra, "prompt": prompt, **fields})
    if answer.status != 200:
        assert_json_error(answer, "POST /prompt")
        assert isinstance(answer.json().get("node_errors"), dict), answer.describe()


TEXT_ATTACKS = (
    "nan",
    "infinity",
    "truncate",
    "bad_utf8",
    "lone_surrogate",
    "huge_int",
    "deep_array",
    "deep_object",
    "not_json",
    "empty",
)


def attack_text(kind: str, text: str, cut: int) -> bytes:
    value = '{"class_type": "StubInt", "inputs": {"value": %s}}'
    replace = {
        "nan": value % "NaN",
        "infinity": value % "-Infinity",
        "huge_int": value % ("9" * 5000),
        "lone_surrogate": value % '"\\ud83d"',
        "deep_array": value % ("[" * 100_000 + "]" * 100_000),
        "deep_object": value % ('{"a":' * 5000 + "1" + "}" * 5000),
    }
    if kind in replace:
        return text.replace('"x": 1', '"x": ' + replace[kind]).encode("utf-8", "surrogatepass")
    if kind == "truncate":
        return text.encode("utf-8")[: cut % max(1, len(text))]
    if kind == "bad_utf8":
        raw = text.encode("utf-8")
        return raw[: cut % max(1, len(raw))] + b"\xff\xfe\xc3" + raw[cut % max(1, len(raw)) :]
    if kind == "not_json":
        return b"prompt=" + text.encode("utf-8")
    return b"   "


@fuzz_settings(0.03)
@given(prompt=valid_prompts(), kind=st.sampled_from(TEXT_ATTACKS), cut=st.integers(min_value=0, max_value=10_000))
def test_fuzz_raw_prompt_bodies(fuzz_server: LoopServer, prompt: dict[str, Any], kind: str, cut: int) -> None:
    count("raw prompt bodies")
    prompt["x"] = {"class_type": "StubInt", "inputs": {"value": 1}}
    text = json.dumps({"prompt": prompt}).replace('{"value": 1}', '{"x": 1}', 1)
    body = attack_text(kind, text, cut)
    answer = fuzz_server.request("POST", "/prompt", data=body, headers={"Content-Type": "application/json"})
    body_json = assert_json_error(answer, f"POST /prompt ({kind})")
    assert isinstance(body_json.get("node_errors"), dict)


def test_precise_errors_name_the_node_and_input(fuzz_server: LoopServer) -> None:
    """Fixed cases: each broken prompt is refused with the node id and input that are wrong."""
    base = output_prompt(5, prefix="p")  # p1: StubInt, p2: Output
    cases = {
        "dangling": ({"p2": {"class_type": "Output", "inputs": {"value": ["nope", 0]}}}, "p2", "value"),
        "self": ({"p1": {"class_type": "IntMath", "inputs": {"a": ["p1", 0], "b": 1, "operation": "add"}}}, "p1", "a"),
        "slot": ({"p2": {"class_type": "Output", "inputs": {"value": ["p1", 7]}}}, "p2", "value"),
        "range": ({"p1": {"class_type": "StubInt", "inputs": {"value": 2**40}}}, "p1", "value"),
        "missing": ({"p1": {"class_type": "StubInt", "inputs": {}}}, "p1", "value"),
        "combo": (
            {"p1": {"class_type": "IntMath", "inputs": {"a": 1, "b": 2, "operation": "xor"}}},
            "p1",
            "operation",
        ),
    }
    for name, (change, node_id, input_name) in cases.items():
        count("fixed cases")
        prompt = {**json.loads(json.dumps(base)), **change}
        if name in ("self", "combo"):
            prompt["p2"]["inputs"]["value"] = ["p1", 0]
        answer = post(fuzz_server, {"prompt": prompt})
        body = assert_json_error(answer, name)
        assert node_id in body["node_errors"], (name, body)
        names = [e["extra_info"].get("input_name") for e in body["node_errors"][node_id]["errors"]]
        assert input_name in names, (name, body)


def test_server_keeps_serving_after_the_fuzz(fuzz_server: LoopServer) -> None:
    """Runs after the fuzzers (file order): the queue is cleared and a good prompt runs to the end."""
    count("fixed cases")
    cleared = fuzz_server.request("POST", "/queue", json={"clear": True})
    assert cleared.status == 200
    fuzz_server.start_worker()
    answer = post(fuzz_server, {"prompt": output_prompt(41, prefix="k")})
    assert answer.status == 200, answer.describe()
    prompt_id = answer.json()["prompt_id"]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        history = fuzz_server.request("GET", f"/history/{prompt_id}").json()
        if prompt_id in history:
            assert history[prompt_id]["status"]["status_str"] == "success", history
            assert history[prompt_id]["outputs"]["k2"] == {"value": [41]}
            return
        time.sleep(0.05)
    raise AssertionError("a good prompt did not finish within 60 s after the fuzzing")


def test_out_of_range_queue_numbers_are_refused(fuzz_server: LoopServer) -> None:
    """Found by the fuzzer: a `number` SQLite cannot store (2**80, or 1e300 which the store turns into
    an int) was a 500 from the queue; now a 400 naming the field."""
    for number in (2**80, -(2**70), 1e300, "1e300", "nan", 2**53 + 2):
        count("fixed cases")
        answer = post(fuzz_server, {"prompt": output_prompt(1, prefix="n"), "number": number})
        body = assert_json_error(answer, f"number {number!r}")
        assert "'number'" in body["error"]["message"] and body["node_errors"] == {}
    assert post(fuzz_server, {"prompt": output_prompt(1, prefix="n"), "number": 2**53}).status == 200
