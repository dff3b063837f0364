"""CheckpointLoader (with an LDM yaml), TAESD previews from a sampler run, and the split-file
loaders on real files: DualCLIPLoader over CLIP-L / CLIP-G cut out of the tiny SDXL checkpoint and
DiffusersLoader over a diffusers folder written from the tiny checkpoints. Every loader must give
the same conditioning and the same sample as the single-file checkpoint."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from core.config import Config
from core.errors import ModelError
from core.graph_builder import GraphBuilder
from core.paths import ModelPaths
from core.runtime import NodeRuntime, install_services
from diffusion import previews, taesd
from diffusion.clip_convert import open_clip_to_hf
from execution.events import NodePreview
from nodes import loaders as LD
from nodes import model_patches as P
from nodes.latent import EmptyLatentImage
from nodes.sampling import KSampler, preview_method, step_callback
from tests.diffusion.test_taesd import random_decoder_weights
from tests.nodes.test_nodes_engine_fixtures import (  # noqa: F401 -- fixtures
    Engine,
    call,
    conditioning,
    engine_fixture,
    run_graph,
    session_engine_fixture,
    txt2img_graph,
)
from tests.utils.checkpoints import write_diffusers_folder

V1_YAML = """\
model:
  base_learning_rate: 1.0e-04
  target: ldm.models.diffusion.ddpm.LatentDiffusion
  params:
    linear_start: 0.00085
    linear_end: 0.0120
    timesteps: 1000
    scale_factor: 0.18215
    unet_config:
      target: ldm.modules.diffusionmodules.openaimodel.UNetModel
      params:
        model_channels: 320
    cond_stage_config:
      target: ldm.modules.encoders.modules.FrozenCLIPEmbedder
"""
V_YAML = V1_YAML.replace("    timesteps: 1000\n", '    timesteps: 1000\n    parameterization: "v"\n')


def ksample(engine: Engine, model: Any, clip: Any, runtime: NodeRuntime | None = None, **options: Any) -> Any:
    """A 3-step euler sample of a fixed prompt (conditioning from `clip`)."""
    latent = call(engine, EmptyLatentImage, width=64, height=64, batch_size=1)[0]
    inputs = dict(seed=5, steps=3, cfg=5.0, sampler_name="euler", scheduler="normal", denoise=1.0)
    inputs.update(options)
    pos, neg = conditioning(engine, clip, "a red apple"), conditioning(engine, clip, "blurry")
    return call(engine, KSampler, runtime, model=model, positive=pos, negative=neg, latent_image=latent, **inputs)[0]


def assert_same_conditioning(a: list, b: list) -> None:
    assert torch.equal(a[0][0], b[0][0])
    assert torch.equal(a[0][1]["pooled_output"], b[0][1]["pooled_output"])


# -- CheckpointLoader -------------------------------------------------------------------------------


@pytest.fixture
def with_configs(engine: Engine, tmp_path: Path) -> dict[str, Any]:
    """The engine's services with a configs folder holding v1 and v-prediction yamls."""
    folder = tmp_path / "configs"
    folder.mkdir()
    (folder / "v1-inference.yaml").write_text(V1_YAML)
    (folder / "v-pred.yaml").write_text(V_YAML)
    services = {**engine.services, "paths": ModelPaths(engine.root / "models", extra={"configs": [folder]})}
    install_services(services)  # combo lists (and so validation) read the installed paths
    return services


def configs_folder(services: dict[str, Any]) -> Path:
    return services["paths"].folders("configs")[-1]


def test_checkpoint_loader_spec(engine: Engine, with_configs: dict[str, Any]) -> None:
    spec = LD.CheckpointLoader.spec
    assert (spec.id, spec.display_name, spec.category) == (
        "CheckpointLoader",
        "Load Checkpoint With Config (DEPRECATED)",
        "advanced/loaders",
    )
    assert spec.deprecated and [o.type for o in spec.outputs] == ["MODEL", "CLIP", "VAE"]
    assert "CheckpointLoader" in engine.registry
    paths = with_configs["paths"]
    assert paths.list("configs") == ["v-pred.yaml", "v1-inference.yaml"]


def test_eps_config_gives_the_checkpoints_model(engine: Engine, with_configs: dict[str, Any]) -> None:
    runtime = engine.runtime(**with_configs)
    model, clip, vae = call(engine, LD.CheckpointLoader, runtime, config_name="v1-inference.yaml",
                            ckpt_name="sd15.safetensors")  # fmt: skip
    simple_model, simple_clip, simple_vae = engine.load("sd15")
    assert model.record is simple_model.record and clip.record is simple_clip.record and vae.record is simple_vae.record
    assert model.model_sampling.prediction == "eps" and model.latent_format == simple_model.latent_format
    assert torch.equal(ksample(engine, model, clip)["samples"], ksample(engine, simple_model, simple_clip)["samples"])


