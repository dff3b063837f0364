"""The mutation guard: consumers never change a cached value in place."""

from __future__ import annotations

from collections import Counter

import pytest

from core.graph_builder import GraphBuilder
from execution.guard import InputGuard
from tests.harness import Runner
from tests.testing_nodes.values import StubTensor


def test_in_place_tensor_write_fails_the_node_and_evicts_the_producer(runner: Runner, calls: Counter[str]) -> None:
    graph = GraphBuilder(prefix="mut")
    image = graph.node("StubImage", content="WHITE", height=2, width=2, batch_size=1)
    mutator = graph.node("Mutator", value=image.out(0), mode="tensor")
    graph.node("Output", value=mutator.out(0))
    result = runner.run(graph)
    assert result.status == "error"
    assert result.error.node_id == mutator.id
    assert result.error.exception_type == "core.errors.NodeError"
    message = result.error.exception_message
    assert f"node {mutator.id} (Mutator)" in message
    assert "modified its input 'value' in place" in message and "value.clone()" in message
    # The corrupted producer result is not served again: the next prompt recomputes it.
    reader = GraphBuilder(prefix="mut")
    image_again = reader.node("StubImage", content="WHITE", height=2, width=2, batch_size=1)
    out = reader.node("Output", value=image_again.out(0))
    again = runner.run(reader)
    assert again.did_run(image_again) and not again.was_cached(image_again)
    assert again.value(out) == 1.0
    assert calls["StubImage"] == 2


class PlainList:
    """Outputs one Python list as a single value (not OUTPUT_IS_LIST)."""

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {}}

    RETURN_TYPES = ("LIST",)
    FUNCTION = "make"

    def make(self) -> tuple:
        return ([1, 2],)


@pytest.mark.parametrize("policy", ["classic", "lru100", "ram"])
def test_lists_are_handed_over_as_copies(policy: str, calls: Counter[str]) -> None:
    runner = Runner(policy, extra_nodes={"PlainList": PlainList})
    graph = GraphBuilder(prefix="plist")
    items = graph.node("PlainList")
    mutated = graph.node("Mutator", value=items.out(0), mode="list")
    out_mutated = graph.node("Output", value=mutated.out(0))
    assert runner.run(graph).value(out_mutated) == [1, 2, "mutated"]
    reader = GraphBuilder(prefix="plist")
    cached_items = reader.node("PlainList")
    out = reader.node("Output", value=cached_items.out(0))
    again = runner.run(reader)
    assert again.was_cached(cached_items)
    assert again.value(out) == [1, 2]  # the cached list never saw the append


def test_dict_copies_keep_cached_values_clean(runner: Runner) -> None:
    graph = GraphBuilder(prefix="latent")
    latent = graph.node("StubLatent", size=1)
    mutated = graph.node("Mutator", value=latent.out(0), mode="dict")
    out_mutated = graph.node("Output", value=mutated.out(0))
    first = runner.run(graph)
    assert first.value(out_mutated)["mutated"] is True
    reader = GraphBuilder(prefix="latent")
    again = reader.node("StubLatent", size=1)
    out = reader.node("Output", value=again.out(0))
    assert runner.run(reader).value(out) == {"samples": 0.0}


def test_guard_unit_copies_containers_and_watches_versions() -> None:
    guard = InputGuard()
    tensor = StubTensor.full((2,), 1.0)
    value = {"samples": tensor, "extra": [1, {"a": 2}], "pair": (tensor, "x")}
    protected = guard.protect(value, "latent", "7")
    assert protected == {"samples": tensor, "extra": [1, {"a": 2}], "pair": (tensor, "x")}
    assert protected is not value and protected["extra"] is not value["extra"]
    assert protected["extra"][1] is not value["extra"][1]
    assert protected["samples"] is tensor  # tensors are never copied
    assert guard.violations() == []
    tensor.fill_(0.0)
    assert guard.violations() == [("latent", "7")]


def test_guard_skips_scalars() -> None:
    guard = InputGuard()
    for scalar in (1, 2.5, "text", None, True, b"raw"):
        assert guard.protect(scalar, "x") is scalar
    assert not guard.watching


def test_guard_with_real_torch_tensors() -> None:
    torch = pytest.importorskip("torch")
    guard = InputGuard()
    tensor = torch.zeros(2)
    guard.protect(tensor, "image", "3")
    tensor.add_(1)
    assert guard.violations() == [("image", "3")]
    # Inference-mode tensors have no version counter: the guard skips them instead of failing.
    with torch.inference_mode():
        frozen = torch.zeros(2)
    quiet = InputGuard()
    assert quiet.protect(frozen, "image") is frozen
    assert quiet.violations() == []


def test_executor_catches_real_torch_in_place_writes(calls: Counter[str]) -> None:
    torch = pytest.importorskip("torch")

    class TorchImage:
        @classmethod
        def INPUT_TYPES(cls) -> dict:
            return {"required": {}}

        RETURN_TYPES = ("IMAGE",)
        FUNCTION = "make"

        def make(self) -> tuple:
            return (torch.ones(1, 2, 2, 3),)

    runner = Runner("classic", extra_nodes={"TorchImage": TorchImage})
    graph = GraphBuilder(prefix="torch")
    image = graph.node("TorchImage")
    mutator = graph.node("Mutator", value=image.out(0), mode="tensor")
    graph.node("Output", value=mutator.out(0))
    result = runner.run(graph)
    assert result.status == "error" and "in place" in result.error.exception_message
