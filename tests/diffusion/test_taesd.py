"""TAESD decoder (diffusion/taesd.py) and live previews (diffusion/previews.py): the released files'
key layout, loading, what the decoder computes (against a functional re-implementation written
from the layer list), latent2rgb, the preview image conversion and the method selection rules."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch.nn import functional as F

from core.errors import ModelError
from core.paths import ModelPaths
from diffusion import previews, taesd
from diffusion.families.base import SD15_LATENT, SDXL_LATENT

BLOCKS = (3, 4, 5, 8, 9, 10, 13, 14, 15, 18)
UPSAMPLE_CONVS = (7, 12, 17)


def layout(latent_channels: int = 4) -> dict[str, tuple[int, ...]]:
    """The keys and shapes of the released taesd_decoder / taesdxl_decoder files, written out."""
    shapes: dict[str, tuple[int, ...]] = {"1.weight": (64, latent_channels, 3, 3), "1.bias": (64,)}
    for block in BLOCKS:
        for conv in (0, 2, 4):
            shapes[f"{block}.conv.{conv}.weight"] = (64, 64, 3, 3)
            shapes[f"{block}.conv.{conv}.bias"] = (64,)
    for index in UPSAMPLE_CONVS:
        shapes[f"{index}.weight"] = (64, 64, 3, 3)
    shapes["19.weight"] = (3, 64, 3, 3)
    shapes["19.bias"] = (3,)
    return shapes


def random_decoder_weights(latent_channels: int = 4, seed: int = 0) -> dict[str, torch.Tensor]:
    """Seeded weights scaled by 1/sqrt(fan_in) (activations stay O(1) through 30 convolutions)."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for key, shape in layout(latent_channels).items():
        if key.endswith(".bias"):
            out[key] = torch.randn(shape, generator=gen) * 0.1
        else:
            fan_in = shape[1] * shape[2] * shape[3]
            out[key] = torch.randn(shape, generator=gen) / fan_in**0.5
    return out


