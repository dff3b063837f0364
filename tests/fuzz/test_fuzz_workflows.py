"""Fuzzing the UI-workflow converter (execution/workflow.py) directly with hypothesis.

Real saved workflows (tests/execution/workflows: v0.4 and v1 files, reroutes, primitives, bypass,
subgraphs) are broken at random places -- values of the wrong type, deleted and added keys, links
to missing nodes and slots, self links, reroute and bypass loops, subgraphs containing themselves,
deep nesting, huge numbers, unicode -- and random graphs are built from scratch. Whatever the input,
`workflow_to_prompt` returns a prompt of `{class_type, inputs}` nodes or raises WorkflowError /
ValidationError with a message: never another exception, never a RecursionError, never a hang.
A converted prompt is then sent to the server's validation, which must answer without crashing.
"""

from __future__ import annotations

import copy
import json
import random
import time
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from core.errors import ValidationError, WorkflowError
from execution.validate import validate_prompt
from execution.workflow import is_ui_workflow, workflow_to_prompt
from tests.execution.test_workflow import REGISTRY, lookup
from tests.fuzz.fuzz_support import LoopServer, assert_json_error, count, fuzz_settings

FIXTURES = Path(__file__).resolve().parents[1] / "execution" / "workflows"
WORKFLOWS = {path.name: json.loads(path.read_text()) for path in sorted(FIXTURES.glob("*.json"))}
NODE_TYPES = sorted(REGISTRY) + ["Reroute", "PrimitiveNode", "Note", "MarkdownNote", "Unknown🎨", ""]
TIME_LIMIT = 30.0
"""Seconds one conversion may take: most take milliseconds; the largest allowed expansion (100,000
nodes) a few seconds on a loaded machine."""

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(),
    st.text(max_size=12),
    st.sampled_from([-1, 0, 1, 2, 2**31, -(2**63), 1.5, float("nan"), float("inf"), "1", "-10", "-20", "a:b"]),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=10,
)


def containers(value: Any) -> list[Any]:
    """Every dict and list inside `value` (explicit stack)."""
    found, stack = [], [value]
    while stack:
        item = stack.pop()
        if isinstance(item, (dict, list)):
            found.append(item)
            stack.extend(item.values() if isinstance(item, dict) else item)
    return found


def deep(depth: int) -> Any:
    value: Any = 0
    for level in range(depth):
        value = {"nodes": [value]} if level % 2 else [value]
    return value


def subgraphs(workflow: dict[str, Any]) -> list[dict[str, Any]]:
    definitions = workflow.get("definitions")
    subs = definitions.get("subgraphs") if isinstance(definitions, dict) else None
    return [sub for sub in subs if isinstance(sub, dict)] if isinstance(subs, list) else []


def node_lists(workflow: dict[str, Any]) -> list[list[Any]]:
    lists = [workflow.get("nodes")] + [sub.get("nodes") for sub in subgraphs(workflow)]
    return [nodes for nodes in lists if isinstance(nodes, list) and nodes]


def subgraph_ids(workflow: dict[str, Any]) -> list[str]:
    return [sub["id"] for sub in subgraphs(workflow) if isinstance(sub.get("id"), str)]


