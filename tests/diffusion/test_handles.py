"""MODEL / CLIP / VAE handles: ComfyUI-compatible behaviour on tiny models."""

from __future__ import annotations

import math

import pytest
import torch

from core.errors import EngineError
from diffusion import lora
from diffusion.handles import ScaleWeight, blank_inpaint_latent, size_conditioning
from diffusion.lora_formats import Diff
from diffusion.memory import ModelManager, device_policy
from tests.utils.checkpoints import cached_checkpoint

UNET_KEY = "input_blocks.1.1.proj_in.weight"
CLIP_KEY = "text_model.encoder.layers.0.mlp.fc1.weight"


@pytest.fixture(scope="module")
def manager() -> ModelManager:
    return ModelManager(device_policy(device="cpu"))


@pytest.fixture(scope="module")
def sd15(manager: ModelManager):
    return manager.load_checkpoint(cached_checkpoint("sd15", tiny=True))


@pytest.fixture(scope="module")
def sdxl(manager: ModelManager):
    return manager.load_checkpoint(cached_checkpoint("sdxl", tiny=True))


def _inputs(model, seed: int = 0, batch: int = 1):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 4, 8, 8, generator=gen)
    context = torch.randn(batch, 77, model.unet_config.context_dim, generator=gen)
    return x, torch.full((batch,), 500.0), context


# -- MODEL ----------------------------------------------------------------------------------------


def test_apply_model_is_the_unet_on_the_given_inputs(sd15) -> None:
    model = sd15[0]
    x, t, context = _inputs(model)
    out = model.apply_model(x, t, c_crossattn=context)
    with torch.no_grad(), model.loaded() as unet:
        direct = unet(x, t, context)
    assert out.dtype == torch.float32 and out.shape == x.shape
    assert torch.equal(out, direct)


def test_model_surface(sd15) -> None:
    model = sd15[0]
    assert model.model_sampling.prediction == "eps"
    assert model.latent_format.scale_factor == 0.18215
    assert model.get_model_object("diffusion_model") is model.record.module
    assert model.get_model_object("latent_format") is model.latent_format
    assert model.model.diffusion_model is model.record.module
    assert model.model.model_sampling is model.model_sampling
    assert model.model_dtype() == torch.float32 and model.load_device.type == "cpu"
    assert model.get_model_object("time_embed").__class__.__name__ == "Sequential"
    assert torch.equal(model.process_latent_in(torch.ones(1)), torch.tensor([0.18215]))


def test_clone_shares_weights_but_not_settings(sd15) -> None:
    model = sd15[0]
    clone = model.clone()
    assert clone.record is model.record and clone.is_clone(model)
    clone.model_options["transformer_options"]["x"] = 1
    clone.add_object_patch("model_sampling", "patched")
    assert model.model_options == {"transformer_options": {}}
    assert clone.model_sampling == "patched" and model.model_sampling.prediction == "eps"


def test_patches_apply_to_the_clone_only_and_are_undone(sd15) -> None:
    model = sd15[0]
    with model.loaded() as unet:  # the weights as this (unpatched) handle sees them
        original = unet.get_parameter(UNET_KEY)
    before = original.detach().clone()
    x, t, context = _inputs(model)
    base = model.apply_model(x, t, c_crossattn=context)

    patched = model.clone()
    diff = torch.full_like(before, 0.5)
    taken = patched.add_patches({(lora.UNET, UNET_KEY): Diff(diff), ("clip_l", CLIP_KEY): Diff(diff)}, 0.5)
    assert taken == [(lora.UNET, UNET_KEY)]
    assert model.patches == {}
    with patched.loaded() as live:
        assert torch.allclose(live.get_parameter(UNET_KEY), before + 0.25)
    out = patched.apply_model(x, t, c_crossattn=context)
    assert not torch.allclose(out, base)

    again = model.apply_model(x, t, c_crossattn=context)  # the original restores the weights
    assert torch.equal(again, base)
    assert unet.get_parameter(UNET_KEY) is original and torch.equal(original, before)


def test_comfyui_style_string_keys_and_strength_model(sd15) -> None:
    model = sd15[0]
    with model.loaded() as unet:
        before = unet.get_parameter(UNET_KEY).detach().clone()
    clone = model.clone()
    delta = torch.ones_like(before)
    assert clone.add_patches({f"diffusion_model.{UNET_KEY}": delta}, strength_patch=2.0, strength_model=0.5)
    entries = clone.patches[UNET_KEY]
    assert isinstance(entries[0][0], ScaleWeight) and entries[0][1] == 0.5
    with clone.loaded() as live:
        assert torch.allclose(live.get_parameter(UNET_KEY), before * 0.5 + 2.0)
    assert clone.add_patches({"not.a.key": delta}) == []