def test_v_config_switches_to_v_prediction(engine: Engine, with_configs: dict[str, Any]) -> None:
    runtime = engine.runtime(**with_configs)
    model, clip, _ = call(engine, LD.CheckpointLoader, runtime, config_name="v-pred.yaml", ckpt_name="sd15.safetensors")
    simple_model, simple_clip, _ = engine.load("sd15")
    assert model.model_sampling.prediction == "v_prediction"
    assert simple_model.model_sampling.prediction == "eps"  # the cached model is not changed
    (patched,) = call(engine, P.ModelSamplingDiscrete, model=simple_model, sampling="v_prediction", zsnr=False)
    v_sample = ksample(engine, model, clip)["samples"]
    assert torch.equal(v_sample, ksample(engine, patched, simple_clip)["samples"])
    assert not torch.allclose(v_sample, ksample(engine, simple_model, simple_clip)["samples"])


def test_scale_factor_and_clip_layer_from_the_config(engine: Engine, with_configs: dict[str, Any]) -> None:
    text = V1_YAML.replace("scale_factor: 0.18215", "scale_factor: 0.2")
    text = text.replace("FrozenCLIPEmbedder\n", "FrozenCLIPEmbedder\n      params:\n        layer_idx: -2\n")
    (configs_folder(with_configs) / "custom.yaml").write_text(text)
    runtime = engine.runtime(**with_configs)
    model, clip, _ = call(engine, LD.CheckpointLoader, runtime, config_name="custom.yaml", ckpt_name="sd15.safetensors")
    simple_model, simple_clip, _ = engine.load("sd15")
    assert model.latent_format.scale_factor == 0.2 and simple_model.latent_format.scale_factor == 0.18215
    latent = torch.ones(1, 4, 2, 2)
    assert torch.allclose(model.process_latent_in(latent), latent * 0.2)
    (skipped,) = call(engine, P.CLIPSetLastLayer, clip=simple_clip, stop_at_clip_layer=-2)
    assert_same_conditioning(conditioning(engine, clip, "a lake"), conditioning(engine, skipped, "a lake"))
    default = conditioning(engine, simple_clip, "a lake")
    assert not torch.equal(conditioning(engine, clip, "a lake")[0][0], default[0][0])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("model: [unclosed\n", "is not valid YAML"),
        ("just a string\n", "has no model.params mapping"),
        ("model:\n  target: x\n", "has no model.params mapping"),
        ("model:\n  params:\n    parameterization: 3\n", "parameterization must be a string, not 3"),
        ("model:\n  params:\n    scale_factor: -1\n", "scale_factor must be a positive number, not -1"),
        (
            "model:\n  params:\n    cond_stage_config:\n      params:\n        layer_idx: last\n",
            "layer_idx must be an integer, not 'last'",
        ),
    ],
)
def test_unusable_configs_are_model_errors(
    engine: Engine, with_configs: dict[str, Any], text: str, message: str
) -> None:
    (configs_folder(with_configs) / "broken.yaml").write_text(text)
    runtime = engine.runtime(**with_configs)
    with pytest.raises(ModelError, match=f"config 'broken.yaml'.*{message}"):
        call(engine, LD.CheckpointLoader, runtime, config_name="broken.yaml", ckpt_name="sd15.safetensors")


def test_checkpoint_loader_in_a_graph(engine: Engine, with_configs: dict[str, Any]) -> None:
    graph = GraphBuilder(prefix="cfg")
    loader = graph.node("CheckpointLoader", config_name="v-pred.yaml", ckpt_name="sd15.safetensors")
    positive = graph.node("CLIPTextEncode", text="a boat", clip=loader.out(1))
    latent = graph.node("EmptyLatentImage", width=64, height=64, batch_size=1)
    sampler = graph.node("KSampler", model=loader.out(0), seed=1, steps=2, cfg=4.0, sampler_name="euler",
                         scheduler="normal", positive=positive.out(0), negative=positive.out(0),
                         latent_image=latent.out(0), denoise=1.0)  # fmt: skip
    decode = graph.node("VAEDecode", samples=sampler.out(0), vae=loader.out(2))
    graph.node("PreviewImage", images=decode.out(0))
    result, _ = run_graph(engine, graph, services=with_configs)
    assert result.success, result.error


# -- TAESD previews ----------------------------------------------------------------------------------


@dataclass
class PromptRuntime(NodeRuntime):
    """A runtime that carries the prompt's extra_data (the executor's does not, yet)."""

    extra_data: dict[str, Any] = field(default_factory=dict)


