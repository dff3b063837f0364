"""txt2img through the real validator and Executor with tiny sd15 and sdxl checkpoints; KSampler,
KSamplerAdvanced and the custom-sampling nodes against the engine they wrap; progress, previews and
interrupts from inside a sampler run."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from PIL import Image

from core.config import Config
from diffusion.sampling import ksampler
from execution.events import ExecutionInterrupted, NodePreview, NodeProgress
from execution.interrupt import InterruptFlag
from nodes import custom_sampling as cs
from nodes.latent import EmptyLatentImage, LatentFromBatch
from nodes.sampling import KSampler, KSamplerAdvanced
from tests.nodes.test_nodes_engine_fixtures import (  # noqa: F401 -- fixtures
    Engine,
    call,
    conditioning,
    engine_fixture,
    run_graph,
    session_engine_fixture,
    txt2img_graph,
)


def empty_latent(engine: Engine, size: int = 64, batch: int = 1) -> dict[str, Any]:
    return call(engine, EmptyLatentImage, width=size, height=size, batch_size=batch)[0]


def ksample(engine: Engine, model: Any, pos: Any, neg: Any, latent: dict, **options: Any) -> dict[str, Any]:
    inputs = dict(seed=11, steps=3, cfg=5.0, sampler_name="euler", scheduler="normal", denoise=1.0)
    inputs.update(options)
    return call(engine, KSampler, model=model, positive=pos, negative=neg, latent_image=latent, **inputs)[0]


def advanced(engine: Engine, model: Any, pos: Any, neg: Any, latent: dict, **options: Any) -> dict[str, Any]:
    inputs = dict(add_noise="enable", noise_seed=11, steps=4, cfg=5.0, sampler_name="euler", scheduler="normal",
                  start_at_step=0, end_at_step=10000, return_with_leftover_noise="disable")  # fmt: skip
    inputs.update(options)
    return call(engine, KSamplerAdvanced, model=model, positive=pos, negative=neg, latent_image=latent, **inputs)[0]


@pytest.fixture
def sd15(engine: Engine) -> tuple[Any, Any, Any, list, list]:
    model, clip, vae = engine.load("sd15")
    return model, clip, vae, conditioning(engine, clip, "a red apple"), conditioning(engine, clip, "blurry")


# -- whole graphs ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
def test_txt2img_graph_runs_and_saves_an_image(engine: Engine, family: str) -> None:
    graph, nodes = txt2img_graph(f"t2i-{family}", f"{family}.safetensors", steps=3, size=64, batch=2)
    result, events = run_graph(engine, graph)
    assert result.success, result.error
    images = result.outputs[nodes["save"].id]["images"]
    assert [image["type"] for image in images] == ["output", "output"]
    saved = [Image.open(engine.root / "output" / image["subfolder"] / image["filename"]) for image in images]
    assert [img.size for img in saved] == [(64, 64), (64, 64)]
    assert saved[0].tobytes() != saved[1].tobytes()  # one noise draw for the batch: the items differ
    steps = [(e.value, e.max) for e in events.of_type(NodeProgress) if e.node_id == nodes["sampler"].id]
    assert steps == [(1, 3), (2, 3), (3, 3)]


def test_graph_result_is_the_engine_result(engine: Engine, sd15: tuple) -> None:
    """The KSampler node adds nothing to the engine's numbers: same seed, same latent."""
    model, _, _, pos, neg = sd15
    latent = empty_latent(engine)
    out = ksample(
        engine, model, pos, neg, latent, seed=5, steps=3, cfg=5.0, sampler_name="dpmpp_2m", scheduler="karras"
    )
    direct = ksampler.sample(model, None, 3, 5.0, "dpmpp_2m", "karras", pos, neg, latent["samples"], seed=5)
    assert torch.equal(out["samples"], direct)
    other = ksample(engine, model, pos, neg, latent, seed=6, steps=3, sampler_name="dpmpp_2m", scheduler="karras")
    assert not torch.allclose(other["samples"], out["samples"])
    assert latent["samples"].abs().sum() == 0  # the input LATENT is untouched


def test_same_prompt_twice_is_cached_and_a_new_seed_reruns(engine: Engine) -> None:
    graph, nodes = txt2img_graph("cache", seed=1, steps=2)
    from execution.cache import make_cache
    from execution.executor import Executor
    from execution.validate import validate_prompt

    executor = Executor(engine.registry, make_cache(), engine.services)
    first = validate_prompt(graph.finalize(), engine.registry)
    executor.execute(first.prompt, "a", first.outputs)
    again = executor.execute(first.prompt, "b", first.outputs)
    assert nodes["sampler"].id in again.cached and nodes["ckpt"].id in again.cached
    nodes["sampler"].set_input("seed", 2)
    changed = validate_prompt(graph.finalize(), engine.registry)
    third = executor.execute(changed.prompt, "c", changed.outputs)
    assert nodes["sampler"].id in third.ran and nodes["ckpt"].id in third.cached


