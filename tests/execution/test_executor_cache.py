"""Cache keys and every cache policy (contract tests run over each implementation)."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from core.graph_builder import GraphBuilder
from core.spec import InputSpec, NodeSpec
from execution.cache import (
    ClassicCache,
    LRUCache,
    NullCache,
    ObjectCache,
    RamCache,
    canonical,
    compute_keys,
    estimate_bytes,
    is_unique,
    make_cache,
)
from tests.harness import Runner, make_policy
from tests.testing_nodes.values import StubTensor

SPECS = {
    "Const": NodeSpec(id="Const"),
    "Add": NodeSpec(id="Add"),
    "Rand": NodeSpec(id="Rand", cacheable=False),
    "Mine": NodeSpec(id="Mine", not_idempotent=True),
    "Seen": NodeSpec(id="Seen", inputs=(InputSpec("id", "UNIQUE_ID", "hidden", hidden_kind="UNIQUE_ID"),)),
}


def _keys(prompt: dict[str, Any], fingerprints: dict[str, Any] | None = None) -> dict[str, str]:
    return compute_keys(prompt, SPECS.__getitem__, fingerprints or {})


def _chain(ids: list[str], value: int = 1) -> dict[str, Any]:
    prompt = {ids[0]: {"class_type": "Const", "inputs": {"value": value}}}
    for previous, node_id in zip(ids, ids[1:], strict=False):
        prompt[node_id] = {"class_type": "Add", "inputs": {"a": [previous, 0], "b": 1}}
    return prompt


def test_keys_do_not_depend_on_node_ids() -> None:
    first = _keys(_chain(["1", "2", "3"]))
    second = _keys(_chain(["x", "y", "z"]))
    assert [first[i] for i in "123"] == [second[i] for i in "xyz"]
    assert len(set(first.values())) == 3


def test_any_upstream_change_reaches_every_downstream_key() -> None:
    base = _keys(_chain(["1", "2", "3"], value=1))
    changed = _keys(_chain(["1", "2", "3"], value=2))
    assert all(base[node_id] != changed[node_id] for node_id in "123")


def test_slot_and_input_names_matter() -> None:
    prompt = _chain(["1", "2"])
    other_slot = _chain(["1", "2"])
    other_slot["2"]["inputs"]["a"] = ["1", 1]
    renamed = _chain(["1", "2"])
    renamed["2"]["inputs"] = {"c": ["1", 0], "b": 1}
    keys = {_keys(prompt)["2"], _keys(other_slot)["2"], _keys(renamed)["2"]}
    assert len(keys) == 3


def test_constant_order_does_not_matter_but_types_do() -> None:
    one = {"n": {"class_type": "Const", "inputs": {"a": 1, "b": "x"}}}
    swapped = {"n": {"class_type": "Const", "inputs": {"b": "x", "a": 1}}}
    as_float = {"n": {"class_type": "Const", "inputs": {"a": 1.0, "b": "x"}}}
    as_text = {"n": {"class_type": "Const", "inputs": {"a": "1", "b": "x"}}}
    assert _keys(one)["n"] == _keys(swapped)["n"]
    assert len({_keys(p)["n"] for p in (one, as_float, as_text)}) == 3


def test_version_is_part_of_the_key() -> None:
    prompt = {"n": {"class_type": "Const", "inputs": {"a": 1}}}
    v1 = compute_keys(prompt, lambda _: NodeSpec(id="Const", version="1"), {})["n"]
    v2 = compute_keys(prompt, lambda _: NodeSpec(id="Const", version="2"), {})["n"]
    assert v1 != v2


def test_unique_keys_never_match_and_spread_downstream() -> None:
    prompt = _chain(["1", "2"])
    prompt["1"]["class_type"] = "Rand"
    first, second = _keys(prompt), _keys(prompt)
    assert is_unique(first["1"]) and is_unique(first["2"])
    assert first["1"] != second["1"]
    nan = _keys(_chain(["1", "2"]), fingerprints={"1": float("nan")})
    assert is_unique(nan["1"]) and is_unique(nan["2"])
    odd = {"n": {"class_type": "Const", "inputs": {"value": object()}}}
    assert is_unique(_keys(odd)["n"])


def test_fingerprint_and_node_id_join_the_key_when_asked() -> None:
    prompt = {"n": {"class_type": "Const", "inputs": {}}}
    assert _keys(prompt, {"n": "a"})["n"] == _keys(prompt, {"n": "a"})["n"]
    assert _keys(prompt, {"n": "a"})["n"] != _keys(prompt, {"n": "b"})["n"]
    for class_type in ("Mine", "Seen"):
        a = _keys({"a": {"class_type": class_type, "inputs": {}}})["a"]
        b = _keys({"b": {"class_type": class_type, "inputs": {}}})["b"]
        assert a != b


def test_keys_of_a_10000_node_chain_need_no_recursion() -> None:
    ids = [str(index) for index in range(10_000)]
    keys = _keys(_chain(ids))
    assert len(set(keys.values())) == 10_000


def test_cycles_get_unique_keys() -> None:
    prompt = {
        "a": {"class_type": "Add", "inputs": {"x": ["b", 0]}},
        "b": {"class_type": "Add", "inputs": {"x": ["a", 0]}},
        "c": {"class_type": "Const", "inputs": {}},
    }
    keys = _keys(prompt)
    assert is_unique(keys["a"]) and is_unique(keys["b"]) and not is_unique(keys["c"])


def test_canonical_forms() -> None:
    assert canonical({"b": [1, 2], "a": (3,)}) == canonical({"a": (3,), "b": [1, 2]})
    assert canonical([1, 2]) != canonical((1, 2))
    assert canonical(True) != canonical(1) != canonical(1.0)
    assert canonical(float("nan")) is None
    assert canonical([1, object()]) is None
    assert canonical(frozenset({2, 1})) == canonical({1, 2})


# --- policies, as plain caches ---------------------------------------------------------------------


@pytest.mark.parametrize("factory", [ClassicCache, lambda: LRUCache(10), lambda: RamCache(0.0, lambda: 1e12)])
def test_storing_policies_share_a_contract(factory: Any) -> None:
    cache = factory()
    cache.begin_prompt({"k1"})
    assert cache.get("k1") is None
    cache.put("k1", "v1", "1")
    cache.put("child", "v2", "1.0.0.5", owner="k1")
    assert cache.get("k1") == "v1" and "child" in cache and len(cache) == 2
    cache.discard("k1")  # an owner takes its expanded nodes' entries with it
    assert "k1" not in cache and "child" not in cache
    stats = cache.stats()
    assert stats.hits == 1 and stats.misses == 1 and stats.stores == 2 and stats.entries == 0
    cache.put("k2", "v", "2")
    cache.clear()
    assert len(cache) == 0


def test_null_cache_keeps_nothing() -> None:
    cache = NullCache()
    cache.put("k", "v", "1")
    assert cache.get("k") is None and len(cache) == 0 and not cache.keep_objects


def test_classic_keeps_only_what_the_new_prompt_uses() -> None:
    cache = ClassicCache()
    cache.begin_prompt({"a", "b"})
    cache.put("a", 1, "1")
    cache.put("b", 2, "2")
    cache.put("b-child", 3, "2.0.0.1", owner="b")
    cache.begin_prompt({"b", "c"})
    assert sorted(cache.keys()) == ["b", "b-child"]


def test_lru_keeps_n_and_evicts_the_least_recently_used() -> None:
    cache = LRUCache(3)
    cache.begin_prompt(set())
    for key in "abc":
        cache.put(key, key, key)
    assert cache.get("a") == "a"  # a is now the most recent
    cache.put("d", "d", "d")
    assert sorted(cache.keys()) == ["a", "c", "d"]
    cache.begin_prompt({"c"})  # a new prompt using c makes it recent
    cache.put("e", "e", "e")
    assert sorted(cache.keys()) == ["c", "d", "e"]
    assert cache.stats().evictions == 2


def test_lru_rejects_zero() -> None:
    with pytest.raises(ValueError, match="ClassicCache"):
        LRUCache(0)


class Blob:
    """A value that reports its size the way numpy arrays and torch tensors do."""

    def __init__(self, gib: float) -> None:
        self.nbytes = int(gib * 1024**3)


def test_ram_cache_evicts_by_age_and_size_under_pressure() -> None:
    gib = 1024**3
    sizes: dict[str, float] = {}
    cache = RamCache(4.0, lambda: 10 * gib - sum(size * gib for key, size in sizes.items() if key in cache))

    def put(key: str, size: float) -> None:
        sizes[key] = size
        cache.put(key, Blob(size), key)

    cache.begin_prompt(set())
    put("old", 1.5)
    cache.begin_prompt(set())
    cache.begin_prompt(set())  # "old" is now two prompts old
    put("small", 0.5)
    put("fresh", 2.0)
    assert len(cache) == 3  # 6 GiB free: no pressure
    put("big", 2.5)  # 3.5 GiB free < 4: evict until more than 4.4 GiB are free
    # Scores 1.3**age * size: old 1.3**2 * 1.5 = 2.54 beats big 2.5 (age 0), fresh 2, small 0.5.
    assert sorted(cache.keys()) == ["big", "fresh", "small"]
    assert cache.stats().evictions == 1


def test_estimate_bytes_by_duck_typing() -> None:
    class Tensor:
        def __init__(self, count: int, device: str = "cpu") -> None:
            self.count = count
            self.device = type("Device", (), {"type": device})()

        def element_size(self) -> int:
            return 4

        def nelement(self) -> int:
            return self.count

    shared = StubTensor.full((10,), 0.0)
    value = {"a": [shared, shared], "b": (Tensor(5), Tensor(100, "cuda")), "c": "xyz"}
    assert estimate_bytes(value) == 40 + 20 + 3  # shared counted once, GPU tensor not at all


def test_make_cache_matches_comfyui_flags() -> None:
    assert isinstance(make_cache(), ClassicCache)
    assert isinstance(make_cache(lru=0), ClassicCache)
    assert isinstance(make_cache(lru=5), LRUCache) and make_cache(lru=5).max_entries == 5
    assert isinstance(make_cache(ram_gb=2.0), RamCache)
    assert isinstance(make_cache(none=True), NullCache)


def test_object_cache() -> None:
    objects = ObjectCache()
    first = objects.get("1", "A", object)
    assert objects.get("1", "A", object) is first
    assert objects.get("1", "B", object) is not first
    child = objects.get("1.0.0.2", "A", object, owner="1")
    objects.begin_prompt({"1"})
    assert objects.get("1.0.0.2", "A", object, owner="1") is child
    objects.begin_prompt({"9"})
    assert len(objects) == 0
    assert ObjectCache(enabled=False).get("1", "A", object) is not ObjectCache(enabled=False).get("1", "A", object)


# --- policies, through the executor -----------------------------------------------------------------


def _counted(prefix: str, value: int) -> tuple[GraphBuilder, Any]:
    graph = GraphBuilder(prefix=prefix)
    counter = graph.node("Counter", value=value, label=f"value {value}")
    graph.node("Output", value=counter.out(0))
    return graph, counter


@pytest.mark.parametrize(("policy", "remembers_a"), [("classic", False), ("lru0", False), ("lru100", True)])
def test_switching_between_two_prompts(policy: str, remembers_a: bool, calls: Counter[str]) -> None:
    runner = Runner(policy)
    prompt_a, _ = _counted("a", 1)
    prompt_b, _ = _counted("b", 2)
    runner.run(prompt_a)
    runner.run(prompt_b)
    result = runner.run(prompt_a)
    assert calls["value 1"] == (1 if remembers_a else 2)
    assert calls["value 2"] == 1
    assert all(result.was_cached(node_id) == remembers_a for node_id in result.result.ran + result.result.cached)


def test_lru_policy_forgets_the_oldest_prompt(calls: Counter[str]) -> None:
    runner = Runner(cache=LRUCache(4))
    graphs = [_counted(f"p{value}", value)[0] for value in range(3)]  # 2 entries per prompt
    for graph in graphs:
        runner.run(graph)
    runner.run(graphs[2])
    runner.run(graphs[1])
    runner.run(graphs[0])  # evicted by prompt 2: runs again
    assert [calls[f"value {value}"] for value in range(3)] == [2, 1, 1]


def test_ram_policy_evicts_when_free_ram_is_low(calls: Counter[str]) -> None:
    free = {"bytes": 64 * 1024**3}
    runner = Runner(cache=make_policy("ram", available=lambda: free["bytes"]))
    graph, _ = _counted("ram", 1)
    runner.run(graph)
    runner.run(graph)
    assert calls["value 1"] == 1
    free["bytes"] = 0  # pressure: every store now evicts everything it can
    other, _ = _counted("ram2", 2)
    runner.run(other)
    assert len(runner.cache) == 0
    runner.run(graph)
    assert calls["value 1"] == 2


def test_cache_none_recomputes_everything(calls: Counter[str]) -> None:
    runner = Runner("none")
    graph, counter = _counted("none", 1)
    runner.run(graph)
    result = runner.run(graph)
    assert result.did_run(counter) and not result.result.cached
    assert calls["value 1"] == 2