@pytest.fixture
def with_taesd(engine: Engine, tmp_path: Path) -> dict[str, Any]:
    """Services whose vae_approx folder holds a random SD1.x TAESD decoder; previews via TAESD."""
    previews.clear_decoder_cache()
    folder = tmp_path / "vae_approx"
    folder.mkdir()
    save_file(random_decoder_weights(seed=4), str(folder / "taesd_decoder.safetensors"))
    paths = ModelPaths(engine.root / "models", extra={"vae_approx": [folder]})
    config = Config(base_dir=engine.root, preview_method="taesd")
    return {**engine.services, "paths": paths, "config": config, "decoder": folder / "taesd_decoder.safetensors"}


def test_a_sampler_run_emits_taesd_previews(engine: Engine, with_taesd: dict[str, Any]) -> None:
    services = {k: v for k, v in with_taesd.items() if k != "decoder"}
    graph, nodes = txt2img_graph("taesd", steps=3, size=64)
    result, events = run_graph(engine, graph, services=services)
    assert result.success, result.error
    shown = [e.image for e in events.of_type(NodePreview) if e.node_id == nodes["sampler"].id]
    assert shown and all(isinstance(i, Image.Image) and i.size == (64, 64) for i in shown)  # 8x the 8x8 latent
    small = {**services, "config": Config(base_dir=engine.root, preview_method="auto", preview_size=24)}
    graph2, nodes2 = txt2img_graph("taesd-small", steps=2, size=64, seed=8)
    _, events2 = run_graph(engine, graph2, services=small)
    assert {e.image.size for e in events2.of_type(NodePreview) if e.node_id == nodes2["sampler"].id} == {(24, 24)}


def test_the_last_preview_decodes_the_final_estimate(engine: Engine, with_taesd: dict[str, Any]) -> None:
    seen: list[Any] = []
    services = {k: v for k, v in with_taesd.items() if k != "decoder"}
    runtime = NodeRuntime(node_id="7", class_type="KSampler", services=services,
                          report_progress=lambda value, total, preview: seen.append(preview))  # fmt: skip
    model, clip, _ = engine.load("sd15")
    out = ksample(engine, model, clip, runtime)["samples"]
    assert len(seen) == 3 and seen[-1] is not None
    # euler's last step lands on the denoised estimate; the sampler returns it / scale_factor
    decoder = taesd.load_decoder(with_taesd["decoder"])
    expected = previews.to_image(decoder.decode(model.process_latent_in(out))[0].movedim(0, -1))
    diff = torch.tensor(list(seen[-1].tobytes())) - torch.tensor(list(expected.tobytes()))
    assert diff.abs().max().item() <= 1


def test_the_prompts_preview_method_overrides_the_flag(engine: Engine, with_taesd: dict[str, Any]) -> None:
    services = {k: v for k, v in with_taesd.items() if k != "decoder"}
    model, _, _ = engine.load("sd15")
    x0 = torch.zeros(1, 4, 8, 8)

    def preview_size(extra: dict[str, Any]) -> Any:
        seen: list[Any] = []
        runtime = PromptRuntime(node_id="3", class_type="KSampler", services=services, extra_data=extra,
                                report_progress=lambda value, total, preview: seen.append(preview))  # fmt: skip
        step_callback(runtime, model)(0, x0, x0, 1)
        return None if seen[-1] is None else seen[-1].size

    assert preview_method(PromptRuntime(node_id="3", class_type="K", services=services)) == "taesd"
    assert preview_size({}) == (64, 64)
    assert preview_size({"preview_method": "default"}) == (64, 64)
    assert preview_size({"preview_method": "latent2rgb"}) == (8, 8)
    assert preview_size({"preview_method": "none"}) is None


# -- DualCLIPLoader --------------------------------------------------------------------------------


def extract(source: Path, prefix: str, target: Path, *, to_hf: bool = False) -> Path:
    with safe_open(str(source), framework="pt") as handle:
        tensors = {key[len(prefix) :]: handle.get_tensor(key) for key in handle.keys() if key.startswith(prefix)}  # noqa: SIM118
    if to_hf:
        tensors = open_clip_to_hf(tensors)
    target.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(target))
    return target


@pytest.fixture
def sdxl_encoders(engine: Engine, tmp_path: Path) -> dict[str, Any]:
    """clip_l and clip_g of the tiny SDXL checkpoint as text encoder files (clip_g also in hf layout)."""
    source = engine.root / "models" / "checkpoints" / "sdxl.safetensors"
    folder = tmp_path / "text_encoders"
    extract(source, "conditioner.embedders.0.transformer.", folder / "clip_l.safetensors")
    extract(source, "conditioner.embedders.1.model.", folder / "clip_g.safetensors")
    extract(source, "conditioner.embedders.1.model.", folder / "clip_g_hf.safetensors", to_hf=True)
    return {**engine.services, "paths": ModelPaths(tmp_path)}


