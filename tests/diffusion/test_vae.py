"""AutoencoderKL: exact checkpoint layout (built on `meta`), tiny-model behaviour, tiling, and (with
the full random SD1.5 checkpoint present) ComfyUI's golden encode / decode."""

from __future__ import annotations

import hashlib

import pytest
import torch
from torch.nn import functional as F

from core.errors import ModelError
from diffusion.configs import VAEConfig
from diffusion.ops import SKIP_INIT, seeded_init_
from diffusion.vae import AutoencoderKL, _ramp, _tiled

# From `make_random_checkpoint.py --family sd15 --list` (first_stage_model.* lines; sdxl's are
# identical): key count, parameter count, sha256 of the sorted lines "key [d0, d1, ...]".
KL_F8_FACTS = (248, 83_653_863, "5c5821b036193b0effb3adf049e2c1c81c13c11351273652c09fab3be5aa1501")
KL_F8_SAMPLES = [
    ("encoder.conv_in.weight", (128, 3, 3, 3)),
    ("encoder.down.1.block.0.nin_shortcut.weight", (256, 128, 1, 1)),
    ("encoder.down.2.downsample.conv.weight", (512, 512, 3, 3)),
    ("encoder.down.3.block.1.conv2.weight", (512, 512, 3, 3)),
    ("encoder.mid.attn_1.q.weight", (512, 512, 1, 1)),
    ("encoder.mid.attn_1.proj_out.weight", (512, 512, 1, 1)),
    ("encoder.conv_out.weight", (8, 512, 3, 3)),
    ("quant_conv.weight", (8, 8, 1, 1)),
    ("post_quant_conv.weight", (4, 4, 1, 1)),
    ("decoder.conv_in.weight", (512, 4, 3, 3)),
    ("decoder.up.0.block.0.nin_shortcut.weight", (128, 256, 1, 1)),
    ("decoder.up.0.block.2.conv2.weight", (128, 128, 3, 3)),
    ("decoder.up.1.upsample.conv.weight", (256, 256, 3, 3)),
    ("decoder.up.3.upsample.conv.weight", (512, 512, 3, 3)),
    ("decoder.up.3.block.2.norm1.weight", (512,)),
    ("decoder.norm_out.weight", (128,)),
    ("decoder.conv_out.weight", (3, 128, 3, 3)),
]

TINY = VAEConfig(ch=8, ch_mult=(1, 2), num_res_blocks=1, norm_groups=4)  # f = 2


def _randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator("cpu").manual_seed(seed))


def _tiny(config: VAEConfig = TINY, seed: int = 0) -> AutoencoderKL:
    model = seeded_init_(AutoencoderKL(config), seed).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.copy_(_randn(*p.shape, seed=len(name)) * 0.1)
    return model


def test_full_size_layout_equals_checkpoint() -> None:
    shapes = {k: tuple(v.shape) for k, v in AutoencoderKL(VAEConfig(), device="meta").state_dict().items()}
    for key, shape in KL_F8_SAMPLES:
        assert shapes.get(key) == shape, key
    count, params, digest = KL_F8_FACTS
    assert len(shapes) == count
    assert sum(torch.Size(s).numel() for s in shapes.values()) == params
    text = "\n".join(f"{k} {list(v)}" for k, v in sorted(shapes.items()))
    assert hashlib.sha256(text.encode()).hexdigest() == digest
    # The lowest level neither downsamples nor (in the decoder) has an upsample at level 0.
    assert not any(k.startswith(("encoder.down.3.downsample", "decoder.up.0.upsample")) for k in shapes)


def test_encode_decode_shapes_and_determinism() -> None:
    model, x = _tiny(), _randn(2, 3, 16, 12, seed=1).clamp(-1, 1)
    with torch.no_grad():
        z = model.encode(x)
        img = model.decode(z)
    assert z.shape == (2, 4, 8, 6)
    assert img.shape == (2, 3, 16, 12)
    assert torch.isfinite(z).all() and torch.isfinite(img).all()
    with torch.no_grad():
        assert torch.equal(_tiny().encode(x), z)


def test_encode_returns_the_posterior_mean() -> None:
    model, x = _tiny(), _randn(1, 3, 8, 8, seed=2)
    with torch.no_grad():
        moments = model.quant_conv(model.encoder(x))
        z = model.encode(x)
    assert moments.shape[1] == 8
    torch.testing.assert_close(z, moments[:, :4])
    assert not torch.allclose(z, moments[:, 4:])


def test_decoder_block_order_goes_from_lowest_resolution_up() -> None:
    # With 3 levels, up.2 (lowest resolution) runs first and is the only one wide enough for the mid.
    model = AutoencoderKL(VAEConfig(ch=4, ch_mult=(1, 2, 4), num_res_blocks=1, norm_groups=2), device="meta")
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert shapes["decoder.up.2.block.0.conv1.weight"] == (16, 16, 3, 3)
    assert shapes["decoder.up.1.block.0.conv1.weight"] == (8, 16, 3, 3)
    assert shapes["decoder.up.0.block.0.conv1.weight"] == (4, 8, 3, 3)