# -- KSampler / KSamplerAdvanced ---------------------------------------------------------------------------


def test_img2img_denoise_keeps_the_input_closer(engine: Engine, sd15: tuple) -> None:
    model, _, _, pos, neg = sd15
    gen = torch.Generator().manual_seed(0)
    start = {"samples": torch.randn(1, 4, 8, 8, generator=gen)}
    light = ksample(engine, model, pos, neg, start, denoise=0.3, steps=4)["samples"]
    full = ksample(engine, model, pos, neg, start, denoise=1.0, steps=4)["samples"]
    assert (light - start["samples"]).abs().mean() < (full - start["samples"]).abs().mean()
    nothing = ksample(engine, model, pos, neg, start, denoise=0.0)["samples"]
    assert torch.equal(nothing, start["samples"])


def test_ksampler_advanced_split_equals_one_run(engine: Engine, sd15: tuple) -> None:
    """Base/refiner style: steps 0-2 with leftover noise, then 2-4 without adding noise, equals the
    full run (euler is deterministic); forcing full denoise at step 2 does not."""
    model, _, _, pos, neg = sd15
    latent = empty_latent(engine)
    full = advanced(engine, model, pos, neg, latent)["samples"]
    first = advanced(engine, model, pos, neg, latent, end_at_step=2, return_with_leftover_noise="enable")
    second = advanced(engine, model, pos, neg, first, add_noise="disable", start_at_step=2)["samples"]
    assert torch.allclose(second, full, atol=1e-4, rtol=1e-4)
    finished_early = advanced(engine, model, pos, neg, latent, end_at_step=2)["samples"]
    assert not torch.allclose(finished_early, first["samples"], atol=1e-3)
    assert torch.equal(advanced(engine, model, pos, neg, latent)["samples"], full)  # deterministic
    untouched = advanced(engine, model, pos, neg, first, start_at_step=4)
    assert torch.equal(untouched["samples"], first["samples"])


def test_ksampler_advanced_with_defaults_is_ksampler(engine: Engine, sd15: tuple) -> None:
    model, _, _, pos, neg = sd15
    latent = empty_latent(engine)
    plain = ksample(engine, model, pos, neg, latent, steps=4)["samples"]
    assert torch.equal(advanced(engine, model, pos, neg, latent, steps=4)["samples"], plain)


def test_latent_from_batch_keeps_the_items_noise(engine: Engine, sd15: tuple) -> None:
    model, _, _, pos, neg = sd15
    batch = empty_latent(engine, batch=3)
    whole = ksample(engine, model, pos, neg, batch, steps=2)["samples"]
    picked = call(engine, LatentFromBatch, samples=batch, batch_index=1, length=1)[0]
    assert picked["batch_index"] == [1]
    single = ksample(engine, model, pos, neg, picked, steps=2)["samples"]
    assert torch.allclose(single[0], whole[1], rtol=1e-4, atol=1e-3)
    assert not torch.allclose(single[0], whole[0], rtol=1e-2, atol=1e-1)


def test_noise_mask_keeps_the_unmasked_area(engine: Engine, sd15: tuple) -> None:
    model, _, _, pos, neg = sd15
    gen = torch.Generator().manual_seed(1)
    start = torch.randn(1, 4, 8, 8, generator=gen)
    mask = torch.zeros(1, 1, 64, 64)
    mask[..., :, 32:] = 1.0  # repaint the right half only
    out = ksample(engine, model, pos, neg, {"samples": start, "noise_mask": mask}, steps=3)["samples"]
    assert torch.allclose(out[..., :3], start[..., :3], atol=1e-4)
    assert not torch.allclose(out[..., 5:], start[..., 5:], atol=1e-2)


# -- custom sampling ---------------------------------------------------------------------------------------


def custom_pieces(engine: Engine, model: Any, steps: int = 3, sampler: str = "euler") -> tuple[Any, Any]:
    sampler_obj = call(engine, cs.KSamplerSelect, sampler_name=sampler)[0]
    sigmas = call(engine, cs.BasicScheduler, model=model, scheduler="normal", steps=steps, denoise=1.0)[0]
    return sampler_obj, sigmas


