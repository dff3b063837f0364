"""Shared UNet building blocks: timestep embedding, ResBlock, Up/Downsample, the embed-aware Sequential.

Attribute names follow the LDM checkpoint keys (`in_layers.0`, `in_layers.2`, `emb_layers.1`,
`out_layers.0`, `out_layers.3`, `skip_connection`, `op`, `conv`), so weights load unchanged. The
Sequential slots without weights (SiLU, Dropout) are kept so the indices match.

`with_small_input_convs(operations)` gives the UNet Conv2d classes that run tiny-input CPU
convolutions with large weights as one matrix product (see GEMM_CONV_MIN_WEIGHT for why).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import replace

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from diffusion.attention import SpatialTransformer
from diffusion.ops import MANUAL_CAST, PLAIN, SKIP_INIT, Operations

log = logging.getLogger(__name__)

GEMM_CONV_MAX_POSITIONS = 64
GEMM_CONV_MIN_WEIGHT = 1 << 22
"""A CPU convolution with at most this many output positions (batch x height x width) and a weight
of at least this many numbers runs as one matrix product (`gemm_conv2d`).

With a batch of 2 (CFG), oneDNN reorders a convolution's weight into its blocked layout on every
call. At the UNet's lowest resolutions (2x2 and 4x4 at 128 px) the convolutions do little
arithmetic on large weights (1280 x 2560 x 3 x 3 numbers, 118 MB), so the reorder dominated:
im2col + GEMM reads each weight once, in place, and runs those layers 2-4x faster (the 128 px step
about 30 %). Smaller weights (640 channels) gain nothing, and from about 128 positions on oneDNN's
direct convolution is faster."""


def gemm_conv2d(
    x: Tensor, weight: Tensor, bias: Tensor | None, stride: tuple[int, int], padding: tuple[int, int]
) -> Tensor:
    """conv2d (groups 1, dilation 1, zero padding) as unfold + one matrix product; contiguous NCHW out."""
    batch, _, height, width = x.shape
    out_channels, _, kh, kw = weight.shape
    out_h = (height + 2 * padding[0] - kh) // stride[0] + 1
    out_w = (width + 2 * padding[1] - kw) // stride[1] + 1
    if (kh, kw) == (1, 1) and tuple(stride) == (1, 1) and tuple(padding) == (0, 0):
        columns = x.flatten(2)
    else:
        columns = F.unfold(x, (kh, kw), padding=padding, stride=stride)  # (B, C*kh*kw, positions)
    # One (B*positions, C*kh*kw) matrix, so the weight is read once by a single GEMM (a batched
    # product over the transposed view would read it once per batch item).
    rows = columns.transpose(1, 2).reshape(-1, columns.shape[1])
    out = F.linear(rows, weight.reshape(out_channels, -1), bias)  # (B*positions, O)
    # .contiguous(): the transposed view would be channels-last, which oneDNN would follow in the
    # next convolution by converting that layer's weight on every call.
    out = out.view(batch, out_h * out_w, out_channels).transpose(1, 2).contiguous()
    return out.view(batch, out_channels, out_h, out_w)


class _SmallInputConv:
    """Conv2d mixin: CPU float32 calls with few output positions run through `gemm_conv2d`.

    Same parameters, keys and function as the base class (results differ only by float rounding,
    ~1e-7 relative); every other call, and any unusual configuration, takes the base path."""

    def _gemm_fits(self, x: Tensor, weight: Tensor) -> bool:
        conv: nn.Conv2d = self  # type: ignore[assignment]
        if x.device.type != "cpu" or x.dtype != torch.float32 or x.ndim != 4 or conv.groups != 1:
            return False
        if weight.numel() < GEMM_CONV_MIN_WEIGHT or weight.dtype != torch.float32:
            return False
        if conv.padding_mode != "zeros" or isinstance(conv.padding, str) or tuple(conv.dilation) != (1, 1):
            return False
        (kh, kw), (sh, sw), (ph, pw) = conv.kernel_size, conv.stride, conv.padding
        out_h = (x.shape[2] + 2 * ph - kh) // sh + 1
        out_w = (x.shape[3] + 2 * pw - kw) // sw + 1
        return x.shape[0] * out_h * out_w <= GEMM_CONV_MAX_POSITIONS

    def _conv_forward(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        if self._gemm_fits(x, weight):
            return gemm_conv2d(x, weight, bias, self.stride, self.padding)  # type: ignore[attr-defined]
        return super()._conv_forward(x, weight, bias)  # type: ignore[misc]


class GemmConv2d(_SmallInputConv, nn.Conv2d):
    """nn.Conv2d with the small-input GEMM path."""


class GemmSkipInitConv2d(_SmallInputConv, SKIP_INIT.Conv2d):
    """ops.SKIP_INIT's Conv2d with the small-input GEMM path."""


class GemmCastConv2d(_SmallInputConv, MANUAL_CAST.Conv2d):
    """ops.MANUAL_CAST's Conv2d (weights cast per call, then passed here) with the GEMM path."""


_GEMM_CONVS: dict[type, type[nn.Conv2d]] = {
    nn.Conv2d: GemmConv2d,
    SKIP_INIT.Conv2d: GemmSkipInitConv2d,
    MANUAL_CAST.Conv2d: GemmCastConv2d,
}


def with_small_input_convs(operations: Operations) -> Operations:
    """`operations` whose Conv2d also takes the GEMM path for small inputs (unknown sets unchanged)."""
    conv = _GEMM_CONVS.get(operations.Conv2d)
    return operations if conv is None else replace(operations, Conv2d=conv)


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
