"""Upscale models (diffusion/upscale): detection from the real key layouts, strict loading, the
architectures' outputs, and ComfyUI's tiling (tiles, feathering, OOM halving, progress).

State dicts are built in the test: a tiny module with seeded random weights gives the BasicSR /
SwinIR / SRVGG keys, and the ESRGAN "new" and "old" layouts are written from them with the key
names of those releases (mapping written here, independently of the loader's renaming)."""

from __future__ import annotations

import pickle
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import Tensor, nn

from core.errors import ModelError
from diffusion.upscale import (
    UpscaleModel,
    build_model,
    canonical_state_dict,
    detect,
    load_upscale_model,
    match_channels,
)
from diffusion.upscale.rrdbnet import RRDBConfig
from diffusion.upscale.srvgg import SRVGGConfig
from diffusion.upscale.swinir import (
    SwinIRConfig,
    WindowAttention,
    relative_position_index,
    shift_mask,
    window_merge,
    window_partition,
)
from diffusion.upscale.tiling import tile_count, tile_starts, tiled_scale, upscale_image


def seeded(module: nn.Module, seed: int = 0) -> nn.Module:
    generator = torch.Generator("cpu").manual_seed(seed)
    with torch.no_grad():
        for param in module.parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * 0.1)
    return module.eval()


def state_dict_of(config: Any, seed: int = 0) -> dict[str, Tensor]:
    return {k: v.clone() for k, v in seeded(config.build(), seed).state_dict().items()}


def image(batch: int = 1, channels: int = 3, height: int = 13, width: int = 10, seed: int = 1) -> Tensor:
    return torch.rand((batch, channels, height, width), generator=torch.Generator().manual_seed(seed))


# -- ESRGAN layouts, written from the BasicSR keys --------------------------------------------------

_RDB = re.compile(r"^body\.(\d+)\.rdb(\d)\.conv(\d)\.(weight|bias)$")