def mutate(rnd: random.Random, values: list[Any], workflow: dict[str, Any]) -> str:
    """Break the workflow in one place. Choices come from `rnd` (seeded by hypothesis: one draw per
    case keeps thousands of cases fast) and junk from `values` (hypothesis-made JSON)."""
    kind = rnd.choice(MUTATIONS)
    values = copy.deepcopy(values)  # fresh objects: a shared one inserted into itself would be a cycle
    place = rnd.choice(containers(workflow))
    keys = list(place) if isinstance(place, dict) else list(range(len(place)))
    lists = node_lists(workflow)
    nodes = rnd.choice(lists) if lists else None
    node = rnd.choice(nodes) if nodes else None
    links = workflow.get("links")
    if kind == "replace" and keys:
        place[rnd.choice(keys)] = rnd.choice(values)
    elif kind == "delete" and keys:
        del place[rnd.choice(keys)]
    elif kind == "insert":
        if isinstance(place, dict):
            place[str(rnd.choice(values))[:10]] = rnd.choice(values)
        else:
            place.insert(rnd.randint(0, len(place)), rnd.choice(values))
    elif kind == "random_link" and isinstance(links, list):
        ids = [n.get("id") for n in nodes or () if isinstance(n, dict)] + [rnd.choice(values), -10, -20]
        link = [rnd.randint(-5, 50), rnd.choice(ids), rnd.randint(-3, 5), rnd.choice(ids), rnd.randint(-3, 5)]
        links.append([*link, rnd.choice(["*", "INT", "MODEL", 5])])
        if isinstance(node, dict) and isinstance(node.get("inputs"), list) and node["inputs"]:
            entry = rnd.choice(node["inputs"])
            if isinstance(entry, dict):
                entry["link"] = link[0]
    elif kind == "self_link" and isinstance(node, dict) and isinstance(links, list):
        link_id = 10_000 + len(links)
        links.append([link_id, node.get("id"), 0, node.get("id"), 0, "*"])
        old = node.get("inputs") if isinstance(node.get("inputs"), list) else []
        node["inputs"] = [*old[:3], {"name": "x", "type": "*", "link": link_id}]
    elif kind == "mode" and isinstance(node, dict):
        node["mode"] = rnd.choice([0, 2, 4, 1, -1, 99, 2**40])
    elif kind == "retype" and isinstance(node, dict):
        node["type"] = rnd.choice(NODE_TYPES + subgraph_ids(workflow))
    elif kind == "widgets" and isinstance(node, dict):
        node["widgets_values"] = rnd.choice([values, rnd.choice(values), [*values, *values, *values]])
    elif kind == "duplicate" and nodes:
        nodes.append(copy.deepcopy(rnd.choice(nodes)))
    elif kind == "deep" and keys:
        # Deeper than the recursion limit is the fixed test below (deepcopy here would recurse).
        place[rnd.choice(keys)] = deep(rnd.choice([10, 100, 300]))
    elif kind == "self_subgraph" and subgraph_ids(workflow):
        sub_id = rnd.choice(subgraph_ids(workflow))
        for sub in subgraphs(workflow):
            if isinstance(sub.get("nodes"), list):
                sub["nodes"].append({"id": 999, "type": sub_id, "mode": 0, "inputs": [], "outputs": []})
    return kind


MUTATIONS = (
    "replace",
    "delete",
    "insert",
    "random_link",
    "self_link",
    "mode",
    "retype",
    "widgets",
    "duplicate",
    "deep",
    "self_subgraph",
)


def convert_or_refuse(workflow: Any, max_nodes: int = 5_000) -> dict[str, Any] | None:
    """The converted prompt, or None after checking the refusal is a WorkflowError with a message.
    A lower expansion cap than the default keeps fuzz cases fast; the property is the same."""
    started = time.perf_counter()
    try:
        prompt = workflow_to_prompt(workflow, lookup, max_nodes=max_nodes)
    except (WorkflowError, ValidationError) as exc:
        assert str(exc).strip(), f"{type(exc).__name__} without a message"
        return None
    finally:
        elapsed = time.perf_counter() - started
        assert elapsed < TIME_LIMIT, f"conversion took {elapsed:.1f} s"
    assert isinstance(prompt, dict)
    for node_id, node in prompt.items():
        assert isinstance(node_id, str) and node_id
        assert isinstance(node["class_type"], str) and node["class_type"] in REGISTRY, node
        assert isinstance(node["inputs"], dict)
    return prompt


def check_validates(prompt: dict[str, Any]) -> None:
    """A converted prompt goes through validation without an exception (errors are fine)."""
    result = validate_prompt(prompt, REGISTRY)
    if not result.ok:
        assert result.error is not None and result.error["message"], result


@fuzz_settings(0.15)
@given(
    name=st.sampled_from(sorted(WORKFLOWS)),
    seed=st.integers(min_value=0, max_value=2**32),
    values=st.lists(json_values, min_size=1, max_size=4),
)
def test_fuzz_saved_workflows(name: str, seed: int, values: list[Any]) -> None:
    workflow = copy.deepcopy(WORKFLOWS[name])
    rnd = random.Random(seed)
    for _ in range(rnd.randint(1, 4)):
        mutate(rnd, values, workflow)
    count("ui workflows (mutated)")
    prompt = convert_or_refuse(workflow)
    if prompt is not None:
        check_validates(prompt)