@pytest.mark.parametrize(
    ("first", "second"),
    [("clip_l", "clip_g"), ("clip_g", "clip_l"), ("clip_l", "clip_g_hf")],
)
def test_dual_clip_loader_matches_the_checkpoint(
    engine: Engine, sdxl_encoders: dict[str, Any], first: str, second: str
) -> None:
    runtime = engine.runtime(**sdxl_encoders)
    (clip,) = call(engine, LD.DualCLIPLoader, runtime, clip_name1=f"{first}.safetensors",
                   clip_name2=f"{second}.safetensors", type="sdxl")  # fmt: skip
    _, reference, _ = engine.load("sdxl")
    assert clip.family.name == "sdxl"
    for text in ("a castle on a hill", "(night:1.2), stars"):
        assert_same_conditioning(conditioning(engine, clip, text), conditioning(engine, reference, text))


def test_encoder_kinds_read_depth_before_width(tmp_path: Path) -> None:
    def fake(name: str, layers: int, width: int) -> Path:
        tensors = {
            "text_model.embeddings.token_embedding.weight": torch.zeros(10, width),
            "text_model.embeddings.position_embedding.weight": torch.zeros(77, width),
        }
        for i in range(layers):
            tensors[f"text_model.encoder.layers.{i}.mlp.fc1.weight"] = torch.zeros(2 * width, width)
        save_file(tensors, str(tmp_path / name))
        return tmp_path / name

    deep_narrow, shallow_wide = fake("deep.safetensors", 32, 8), fake("shallow.safetensors", 12, 16)
    assert LD.encoder_kinds([shallow_wide, deep_narrow], "sdxl") == ["clip_l", "clip_g"]
    # depth tells clip_h from clip_l: the pair is returned as it is (the loader then refuses it)
    assert LD.encoder_kinds([fake("h.safetensors", 24, 8), shallow_wide], "sdxl") == ["clip_h", "clip_l"]
    two_shallow = fake("shallow_narrow.safetensors", 2, 8)
    assert LD.encoder_kinds([shallow_wide, two_shallow], "sdxl") == ["clip_g", "clip_l"]
    assert LD.encoder_kinds([two_shallow, shallow_wide], "sdxl") == ["clip_l", "clip_g"]
    assert LD.encoder_kinds([shallow_wide], "sdxl") is None
    assert LD.encoder_kinds([shallow_wide, deep_narrow], "stable_diffusion") is None
    torch.save({}, tmp_path / "pickled.pth")
    assert LD.encoder_kinds([tmp_path / "pickled.pth", deep_narrow], "sdxl") is None  # never loaded whole here
    (tmp_path / "empty.safetensors").write_bytes(b"")
    assert LD.encoder_kinds([tmp_path / "empty.safetensors", deep_narrow], "sdxl") is None


# -- DiffusersLoader -------------------------------------------------------------------------------


@pytest.fixture
def diffusers_models(engine: Engine, tmp_path: Path) -> dict[str, Any]:
    """models/diffusers/org/tiny-<family>/ written from the tiny single-file checkpoints."""
    for family in ("sd15", "sdxl"):
        sd = load_file(str(engine.root / "models" / "checkpoints" / f"{family}.safetensors"))
        write_diffusers_folder(tmp_path / "models" / "diffusers" / "org" / f"tiny-{family}", family, sd)
    return {**engine.services, "paths": ModelPaths(tmp_path / "models")}


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
def test_diffusers_loader_matches_the_checkpoint(engine: Engine, diffusers_models: dict[str, Any], family: str) -> None:
    runtime = engine.runtime(**diffusers_models)
    install_services(diffusers_models)  # the combo list reads the installed paths
    assert LD.diffusers_folders() == ["org/tiny-sd15", "org/tiny-sdxl"]
    model, clip, vae = call(engine, LD.DiffusersLoader, runtime, model_path=f"org/tiny-{family}")
    ref_model, ref_clip, ref_vae = engine.load(family)
    assert model.family.name == family and model.record is not ref_model.record
    assert_same_conditioning(conditioning(engine, clip, "a red apple"), conditioning(engine, ref_clip, "a red apple"))
    sample = ksample(engine, model, clip)["samples"]
    assert torch.equal(sample, ksample(engine, ref_model, ref_clip)["samples"])
    assert torch.equal(vae.decode(sample), ref_vae.decode(sample))