def to_new_arch(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    """xinntao/ESRGAN RRDBNet_arch.py names (BSRGAN / RealSR releases)."""
    out = {}
    for key, value in sd.items():
        match = _RDB.match(key)
        if match:
            block, rdb, conv, kind = match.groups()
            out[f"RRDB_trunk.{block}.RDB{rdb}.conv{conv}.{kind}"] = value
            continue
        head, kind = key.rsplit(".", 1)
        head = {"conv_body": "trunk_conv", "conv_hr": "HRconv"}.get(head, head.replace("conv_up", "upconv"))
        out[f"{head}.{kind}"] = value
    return out


def to_old_arch(sd: dict[str, Tensor], nb: int, upsamples: int) -> dict[str, Tensor]:
    """The original flattened `model.N` sequence (RRDB_ESRGAN_x4_old_arch.pth, most community models)."""
    top = {"conv_first": 0, "conv_hr": 3 * upsamples + 2, "conv_last": 3 * upsamples + 4}
    top.update({f"conv_up{i}": 3 * i for i in range(1, upsamples + 1)})
    out = {}
    for key, value in sd.items():
        match = _RDB.match(key)
        if match:
            block, rdb, conv, kind = match.groups()
            out[f"model.1.sub.{block}.RDB{rdb}.conv{conv}.0.{kind}"] = value
            continue
        head, kind = key.rsplit(".", 1)
        out[f"model.1.sub.{nb}.{kind}" if head == "conv_body" else f"model.{top[head]}.{kind}"] = value
    return out


TINY_RRDB = {"nf": 8, "nb": 2, "gc": 4}


ESRGAN_CASES = [
    (RRDBConfig(**TINY_RRDB), 4, 3),
    (RRDBConfig(**TINY_RRDB, unshuffle=2), 2, 12),  # RealESRGAN_x2plus
    (RRDBConfig(**TINY_RRDB, unshuffle=4), 1, 48),  # Real-ESRGAN x1
    (RRDBConfig(**TINY_RRDB, upsamples=1), 2, 3),
    (RRDBConfig(**TINY_RRDB, upsamples=3), 8, 3),
    (RRDBConfig(**TINY_RRDB, upsamples=0), 1, 3),  # old-arch 1x models (no upconv)
]


@pytest.mark.parametrize(
    ("config", "scale", "first_in", "layout"),
    [(*case, layout) for case in ESRGAN_CASES for layout in ("basicsr", "new", "old")],
)
def test_esrgan_layouts_are_detected_with_their_hyper_parameters(
    config: RRDBConfig, scale: int, first_in: int, layout: str
) -> None:
    sd = state_dict_of(config)
    assert sd["conv_first.weight"].shape[1] == first_in
    if layout == "new":
        sd = to_new_arch(sd)
    elif layout == "old":
        sd = to_old_arch(sd, config.nb, config.upsamples)
    found = detect(sd)
    assert found.name == "ESRGAN"
    assert (found.scale, found.in_channels, found.out_channels) == (scale, 3, 3)
    assert (found.nf, found.nb, found.gc, found.unshuffle, found.layout) == (8, 2, 4, config.unshuffle, layout)


def test_the_three_esrgan_layouts_load_the_same_network() -> None:
    config = RRDBConfig(**TINY_RRDB)
    sd = state_dict_of(config, seed=3)
    x = image()
    outputs = [
        build_model(layout).model(x) for layout in (sd, to_new_arch(sd), to_old_arch(sd, config.nb, config.upsamples))
    ]
    assert outputs[0].shape == (1, 3, 52, 40)
    assert torch.equal(outputs[0], outputs[1]) and torch.equal(outputs[0], outputs[2])


def test_full_size_esrgan_layout_matches_the_released_models() -> None:
    """RealESRGAN_x4plus / RRDB_ESRGAN_x4: 64 features, 23 blocks, growth 32, 702 tensors."""
    with torch.device("meta"):
        module = RRDBConfig().build()
    sd = module.state_dict()
    assert len(sd) == 702
    assert sd["body.22.rdb3.conv5.weight"].shape == (64, 192, 3, 3)
    old = to_old_arch(sd, 23, 2)
    assert {"model.0.weight", "model.1.sub.23.weight", "model.3.weight", "model.6.weight", "model.8.weight",
            "model.10.weight", "model.1.sub.22.RDB3.conv5.0.weight"} <= set(old)  # fmt: skip
    found = detect(old)
    assert (found.scale, found.nf, found.nb, found.gc) == (4, 64, 23, 32)


def test_pixel_unshuffle_models_pad_odd_sizes_and_crop_back() -> None:
    for factor, scale in ((2, 2), (4, 1)):
        model = build_model(state_dict_of(RRDBConfig(**TINY_RRDB, unshuffle=factor)))
        out = model(image(height=13, width=7))
        assert out.shape == (1, 3, 13 * scale, 7 * scale)
        assert out.min() >= 0.0 and out.max() <= 1.0


def test_esrgan_plus_and_broken_numbering_are_explained() -> None:
    sd = state_dict_of(RRDBConfig(**TINY_RRDB))
    plus = {**sd, "body.0.rdb1.conv1x1.weight": torch.zeros(4, 8, 1, 1)}
    with pytest.raises(ModelError, match="ESRGAN\\+"):
        detect(plus)
    gap = {k.replace("body.1.", "body.5."): v for k, v in sd.items()}
    with pytest.raises(ModelError, match=r"not numbered 0\.\.5"):
        detect(gap)


# -- SRVGGNetCompact --------------------------------------------------------------------------------


@pytest.mark.parametrize("upscale", [1, 2, 4])
def test_srvgg_detection_and_output(upscale: int) -> None:
    config = SRVGGConfig(nf=8, num_conv=3, upscale=upscale)
    sd = state_dict_of(config)
    assert set(sd) >= {"body.0.weight", "body.1.weight", f"body.{2 * 3 + 2}.weight"}
    found = detect(sd)
    assert found == config and found.name == "SRVGGNetCompact"
    model = build_model(sd)
    x = image()
    out = model(x)
    assert out.shape == (1, 3, 13 * upscale, 10 * upscale)
    # The network learns a residual over nearest upsampling: zero body weights give the input back.
    zeroed = {k: torch.zeros_like(v) if k == f"body.{2 * 3 + 2}.weight" else v for k, v in sd.items()}
    zeroed[f"body.{2 * 3 + 2}.bias"] = torch.zeros_like(sd[f"body.{2 * 3 + 2}.bias"])
    assert torch.allclose(build_model(zeroed)(x), F.interpolate(x, scale_factor=upscale, mode="nearest"))


# -- SwinIR -----------------------------------------------------------------------------------------

TINY_SWIN = {"embed_dim": 12, "depths": (2, 3), "num_heads": (2, 3), "window_size": 4, "mlp_hidden": 24, "num_feat": 8}


@pytest.mark.parametrize(
    "head",
    [
        {"upsampler": "pixelshuffle", "upscale": 2},
        {"upsampler": "pixelshuffle", "upscale": 4},
        {"upsampler": "pixelshuffle", "upscale": 3},
        {"upsampler": "pixelshuffledirect", "upscale": 2, "num_feat": 64},
        {"upsampler": "nearest+conv", "upscale": 4, "resi_connection": "3conv"},
        {"upsampler": "nearest+conv", "upscale": 2},
        {"upsampler": "", "upscale": 1, "patch_norm": False, "num_feat": 64},
    ],
)
def test_swinir_heads_are_detected_and_run(head: dict[str, Any]) -> None:
    config = SwinIRConfig(**{**TINY_SWIN, **head})
    sd = state_dict_of(config)
    # Released files also carry the derived buffers; they are accepted and recomputed.
    sd["layers.0.residual_group.blocks.0.attn.relative_position_index"] = relative_position_index(4)
    sd["layers.0.residual_group.blocks.1.attn_mask"] = torch.zeros(16, 16, 16)
    found = detect(sd)
    assert found == config
    out = build_model(sd)(image(height=13, width=10))
    assert out.shape == (1, 3, 13 * config.scale, 10 * config.scale)


def test_swinir_window_7_models_use_the_255_range() -> None:
    config = SwinIRConfig(**{**TINY_SWIN, "window_size": 7, "num_feat": 64})
    assert detect(state_dict_of(config)).img_range == 255.0
    assert detect(state_dict_of(SwinIRConfig(**TINY_SWIN))).img_range == 1.0


def test_swinir_shift_mask_separates_regions_that_were_not_neighbours() -> None:
    mask = shift_mask(8, 8, 4, 2)
    assert mask.shape == (4, 16, 16)
    assert torch.count_nonzero(mask[0]) == 0  # the top-left window was not wrapped around
    last = mask[3]  # bottom-right window: four regions of 2x2 positions each
    assert set(last.unique().tolist()) == {-100.0, 0.0}
    assert torch.count_nonzero(last == 0) == 4 * 4 * 4
    index = relative_position_index(3)
    assert index.shape == (9, 9) and index.diagonal().unique().tolist() == [12]  # centre of the 5x5 table


def test_window_attention_matches_plain_softmax_attention() -> None:
    """softmax(q k^T / sqrt(d) + bias + mask) v per window, with the (nW, N, N) mask applied to
    window w of every image (the folding into heads must keep windows and images apart)."""
    attention = seeded(WindowAttention(dim=12, window=2, heads=3), seed=4)
    images, windows, n = 2, 4, 4
    x = torch.randn((images * windows, n, 12), generator=torch.Generator().manual_seed(5))
    mask = (torch.rand((windows, n, n), generator=torch.Generator().manual_seed(6)) > 0.5) * -100.0
    qkv = attention.qkv(x).reshape(images * windows, n, 3, 3, 4).permute(2, 0, 3, 1, 4)
    table = attention.relative_position_bias_table
    bias = table[relative_position_index(2).view(-1)].view(n, n, 3).permute(2, 0, 1)
    scores = qkv[0] @ qkv[1].transpose(-2, -1) / 2.0 + bias  # head dim 4
    scores = scores + mask.repeat(images, 1, 1).unsqueeze(1)
    expected = attention.proj((scores.softmax(-1) @ qkv[2]).transpose(1, 2).reshape(images * windows, n, 12))
    assert torch.allclose(attention(x, mask), expected, atol=1e-5)
    unmasked = attention.proj(
        ((scores - mask.repeat(images, 1, 1).unsqueeze(1)).softmax(-1) @ qkv[2])
        .transpose(1, 2)
        .reshape(images * windows, n, 12)
    )
    assert torch.allclose(attention(x), unmasked, atol=1e-5)


def test_window_partition_round_trips() -> None:
    x = torch.arange(2 * 8 * 12 * 3, dtype=torch.float32).view(2, 8, 12, 3)
    windows = window_partition(x, 4)
    assert windows.shape == (2 * 2 * 3, 16, 3)
    assert torch.equal(windows[1].view(4, 4, 3), x[0, 0:4, 4:8])  # image 0, row 0, window column 1
    assert torch.equal(windows[6].view(4, 4, 3), x[1, 0:4, 0:4])
    assert torch.equal(window_merge(windows, 4, 8, 12), x)


# -- loading ------------------------------------------------------------------------------------------


def test_wrappers_and_prefixes_are_removed() -> None:
    sd = state_dict_of(SRVGGConfig(nf=8, num_conv=1, upscale=2))
    base = build_model(sd)(image())
    for wrapped in ({"params_ema": sd}, {"params": sd, "other": 1}, {f"module.{k}": v for k, v in sd.items()},
                    {"state_dict": {f"netG.{k}": v for k, v in sd.items()}}):  # fmt: skip
        assert set(canonical_state_dict(wrapped)) == set(sd)
        assert torch.equal(build_model(wrapped)(image()), base)


def test_unknown_layout_names_what_was_seen() -> None:
    sd = {"encoder.conv.weight": torch.zeros(4, 3, 3, 3), "decoder.out.bias": torch.zeros(3)}
    with pytest.raises(ModelError, match=r"unknown upscale model layout.*encoder\.\*, decoder\.\*"):
        detect(sd)
    with pytest.raises(ModelError, match="no tensors"):
        detect({})


def test_loading_is_strict_and_says_which_keys_are_wrong() -> None:
    sd = state_dict_of(RRDBConfig(**TINY_RRDB))
    missing = {k: v for k, v in sd.items() if k != "conv_hr.bias"}
    with pytest.raises(ModelError, match=r"missing: conv_hr\.bias"):
        build_model(missing, "x.pth")
    extra = {**sd, "conv_hr.extra": torch.zeros(1)}
    with pytest.raises(ModelError, match=r"unexpected: conv_hr\.extra"):
        build_model(extra)
    wrong = {**sd, "conv_hr.weight": torch.zeros(8, 8, 1, 1)}
    with pytest.raises(ModelError, match=r"wrong shape: conv_hr\.weight \[8, 8, 1, 1\] \(model: \[8, 8, 3, 3\]\)"):
        build_model(wrong)


def test_load_from_safetensors_and_pth(tmp_path: Path) -> None:
    config = SRVGGConfig(nf=8, num_conv=1, upscale=2)
    sd = state_dict_of(config)
    half = {k: v.half() for k, v in sd.items()}
    save_file(half, str(tmp_path / "compact.safetensors"))
    torch.save({"params": sd}, tmp_path / "compact.pth")
    from_st = load_upscale_model(tmp_path / "compact.safetensors")
    from_pth = load_upscale_model(tmp_path / "compact.pth")
    assert isinstance(from_st, UpscaleModel) and from_st.dtype == torch.float32
    assert (from_pth.scale, from_pth.input_channels, from_pth.output_channels, from_pth.architecture) == (
        2, 3, 3, "SRVGGNetCompact"
    )  # fmt: skip
    assert torch.allclose(from_st(image()), from_pth(image()), atol=1e-2)
    assert "SRVGGNetCompact x2" in repr(from_pth)


class Payload:
    def __reduce__(self) -> tuple[Callable[..., Any], tuple[Any, ...]]:
        return (print, ("this must never run",))


def test_unsafe_or_broken_files_are_refused(tmp_path: Path) -> None:
    with open(tmp_path / "evil.pth", "wb") as handle:
        pickle.dump({"model.0.weight": Payload()}, handle, protocol=2)
    with pytest.raises(ModelError, match="refused to load 'evil.pth'"):
        load_upscale_model(tmp_path / "evil.pth")
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ModelError, match="junk.safetensors"):
        load_upscale_model(tmp_path / "junk.safetensors")
    with pytest.raises(ModelError, match="not found"):
        load_upscale_model(tmp_path / "absent.pth")
    torch.save({"foo.weight": torch.zeros(2)}, tmp_path / "other.pth")
    with pytest.raises(ModelError, match=r"'other.pth'.*unknown upscale model layout"):
        load_upscale_model(tmp_path / "other.pth")