@fuzz_settings(0.03)
@given(
    name=st.sampled_from(sorted(WORKFLOWS)),
    seed=st.integers(min_value=0, max_value=2**32),
    values=st.lists(json_values, min_size=1, max_size=3),
)
def test_fuzz_ui_workflows_sent_to_the_server(fuzz_server: LoopServer, name: str, seed: int, values: list[Any]) -> None:
    """The server takes API prompts only: a UI workflow posted as `prompt` (mutated or not), or its
    conversion (node types the stub server lacks), is a 400 with ComfyUI's error shape."""
    workflow = copy.deepcopy(WORKFLOWS[name])
    rnd = random.Random(seed)
    for _ in range(rnd.randint(0, 3)):
        mutate(rnd, values, workflow)
    count("ui workflows (to the server)")
    for prompt in (workflow, convert_or_refuse(copy.deepcopy(workflow))):
        if prompt is None:
            continue
        answer = fuzz_server.request("POST", "/prompt", json={"prompt": prompt})
        body = assert_json_error(answer, f"POST /prompt with workflow {name}")
        assert isinstance(body["node_errors"], dict)


@st.composite
def generated_workflows(draw: Any) -> dict[str, Any]:
    """A workflow built from scratch: random nodes, links between random ids and slots, subgraphs."""
    sub_ids = draw(st.lists(st.sampled_from(["sg-a", "sg-b", "sg-c"]), max_size=2, unique=True))
    types = st.sampled_from(NODE_TYPES + sub_ids)

    def graph(size: int) -> tuple[list[dict[str, Any]], list[Any]]:
        ids = list(range(1, size + 1))
        links, nodes = [], []
        for node_id in ids:
            inputs = []
            for slot in range(draw(st.integers(0, 3))):
                link_id = len(links) + 1 if draw(st.booleans()) else None
                if link_id is not None:
                    origin = draw(st.sampled_from([*ids, -10, 777]))
                    links.append(
                        [
                            link_id,
                            origin,
                            draw(st.integers(-1, 3)),
                            node_id,
                            slot,
                            draw(st.sampled_from(["*", "INT", "MODEL"])),
                        ]
                    )
                widget = (
                    {"name": draw(st.sampled_from(["seed", "text", "value", "x"]))} if draw(st.booleans()) else None
                )
                inputs.append(
                    {
                        "name": draw(st.sampled_from(["model", "clip", "seed", "text", "images", "value"])),
                        "type": "*",
                        "link": link_id,
                        **({"widget": widget} if widget else {}),
                    }
                )
            nodes.append(
                {
                    "id": node_id,
                    "type": draw(types),
                    "mode": draw(st.sampled_from([0, 0, 0, 2, 4])),
                    "inputs": inputs,
                    "outputs": [{"name": "out", "type": "*", "links": []}],
                    "widgets_values": draw(st.lists(scalars, max_size=8)),
                    "properties": draw(st.sampled_from([{}, {"proxyWidgets": [["-1", "value"], ["1", "seed"]]}])),
                }
            )
        return nodes, links

    nodes, links = graph(draw(st.integers(1, 12)))
    subgraphs = []
    for sub_id in sub_ids:
        inner_nodes, inner_links = graph(draw(st.integers(0, 5)))
        subgraphs.append(
            {
                "id": sub_id,
                "name": sub_id,
                "nodes": inner_nodes,
                "links": inner_links,
                "inputs": [{"name": "value", "type": "*", "linkIds": []}],
                "outputs": [{"name": "out", "type": "*", "linkIds": [1, 2]}],
                "inputNode": {"id": -10},
                "outputNode": {"id": -20},
            }
        )
    return {"version": 1, "nodes": nodes, "links": links, "definitions": {"subgraphs": subgraphs}}


@fuzz_settings(0.05)
@given(workflow=generated_workflows())
def test_fuzz_generated_workflows(workflow: dict[str, Any]) -> None:
    count("ui workflows (generated)")
    prompt = convert_or_refuse(workflow)
    if prompt is not None:
        check_validates(prompt)


@fuzz_settings(0.03)
@given(value=st.one_of(json_values, st.fixed_dictionaries({"nodes": json_values, "links": json_values})))
def test_fuzz_any_json_as_a_workflow(value: Any) -> None:
    count("ui workflows (any json)")
    if isinstance(value, dict) and "nodes" in value:
        assert is_ui_workflow(value) == isinstance(value["nodes"], list)
    convert_or_refuse(value)


