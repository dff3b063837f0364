"""SwinIR (Liang et al. 2021, "SwinIR: Image Restoration Using Swin Transformer").

Key layout of the reference implementation: `conv_first`, `patch_embed.norm`, `layers.I` (residual
Swin transformer blocks: `residual_group.blocks.J.{norm1, attn.qkv, attn.proj,
attn.relative_position_bias_table, norm2, mlp.fc1, mlp.fc2}` and a `conv` or 3-conv `conv.0/2/4`),
`norm`, `conv_after_body(.0/2/4)`, then one of four reconstruction heads:

- "pixelshuffle" (classical SR): `conv_before_upsample.0`, `upsample.0, .2, ...` (conv to 4x the
  features + pixel shuffle 2 per x2, or one conv to 9x + shuffle 3 for x3), `conv_last`;
- "pixelshuffledirect" (lightweight SR): one `upsample.0` conv to out * scale^2 + pixel shuffle;
- "nearest+conv" (real-world SR): `conv_before_upsample.0`, `conv_up1..3` (nearest x2 + conv +
  LeakyReLU 0.2 each), `conv_hr`, `conv_last`;
- none (denoising, JPEG artifacts; scale 1): `conv_last`, whose output is added to the input.

The files also hold two buffers that follow from the shapes (`attn.relative_position_index`,
the shifted windows' `attn_mask`); they are recomputed here for the actual image size, so any
input size works. The input is padded (reflect) to a multiple of the window size, at least 16 px,
and the output cropped back. Inputs are shifted by the DIV2K mean for RGB and scaled by the image
range, which is 255 for the window-7 JPEG models and 1 otherwise (the convention spandrel uses).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from core.errors import ModelError
from diffusion.upscale.tiling import pad_to_multiple

RGB_MEAN = (0.4488, 0.4371, 0.4040)
MIN_SIZE = 16
DERIVED_BUFFERS = ("attn.relative_position_index", "attn_mask")
UPSAMPLERS = ("pixelshuffle", "pixelshuffledirect", "nearest+conv", "")
_LAYER_BLOCK = re.compile(r"^layers\.(\d+)\.residual_group\.blocks\.(\d+)\.")
_CONV_UP = re.compile(r"^conv_up(\d+)\.weight$")
_UPSAMPLE_CONV = re.compile(r"^upsample\.(\d+)\.weight$")


@dataclass(frozen=True)
class SwinIRConfig:
    in_channels: int = 3
    out_channels: int = 3
    embed_dim: int = 96
    depths: tuple[int, ...] = (6, 6, 6, 6)
    num_heads: tuple[int, ...] = (6, 6, 6, 6)
    window_size: int = 8
    mlp_hidden: int = 192
    patch_norm: bool = True
    resi_connection: str = "1conv"
    """"1conv" or "3conv" (conv 3x3 to dim/4, 1x1, 3x3 back, LeakyReLU 0.2 between)."""
    upsampler: str = ""
    upscale: int = 1
    num_feat: int = 64
    img_range: float = 1.0

    name = "SwinIR"

    @property
    def scale(self) -> int:
        return self.upscale

    def describe(self) -> str:
        head = self.upsampler or "no upsampler"
        return (
            f"SwinIR x{self.scale} ({head}), dim {self.embed_dim}, depths {list(self.depths)}, "
            f"window {self.window_size}"
        )

    def build(self) -> SwinIR:
        return SwinIR(self)

    def rename(self, key: str) -> str | None:
        """The module's key for a file key; None for buffers that are recomputed."""
        return None if key.endswith(DERIVED_BUFFERS) else key


# -- windows ----------------------------------------------------------------------------------------