def test_lora_file_through_the_key_map(sd15) -> None:
    model = sd15[0]
    with model.loaded() as unet:
        weight = unet.get_parameter(UNET_KEY).detach().clone()  # (32, 32, 1, 1) conv proj_in
    gen = torch.Generator().manual_seed(3)
    up, down = (
        torch.randn(weight.shape[0], 2, 1, 1, generator=gen),
        torch.randn(2, weight.shape[1], 1, 1, generator=gen),
    )
    stem = "lora_unet_input_blocks_1_1_proj_in"
    lora_sd = {f"{stem}.lora_up.weight": up, f"{stem}.lora_down.weight": down, f"{stem}.alpha": torch.tensor(1.0)}
    patches, unmatched = lora.load_lora(lora_sd, model.lora_key_map(), model.patch_shapes())
    assert unmatched == []
    clone = model.clone()
    clone.add_patches(patches, 0.8)
    expected = weight + 0.8 * 0.5 * (up.flatten(1) @ down.flatten(1)).reshape(weight.shape)
    with clone.loaded() as live:
        assert torch.allclose(live.get_parameter(UNET_KEY), expected, atol=1e-6)


def test_sdxl_adm_vector_is_pooled_plus_sinusoidal_size_embeddings(sdxl) -> None:
    model = sdxl[0]
    pooled = torch.randn(1, 1280)
    noise = torch.zeros(2, 4, 16, 12)  # defaults: height 128, width 96
    y = model.extra_conds({"pooled_output": pooled}, noise)["y"]
    assert y.shape == (1, 2816)
    assert torch.equal(y[:, :1280], pooled)
    values = [128, 96, 0, 0, 128, 96]
    half = 128
    freqs = [math.exp(-math.log(10000.0) * i / half) for i in range(half)]
    for n, v in enumerate(values):
        block = y[0, 1280 + 256 * n : 1280 + 256 * (n + 1)]
        expected = torch.tensor([math.cos(v * f) for f in freqs] + [math.sin(v * f) for f in freqs])
        assert torch.allclose(block, expected, atol=1e-4), n

    explicit = {
        "pooled_output": pooled,
        "width": 1024,
        "height": 768,
        "crop_w": 8,
        "crop_h": 16,
        "target_width": 512,
        "target_height": 256,
    }
    y2 = model.extra_conds(explicit, noise)["y"]
    assert torch.equal(y2, size_conditioning(pooled, [768, 1024, 16, 8, 256, 512]))


def test_refiner_adm_uses_the_aesthetic_score_by_prompt_type(manager: ModelManager) -> None:
    model = manager.load_checkpoint(cached_checkpoint("sdxl_refiner", tiny=True), want_vae=False, want_clip=False)[0]
    pooled = torch.randn(1, 1280)
    noise = torch.zeros(1, 4, 8, 8)
    positive = model.extra_conds({"pooled_output": pooled}, noise)["y"]
    negative = model.extra_conds({"pooled_output": pooled}, noise, prompt_type="negative")["y"]
    assert positive.shape == (1, 2560)
    assert torch.equal(positive, size_conditioning(pooled, [64, 64, 0, 0, 6.0]))
    assert torch.equal(negative, size_conditioning(pooled, [64, 64, 0, 0, 2.5]))
    scored = model.extra_conds({"pooled_output": pooled, "aesthetic_score": 9.0}, noise)["y"]
    assert torch.equal(scored, size_conditioning(pooled, [64, 64, 0, 0, 9.0]))


def test_sdxl_without_pooled_output_is_a_clear_error(sdxl) -> None:
    with pytest.raises(EngineError, match="pooled_output"):
        sdxl[0].extra_conds({}, torch.zeros(1, 4, 8, 8))


def test_sd15_has_no_extra_conds(sd15) -> None:
    assert sd15[0].extra_conds({"pooled_output": torch.zeros(1, 64)}, torch.zeros(1, 4, 8, 8)) == {}


def test_sdxl_end_to_end_model_call(sdxl) -> None:
    model, clip, _ = sdxl
    cond, extras = clip.encode_from_tokens_scheduled(clip.tokenize("a red fox"))[0]
    noise = torch.randn(1, 4, 8, 8)
    out = model.apply_model(noise, torch.tensor([10.0]), c_crossattn=cond, **model.extra_conds(extras, noise))
    assert out.shape == noise.shape and torch.isfinite(out).all()