@pytest.mark.parametrize("sampler", ["euler", "euler_ancestral"])
def test_custom_sampling_equals_ksampler(engine: Engine, sd15: tuple, sampler: str) -> None:
    model, _, _, pos, neg = sd15
    latent = empty_latent(engine)
    reference = ksample(engine, model, pos, neg, latent, seed=9, steps=3, cfg=4.0, sampler_name=sampler)["samples"]
    sampler_obj, sigmas = custom_pieces(engine, model, 3, sampler)
    out, denoised = call(engine, cs.SamplerCustom, model=model, add_noise=True, noise_seed=9, cfg=4.0, positive=pos,
                         negative=neg, sampler=sampler_obj, sigmas=sigmas, latent_image=latent)  # fmt: skip
    assert torch.equal(out["samples"], reference)
    assert denoised["samples"].shape == reference.shape and torch.isfinite(denoised["samples"]).all()

    noise = call(engine, cs.RandomNoise, noise_seed=9)[0]
    guider = call(engine, cs.CFGGuider, model=model, positive=pos, negative=neg, cfg=4.0)[0]
    adv_out, _ = call(engine, cs.SamplerCustomAdvanced, noise=noise, guider=guider, sampler=sampler_obj,
                      sigmas=sigmas, latent_image=latent)  # fmt: skip
    assert torch.equal(adv_out["samples"], reference)


def test_sampler_custom_without_noise_still_seeds_step_noise(engine: Engine, sd15: tuple) -> None:
    """add_noise off: no initial noise, but noise_seed still drives an ancestral sampler's steps."""
    model, _, _, pos, neg = sd15
    start = {"samples": torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(3))}
    sampler_obj, sigmas = custom_pieces(engine, model, 3, "euler_ancestral")

    def run(seed: int) -> torch.Tensor:
        return call(engine, cs.SamplerCustom, model=model, add_noise=False, noise_seed=seed, cfg=3.0, positive=pos,
                    negative=neg, sampler=sampler_obj, sigmas=sigmas, latent_image=start)[0]["samples"]  # fmt: skip

    assert torch.equal(run(1), run(1))
    assert not torch.allclose(run(1), run(2), atol=1e-3)


def test_split_sigmas_and_denoised_output(engine: Engine, sd15: tuple) -> None:
    model, _, _, pos, neg = sd15
    latent = empty_latent(engine)
    sampler_obj, sigmas = custom_pieces(engine, model, 4)
    high, low = call(engine, cs.SplitSigmas, sigmas=sigmas, step=2)
    assert high[-1] == low[0] and len(high) + len(low) == len(sigmas) + 1
    guider = call(engine, cs.CFGGuider, model=model, positive=pos, negative=neg, cfg=5.0)[0]
    noise = call(engine, cs.RandomNoise, noise_seed=4)[0]
    part, denoised = call(engine, cs.SamplerCustomAdvanced, noise=noise, guider=guider, sampler=sampler_obj,
                          sigmas=high, latent_image=latent)  # fmt: skip
    # stopped at a noisy sigma: the denoised estimate is not the (still noisy) sample
    assert not torch.allclose(part["samples"], denoised["samples"], atol=1e-3)
    rest = call(engine, cs.DisableNoise)[0]
    final, _ = call(engine, cs.SamplerCustomAdvanced, noise=rest, guider=guider, sampler=sampler_obj, sigmas=low,
                    latent_image=part)  # fmt: skip
    whole, _ = call(engine, cs.SamplerCustomAdvanced, noise=noise, guider=guider, sampler=sampler_obj,
                    sigmas=sigmas, latent_image=latent)  # fmt: skip
    assert torch.allclose(final["samples"], whole["samples"], atol=1e-4, rtol=1e-4)


def test_basic_guider_is_cfg_one_on_the_positive(engine: Engine, sd15: tuple) -> None:
    model, _, _, pos, neg = sd15
    latent = empty_latent(engine)
    sampler_obj, sigmas = custom_pieces(engine, model)
    noise = call(engine, cs.RandomNoise, noise_seed=2)[0]
    basic = call(engine, cs.BasicGuider, model=model, conditioning=pos)[0]
    cfg1 = call(engine, cs.CFGGuider, model=model, positive=pos, negative=neg, cfg=1.0)[0]

    def run(guider: Any) -> torch.Tensor:
        return call(engine, cs.SamplerCustomAdvanced, noise=noise, guider=guider, sampler=sampler_obj,
                    sigmas=sigmas, latent_image=latent)[0]["samples"]  # fmt: skip

    assert torch.equal(run(basic), run(cfg1))


