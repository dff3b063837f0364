"""Loader nodes: files found through the model folders, loads going through the model manager (which
caches them), and the split-file loaders (VAE, UNet, text encoders) built from the tiny sd15 file."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from core.errors import ModelError
from core.paths import ModelPaths
from nodes import loaders as LD
from tests.nodes.test_nodes_engine_fixtures import Engine, call, engine_fixture, session_engine_fixture  # noqa: F401


def extract(source: Path, prefix: str, target: Path) -> Path:
    """The tensors of `source` under `prefix`, prefix removed, as a new safetensors file."""
    with safe_open(str(source), framework="pt") as handle:
        tensors = {key[len(prefix) :]: handle.get_tensor(key) for key in handle.keys() if key.startswith(prefix)}  # noqa: SIM118
    target.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(target))
    return target


@pytest.fixture
def split_files(engine: Engine, tmp_path: Path) -> dict[str, Any]:
    """A models folder with sd15's VAE, UNet and text encoder as separate files."""
    source = engine.root / "models" / "checkpoints" / "sd15.safetensors"
    models = tmp_path / "models"
    extract(source, "first_stage_model.", models / "vae" / "tiny_vae.safetensors")
    extract(source, "model.diffusion_model.", models / "diffusion_models" / "tiny_unet.safetensors")
    extract(source, "cond_stage_model.transformer.", models / "text_encoders" / "tiny_clip_l.safetensors")
    return {**engine.services, "paths": ModelPaths(models)}


def test_checkpoint_loader_uses_the_manager_cache(engine: Engine) -> None:
    model, clip, vae = call(engine, LD.CheckpointLoaderSimple, ckpt_name="sd15.safetensors")
    again = call(engine, LD.CheckpointLoaderSimple, ckpt_name="sd15.safetensors")
    assert model.family.name == "sd15" and again[0] is not model
    assert again[0].record is model.record and again[1].record is clip.record and again[2].record is vae.record
    sdxl = call(engine, LD.CheckpointLoaderSimple, ckpt_name="sdxl.safetensors")[0]
    assert sdxl.family.name == "sdxl"


def test_missing_or_escaping_names_are_model_errors(engine: Engine) -> None:
    with pytest.raises(ModelError, match="'gone.safetensors' not found"):
        call(engine, LD.CheckpointLoaderSimple, ckpt_name="gone.safetensors")
    with pytest.raises(ModelError, match="not found"):
        call(engine, LD.CheckpointLoaderSimple, ckpt_name="../checkpoints/sd15.safetensors/../../x")


def test_split_file_loaders(engine: Engine, split_files: dict[str, Any], caplog: pytest.LogCaptureFixture) -> None:
    runtime = engine.runtime(**split_files)
    reference_model, reference_clip, reference_vae = engine.load("sd15")
    (vae,) = call(engine, LD.VAELoader, runtime, vae_name="tiny_vae.safetensors")
    z = torch.randn(1, 4, 4, 4, generator=torch.Generator().manual_seed(0))
    assert torch.equal(vae.decode(z), reference_vae.decode(z))
    with caplog.at_level(logging.WARNING):
        (unet,) = call(engine, LD.UNETLoader, runtime, unet_name="tiny_unet.safetensors", weight_dtype="fp8_e4m3fn")
    assert "not supported yet" in caplog.text
    assert unet.family.name == "sd15"
    x, t = torch.randn(1, 4, 4, 4, generator=torch.Generator().manual_seed(1)), torch.tensor([400.0])
    context = torch.randn(1, 77, 64, generator=torch.Generator().manual_seed(2))
    assert torch.equal(unet.apply_model(x, t, context), reference_model.apply_model(x, t, context))
    (clip,) = call(engine, LD.CLIPLoader, runtime, clip_name="tiny_clip_l.safetensors", type="stable_diffusion")
    tokens = clip.tokenize("a quiet lake")
    assert torch.equal(clip.encode_from_tokens(tokens), reference_clip.encode_from_tokens(tokens))


class RecordingManager:
    """Stands in for the ModelManager: records what the loaders ask for."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def load_text_encoders(self, paths: list[Path], kinds: Any = None) -> str:
        self.calls.append(("text", [p.name for p in paths]))
        return "clip"

    def load_diffusers(self, folder: Path) -> tuple[str, str, str]:
        self.calls.append(("diffusers", folder))
        return "model", "clip", "vae"


def test_dual_clip_and_diffusers_loaders_resolve_and_delegate(engine: Engine, tmp_path: Path) -> None:
    (tmp_path / "text_encoders").mkdir()
    for name in ("l.safetensors", "g.safetensors"):
        (tmp_path / "text_encoders" / name).write_bytes(b"")
    pipeline = tmp_path / "diffusers" / "org" / "model"
    pipeline.mkdir(parents=True)
    (pipeline / "model_index.json").write_text("{}")
    manager = RecordingManager()
    runtime = engine.runtime(paths=ModelPaths(tmp_path), models=manager)
    (clip,) = call(engine, LD.DualCLIPLoader, runtime, clip_name1="l.safetensors", clip_name2="g.safetensors",
                   type="sdxl")  # fmt: skip
    assert clip == "clip" and manager.calls[-1] == ("text", ["l.safetensors", "g.safetensors"])
    assert call(engine, LD.DiffusersLoader, runtime, model_path="org/model") == ("model", "clip", "vae")
    assert manager.calls[-1] == ("diffusers", pipeline)
    with pytest.raises(ModelError, match="diffusers model folder 'org' not found"):
        call(engine, LD.DiffusersLoader, runtime, model_path="org")
    with pytest.raises(ModelError, match="not found"):
        call(engine, LD.DiffusersLoader, runtime, model_path="../../etc")


def test_loaders_need_the_services(engine: Engine) -> None:
    from core.errors import EngineError
    from core.runtime import NodeRuntime

    bare = NodeRuntime(node_id="9", class_type="CheckpointLoaderSimple")
    with pytest.raises(EngineError, match="needs the 'paths' service"):
        call(engine, LD.CheckpointLoaderSimple, bare, ckpt_name="sd15.safetensors")
