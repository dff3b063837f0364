"""Latent file nodes (nodes/latent_io.py): ComfyUI's .latent safetensors format."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from core.config import Config
from core.runtime import NodeRuntime
from nodes import image_io, latent_io
from nodes.api import DeclarativeNode
from tests.nodes.conftest import call_node

SAVE = DeclarativeNode(latent_io.SaveLatent)
LOAD = DeclarativeNode(latent_io.LoadLatent)


@pytest.fixture
def folders(tmp_path: Path) -> Iterator[dict[str, Any]]:
    services: dict[str, Any] = {"config": Config(base_dir=tmp_path)}
    for kind in image_io.FOLDER_KINDS:
        folder = tmp_path / kind
        folder.mkdir()
        services[f"{kind}_dir"] = folder
    image_io.bind_folders(services)
    yield services
    image_io.bind_folders(None)


def runtime(services: dict[str, Any]) -> NodeRuntime:
    return NodeRuntime(node_id="3", class_type="test", services=services)


def samples(dtype: torch.dtype = torch.float32) -> torch.Tensor:
    gen = torch.Generator().manual_seed(1)
    return torch.randn((2, 4, 3, 5), generator=gen).to(dtype)


def save(services: dict[str, Any], latent: torch.Tensor, **inputs: Any) -> dict[str, Any]:
    return call_node(SAVE, {"samples": {"samples": latent}, **inputs}, runtime(services))


def test_save_writes_the_comfyui_layout_with_metadata(folders: dict[str, Any]) -> None:
    prompt = {"4": {"class_type": "SaveLatent", "inputs": {}}}
    workflow = {"nodes": [], "version": 0.4}
    result = save(folders, samples(), prompt=prompt, extra_pnginfo={"workflow": workflow})

    assert result == {
        "ui": {"latents": [{"filename": "ComfyUI_00001_.latent", "subfolder": "latents", "type": "output"}]}
    }
    path = folders["output_dir"] / "latents" / "ComfyUI_00001_.latent"
    with safe_open(str(path), framework="pt") as handle:
        assert set(handle.keys()) == {"latent_tensor", "latent_format_version_0"}
        stored = handle.get_tensor("latent_tensor")
        assert handle.get_tensor("latent_format_version_0").numel() == 0
        metadata = handle.metadata()
    assert stored.dtype == torch.float32 and torch.equal(stored, samples())
    assert json.loads(metadata["prompt"]) == prompt and json.loads(metadata["workflow"]) == workflow


def test_counter_continues_and_custom_prefix(folders: dict[str, Any]) -> None:
    first = save(folders, samples(), filename_prefix="mine")["ui"]["latents"][0]
    second = save(folders, samples(), filename_prefix="mine")["ui"]["latents"][0]
    assert (first["filename"], second["filename"]) == ("mine_00001_.latent", "mine_00002_.latent")
    assert first["subfolder"] == ""
    with pytest.raises(ValueError, match="outside the output folder"):
        save(folders, samples(), filename_prefix="../escape")


def test_half_precision_samples_are_stored_as_float32(folders: dict[str, Any]) -> None:
    save(folders, samples(torch.float16))
    with safe_open(str(folders["output_dir"] / "latents" / "ComfyUI_00001_.latent"), framework="pt") as handle:
        stored = handle.get_tensor("latent_tensor")
    assert stored.dtype == torch.float32
    assert torch.equal(stored, samples(torch.float16).float())


def test_metadata_prompt_is_empty_without_a_prompt_and_absent_when_disabled(
    folders: dict[str, Any], tmp_path: Path
) -> None:
    save(folders, samples(), filename_prefix="a")
    with safe_open(str(folders["output_dir"] / "a_00001_.latent"), framework="pt") as handle:
        assert handle.metadata() == {"prompt": ""}
    quiet = {**folders, "config": Config(base_dir=tmp_path, disable_metadata=True)}
    save(quiet, samples(), filename_prefix="b", prompt={"1": {}}, extra_pnginfo={"workflow": {}})
    with safe_open(str(folders["output_dir"] / "b_00001_.latent"), framework="pt") as handle:
        assert not handle.metadata()


def test_save_then_load_round_trip(folders: dict[str, Any]) -> None:
    save(folders, samples(), filename_prefix="trip")
    data = (folders["output_dir"] / "trip_00001_.latent").read_bytes()
    (folders["input_dir"] / "trip.latent").write_bytes(data)

    (loaded,) = call_node(LOAD, {"latent": "trip.latent"}, runtime(folders))
    assert set(loaded) == {"samples"}
    tensor = loaded["samples"]
    assert tensor.dtype == torch.float32 and tensor.device.type == "cpu" and tensor.is_contiguous()
    assert torch.equal(tensor, samples())


def test_files_without_the_version_marker_are_unscaled(folders: dict[str, Any]) -> None:
    legacy = samples() * 0.18215
    save_file({"latent_tensor": legacy.half()}, str(folders["input_dir"] / "old.latent"))
    (loaded,) = call_node(LOAD, {"latent": "old.latent"}, runtime(folders))
    expected = legacy.half().float() * (1.0 / 0.18215)
    assert loaded["samples"].dtype == torch.float32
    assert torch.equal(loaded["samples"], expected)
    torch.testing.assert_close(loaded["samples"], samples(), rtol=2e-3, atol=2e-3)


def test_a_file_without_latent_tensor_fails_clearly(folders: dict[str, Any]) -> None:
    save_file({"something": torch.zeros(1)}, str(folders["input_dir"] / "odd.latent"))
    with pytest.raises(ValueError, match="no 'latent_tensor'"):
        call_node(LOAD, {"latent": "odd.latent"}, runtime(folders))
    (folders["input_dir"] / "junk.latent").write_bytes(b"\x00" * 12)
    with pytest.raises(ValueError, match="cannot read latent file 'junk.latent'"):
        call_node(LOAD, {"latent": "junk.latent"}, runtime(folders))


def test_validation_fingerprint_and_combo(folders: dict[str, Any]) -> None:
    root = folders["input_dir"]
    (root / "deep").mkdir()
    save_file({"latent_tensor": torch.ones(1)}, str(root / "deep" / "b.latent"))
    save_file({"latent_tensor": torch.zeros(1)}, str(root / "a.latent"))
    (root / "c.png").write_bytes(b"")

    (latent_input,) = LOAD.spec().inputs
    assert latent_input.choices == ("a.latent", "deep/b.latent")
    assert LOAD.spec().object_info()["input"]["required"]["latent"] == [["a.latent", "deep/b.latent"]]

    assert LOAD.validate({"latent": "a.latent"}, None) is True
    assert LOAD.validate({"latent": "nope.latent"}, None) == "Invalid latent file: nope.latent"
    assert str(LOAD.validate({"latent": "../x.latent"}, None)).startswith("Invalid latent file: ../x.latent")

    first = LOAD.fingerprint({"latent": "a.latent"})
    assert first == hashlib.sha256((root / "a.latent").read_bytes()).hexdigest()
    save_file({"latent_tensor": torch.full((1,), 2.0)}, str(root / "a.latent"))
    assert LOAD.fingerprint({"latent": "a.latent"}) != first