def reference_decode(weights: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """The decoder written functionally from the TAESD layer list (independent of the module)."""

    def conv(h: torch.Tensor, index: int | str) -> torch.Tensor:
        return F.conv2d(h, weights[f"{index}.weight"], weights.get(f"{index}.bias"), padding=1)

    def block(h: torch.Tensor, index: int) -> torch.Tensor:
        y = F.relu(conv(h, f"{index}.conv.0"))
        y = F.relu(conv(y, f"{index}.conv.2"))
        return F.relu(conv(y, f"{index}.conv.4") + h)

    h = F.relu(conv(torch.tanh(x / 3) * 3, 1))
    for stage in range(3):
        for index in BLOCKS[3 * stage : 3 * stage + 3]:
            h = block(h, index)
        h = conv(F.interpolate(h, scale_factor=2, mode="nearest"), UPSAMPLE_CONVS[stage])
    return conv(block(h, 18), 19)


@pytest.fixture
def weights() -> dict[str, torch.Tensor]:
    return random_decoder_weights()


def write_decoder(folder: Path, name: str, tensors: dict[str, torch.Tensor]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    if path.suffix == ".safetensors":
        save_file(tensors, str(path))
    else:
        torch.save(tensors, path)
    return path


# -- the decoder ----------------------------------------------------------------------------------


def test_module_keys_are_the_released_layout() -> None:
    module = taesd.TAESDDecoder()
    assert {k: tuple(v.shape) for k, v in module.state_dict().items()} == layout()
    assert {k: tuple(v.shape) for k, v in taesd.TAESDDecoder(16).state_dict().items()} == layout(16)


def test_decoder_computes_the_taesd_layers(weights: dict[str, torch.Tensor]) -> None:
    decoder = taesd.decoder_from_state_dict(weights)
    x = torch.randn(2, 4, 5, 7, generator=torch.Generator().manual_seed(1)) * 2
    with torch.no_grad():
        raw = decoder(x)
        out = decoder.decode(x)
    assert raw.shape == (2, 3, 40, 56)  # 8x upscale, 3 channels
    torch.testing.assert_close(raw, reference_decode(weights, x), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out, (raw - 0.5) * 2)
    assert not any(p.requires_grad for p in decoder.parameters())


@pytest.mark.parametrize("name", ["taesd_decoder.safetensors", "taesd_decoder.pth"])
def test_decoder_files_load(weights: dict[str, torch.Tensor], tmp_path: Path, name: str) -> None:
    path = write_decoder(tmp_path, name, weights)
    decoder = taesd.load_decoder(path)
    assert decoder.latent_channels == 4
    for key, value in decoder.state_dict().items():
        assert torch.equal(value, weights[key]), key


def test_latent_channels_come_from_the_weights(tmp_path: Path) -> None:
    path = write_decoder(tmp_path, "taef1_decoder.safetensors", random_decoder_weights(16))
    decoder = taesd.load_decoder(path)
    assert decoder.latent_channels == 16
    assert decoder.decode(torch.zeros(1, 16, 2, 2)).shape == (1, 3, 16, 16)
    with pytest.raises(ModelError, match=r"expects latents of shape \(B, 16, h, w\)"):
        decoder.decode(torch.zeros(1, 4, 2, 2))


def test_broken_decoder_files_are_model_errors(weights: dict[str, torch.Tensor], tmp_path: Path) -> None:
    missing = {k: v for k, v in weights.items() if k != "9.conv.2.bias"}
    with pytest.raises(ModelError, match=r"bad\.safetensors: .*missing: 9\.conv\.2\.bias"):
        taesd.load_decoder(write_decoder(tmp_path, "bad.safetensors", missing))
    with pytest.raises(ModelError, match="not a TAESD decoder: no key '1.weight'"):
        taesd.decoder_from_state_dict({"encoder.weight": torch.zeros(1)})
    with pytest.raises(ModelError, match=r"'1\.weight' has shape \[32, 4, 3, 3\]"):
        taesd.decoder_from_state_dict({**weights, "1.weight": torch.zeros(32, 4, 3, 3)})


# -- images ---------------------------------------------------------------------------------------


def test_to_image_maps_minus_one_one_to_bytes_and_fits_max_size() -> None:
    rgb = torch.tensor([[[-1.0, 0.0, 1.0], [-3.0, 0.5, 7.0]]])  # (1, 2, 3)
    image = previews.to_image(rgb)
    assert image.mode == "RGB" and image.size == (2, 1)
    assert [image.getpixel((0, 0)), image.getpixel((1, 0))] == [(0, 128, 255), (0, 191, 255)]  # 191.25 -> 191
    big = previews.to_image(torch.zeros(64, 32, 3), max_size=16)
    assert big.size == (8, 16)
    assert previews.to_image(torch.zeros(8, 8, 3), max_size=16).size == (8, 8)


def test_latent2rgb_projects_each_latent_pixel() -> None:
    x0 = torch.randn(2, 4, 3, 5, generator=torch.Generator().manual_seed(2))
    for fmt in (SD15_LATENT, SDXL_LATENT):
        image = previews.latent2rgb_previewer(fmt)(x0)
        assert image.size == (5, 3)
        factors = torch.tensor(fmt.latent_rgb_factors)
        rgb = x0[0, :, 1, 4] @ factors
        if fmt.latent_rgb_factors_bias is not None:
            rgb = rgb + torch.tensor(fmt.latent_rgb_factors_bias)
        expected = tuple(int(v) for v in ((rgb.clamp(-1, 1) + 1) * 127.5).round())
        assert image.getpixel((4, 1)) == expected
    assert previews.latent2rgb_previewer(object()) is None


def test_taesd_previewer_decodes_the_first_item(weights: dict[str, torch.Tensor]) -> None:
    decoder = taesd.decoder_from_state_dict(weights)
    x0 = torch.randn(2, 4, 4, 6, generator=torch.Generator().manual_seed(3))
    image = previews.taesd_previewer(decoder)(x0)
    assert image.size == (48, 32)
    expected = previews.to_image(((reference_decode(weights, x0[:1]) - 0.5) * 2)[0].movedim(0, -1))
    assert image.tobytes() == expected.tobytes()
    assert previews.taesd_previewer(decoder, max_size=24)(x0).size == (24, 16)


# -- selection ------------------------------------------------------------------------------------


def test_resolve_method_prefers_the_prompts_choice(caplog: pytest.LogCaptureFixture) -> None:
    assert previews.resolve_method("none") == "none"
    assert previews.resolve_method("auto", None) == "auto"
    assert previews.resolve_method("auto", {"preview_method": "default"}) == "auto"
    assert previews.resolve_method("none", {"preview_method": "taesd"}) == "taesd"
    assert previews.resolve_method("taesd", {"preview_method": "none"}) == "none"
    assert previews.resolve_method("bogus") == "none"
    with caplog.at_level(logging.WARNING):
        assert previews.resolve_method("latent2rgb", {"preview_method": "fancy"}) == "latent2rgb"
    assert "unknown preview_method 'fancy'" in caplog.text


@pytest.fixture
def models(tmp_path: Path, weights: dict[str, torch.Tensor]) -> ModelPaths:
    """A models folder whose vae_approx holds the SD1.x decoder only."""
    previews.clear_decoder_cache()
    write_decoder(tmp_path / "models" / "vae_approx", "taesd_decoder.safetensors", weights)
    return ModelPaths(tmp_path / "models")


def kind(previewer: previews.Previewer | None) -> str:
    """Which previewer this is, from its output size for an 8x8 latent."""
    if previewer is None:
        return "none"
    return {(64, 64): "taesd", (8, 8): "latent2rgb"}[previewer(torch.zeros(1, 4, 8, 8)).size]


def test_selection_rules(models: ModelPaths, caplog: pytest.LogCaptureFixture) -> None:
    def select(method: str, fmt: object = SD15_LATENT) -> str:
        return kind(previews.select_previewer(method, fmt, paths=models))

    assert select("none") == "none"
    assert select("auto") == "taesd"
    assert select("taesd") == "taesd"
    assert select("latent2rgb") == "latent2rgb"
    # SDXL needs taesdxl_decoder: the SD1.x file does not count
    assert select("auto", SDXL_LATENT) == "latent2rgb"
    with caplog.at_level(logging.WARNING):
        assert select("taesd", SDXL_LATENT) == "latent2rgb"
    assert "could not find models/vae_approx/taesdxl_decoder" in caplog.text
    assert kind(previews.select_previewer("auto", SD15_LATENT, paths=None)) == "latent2rgb"


def test_the_first_file_with_the_prefix_is_used(models: ModelPaths, tmp_path: Path) -> None:
    folder = tmp_path / "models" / "vae_approx"
    write_decoder(folder, "taesdxl_decoder.pth", random_decoder_weights(seed=5))
    assert previews.find_taesd_decoder(models, SDXL_LATENT) == folder / "taesdxl_decoder.pth"
    assert previews.find_taesd_decoder(models, SD15_LATENT) == folder / "taesd_decoder.safetensors"
    (folder / "taesd_decoder.safetensors").unlink()
    assert previews.find_taesd_decoder(models, SD15_LATENT) is None


def test_unusable_decoders_fall_back_to_latent2rgb(
    models: ModelPaths, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "models" / "vae_approx"
    (folder / "taesdxl_decoder.safetensors").write_bytes(b"not a safetensors file")
    with caplog.at_level(logging.WARNING):
        assert kind(previews.select_previewer("taesd", SDXL_LATENT, paths=models)) == "latent2rgb"
    assert "taesdxl_decoder.safetensors cannot be used" in caplog.text
    (folder / "taesdxl_decoder.safetensors").unlink()
    write_decoder(folder, "taesdxl_decoder.safetensors", random_decoder_weights(16))
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert kind(previews.select_previewer("auto", SDXL_LATENT, paths=models)) == "latent2rgb"
    assert "takes 16 latent channels, the model has 4" in caplog.text


def test_decoders_are_cached_per_file_version(models: ModelPaths, tmp_path: Path) -> None:
    path = tmp_path / "models" / "vae_approx" / "taesd_decoder.safetensors"
    first = previews.cached_decoder(path)
    assert previews.cached_decoder(path) is first
    write_decoder(path.parent, path.name, random_decoder_weights(seed=9))
    os.utime(path, ns=(1, 1))  # a replaced file is a new version even within one mtime tick
    second = previews.cached_decoder(path)
    assert second is not first and not torch.equal(second[1].weight, first[1].weight)
