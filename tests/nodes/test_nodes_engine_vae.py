"""VAE nodes on the tiny sd15 VAE: decode/encode conventions, tiled variants, and the inpainting
preparation (grey masked pixels, grown noise masks, InpaintModelConditioning's extra inputs)."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from nodes import vae_nodes as V
from tests.nodes.test_nodes_engine_fixtures import Engine, call, engine_fixture, session_engine_fixture  # noqa: F401


@pytest.fixture
def vae(engine: Engine) -> Any:
    return engine.load("sd15")[2]


def image(height: int = 64, width: int = 64, seed: int = 0, channels: int = 3) -> torch.Tensor:
    return torch.rand(1, height, width, channels, generator=torch.Generator().manual_seed(seed))


def test_decode_and_encode_are_the_vae_handles(engine: Engine, vae: Any) -> None:
    z = torch.randn(2, 4, 6, 5, generator=torch.Generator().manual_seed(1))
    (pixels,) = call(engine, V.VAEDecode, samples={"samples": z}, vae=vae)
    assert pixels.shape == (2, 48, 40, 3) and pixels.min() >= 0 and pixels.max() <= 1
    assert torch.equal(pixels, vae.decode(z))
    rgba = image(70, 67, channels=4)
    (latent,) = call(engine, V.VAEEncode, pixels=rgba, vae=vae)
    assert set(latent) == {"samples"} and latent["samples"].shape == (1, 4, 8, 8)
    assert torch.equal(latent["samples"], vae.encode(rgba[..., :3]))


def test_missing_vae_is_a_clear_error(engine: Engine) -> None:
    with pytest.raises(ValueError, match="does not contain a VAE"):
        call(engine, V.VAEDecode, samples={"samples": torch.zeros(1, 4, 2, 2)}, vae=None)


def test_tiled_variants_match_the_plain_ones_in_shape(engine: Engine, vae: Any) -> None:
    z = torch.randn(1, 4, 24, 24, generator=torch.Generator().manual_seed(2))
    (tiled,) = call(engine, V.VAEDecodeTiled, samples={"samples": z}, vae=vae, tile_size=64, overlap=16,
                    temporal_size=64, temporal_overlap=8)  # fmt: skip
    assert tiled.shape == (1, 192, 192, 3)
    (latent,) = call(engine, V.VAEEncodeTiled, pixels=tiled, vae=vae, tile_size=64, overlap=16,
                     temporal_size=64, temporal_overlap=8)  # fmt: skip
    assert latent["samples"].shape == (1, 4, 24, 24)
    # one tile covering everything is the plain decode
    small = z[..., :8, :8]
    (whole,) = call(engine, V.VAEDecodeTiled, samples={"samples": small}, vae=vae, tile_size=512, overlap=64,
                    temporal_size=64, temporal_overlap=8)  # fmt: skip
    assert torch.allclose(whole, vae.decode(small), atol=1e-5)


def test_encode_for_inpaint_greys_the_mask_and_grows_it(engine: Engine, vae: Any) -> None:
    pixels = image(64, 64, seed=3)
    mask = torch.zeros(1, 64, 64)
    mask[:, 20:30, 20:30] = 1.0
    (latent,) = call(engine, V.VAEEncodeForInpaint, pixels=pixels, vae=vae, mask=mask, grow_mask_by=6)
    noise_mask = latent["noise_mask"]
    assert noise_mask.shape == (1, 1, 64, 64)
    rows = noise_mask[0, 0].amax(dim=1).nonzero().flatten()
    # a 6x6 box with padding 3 (cross-correlation) grows the square 2 px up/left and 3 px down/right
    assert (rows.min().item(), rows.max().item()) == (18, 32)
    assert noise_mask.sum() == 15 * 15 and set(noise_mask.unique().tolist()) == {0.0, 1.0}
    greyed = pixels.clone()
    greyed[:, 20:30, 20:30, :] = 0.5
    assert torch.allclose(latent["samples"], vae.encode(greyed), atol=1e-6)
    (exact,) = call(engine, V.VAEEncodeForInpaint, pixels=pixels, vae=vae, mask=mask, grow_mask_by=0)
    assert torch.equal(exact["noise_mask"][0, 0], mask[0])
    assert pixels[0, 25, 25, 0] != 0.5  # the input image is untouched


def test_encode_for_inpaint_crops_image_and_resizes_mask(engine: Engine, vae: Any) -> None:
    pixels = image(68, 75, seed=4)
    small_mask = torch.ones(1, 17, 19)  # any size: resized to the image first
    (latent,) = call(engine, V.VAEEncodeForInpaint, pixels=pixels, vae=vae, mask=small_mask, grow_mask_by=0)
    assert latent["samples"].shape == (1, 4, 8, 9)
    assert latent["noise_mask"].shape == (1, 1, 64, 72) and latent["noise_mask"].min() == 1


def test_inpaint_model_conditioning(engine: Engine, vae: Any) -> None:
    pixels = image(64, 64, seed=5)
    mask = torch.zeros(1, 64, 64)
    mask[:, :, 32:] = 1.0
    positive = [[torch.zeros(1, 77, 8), {"pooled_output": None}]]
    negative = [[torch.ones(1, 77, 8), {}]]
    pos, neg, latent = call(engine, V.InpaintModelConditioning, positive=positive, negative=negative, vae=vae,
                            pixels=pixels, mask=mask, noise_mask=True)  # fmt: skip
    greyed = pixels.clone()
    greyed[:, :, 32:, :] = 0.5
    for out, original in ((pos, positive), (neg, negative)):
        options = out[0][1]
        assert out[0][0] is original[0][0] and "concat_latent_image" not in original[0][1]
        assert torch.allclose(options["concat_latent_image"], vae.encode(greyed), atol=1e-6)
        assert options["concat_mask"].shape == (1, 1, 64, 64)
    assert torch.equal(latent["samples"], vae.encode(pixels))
    assert torch.equal(latent["noise_mask"], pos[0][1]["concat_mask"])
    _, _, plain = call(engine, V.InpaintModelConditioning, positive=positive, negative=negative, vae=vae,
                       pixels=pixels, mask=mask, noise_mask=False)  # fmt: skip
    assert "noise_mask" not in plain
