"""Broken model files through the whole pipeline (CheckpointLoaderSimple in a real prompt): a
truncated safetensors file, garbage bytes, a bad safetensors header, an empty file and a pickle
.ckpt carrying a payload that would run a command. Each fails its prompt at the loader with an error
that names the file -- the pickle is refused before anything in it runs (torch.load weights_only)
and its marker file is never created -- and the next prompt on a good checkpoint runs."""

from __future__ import annotations

import os
import pickle
import struct
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from tests.faults.fault_engine import FaultEngine, error_of, txt2img

pytestmark = pytest.mark.slow


class Payload:
    """Unpickling this runs `touch <marker>`."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {self.marker}",))


def truncated(good: bytes, _: Path) -> bytes:
    return good[: len(good) // 2]


def garbage(good: bytes, _: Path) -> bytes:
    return bytes((i * 131 + 7) % 256 for i in range(4096))


def bad_header(good: bytes, _: Path) -> bytes:
    header = b'{"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]'  # not closed: invalid JSON
    return struct.pack("<Q", len(header)) + header + b"\0" * 16


def huge_header(good: bytes, _: Path) -> bytes:
    return struct.pack("<Q", 1 << 40) + b"{}"


def empty(good: bytes, _: Path) -> bytes:
    return b""


CORRUPT: dict[str, tuple[str, Callable[[bytes, Path], bytes]]] = {
    "truncated": ("broken.safetensors", truncated),
    "garbage": ("broken.safetensors", garbage),
    "bad-header": ("broken.safetensors", bad_header),
    "huge-header": ("broken.safetensors", huge_header),
    "empty": ("broken.safetensors", empty),
    "garbage-ckpt": ("broken.ckpt", garbage),
}


@pytest.fixture(scope="module")
def shared_engine(tmp_path_factory: pytest.TempPathFactory) -> FaultEngine:
    import shutil

    from tests.utils.checkpoints import cached_checkpoint

    root = tmp_path_factory.mktemp("loom")
    (root / "models" / "checkpoints").mkdir(parents=True)
    for kind in ("input", "output", "temp"):
        (root / kind).mkdir()
    shutil.copy(cached_checkpoint("sd15", tiny=True), root / "models" / "checkpoints" / "tiny.safetensors")
    return FaultEngine.create(root)


@pytest.mark.parametrize("case", list(CORRUPT))
def test_corrupt_checkpoint_fails_at_the_loader_and_the_next_prompt_runs(shared_engine: FaultEngine, case: str) -> None:
    engine = shared_engine
    name, corrupt = CORRUPT[case]
    folder = engine.root / "models" / "checkpoints"
    broken = folder / name
    broken.write_bytes(corrupt((folder / "tiny.safetensors").read_bytes(), broken))
    try:
        result, _ = engine.run(txt2img(name, seed=len(case)))
    finally:
        broken.unlink()
    error = error_of(result)
    assert error["node_id"] == "1" and error["node_type"] == "CheckpointLoaderSimple"
    assert name in error["exception_message"], error["exception_message"]
    assert error["exception_type"].endswith("ModelError"), error
    good, _ = engine.run(txt2img(seed=100 + len(case), save=False))
    assert good.status == "success", good.error


@pytest.mark.parametrize("writer", ["pickle", "torch.save"])
def test_malicious_pickle_checkpoint_is_refused_and_runs_nothing(
    shared_engine: FaultEngine, tmp_path: Path, writer: str
) -> None:
    engine = shared_engine
    marker = tmp_path / "pwned"
    path = engine.root / "models" / "checkpoints" / "evil.ckpt"
    payload = {"state_dict": {"model.diffusion_model.x": torch.ones(1)}, "trap": Payload(marker)}
    if writer == "pickle":
        path.write_bytes(pickle.dumps(payload, protocol=2))
    else:
        torch.save(payload, path)
    try:
        result, _ = engine.run(txt2img("evil.ckpt"))
    finally:
        path.unlink()
    error = error_of(result)
    assert error["node_type"] == "CheckpointLoaderSimple"
    assert "refused to load 'evil.ckpt'" in error["exception_message"]
    assert "safetensors" in error["exception_message"]  # the way out is named
    assert not marker.exists(), "the pickle payload ran"
    good, _ = engine.run(txt2img(seed=7, save=False))
    assert good.status == "success", good.error