def window_partition(x: Tensor, window: int) -> Tensor:
    """(B, H, W, C) -> (B * H/w * W/w, w*w, C), windows in row-major order per image."""
    b, h, w, c = x.shape
    x = x.view(b, h // window, window, w // window, window, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, window * window, c)


def window_merge(windows: Tensor, window: int, height: int, width: int) -> Tensor:
    """Inverse of window_partition: (B * nW, w*w, C) -> (B, H, W, C)."""
    c = windows.shape[-1]
    x = windows.view(-1, height // window, width // window, window, window, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, height, width, c)


@lru_cache(maxsize=8)
def relative_position_index(window: int) -> Tensor:
    """(w*w, w*w) index into the (2w-1)^2-row bias table for each query / key position pair."""
    coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
    relative = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window - 1)
    return relative[..., 0] * (2 * window - 1) + relative[..., 1]


def shift_mask(height: int, width: int, window: int, shift: int) -> Tensor:
    """(nW, w*w, w*w): 0 between positions from the same region of the cyclically shifted image,
    -100 between positions that were not neighbours before the shift."""
    labels = torch.zeros((1, height, width, 1))
    bounds = (slice(0, -window), slice(-window, -shift), slice(-shift, None))
    for i, rows in enumerate(bounds):
        for j, cols in enumerate(bounds):
            labels[:, rows, cols, :] = 3 * i + j
    windows = window_partition(labels, window).squeeze(-1)
    different = windows.unsqueeze(1) != windows.unsqueeze(2)
    return torch.zeros(different.shape).masked_fill(different, -100.0)


# -- modules ----------------------------------------------------------------------------------------


class WindowAttention(nn.Module):
    """Multi-head self-attention inside each window, with a learned relative position bias."""

    def __init__(self, dim: int, window: int, heads: int) -> None:
        super().__init__()
        self.window = window
        self.heads = heads
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, heads))
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """x: (B * nW, N, C); mask: (nW, N, N) or None."""
        windows, n, c = x.shape
        qkv = self.qkv(x).reshape(windows, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        index = relative_position_index(self.window).to(x.device)
        bias = self.relative_position_bias_table[index.view(-1)].view(n, n, -1).permute(2, 0, 1)
        q, k, v = qkv[0], qkv[1], qkv[2]
        if mask is None:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.unsqueeze(0).to(q.dtype))
        else:
            # Fold the windows into the head axis so the (nW, heads, N, N) bias broadcasts over
            # the batch: window index b * nW + w of the partition is row b, heads block w.
            count = mask.shape[0]
            full = (bias.unsqueeze(0) + mask.unsqueeze(1).to(bias)).flatten(0, 1).to(q.dtype)

            def fold(t: Tensor) -> Tensor:
                return t.reshape(windows // count, count * self.heads, n, -1)

            out = F.scaled_dot_product_attention(fold(q), fold(k), fold(v), attn_mask=full)
            out = out.reshape(windows, self.heads, n, -1)
        return self.proj(out.transpose(1, 2).reshape(windows, n, c))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class SwinBlock(nn.Module):
    """(Shifted) window attention + MLP, each pre-normed with a residual."""

    def __init__(self, dim: int, heads: int, window: int, shift: int, hidden: int) -> None:
        super().__init__()
        self.window = window
        self.shift = shift
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, window, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, hidden)

    def forward(self, x: Tensor, size: tuple[int, int], mask: Tensor | None) -> Tensor:
        height, width = size
        batch, length, channels = x.shape
        y = self.norm1(x).view(batch, height, width, channels)
        if self.shift:
            y = torch.roll(y, shifts=(-self.shift, -self.shift), dims=(1, 2))
        y = self.attn(window_partition(y, self.window), mask if self.shift else None)
        y = window_merge(y, self.window, height, width)
        if self.shift:
            y = torch.roll(y, shifts=(self.shift, self.shift), dims=(1, 2))
        x = x + y.reshape(batch, length, channels)
        return x + self.mlp(self.norm2(x))


class BlockGroup(nn.Module):
    def __init__(self, blocks: list[SwinBlock]) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)


def _resi_conv(dim: int, kind: str) -> nn.Module:
    if kind == "1conv":
        return nn.Conv2d(dim, dim, 3, 1, 1)
    quarter = dim // 4
    return nn.Sequential(
        nn.Conv2d(dim, quarter, 3, 1, 1),
        nn.LeakyReLU(0.2),
        nn.Conv2d(quarter, quarter, 1, 1, 0),
        nn.LeakyReLU(0.2),
        nn.Conv2d(quarter, dim, 3, 1, 1),
    )


def _to_image(tokens: Tensor, size: tuple[int, int]) -> Tensor:
    batch, _, channels = tokens.shape
    return tokens.transpose(1, 2).reshape(batch, channels, *size)