def test_deep_and_long_workflows_convert_without_recursion() -> None:
    """10,000 chained reroutes and a 10,000-level subgraph nesting chain: converted or refused, no
    RecursionError."""
    count("ui workflows (fixed)")
    nodes = [{"id": 1, "type": "CheckpointLoaderSimple", "widgets_values": ["a.safetensors"], "outputs": []}]
    links = [[1, 1, 0, 2, 0, "MODEL"]]
    for index in range(2, 10_002):
        nodes.append({"id": index, "type": "Reroute", "inputs": [{"name": "", "type": "*", "link": index - 1}]})
        links.append([index, index, 0, index + 1, 0, "MODEL"])
    nodes.append(
        {"id": 10_002, "type": "PreviewImage", "inputs": [{"name": "images", "type": "IMAGE", "link": 10_001}]}
    )
    prompt = convert_or_refuse({"version": 0.4, "nodes": nodes, "links": links}, max_nodes=100_000)
    assert prompt is not None and prompt["10002"]["inputs"]["images"] == ["1", 0]
    count("ui workflows (fixed)")
    subgraphs = [
        {"id": f"s{i}", "nodes": [{"id": 1, "type": f"s{i + 1}"}], "links": [], "inputs": [], "outputs": []}
        for i in range(2_000)
    ]
    nested = {"version": 1, "nodes": [{"id": 1, "type": "s0"}], "links": [], "definitions": {"subgraphs": subgraphs}}
    convert_or_refuse(nested)
    count("ui workflows (fixed)")
    node = {"id": 1, "type": "KSampler", "widgets_values": deep(50_000), "properties": deep(50_000)}
    convert_or_refuse({"version": 1, "nodes": [node], "links": [], "extra": deep(50_000)})


def test_negative_link_slots_resolve_to_nothing() -> None:
    """Found by the fuzzer: a Reroute fed by a link with a negative slot raised IndexError."""
    count("ui workflows (fixed)")
    workflow = copy.deepcopy(WORKFLOWS["default_txt2img_v04.json"])
    workflow["nodes"].append({"id": 50, "type": "Reroute", "inputs": [{"name": "", "type": "*", "link": 4}]})
    workflow["links"] = [link for link in workflow["links"] if link[0] != 7]
    workflow["links"] += [[7, 50, -3, 8, 0, "LATENT"]]  # VAEDecode.samples <- Reroute slot -3
    prompt = convert_or_refuse(workflow)
    assert prompt is not None and "samples" not in prompt["8"]["inputs"]


def test_unhashable_widget_values_are_plain_values() -> None:
    """Found by the fuzzer: a list where the seed's control widget may sit raised TypeError."""
    count("ui workflows (fixed)")
    workflow = copy.deepcopy(WORKFLOWS["default_txt2img_v04.json"])
    sampler = next(node for node in workflow["nodes"] if node["type"] == "KSampler")
    sampler["widgets_values"] = [5, ["fixed"], {"a": 1}, 8, "euler", "normal", 1, 1]
    prompt = convert_or_refuse(workflow)
    assert prompt is not None and prompt["3"]["inputs"]["seed"] == 5


def test_nested_subgraph_bomb_is_refused() -> None:
    """Found by the fuzzer (memory grew past 6 GB): 12 levels of subgraphs, each holding four
    instances of the next, expand a 2 kB file to 4**12 = 16.7 million nodes. The converter stops
    at MAX_EXPANDED_NODES with a WorkflowError."""
    count("ui workflows (fixed)")
    subs = []
    for level in range(12):
        inner = [{"id": n, "type": f"s{level + 1}" if level < 11 else "VAEDecode"} for n in range(1, 5)]
        subs.append({"id": f"s{level}", "nodes": inner, "links": [], "inputs": [], "outputs": []})
    bomb = {"version": 1, "nodes": [{"id": 1, "type": "s0"}], "links": [], "definitions": {"subgraphs": subs}}
    try:
        workflow_to_prompt(bomb, lookup, max_nodes=5_000)
    except WorkflowError as exc:
        assert "expands to more than 5000 nodes" in str(exc)
    else:
        raise AssertionError("a 16.7-million-node expansion was converted")
    small = {**bomb, "definitions": {"subgraphs": subs[-3:]}, "nodes": [{"id": 1, "type": "s9"}]}
    assert len(workflow_to_prompt(small, lookup, max_nodes=5_000)) == 4**3