def test_inpainting_model_gets_mask_and_masked_latent(manager: ModelManager, tmp_path) -> None:
    from dataclasses import replace

    from diffusion.families import get
    from diffusion.unet import UNetModel

    sd15_family = get("sd15")
    unet = UNetModel(replace(sd15_family.tiny().unet, in_channels=9)).requires_grad_(False)
    from diffusion.handles import ModelHandle

    model = ModelHandle(manager, manager.adopt("inpaint", "unet", unet), sd15_family)
    noise = torch.randn(2, 4, 8, 8)
    blank = model.extra_conds({}, noise)["c_concat"]
    assert blank.shape == (2, 5, 8, 8)
    assert torch.equal(blank[:, 0], torch.ones(2, 8, 8)) and torch.equal(blank[:, 1:], blank_inpaint_latent(noise))
    mask = torch.zeros(1, 16, 16)
    mask[:, :8] = 1.0
    image = torch.randn(1, 4, 8, 8)
    concat = model.extra_conds({"concat_mask": mask, "concat_latent_image": image}, noise)["c_concat"]
    assert torch.equal(concat[0, 0, :4], torch.ones(4, 8)) and torch.equal(concat[0, 0, 4:], torch.zeros(4, 8))
    assert torch.allclose(concat[1, 1:], image[0] * 0.18215)
    # the sampler's denoise mask (B, C, h, w) and latent (model space) when the cond has none
    denoise = torch.zeros(2, 4, 8, 8)
    denoise[:, :, :, :2] = 1.0
    latent = torch.randn(2, 4, 8, 8)
    from_sampler = model.extra_conds({}, noise, denoise_mask=denoise, latent_image=latent)["c_concat"]
    assert torch.equal(from_sampler[:, :1], denoise[:, :1]) and torch.equal(from_sampler[:, 1:], latent)
    out = model.apply_model(noise, torch.tensor([5.0, 5.0]), c_crossattn=torch.randn(2, 77, 64), c_concat=concat)
    assert out.shape == noise.shape


# -- CLIP -----------------------------------------------------------------------------------------


def test_clip_tokenize_and_encode_shapes(sd15) -> None:
    clip = sd15[1]
    tokens = clip.tokenize("a photograph of an astronaut riding a horse")
    assert list(tokens) == ["l"] and tokens["l"][0][0] == (49406, 1.0)
    conditioning = clip.encode_from_tokens_scheduled(tokens)
    assert len(conditioning) == 1
    cond, extras = conditioning[0]
    assert cond.shape == (1, 77, 64) and cond.device.type == "cpu"
    assert set(extras) == {"pooled_output"} and extras["pooled_output"].shape == (1, 64)
    assert torch.equal(clip.encode_from_tokens(tokens), cond)
    c2, pooled = clip.encode_from_tokens(tokens, return_pooled=True)
    assert torch.equal(c2, cond) and torch.equal(pooled, extras["pooled_output"])
    long = clip.tokenize(" ".join(["horse"] * 100))
    assert clip.encode_from_tokens(long).shape == (1, 154, 64)


def test_clip_layer_on_a_clone_only(sd15) -> None:
    clip = sd15[1]
    tokens = clip.tokenize("a cat")
    default = clip.encode_from_tokens(tokens)
    last = clip.clone()
    last.clip_layer(-1)
    assert torch.allclose(last.encode_from_tokens(tokens), default)  # SD1 default is the last layer
    skip = clip.clone()
    skip.clip_layer(-2)
    assert not torch.allclose(skip.encode_from_tokens(tokens), default)
    assert clip.layer_idx is None and torch.equal(clip.encode_from_tokens(tokens), default)


def test_sdxl_clip_concatenates_l_and_g_and_pools_from_g(sdxl) -> None:
    clip = sdxl[1]
    tokens = clip.tokenize("a red fox")
    assert sorted(tokens) == ["g", "l"]
    cond, pooled = clip.encode_from_tokens(tokens, return_pooled=True)
    assert cond.shape == (1, 77, 64 + 128) and pooled.shape == (1, 1280)


def test_clip_patches_on_a_clone_only(sd15) -> None:
    clip = sd15[1]
    tokens = clip.tokenize("a cat")
    base = clip.encode_from_tokens(tokens)
    patched = clip.clone()
    weight = clip.record.module.part("l").transformer.get_parameter(CLIP_KEY).detach().clone()
    taken = patched.add_patches(
        {("clip_l", CLIP_KEY): Diff(torch.ones_like(weight)), (lora.UNET, UNET_KEY): Diff(weight)}
    )
    assert taken == [("clip_l", CLIP_KEY)]
    assert not torch.allclose(patched.encode_from_tokens(tokens), base)
    assert torch.equal(clip.encode_from_tokens(tokens), base)
    path = f"clip_l.transformer.{CLIP_KEY}"
    assert clip.lora_key_map()["lora_te_text_model_encoder_layers_0_mlp_fc1"] == (lora.CLIP, path)
    assert clip.clone().add_patches({(lora.CLIP, path): Diff(torch.ones_like(weight))}) == [(lora.CLIP, path)]


# -- VAE ------------------------------------------------------------------------------------------


