"""LoraLoader / LoraLoaderModelOnly, CLIPSetLastLayer and ModelSamplingDiscrete on the tiny sd15
model: they change what they should, only on clones, and strength 0 changes nothing."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from core.graph_builder import GraphBuilder
from execution.validate import validate_prompt
from nodes import model_patches as P
from nodes.latent import EmptyLatentImage
from nodes.sampling import KSampler
from tests.nodes.test_nodes_engine_fixtures import (  # noqa: F401 -- fixtures
    Engine,
    call,
    conditioning,
    engine_fixture,
    run_graph,
    session_engine_fixture,
)


@pytest.fixture
def sd15(engine: Engine) -> tuple[Any, Any]:
    model, clip, _ = engine.load("sd15")
    return model, clip


def sample(engine: Engine, model: Any, clip: Any, **options: Any) -> torch.Tensor:
    latent = call(engine, EmptyLatentImage, width=64, height=64, batch_size=1)[0]
    inputs = dict(seed=21, steps=2, cfg=4.0, sampler_name="euler", scheduler="normal", denoise=1.0)
    inputs.update(options)
    pos, neg = conditioning(engine, clip, "a lighthouse"), conditioning(engine, clip, "fog")
    return call(engine, KSampler, model=model, positive=pos, negative=neg, latent_image=latent, **inputs)[0]["samples"]


def lora(engine: Engine, model: Any, clip: Any, strength_model: float, strength_clip: float) -> tuple[Any, Any]:
    return call(engine, P.LoraLoader, model=model, clip=clip, lora_name="style.safetensors",
                strength_model=strength_model, strength_clip=strength_clip)  # fmt: skip


# -- LoRA -------------------------------------------------------------------------------------------------


def test_lora_changes_model_and_clip_and_leaves_the_originals(engine: Engine, sd15: tuple) -> None:
    model, clip = sd15
    reference = sample(engine, model, clip)
    reference_cond = conditioning(engine, clip, "a lighthouse")[0][0]
    new_model, new_clip = lora(engine, model, clip, 1.0, 1.0)
    assert new_model is not model and new_clip is not clip
    assert new_model.patches and new_clip.patches and not model.patches and not clip.patches
    assert not torch.allclose(sample(engine, new_model, clip), reference, atol=1e-3)
    assert not torch.allclose(conditioning(engine, new_clip, "a lighthouse")[0][0], reference_cond, atol=1e-4)
    # the shared weights are restored for the unpatched handles
    assert torch.equal(sample(engine, model, clip), reference)
    assert torch.equal(conditioning(engine, clip, "a lighthouse")[0][0], reference_cond)


def test_lora_strength_zero_changes_nothing(engine: Engine, sd15: tuple) -> None:
    model, clip = sd15
    same_model, same_clip = lora(engine, model, clip, 0.0, 0.0)
    assert same_model is model and same_clip is clip
    clip_only_model, clip_only = lora(engine, model, clip, 0.0, 1.0)
    assert clip_only_model is model and clip_only is not clip
    assert torch.equal(sample(engine, clip_only_model, clip), sample(engine, model, clip))


def test_lora_strength_scales_the_change(engine: Engine, sd15: tuple) -> None:
    model, clip = sd15
    half, _ = lora(engine, model, clip, 0.5, 0.0)
    full, _ = lora(engine, model, clip, 1.0, 0.0)
    (key, entries), *_ = half.patches.items()
    assert [s for _, s in entries] == [0.5] and [s for _, s in full.patches[key]] == [1.0]
    with half.loaded() as unet:
        halfway = unet.get_parameter(key).detach().clone()
    with full.loaded() as unet:
        whole = unet.get_parameter(key).detach().clone()
    with model.loaded() as unet:
        base = unet.get_parameter(key).detach().clone()
    assert torch.allclose(halfway - base, (whole - base) / 2, atol=1e-5)


def test_model_only_loader_is_the_model_half(engine: Engine, sd15: tuple) -> None:
    model, clip = sd15
    (only,) = call(engine, P.LoraLoaderModelOnly, model=model, lora_name="style.safetensors", strength_model=0.8)
    both, _ = lora(engine, model, clip, 0.8, 1.0)
    assert set(only.patches) == set(both.patches)
    assert torch.equal(sample(engine, only, clip), sample(engine, both, clip))


def test_lora_in_a_graph_and_a_missing_file(engine: Engine) -> None:
    graph = GraphBuilder(prefix="lora")
    ckpt = graph.node("CheckpointLoaderSimple", ckpt_name="sd15.safetensors")
    styled = graph.node("LoraLoader", model=ckpt.out(0), clip=ckpt.out(1), lora_name="style.safetensors",
                        strength_model=0.7, strength_clip=0.7)  # fmt: skip
    pos = graph.node("CLIPTextEncode", text="a boat", clip=styled.out(1))
    latent = graph.node("EmptyLatentImage", width=64, height=64, batch_size=1)
    sampled = graph.node("KSampler", model=styled.out(0), seed=1, steps=2, cfg=1.0, sampler_name="euler",
                         scheduler="simple", positive=pos.out(0), negative=pos.out(0), latent_image=latent.out(0),
                         denoise=1.0)  # fmt: skip
    graph.node("SaveLatent", samples=sampled.out(0), filename_prefix="lora/latent")
    result, _ = run_graph(engine, graph)
    assert result.success, result.error

    styled.set_input("lora_name", "missing.safetensors")
    checked = validate_prompt(graph.finalize(), engine.registry)
    errors = checked.node_errors[styled.id]["errors"]
    assert errors[0]["type"] == "value_not_in_list" and "lora_name" in errors[0]["details"]


# -- CLIP layer -------------------------------------------------------------------------------------------


def test_clip_set_last_layer_changes_the_conditioning(engine: Engine, sd15: tuple) -> None:
    _, clip = sd15
    last = conditioning(engine, clip, "a snowy hill")[0][0]
    (penultimate_clip,) = call(engine, P.CLIPSetLastLayer, clip=clip, stop_at_clip_layer=-2)
    assert penultimate_clip is not clip and clip.layer_idx is None
    skipped = conditioning(engine, penultimate_clip, "a snowy hill")[0][0]
    assert skipped.shape == last.shape and not torch.allclose(skipped, last, atol=1e-4)
    (explicit_last,) = call(engine, P.CLIPSetLastLayer, clip=clip, stop_at_clip_layer=-1)
    assert torch.allclose(conditioning(engine, explicit_last, "a snowy hill")[0][0], last, atol=1e-6)
    assert torch.equal(conditioning(engine, clip, "a snowy hill")[0][0], last)


# -- model sampling ---------------------------------------------------------------------------------------


def test_model_sampling_discrete_v_prediction(engine: Engine, sd15: tuple) -> None:
    model, clip = sd15
    (v_model,) = call(engine, P.ModelSamplingDiscrete, model=model, sampling="v_prediction", zsnr=False)
    assert v_model.model_sampling.prediction == "v_prediction" and model.model_sampling.prediction == "eps"
    assert not torch.allclose(sample(engine, v_model, clip), sample(engine, model, clip), atol=1e-3)
    (eps_model,) = call(engine, P.ModelSamplingDiscrete, model=model, sampling="eps", zsnr=False)
    assert torch.equal(sample(engine, eps_model, clip), sample(engine, model, clip))
    (zsnr,) = call(engine, P.ModelSamplingDiscrete, model=model, sampling="v_prediction", zsnr=True)
    assert zsnr.model_sampling.sigma_max.item() > 1000 > model.model_sampling.sigma_max.item()


def test_model_sampling_lcm_and_img_to_img(engine: Engine, sd15: tuple) -> None:
    model, clip = sd15
    (lcm,) = call(engine, P.ModelSamplingDiscrete, model=model, sampling="lcm", zsnr=False)
    ms, base = lcm.model_sampling, model.model_sampling
    assert len(ms.sigmas) == 50
    assert torch.equal(ms.sigmas[-1], base.sigmas[999]) and torch.equal(ms.sigmas[0], base.sigmas[19])
    assert ms.timestep(ms.sigmas[-1:]).item() == 999 and ms.timestep(ms.sigmas[:1]).item() == 19
    assert torch.allclose(ms.sigma(torch.tensor([999.0, 519.0])), base.sigmas[[999, 519]])
    # consistency boundary condition: at sigma_min the output is almost the (eps-)denoised input
    x, eps = torch.ones(1, 4, 2, 2), torch.zeros(1, 4, 2, 2)
    denoised = ms.calculate_denoised(ms.sigmas[:1], eps, x)
    assert torch.allclose(denoised, x, atol=1e-3) and not torch.equal(denoised, x)
    out = sample(engine, lcm, clip, sampler_name="lcm", steps=2, cfg=1.0)
    assert torch.isfinite(out).all()
    (i2i,) = call(engine, P.ModelSamplingDiscrete, model=model, sampling="img_to_img", zsnr=False)
    y = torch.randn(1, 4, 2, 2)
    assert torch.equal(i2i.model_sampling.calculate_input(torch.tensor([3.0]), y), y)
    assert torch.equal(i2i.model_sampling.calculate_denoised(torch.tensor([3.0]), y, x), y)
    (x0,) = call(engine, P.ModelSamplingDiscrete, model=model, sampling="x0", zsnr=False)
    assert torch.equal(x0.model_sampling.calculate_denoised(torch.tensor([3.0]), y, x), y)