def test_bf16_weights_return_the_input_dtype() -> None:
    model, z = _tiny(), _randn(1, 4, 6, 6, seed=3)
    with torch.no_grad():
        ref = model.decode(z)
        model.to(torch.bfloat16)
        out = model.decode(z)
    assert out.dtype == torch.float32
    assert (out - ref).abs().max() < 0.05 * ref.abs().max()


# -- tiling ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("passes", [1, 3])
def test_tile_blending_is_exact_for_a_local_function(passes: int) -> None:
    # A per-pixel function (nearest 8x upsample + channel mix) has no receptive field beyond
    # its pixel, so blended tiles must reproduce the one-piece result exactly.
    mix = _randn(3, 4, seed=4)

    def fn(t: torch.Tensor) -> torch.Tensor:
        return torch.einsum("oc,bchw->bohw", mix, F.interpolate(t, scale_factor=8, mode="nearest"))

    z = _randn(2, 4, 21, 30, seed=5)
    calls: list[tuple[int, int]] = []
    out = _tiled(fn, z, 8, 2, (8, 1), 3, passes, lambda done, total: calls.append((done, total)))
    torch.testing.assert_close(out, fn(z), rtol=1e-5, atol=1e-5)
    assert calls[-1][0] == calls[-1][1] == len(calls) > 2 * passes


def test_blend_weights_ramp_only_on_overlapping_sides() -> None:
    third = 1 / 3
    torch.testing.assert_close(_ramp(6, 3, True, False), torch.tensor([third, 2 * third, 1, 1, 1, 1]))
    torch.testing.assert_close(_ramp(6, 3, False, True), torch.tensor([1, 1, 1, 1, 2 * third, third]))
    torch.testing.assert_close(_ramp(6, 3, False, False), torch.ones(6))
    assert _ramp(4, 8, True, True).min() > 0  # never zero, even when the ramps overlap


def test_tiled_encode_blending_is_exact_for_a_local_function() -> None:
    def fn(t: torch.Tensor) -> torch.Tensor:  # 4x4 average pool: local, scale 1/4
        return F.avg_pool2d(t, 4)

    x = _randn(1, 3, 40, 56, seed=6)
    torch.testing.assert_close(_tiled(fn, x, 16, 4, (1, 4), 3, 3, None), fn(x), rtol=1e-5, atol=1e-5)


def test_single_tile_equals_plain_decode_and_encode() -> None:
    model = _tiny()
    z, x = _randn(1, 4, 10, 12, seed=7), _randn(1, 3, 20, 24, seed=8)
    with torch.no_grad():
        torch.testing.assert_close(model.decode_tiled(z, tile=64, overlap=8), model.decode(z))
        torch.testing.assert_close(model.encode_tiled(x, tile=64, overlap=8), model.encode(x))


def test_tiled_decode_approximates_plain_decode() -> None:
    # GroupNorm statistics, the mid attention and zero padding all see a tile instead of the whole
    # latent, so tiling is an approximation; it must stay close (ComfyUI's tiled VAE is too).
    model, z = _tiny(), _randn(1, 4, 64, 64, seed=9)
    with torch.no_grad():
        plain = model.decode(z)
        tiled = model.decode_tiled(z, tile=32, overlap=8)
    assert tiled.shape == plain.shape
    assert F.cosine_similarity(tiled.flatten(), plain.flatten(), dim=0) > 0.99
    assert (tiled - plain).abs().mean() < 0.15 * plain.abs().mean()


def test_tiled_encode_approximates_plain_encode() -> None:
    model, x = _tiny(), _randn(1, 3, 96, 64, seed=10)
    with torch.no_grad():
        plain = model.encode(x)
        tiled = model.encode_tiled(x, tile=48, overlap=8)
    assert tiled.shape == plain.shape == (1, 4, 48, 32)
    assert F.cosine_similarity(tiled.flatten(), plain.flatten(), dim=0) > 0.99


def test_tiled_progress_counts_every_tile_of_every_pass() -> None:
    model, z = _tiny(), _randn(2, 4, 20, 20, seed=11)
    seen: list[tuple[int, int]] = []
    with torch.no_grad():
        model.decode_tiled(z, tile=8, overlap=2, progress=lambda d, t: seen.append((d, t)))
    # Per item: 8x8 tiles start at 0, 6, 12 (3 x 3 = 9); 4x16 tiles: rows at 0, 2, ..., 14, 16
    # (9) x columns at 0, 4 (2) = 18; 16x4 the same transposed: 9 + 18 + 18 = 45.
    assert [d for d, _ in seen] == list(range(1, 2 * 45 + 1))
    assert {t for _, t in seen} == {2 * 45}