class RSTB(nn.Module):
    """Residual Swin transformer block: a group of Swin blocks, a conv, and a residual."""

    def __init__(self, config: SwinIRConfig, depth: int, heads: int) -> None:
        super().__init__()
        dim, window = config.embed_dim, config.window_size
        blocks = [
            SwinBlock(dim, heads, window, 0 if i % 2 == 0 else window // 2, config.mlp_hidden) for i in range(depth)
        ]
        self.residual_group = BlockGroup(blocks)
        self.conv = _resi_conv(dim, config.resi_connection)

    def forward(self, x: Tensor, size: tuple[int, int], mask: Tensor | None) -> Tensor:
        y = x
        for block in self.residual_group.blocks:
            y = block(y, size, mask)
        return self.conv(_to_image(y, size)).flatten(2).transpose(1, 2) + x


class PatchEmbed(nn.Module):
    """Holds the optional LayerNorm applied to the tokens (patch size 1: no projection)."""

    def __init__(self, dim: int, norm: bool) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim) if norm else None


class SwinIR(nn.Module):
    """(B, C, H, W) in 0..1 -> (B, C_out, H*scale, W*scale)."""

    def __init__(self, config: SwinIRConfig) -> None:
        super().__init__()
        self.config = config
        dim, feat, out = config.embed_dim, config.num_feat, config.out_channels
        self.conv_first = nn.Conv2d(config.in_channels, dim, 3, 1, 1)
        self.patch_embed = PatchEmbed(dim, config.patch_norm)
        self.layers = nn.ModuleList(RSTB(config, d, h) for d, h in zip(config.depths, config.num_heads, strict=True))
        self.norm = nn.LayerNorm(dim)
        self.conv_after_body = _resi_conv(dim, config.resi_connection)
        kind, scale = config.upsampler, config.upscale
        if kind in ("pixelshuffle", "nearest+conv"):
            self.conv_before_upsample = nn.Sequential(nn.Conv2d(dim, feat, 3, 1, 1), nn.LeakyReLU(0.01))
        if kind == "pixelshuffle":
            self.upsample = _pixelshuffle_head(feat, scale)
        elif kind == "pixelshuffledirect":
            self.upsample = nn.Sequential(nn.Conv2d(dim, out * scale * scale, 3, 1, 1), nn.PixelShuffle(scale))
        elif kind == "nearest+conv":
            self.up_names = tuple(f"conv_up{i + 1}" for i in range(int(math.log2(scale))))
            for name in self.up_names:
                self.add_module(name, nn.Conv2d(feat, feat, 3, 1, 1))
            self.conv_hr = nn.Conv2d(feat, feat, 3, 1, 1)
        if kind != "pixelshuffledirect":
            self.conv_last = nn.Conv2d(feat if kind else dim, out, 3, 1, 1)
        self.mean = RGB_MEAN if config.in_channels == 3 else (0.0,) * config.in_channels

    def features(self, x: Tensor) -> Tensor:
        size = (x.shape[2], x.shape[3])
        tokens = x.flatten(2).transpose(1, 2)
        if self.patch_embed.norm is not None:
            tokens = self.patch_embed.norm(tokens)
        window = self.config.window_size
        # Every odd block of a layer is shifted (by half a window); one mask serves them all.
        mask = shift_mask(*size, window, window // 2).to(x.device) if max(self.config.depths) > 1 else None
        for layer in self.layers:
            tokens = layer(tokens, size, mask)
        return _to_image(self.norm(tokens), size)

    def forward(self, x: Tensor) -> Tensor:
        height, width = x.shape[-2:]
        config = self.config
        x = pad_to_multiple(x, config.window_size, MIN_SIZE)
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        x = (x - mean) * config.img_range
        first = self.conv_first(x)
        feat = self.conv_after_body(self.features(first)) + first
        if config.upsampler == "pixelshuffle":
            x = self.conv_last(self.upsample(self.conv_before_upsample(feat)))
        elif config.upsampler == "pixelshuffledirect":
            x = self.upsample(feat)
        elif config.upsampler == "nearest+conv":
            feat = self.conv_before_upsample(feat)
            for name in self.up_names:
                feat = F.leaky_relu(getattr(self, name)(F.interpolate(feat, scale_factor=2, mode="nearest")), 0.2)
            x = self.conv_last(F.leaky_relu(self.conv_hr(feat), 0.2))
        else:
            x = x + self.conv_last(feat)
        x = x / config.img_range + mean
        return x[..., : height * config.upscale, : width * config.upscale]


def _pixelshuffle_head(feat: int, scale: int) -> nn.Sequential:
    if scale == 3:
        return nn.Sequential(nn.Conv2d(feat, 9 * feat, 3, 1, 1), nn.PixelShuffle(3))
    layers: list[nn.Module] = []
    for _ in range(int(math.log2(scale))):
        layers += [nn.Conv2d(feat, 4 * feat, 3, 1, 1), nn.PixelShuffle(2)]
    return nn.Sequential(*layers)


# -- detection ------------------------------------------------------------------------------------


def detect(sd: Mapping[str, Any]) -> SwinIRConfig | None:
    """The SwinIR config of a state dict, or None if its keys are not SwinIR's."""
    needed = ("conv_first.weight", "layers.0.residual_group.blocks.0.attn.relative_position_bias_table")
    if not all(key in sd for key in needed):
        return None
    if "absolute_pos_embed" in sd:
        raise ModelError("SwinIR with an absolute position embedding (ape=True) is not supported")
    first = sd["conv_first.weight"]
    embed_dim, in_channels = first.shape[0], first.shape[1]
    depths, heads = _depths_and_heads(sd)
    rows = sd["layers.0.residual_group.blocks.0.attn.relative_position_bias_table"].shape[0]
    side = math.isqrt(rows)
    if side * side != rows or side % 2 == 0:
        raise ModelError(f"SwinIR state dict: relative position table with {rows} rows is not (2 * window - 1)^2")
    window = (side + 1) // 2
    upsampler, upscale, num_feat = _head(sd, in_channels)
    out = sd["conv_last.weight"].shape[0] if "conv_last.weight" in sd else in_channels
    return SwinIRConfig(
        in_channels=in_channels,
        out_channels=out,
        embed_dim=embed_dim,
        depths=depths,
        num_heads=heads,
        window_size=window,
        mlp_hidden=sd["layers.0.residual_group.blocks.0.mlp.fc1.weight"].shape[0],
        patch_norm="patch_embed.norm.weight" in sd,
        resi_connection="1conv" if "conv_after_body.weight" in sd else "3conv",
        upsampler=upsampler,
        upscale=upscale,
        num_feat=num_feat,
        img_range=255.0 if window == 7 else 1.0,
    )


def _depths_and_heads(sd: Mapping[str, Any]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    blocks: dict[int, set[int]] = {}
    for match in map(_LAYER_BLOCK.match, sd):
        if match:
            blocks.setdefault(int(match.group(1)), set()).add(int(match.group(2)))
    if set(blocks) != set(range(len(blocks))):
        raise ModelError(f"SwinIR state dict: layers are not numbered 0..{len(blocks) - 1} (found {sorted(blocks)})")
    depths, heads = [], []
    for layer in range(len(blocks)):
        depth = len(blocks[layer])
        if blocks[layer] != set(range(depth)):
            raise ModelError(f"SwinIR state dict: blocks of layer {layer} are not numbered 0..{depth - 1}")
        depths.append(depth)
        heads.append(sd[f"layers.{layer}.residual_group.blocks.0.attn.relative_position_bias_table"].shape[1])
    return tuple(depths), tuple(heads)


def _head(sd: Mapping[str, Any], in_channels: int) -> tuple[str, int, int]:
    """(upsampler, scale, num_feat) from the reconstruction head's keys."""
    if "conv_before_upsample.0.weight" in sd:
        num_feat = sd["conv_before_upsample.0.weight"].shape[0]
        ups = [m for m in map(_CONV_UP.match, sd) if m]
        if ups:
            return "nearest+conv", 2 ** len(ups), num_feat
        convs = sorted(int(m.group(1)) for m in map(_UPSAMPLE_CONV.match, sd) if m)
        if not convs:
            raise ModelError("SwinIR state dict has conv_before_upsample but no upsample convs")
        if len(convs) == 1 and sd[f"upsample.{convs[0]}.weight"].shape[0] == 9 * num_feat:
            return "pixelshuffle", 3, num_feat
        return "pixelshuffle", 2 ** len(convs), num_feat
    if "upsample.0.weight" in sd:
        channels = sd["upsample.0.weight"].shape[0]
        scale = math.isqrt(channels // in_channels)
        if scale * scale * in_channels != channels:
            raise ModelError(f"SwinIR state dict: upsample.0 has {channels} outputs, not {in_channels} x scale^2")
        return "pixelshuffledirect", scale, 64
    return "", 1, 64


__all__ = [
    "SwinIR",
    "WindowAttention",
    "SwinIRConfig",
    "detect",
    "relative_position_index",
    "shift_mask",
    "window_merge",
    "window_partition",
]