def test_schedulers(engine: Engine, sd15: tuple) -> None:
    model = sd15[0]
    karras = call(engine, cs.KarrasScheduler, steps=5, sigma_max=14.614642, sigma_min=0.0291675, rho=7.0)[0]
    expo = call(engine, cs.ExponentialScheduler, steps=5, sigma_max=10.0, sigma_min=0.1)[0]
    for sigmas, top, bottom in ((karras, 14.614642, 0.0291675), (expo, 10.0, 0.1)):
        assert len(sigmas) == 6 and sigmas[-1] == 0
        assert sigmas[0].item() == pytest.approx(top, rel=1e-5) and sigmas[-2].item() == pytest.approx(bottom, rel=1e-4)
        assert bool((sigmas[:-1] > sigmas[1:]).all())
    ms = model.model_sampling
    turbo = call(engine, cs.SDTurboScheduler, model=model, steps=1, denoise=1.0)[0]
    assert torch.equal(turbo, torch.cat([ms.sigma(torch.tensor([999])), torch.zeros(1)]))
    half = call(engine, cs.SDTurboScheduler, model=model, steps=2, denoise=0.5)[0]
    assert torch.equal(half[:2], ms.sigma(torch.tensor([499, 399])))
    full = call(engine, cs.BasicScheduler, model=model, scheduler="karras", steps=8, denoise=1.0)[0]
    part = call(engine, cs.BasicScheduler, model=model, scheduler="karras", steps=4, denoise=0.5)[0]
    assert torch.equal(part, full[-5:])
    assert len(call(engine, cs.BasicScheduler, model=model, scheduler="karras", steps=4, denoise=0.0)[0]) == 0


def test_custom_sampling_graph_through_the_executor(engine: Engine) -> None:
    from core.graph_builder import GraphBuilder

    graph = GraphBuilder(prefix="custom")
    ckpt = graph.node("CheckpointLoaderSimple", ckpt_name="sdxl.safetensors")
    pos = graph.node("CLIPTextEncodeSDXL", clip=ckpt.out(1), width=512, height=512, crop_w=0, crop_h=0,
                     target_width=512, target_height=512, text_g="a castle", text_l="a castle")  # fmt: skip
    neg = graph.node("CLIPTextEncode", text="", clip=ckpt.out(1))
    guider = graph.node("CFGGuider", model=ckpt.out(0), positive=pos.out(0), negative=neg.out(0), cfg=3.0)
    sigmas = graph.node("BasicScheduler", model=ckpt.out(0), scheduler="simple", steps=2, denoise=1.0)
    noise = graph.node("RandomNoise", noise_seed=1)
    select = graph.node("KSamplerSelect", sampler_name="dpmpp_2m")
    empty = graph.node("EmptyLatentImage", width=64, height=64, batch_size=1)
    sampler = graph.node("SamplerCustomAdvanced", noise=noise.out(0), guider=guider.out(0), sampler=select.out(0),
                         sigmas=sigmas.out(0), latent_image=empty.out(0))  # fmt: skip
    decode = graph.node("VAEDecode", samples=sampler.out(1), vae=ckpt.out(2))
    graph.node("PreviewImage", images=decode.out(0))
    result, events = run_graph(engine, graph)
    assert result.success, result.error
    assert [e.value for e in events.of_type(NodeProgress) if e.node_id == sampler.id] == [1, 2]


# -- progress, previews, interrupts ------------------------------------------------------------------------


def test_previews_follow_the_preview_method(engine: Engine, sd15: tuple) -> None:
    graph, nodes = txt2img_graph("preview", steps=3)
    services = {**engine.services, "config": Config(base_dir=engine.root, preview_method="latent2rgb")}
    result, events = run_graph(engine, graph, services=services)
    assert result.success, result.error
    previews = [e for e in events.of_type(NodePreview) if e.node_id == nodes["sampler"].id]
    assert previews and isinstance(previews[-1].image, Image.Image)
    assert previews[-1].image.size == (8, 8)  # one pixel per latent pixel
    graph2, nodes2 = txt2img_graph("no-preview", steps=3, seed=99)
    _, quiet = run_graph(engine, graph2)  # the default method is "none"
    assert not quiet.of_type(NodePreview)


def test_interrupt_stops_the_sampler_mid_run(engine: Engine) -> None:
    graph, nodes = txt2img_graph("stop", steps=6, seed=123)
    flag = InterruptFlag()
    seen: list[float] = []

    def stop_after_two(event: Any) -> None:
        if isinstance(event, NodeProgress) and event.node_id == nodes["sampler"].id:
            seen.append(event.value)
            if event.value == 2:
                flag.request()

    result, events = run_graph(engine, graph, interrupt=flag, sink=stop_after_two)
    assert result.status == "interrupted"
    assert isinstance(result.error, ExecutionInterrupted)
    assert seen == [1, 2]  # stopped before the third step reported
    assert nodes["save"].id not in result.outputs