def test_tiled_input_errors_are_explained() -> None:
    model = _tiny()
    with pytest.raises(ModelError, match="multiples of 2"):
        model.encode_tiled(_randn(1, 3, 15, 16), tile=8, overlap=2)
    with pytest.raises(ModelError, match="passes must be 1 or 3"):
        model.decode_tiled(_randn(1, 4, 8, 8), tile=8, overlap=2, passes=2)
    # An overlap too large for the tile is capped at tile/4 rather than failing.
    with torch.no_grad():
        out = model.decode_tiled(_randn(1, 4, 12, 12, seed=12), tile=8, overlap=8)
    assert out.shape == (1, 3, 24, 24) and torch.isfinite(out).all()


def test_skip_init_vae_loads_a_state_dict() -> None:
    ref = _tiny()
    other = AutoencoderKL(TINY, operations=SKIP_INIT)
    other.load_state_dict(ref.state_dict(), strict=True)
    z = _randn(1, 4, 4, 4, seed=13)
    with torch.no_grad():
        torch.testing.assert_close(other.decode(z), ref.decode(z))


# -- parity with ComfyUI (needs the full-size random SD1.5 checkpoint) ---------------------------

from tests.utils.shared import GOLDEN, sd15_random_checkpoint  # noqa: E402


def _full_vae() -> AutoencoderKL:
    path = sd15_random_checkpoint()
    if path is None:
        pytest.skip("the golden folder (shared/golden) is not at hand")
    from safetensors import safe_open

    prefix = "first_stage_model."
    with safe_open(str(path), "pt") as f:
        weights = {k[len(prefix) :]: f.get_tensor(k).float() for k in f.keys() if k.startswith(prefix)}  # noqa: SIM118
    model = AutoencoderKL(VAEConfig(), operations=SKIP_INIT).eval()
    model.load_state_dict(weights, strict=True)
    return model


@pytest.mark.weights
@pytest.mark.slow
def test_golden_encode_matches_comfyui() -> None:
    import numpy as np
    from PIL import Image
    from safetensors.torch import load_file

    model = _full_vae()
    pixels = np.asarray(Image.open(GOLDEN / "inputs/img2img_input.png").convert("RGB"), dtype=np.float32) / 255.0
    x = torch.from_numpy(pixels)[None].movedim(-1, 1) * 2 - 1
    ref = load_file(str(GOLDEN / "latents/img2img_euler_normal_d06_13_0.latent.safetensors"))["latent_tensor"]
    with torch.no_grad():
        ours = model.encode(x)
    assert float((ours - ref).abs().max() / ref.abs().max()) <= 1e-4


@pytest.mark.weights
@pytest.mark.slow
def test_golden_decode_matches_comfyui_png() -> None:
    import numpy as np
    from PIL import Image
    from safetensors.torch import load_file

    model = _full_vae()
    z = load_file(str(GOLDEN / "latents/txt2img_euler_normal_10_0.latent.safetensors"))["latent_tensor"]
    with torch.no_grad():
        image = ((model.decode(z) + 1) / 2).clamp(0, 1)
    ours = (255.0 * image[0].movedim(0, -1)).numpy().astype(np.uint8)  # SaveImage truncates
    ref = np.asarray(Image.open(GOLDEN / "txt2img_euler_normal_9_0.png").convert("RGB"))
    diff = np.abs(ours.astype(int) - ref.astype(int))
    assert diff.max() <= 1 and (diff > 0).mean() < 0.01


def test_decode_splits_the_batch_then_tiles_when_memory_is_short(monkeypatch) -> None:
    from diffusion import vae as vae_module

    model, z = _tiny(), _randn(2, 4, 64, 64, seed=3)
    with torch.no_grad():
        plain = model.decode(z)
        one_item = vae_module.decode_bytes(128, 128, 4)
        calls = []
        real_tiled = model.decode_tiled
        monkeypatch.setattr(model, "decode_tiled", lambda *a, **k: calls.append(k) or real_tiled(*a, **k))
        # Room for one image, not two: the batch is decoded item by item, with the same numbers.
        monkeypatch.setattr(vae_module, "available_memory", lambda device: one_item + 1)
        torch.testing.assert_close(model.decode(z), plain)
        assert calls == []
        # Room for a quarter of one image: square tiles sized to fit, close to the plain decode.
        monkeypatch.setattr(vae_module, "available_memory", lambda device: one_item // 4)
        tiled = model.decode(z)
    assert len(calls) == 1 and calls[0]["tile"] < 64
    assert F.cosine_similarity(tiled.flatten(), plain.flatten(), dim=0) > 0.99
