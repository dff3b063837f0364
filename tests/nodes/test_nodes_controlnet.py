"""ControlNet nodes (nodes/controlnet.py): ComfyUI's node contract, the apply semantics, and a whole
ControlNet graph through the validator and the Executor on tiny random models."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from core.graph_builder import GraphBuilder
from core.paths import ModelPaths
from core.runtime import NodeRuntime, install_services
from diffusion.controlnet import ControlNet, T2IAdapter
from diffusion.memory import ModelManager, device_policy
from diffusion.sampling.ksampler import common_ksampler
from nodes import controlnet
from nodes.api import DeclarativeNode, Float, Input, Int, Node, NodeSpec, Output, String
from nodes.registry import NodeRegistry
from tests.harness import Runner
from tests.nodes.conftest import call_node
from tests.utils.checkpoints import write_random_checkpoint
from tests.utils.controlnets import adapter_config, write_random_adapter, write_random_controlnet

LOADER = DeclarativeNode(controlnet.ControlNetLoader)
DIFF_LOADER = DeclarativeNode(controlnet.DiffControlNetLoader)
APPLY = DeclarativeNode(controlnet.ControlNetApply)
ADVANCED = DeclarativeNode(controlnet.ControlNetApplyAdvanced)


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("models")
    write_random_controlnet(root / "controlnet" / "tiny_canny.safetensors", "sd15", layout="pth")
    write_random_controlnet(root / "controlnet" / "sub" / "tiny_diffusers.safetensors", "sd15", layout="diffusers")
    write_random_adapter(root / "t2i_adapter" / "tiny_adapter.safetensors", adapter_config())
    write_random_checkpoint(root / "checkpoints" / "tiny.safetensors", "sd15", tiny=True, dtype=torch.float32)
    return root


@pytest.fixture
def services(models_dir: Path) -> Iterator[dict[str, Any]]:
    found = {"paths": ModelPaths(models_dir), "models": ModelManager(device_policy(device="cpu"))}
    install_services(found)
    yield found
    install_services(None)


def runtime(services: dict[str, Any]) -> NodeRuntime:
    return NodeRuntime(node_id="7", class_type="test", services=services)


def _image(height: int = 64, width: int = 64, seed: int = 0) -> torch.Tensor:
    return torch.rand(1, height, width, 3, generator=torch.Generator().manual_seed(seed))


def _conditioning(seed: int, **options: Any) -> list:
    return [[torch.randn(1, 7, 64, generator=torch.Generator().manual_seed(seed)), {"pooled_output": None, **options}]]


# -- the node contract (spec §5.1) ------------------------------------------------------------------


def test_object_info_matches_comfyui(services: dict[str, Any]) -> None:
    registry = NodeRegistry()
    registry.add_declarative(controlnet.NODES)
    info = registry.object_info()
    loader = info["ControlNetLoader"]
    assert loader["display_name"] == "Load ControlNet Model" and loader["category"] == "loaders"
    names = loader["input"]["required"]["control_net_name"][0]
    assert names == ["sub/tiny_diffusers.safetensors", "tiny_adapter.safetensors", "tiny_canny.safetensors"]
    assert loader["output"] == ["CONTROL_NET"]
    diff = info["DiffControlNetLoader"]
    assert diff["display_name"] == "Load ControlNet Model (diff)"
    assert diff["input_order"]["required"] == ["model", "control_net_name"]
    old = info["ControlNetApply"]
    assert old["display_name"] == "Apply ControlNet (OLD)" and old.get("deprecated") is True
    assert old["input_order"]["required"] == ["conditioning", "control_net", "image", "strength"]
    assert old["input"]["required"]["strength"] == ["FLOAT", {"default": 1.0, "min": 0.0, "max": 10.0, "step": 0.01}]
    adv = info["ControlNetApplyAdvanced"]
    assert adv["display_name"] == "Apply ControlNet" and adv["category"] == "conditioning/controlnet"
    assert adv["input_order"] == {
        "required": ["positive", "negative", "control_net", "image", "strength", "start_percent", "end_percent"],
        "optional": ["vae"],
    }
    required = adv["input"]["required"]
    assert required["start_percent"] == ["FLOAT", {"default": 0.0, "min": 0.0, "max": 1.0, "step": 0.001}]
    assert required["end_percent"] == ["FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.001}]
    assert adv["input"]["optional"]["vae"] == ["VAE"]
    assert adv["output"] == ["CONDITIONING", "CONDITIONING"] and adv["output_name"] == ["positive", "negative"]


def test_names_are_empty_without_a_paths_service() -> None:
    install_services(None)
    assert controlnet._controlnet_names() == []


# -- loaders ------------------------------------------------------------------------------------------


def test_loader_reads_every_kind_from_the_controlnet_folders(services: dict[str, Any]) -> None:
    (cn,) = call_node(LOADER, {"control_net_name": "tiny_canny.safetensors"}, runtime(services))
    (dn,) = call_node(LOADER, {"control_net_name": "sub/tiny_diffusers.safetensors"}, runtime(services))
    (ad,) = call_node(LOADER, {"control_net_name": "tiny_adapter.safetensors"}, runtime(services))
    assert isinstance(cn, ControlNet) and isinstance(dn, ControlNet) and isinstance(ad, T2IAdapter)
    assert all(torch.equal(a, b) for a, b in zip(cn.control_model.state_dict().values(),
                                                dn.control_model.state_dict().values(), strict=True))  # fmt: skip
    assert cn.runner.record in services["models"].loaded_models()
    with pytest.raises(Exception, match="not found"):
        call_node(LOADER, {"control_net_name": "missing.safetensors"}, runtime(services))
    with pytest.raises(Exception, match="not found"):
        call_node(LOADER, {"control_net_name": "../checkpoints/tiny.safetensors"}, runtime(services))


def test_diff_loader_takes_the_model(services: dict[str, Any], models_dir: Path) -> None:
    model = services["models"].load_checkpoint(models_dir / "checkpoints" / "tiny.safetensors")[0]
    (cn,) = call_node(DIFF_LOADER, {"model": model, "control_net_name": "tiny_canny.safetensors"}, runtime(services))
    assert isinstance(cn, ControlNet)  # not a diff file: loaded as it is


# -- apply nodes ---------------------------------------------------------------------------------------


def _loaded(services: dict[str, Any]) -> ControlNet:
    return call_node(LOADER, {"control_net_name": "tiny_canny.safetensors"}, runtime(services))[0]


def test_advanced_apply_sets_one_shared_control_per_previous(services: dict[str, Any]) -> None:
    cn = _loaded(services)
    positive = _conditioning(1) + _conditioning(2)
    negative = _conditioning(3)
    image = _image()
    pos, neg = call_node(ADVANCED, {"positive": positive, "negative": negative, "control_net": cn, "image": image,
                                    "strength": 0.6, "start_percent": 0.1, "end_percent": 0.8})  # fmt: skip
    controls = {id(entry[1]["control"]) for entry in pos + neg}
    assert len(controls) == 1  # positive and negative share it, so they run as one batch
    control = pos[0][1]["control"]
    assert control is not cn and control.control_model is cn.control_model
    assert (control.strength, control.timestep_percent_range) == (0.6, (0.1, 0.8))
    assert torch.equal(control.cond_hint_original, image.movedim(-1, 1))
    assert pos[0][1]["control_apply_to_uncond"] is False and pos[0][0] is positive[0][0]
    assert "control" not in positive[0][1] and "control" not in negative[0][1]  # inputs untouched
    # Applying again stacks on top: the new control's previous is the old one.
    pos2, neg2 = call_node(ADVANCED, {"positive": pos, "negative": neg, "control_net": cn, "image": image,
                                      "strength": 1.0, "start_percent": 0.0, "end_percent": 1.0})  # fmt: skip
    assert pos2[0][1]["control"].previous_controlnet is control and neg2[0][1]["control"] is pos2[0][1]["control"]


def test_zero_strength_returns_the_inputs_unchanged(services: dict[str, Any]) -> None:
    cn = _loaded(services)
    positive, negative = _conditioning(1), _conditioning(2)
    image = _image()
    out = call_node(ADVANCED, {"positive": positive, "negative": negative, "control_net": cn, "image": image,
                               "strength": 0.0, "start_percent": 0.0, "end_percent": 1.0})  # fmt: skip
    assert out[0] is positive and out[1] is negative
    assert (
        call_node(APPLY, {"conditioning": positive, "control_net": cn, "image": image, "strength": 0.0})[0] is positive
    )


def test_old_apply_marks_the_control_for_the_uncond(services: dict[str, Any]) -> None:
    cn = _loaded(services)
    first = call_node(APPLY, {"conditioning": _conditioning(1), "control_net": cn, "image": _image(), "strength": 0.5})[
        0
    ]
    entry = first[0][1]
    assert entry["control_apply_to_uncond"] is True and entry["control"].strength == 0.5
    stacked = call_node(APPLY, {"conditioning": first, "control_net": cn, "image": _image(), "strength": 1.0})[0]
    assert stacked[0][1]["control"].previous_controlnet is entry["control"]


# -- a whole graph through validation and the executor ----------------------------------------------------


class _Checkpoint(Node):
    spec = NodeSpec(id="TestTinyCheckpoint", inputs=(), outputs=(Output("MODEL"), Output("CLIP")))

    def run(self, ctx: NodeRuntime) -> tuple[Any, Any]:
        path = ctx.service("paths").resolve("checkpoints", "tiny.safetensors")
        model, clip, _vae = ctx.service("models").load_checkpoint(path)
        return (model, clip)


class _Encode(Node):
    spec = NodeSpec(
        id="TestEncode", inputs=(Input("clip", "CLIP"), String("text", "")), outputs=(Output("CONDITIONING"),)
    )

    def run(self, ctx: NodeRuntime, clip: Any, text: str) -> tuple[list]:
        return (clip.encode_from_tokens_scheduled(clip.tokenize(text)),)


class _Hint(Node):
    spec = NodeSpec(id="TestHint", inputs=(Int("seed", 0),), outputs=(Output("IMAGE"),))

    def run(self, ctx: NodeRuntime, seed: int) -> tuple[torch.Tensor]:
        return (_image(72, 56, seed),)


class _Sample(Node):
    spec = NodeSpec(
        id="TestSample",
        output_node=True,
        inputs=(Input("model", "MODEL"), Input("positive", "CONDITIONING"), Input("negative", "CONDITIONING"),
                Float("cfg", 3.0)),
    )  # fmt: skip

    def run(self, ctx: NodeRuntime, model: Any, positive: list, negative: list, cfg: float) -> dict:
        latent = {"samples": torch.zeros(1, 4, 8, 8)}
        with torch.no_grad():
            out = common_ksampler(model, 5, 3, cfg, "euler", "normal", positive, negative, latent)["samples"]
        return {"ui": {"samples": [out]}}


def _graph(strength: float) -> tuple[GraphBuilder, Any]:
    g = GraphBuilder(prefix="cn")
    ckpt = g.node("TestTinyCheckpoint")
    pos = g.node("TestEncode", clip=ckpt.out(1), text="a house")
    neg = g.node("TestEncode", clip=ckpt.out(1), text="")
    cn = g.node("ControlNetLoader", control_net_name="tiny_canny.safetensors")
    apply = g.node("ControlNetApplyAdvanced", positive=pos.out(0), negative=neg.out(0), control_net=cn.out(0),
                   image=g.node("TestHint", seed=2).out(0), strength=strength, start_percent=0.0, end_percent=1.0)  # fmt: skip
    sample = g.node("TestSample", model=ckpt.out(0), positive=apply.out(0), negative=apply.out(1), cfg=3.0)
    return g, sample


def test_controlnet_graph_runs_through_the_executor(services: dict[str, Any]) -> None:
    registry = NodeRegistry()
    registry.add_declarative([*controlnet.NODES, _Checkpoint, _Encode, _Hint, _Sample])
    runner = Runner(registry=registry, services=services)
    results = {}
    for strength in (0.0, 1.0):
        graph, sample = _graph(strength)
        run = runner.run(graph)
        assert run.status == "success", run.error
        results[strength] = run.ui(sample)["samples"][0]
    assert torch.isfinite(results[1.0]).all()
    assert not torch.allclose(results[0.0], results[1.0])
    # Strength 0 is exactly the graph without a ControlNet.
    g = GraphBuilder(prefix="plain")
    ckpt = g.node("TestTinyCheckpoint")
    pos = g.node("TestEncode", clip=ckpt.out(1), text="a house")
    neg = g.node("TestEncode", clip=ckpt.out(1), text="")
    sample = g.node("TestSample", model=ckpt.out(0), positive=pos.out(0), negative=neg.out(0), cfg=3.0)
    assert torch.equal(runner.run(g).ui(sample)["samples"][0], results[0.0])


class _LatentOut(Node):
    spec = NodeSpec(id="TestLatentOut", output_node=True, inputs=(Input("samples", "LATENT"),))

    def run(self, ctx: NodeRuntime, samples: dict) -> dict:
        return {"ui": {"samples": [samples["samples"]]}}


ENGINE_NODES = ("nodes.loaders", "nodes.conditioning", "nodes.sampling", "nodes.latent")


@pytest.mark.skipif(
    any(importlib.util.find_spec(name) is None for name in ENGINE_NODES), reason="engine nodes not written yet"
)
def test_comfyui_controlnet_workflow_with_the_engine_nodes(services: dict[str, Any]) -> None:
    from nodes.builtin import builtin_registry

    registry = builtin_registry((*ENGINE_NODES, "nodes.controlnet"))
    registry.add_declarative([_Hint, _LatentOut])
    runner = Runner(registry=registry, services=services)

    def latent(strength: float) -> torch.Tensor:
        g = GraphBuilder(prefix=f"wf{int(strength * 10)}")
        ckpt = g.node("CheckpointLoaderSimple", ckpt_name="tiny.safetensors")
        pos = g.node("CLIPTextEncode", text="a house", clip=ckpt.out(1))
        neg = g.node("CLIPTextEncode", text="", clip=ckpt.out(1))
        cn = g.node("ControlNetLoader", control_net_name="tiny_canny.safetensors")
        apply = g.node("ControlNetApplyAdvanced", positive=pos.out(0), negative=neg.out(0), control_net=cn.out(0),
                       image=g.node("TestHint", seed=1).out(0), strength=strength, start_percent=0.0,
                       end_percent=1.0, vae=ckpt.out(2))  # fmt: skip
        empty = g.node("EmptyLatentImage", width=64, height=64, batch_size=1)
        ks = g.node("KSampler", model=ckpt.out(0), seed=3, steps=2, cfg=4.0, sampler_name="euler", scheduler="normal",
                    positive=apply.out(0), negative=apply.out(1), latent_image=empty.out(0), denoise=1.0)  # fmt: skip
        out = g.node("TestLatentOut", samples=ks.out(0))
        run = runner.run(g)
        assert run.status == "success", run.error
        return run.ui(out)["samples"][0]

    plain, controlled = latent(0.0), latent(1.0)
    assert torch.isfinite(controlled).all() and not torch.allclose(plain, controlled)
