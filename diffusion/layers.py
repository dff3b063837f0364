"""Shared UNet building blocks: timestep embedding, ResBlock, Up/Downsample, the embed-aware Sequential.

Attribute names follow the LDM checkpoint keys (`in_layers.0`, `in_layers.2`, `emb_layers.1`,
`out_layers.0`, `out_layers.3`, `skip_connection`, `op`, `conv`), so weights load unchanged. The
Sequential slots without weights (SiLU, Dropout) are kept so the indices match.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from diffusion.attention import SpatialTransformer
from diffusion.ops import PLAIN, Operations

log = logging.getLogger(__name__)


def timestep_embedding(timesteps: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal embedding of (possibly fractional) timesteps, as in LDM / ComfyUI.

    timesteps: (N,) -> (N, dim) float32: [cos(t * f_0..f_{half-1}), sin(...)] with
    f_i = max_period^(-i/half); an odd `dim` gets one zero column at the end. Cos comes before sin
    (the LDM order; diffusers' default is the other way round and would give a different model).
    """
    half = dim // 2
    # Same operation order as ComfyUI's, so the float32 rounding (and so the numbers) agree.
    steps = torch.arange(half, dtype=torch.float32, device=timesteps.device)
    freqs = torch.exp(-math.log(max_period) * steps / half)
    args = timesteps.reshape(-1, 1).float() * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


class TimestepBlock(nn.Module):
    """Marker: a block whose forward takes the timestep embedding as a second argument."""


class Downsample(nn.Module):
    """Strided 3x3 convolution (padding 1); key `op`."""

    def __init__(self, channels: int, *, dtype=None, device=None, operations: Operations = PLAIN) -> None:
        super().__init__()
        self.op = operations.Conv2d(channels, channels, 3, stride=2, padding=1, dtype=dtype, device=device)

    def forward(self, x: Tensor) -> Tensor:
        return self.op(x)


class Upsample(nn.Module):
    """Nearest-neighbour 2x (or to the skip connection's size), then a 3x3 convolution; key `conv`."""

    def __init__(self, channels: int, *, dtype=None, device=None, operations: Operations = PLAIN) -> None:
        super().__init__()
        self.conv = operations.Conv2d(channels, channels, 3, padding=1, dtype=dtype, device=device)

    def forward(self, x: Tensor, output_size: Sequence[int] | None = None) -> Tensor:
        """output_size: (H, W) of the matching input-side feature map, so odd sizes round-trip."""
        size = tuple(output_size) if output_size is not None else (x.shape[2] * 2, x.shape[3] * 2)
        return self.conv(F.interpolate(x, size=size, mode="nearest"))


class ResBlock(TimestepBlock):
    """GroupNorm-SiLU-conv, add the projected timestep embedding, GroupNorm-SiLU-conv, plus skip.

    The skip is the identity when the width does not change, else a 1x1 convolution. GroupNorm
    eps is torch's default 1e-5 here (LDM's GroupNorm32), unlike the 1e-6 of the transformer.
    """

    def __init__(
        self,
        channels: int,
        emb_channels: int,
        out_channels: int | None = None,
        *,
        norm_groups: int = 32,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        operations: Operations = PLAIN,
    ) -> None:
        super().__init__()
        out_channels = out_channels or channels
        ops, kw = operations, {"dtype": dtype, "device": device}
        self.in_layers = nn.Sequential(
            ops.GroupNorm(norm_groups, channels, **kw),
            nn.SiLU(),
            ops.Conv2d(channels, out_channels, 3, padding=1, **kw),
        )
        self.emb_layers = nn.Sequential(nn.SiLU(), ops.Linear(emb_channels, out_channels, **kw))
        self.out_layers = nn.Sequential(
            ops.GroupNorm(norm_groups, out_channels, **kw),
            nn.SiLU(),
            nn.Dropout(0.0),
            ops.Conv2d(out_channels, out_channels, 3, padding=1, **kw),
        )
        if out_channels == channels:
            self.skip_connection: nn.Module = nn.Identity()
        else:
            self.skip_connection = ops.Conv2d(channels, out_channels, 1, **kw)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        """x: (B, C, H, W); emb: (B, emb_channels). Returns (B, out_channels, H, W)."""
        h = self.in_layers(x)
        h = h + self.emb_layers(emb).to(h.dtype)[:, :, None, None]
        return self.skip_connection(x) + self.out_layers(h)


class TimestepEmbedSequential(nn.Sequential):
    """A Sequential that hands each layer what it needs: emb to ResBlocks, context to transformers,
    the target size to Upsample. Indices are the checkpoint's (`input_blocks.1.0`, `.1.1`...)."""

    def forward(  # type: ignore[override]
        self,
        x: Tensor,
        emb: Tensor,
        context: Tensor | None = None,
        output_size: Sequence[int] | None = None,
    ) -> Tensor:
        for layer in self:
            if isinstance(layer, TimestepBlock):
                x = layer(x, emb)
            elif isinstance(layer, SpatialTransformer):
                x = layer(x, context)
            elif isinstance(layer, Upsample):
                x = layer(x, output_size)
            else:
                x = layer(x)
        return x