def test_a_model_manager_places_the_weights() -> None:
    from diffusion.memory import ModelManager, device_policy

    manager = ModelManager(device_policy(device="cpu"))
    model = build_model(state_dict_of(SRVGGConfig(nf=8, num_conv=1, upscale=2)), "compact.pth")
    model.manage(manager)
    model.manage(manager)  # once only
    records = [r for r in manager.loaded_models() if r.kind == "upscale"]
    assert len(records) == 1 and records[0].module is model.model and records[0].name == "compact.pth:upscale"
    with model.on_device() as device:
        assert device == torch.device("cpu") and records[0].in_use == 1
    assert records[0].in_use == 0
    out = model.upscale_image(image().movedim(1, -1))
    assert out.shape == (1, 26, 20, 3)


# -- channels -------------------------------------------------------------------------------------------


def test_match_channels() -> None:
    rgba = torch.rand(1, 4, 5, 4)
    assert torch.equal(match_channels(rgba, 3), rgba[..., :3])
    gray = torch.rand(1, 4, 5, 1)
    assert torch.equal(match_channels(gray, 3), gray.expand(-1, -1, -1, 3))
    rgb = torch.rand(1, 4, 5, 3)
    luma = match_channels(rgb, 1)
    assert luma.shape == (1, 4, 5, 1)
    assert torch.allclose(luma[..., 0], 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2])
    with pytest.raises(ValueError, match="takes 3 channels but the image has 2"):
        match_channels(torch.rand(1, 4, 5, 2), 3)