def test_vae_decode_is_the_image_convention(sd15) -> None:
    vae = sd15[2]
    z = torch.randn(2, 4, 6, 5)
    image = vae.decode(z)
    assert image.shape == (2, 48, 40, 3) and image.dtype == torch.float32 and image.device.type == "cpu"
    with torch.no_grad():
        raw = vae.first_stage_model.decode(z)
    assert torch.equal(image, torch.clamp((raw + 1) / 2, 0, 1).movedim(1, -1))
    assert (vae.downscale_ratio, vae.latent_channels) == (8, 4)


def test_vae_encode_crops_to_multiples_of_8_and_uses_rgb_only(sd15) -> None:
    vae = sd15[2]
    gen = torch.Generator().manual_seed(0)
    rgba = torch.rand(1, 70, 67, 4, generator=gen)
    latent = vae.encode(rgba)
    assert latent.shape == (1, 4, 8, 8)
    crop = rgba[:, 3:67, 1:65, :3]  # centred: (70 % 8) // 2 = 3, (67 % 8) // 2 = 1
    with torch.no_grad():
        expected = vae.first_stage_model.encode(crop.movedim(-1, 1) * 2 - 1)
    assert torch.equal(latent, expected)
    with pytest.raises(EngineError, match="too small"):
        vae.encode(torch.rand(1, 5, 5, 3))


def test_vae_tiled_variants_shapes(sd15) -> None:
    vae = sd15[2]
    z = torch.randn(1, 4, 12, 12)
    image = vae.decode_tiled(z, tile_x=8, tile_y=8, overlap=2)
    assert image.shape == (1, 96, 96, 3) and image.min() >= 0 and image.max() <= 1
    latent = vae.encode_tiled(image, tile_x=64, tile_y=64, overlap=16)
    assert latent.shape == (1, 4, 12, 12)


def test_vae_falls_back_to_tiles_when_out_of_memory(sd15, monkeypatch: pytest.MonkeyPatch) -> None:
    vae = sd15[2]
    module = vae.first_stage_model
    real = module.decode
    calls = []

    def oom_once(z):
        calls.append(tuple(z.shape))
        if len(calls) == 1:
            raise torch.OutOfMemoryError("simulated")
        return real(z)

    monkeypatch.setattr(module, "decode", oom_once)
    image = vae.decode(torch.randn(1, 4, 8, 8))
    assert image.shape == (1, 64, 64, 3)
    assert len(calls) > 1  # retried, through the tiled path


def test_weights_in_use_cannot_be_repatched_underneath(sd15) -> None:
    model = sd15[0]
    patched = model.clone()
    with model.loaded() as unet:
        patched.add_patches({(lora.UNET, UNET_KEY): Diff(torch.ones_like(unet.get_parameter(UNET_KEY)))})
        with pytest.raises(EngineError, match="in use with other patches"):
            patched.apply_model(*_inputs(model)[:2])
        model.apply_model(*_inputs(model))  # same patches (none): fine while in use


from tests.utils.shared import GOLDEN  # noqa: E402


@pytest.mark.slow
@pytest.mark.skipif(not (GOLDEN / "latents").is_dir(), reason="golden latents not available")
def test_golden_txt2img_and_vae_encode_through_the_handles() -> None:
    """The full-size random SD1.5 checkpoint through MODEL / CLIP / VAE reproduces ComfyUI's
    numbers (golden README: max|ours - ref| / max|ref| <= 1e-3)."""
    import numpy as np
    from PIL import Image
    from safetensors.torch import load_file

    from diffusion.sampling import ksampler

    model, clip, vae = ModelManager(device_policy(device="cpu")).load_checkpoint(
        cached_checkpoint("sd15", tiny=False, dtype=torch.float16)
    )
    positive = clip.encode_from_tokens_scheduled(clip.tokenize("a photograph of an astronaut riding a horse"))
    negative = clip.encode_from_tokens_scheduled(clip.tokenize("blurry, low quality"))
    latent = torch.zeros(1, 4, 16, 16)
    out = ksampler.sample(
        model, ksampler.prepare_noise(latent, 42), 4, 7.0, "euler", "normal", positive, negative, latent, seed=42
    )
    ref = load_file(GOLDEN / "latents" / "txt2img_euler_normal_10_0.latent.safetensors")["latent_tensor"]
    assert float((out - ref).abs().max() / ref.abs().max()) <= 1e-3

    pixels = np.asarray(Image.open(GOLDEN / "inputs" / "img2img_input.png").convert("RGB"), dtype=np.float32) / 255.0
    encoded = vae.encode(torch.from_numpy(pixels)[None])
    ref = load_file(GOLDEN / "latents" / "img2img_euler_normal_d06_13_0.latent.safetensors")["latent_tensor"]
    assert float((encoded - ref).abs().max() / ref.abs().max()) <= 1e-3
