"""What the soak tests measure, made deterministic for CI: with Python's cyclic GC switched off, a
finished prompt's values (here, a tensor-sized object a node produced) are freed by reference
counting alone, and a checkpoint unloaded by ModelManager.free is gone once free() returns. Before
the fix, a prompt's RunState kept every value alive in a reference cycle until the cyclic GC ran --
RSS grew by one model per checkpoint switch (tests/soak/test_soak_checkpoint_switch.py)."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from execution.cache import make_cache
from execution.executor import Executor
from nodes.compat import v1_definitions
from tests.faults.fault_engine import FaultEngine, txt2img
from tests.soak.soak_utils import install_checkpoints

PRODUCED: list[weakref.ref] = []


class Payload:
    """Stands for a big tensor: something only a weak reference should see after the prompt."""

    def __init__(self, size: int) -> None:
        self.data = bytearray(size)


class MakePayload:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"size": ("INT", {"default": 1024})}}

    RETURN_TYPES = ("PAYLOAD",)
    FUNCTION = "run"
    CATEGORY = "Testing/Soak"

    def run(self, size: int) -> tuple[Payload]:
        payload = Payload(size)
        PRODUCED.append(weakref.ref(payload))
        return (payload,)


class MeasurePayload:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"payload": ("PAYLOAD",)}}

    RETURN_TYPES = ()
    FUNCTION = "run"
    OUTPUT_NODE = True
    CATEGORY = "Testing/Soak"

    def run(self, payload: Payload) -> dict[str, Any]:
        return {"ui": {"size": [len(payload.data)]}}


@pytest.fixture
def no_cyclic_gc() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def test_a_finished_prompt_frees_its_values_without_the_cyclic_gc(no_cyclic_gc: None) -> None:
    registry = v1_definitions({"MakePayload": MakePayload, "MeasurePayload": MeasurePayload})
    executor = Executor(registry, make_cache(none=True))
    prompt = {
        "1": {"class_type": "MakePayload", "inputs": {"size": 1 << 20}},
        "2": {"class_type": "MeasurePayload", "inputs": {"payload": ["1", 0]}},
    }
    PRODUCED.clear()
    for run in range(3):
        result = executor.execute(prompt, f"release-{run}", ["2"])
        assert result.status == "success" and result.outputs["2"]["size"] == [1 << 20]
    assert len(PRODUCED) == 3
    assert [ref() for ref in PRODUCED] == [None, None, None]


@pytest.mark.slow
def test_unloaded_checkpoints_are_freed_when_free_returns(tmp_path: Path, no_cyclic_gc: None) -> None:
    for kind in ("input", "output", "temp"):
        (tmp_path / kind).mkdir()
    names = install_checkpoints(tmp_path, seeds=(0, 1))
    engine = FaultEngine.create(tmp_path)
    dead: list[weakref.ref] = []
    for switch in range(3):
        assert engine.executor is not None
        engine.executor.cache.clear()
        engine.executor.objects.clear()
        engine.manager.free(unload_models=True)
        assert all(ref() is None for ref in dead), "an unloaded model is still alive"
        result, _ = engine.run(txt2img(names[switch % 2], seed=switch, save=False))
        assert result.status == "success", result.error
        dead = [weakref.ref(record.module) for record in engine.manager.loaded_models()]
        assert dead