# -- tiling ------------------------------------------------------------------------------------------


def test_tile_positions_follow_comfyui() -> None:
    assert tile_starts(512, 512, 32) == [0]
    assert tile_starts(600, 512, 32) == [0, 480]
    assert tile_starts(1000, 512, 32) == [0, 480, 960]
    assert tile_starts(20, 8, 2) == [0, 6, 12]
    for size in range(9, 200, 7):  # ComfyUI's step count: ceil((size - overlap) / (tile - overlap))
        assert len(tile_starts(size, 8, 2)) == -(-(size - 2) // 6)
    assert tile_count(600, 1000, 512, 32) == 6
    with pytest.raises(ValueError, match="larger than the overlap"):
        tile_starts(100, 8, 8)


def nearest(scale: int) -> Callable[[Tensor], Tensor]:
    return lambda t: F.interpolate(t, scale_factor=scale, mode="nearest")


def test_tiled_scale_reassembles_exactly_when_tiles_agree() -> None:
    """A pointwise 'model' gives identical overlaps, so the feathered blend must be exact."""
    x = image(batch=2, height=37, width=29)
    done: list[tuple[int, int]] = []
    out = tiled_scale(
        x, nearest(2), scale=2, out_channels=3, tile=12, overlap=4, progress=lambda d, t: done.append((d, t))
    )
    assert torch.allclose(out, nearest(2)(x), atol=1e-6)
    per_image = tile_count(37, 29, 12, 4)
    assert done == [(i + 1, 2 * per_image) for i in range(2 * per_image)]


def test_tiled_equals_untiled_for_a_tiny_model_with_small_tiles() -> None:
    model = build_model(state_dict_of(SRVGGConfig(nf=8, num_conv=1, upscale=2)))
    pixels = image(height=40, width=36).movedim(1, -1)
    whole = upscale_image(model, pixels, scale=2, out_channels=3, tile=64, overlap=8)
    for tile, overlap in ((16, 8), (24, 4)):
        tiled = upscale_image(model, pixels, scale=2, out_channels=3, tile=tile, overlap=overlap, min_tile=8)
        assert whole.shape == tiled.shape == (1, 80, 72, 3)
        # Tile edges lack context (zero padding); the feathered blend keeps the seams close.
        assert (whole - tiled).abs().max() < 0.1
        assert (whole - tiled).abs().mean() < 5e-3
    # With 24 px tiles starting at 0 and 20, input pixels 0..16 are 4+ px (more than the 3 px
    # that three 3x3 convs see) inside the first tile and in no other: exact there.
    assert torch.allclose(whole[:, :34, :34], tiled[:, :34, :34], atol=1e-6)
    assert not torch.allclose(whole[:, 34:48, :34], tiled[:, 34:48, :34], atol=1e-4)


def test_out_of_memory_halves_the_tile_and_restarts() -> None:
    seen: list[int] = []

    def picky(tile: Tensor) -> Tensor:
        seen.append(max(tile.shape[-2:]))
        if max(tile.shape[-2:]) > 40:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return nearest(2)(tile)

    progress: list[tuple[int, int]] = []
    pixels = image(height=100, width=90).movedim(1, -1)
    out = upscale_image(picky, pixels, scale=2, out_channels=3, tile=160, overlap=8, min_tile=16,
                        progress=lambda d, t: progress.append((d, t)))  # fmt: skip
    assert seen[0] == 100 and 80 in seen and max(seen[-5:]) <= 40  # 160 -> 80 -> 40
    assert torch.allclose(out, nearest(2)(pixels.movedim(-1, 1)).movedim(1, -1), atol=1e-6)
    assert progress[-1][0] == progress[-1][1] == tile_count(100, 90, 40, 8)
    with pytest.raises(torch.OutOfMemoryError):
        upscale_image(picky, pixels, scale=2, out_channels=3, tile=160, overlap=8, min_tile=64)


def test_output_is_clamped_and_gray_output_becomes_rgb() -> None:
    pixels = image(channels=1, height=9, width=7).movedim(1, -1)
    out = upscale_image(lambda t: nearest(2)(t) * 3 - 1, pixels, scale=2, out_channels=1)
    assert out.shape == (1, 18, 14, 3)
    assert out.min() == 0.0 and out.max() == 1.0
    assert torch.equal(out[..., 0], out[..., 2])
