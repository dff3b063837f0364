"""Attention: one dispatch point, and the LDM transformer blocks built on it.

`attention()` is the only place the UNet and the VAE compute softmax(q k^T / sqrt(d)) v; it uses
torch's scaled_dot_product_attention (flash / memory-efficient kernels on CUDA, a fused kernel on
CPU). `attention_math()` is the textbook formula, kept as the reference the tests compare with.

Module and attribute names follow the LDM checkpoint keys (`transformer_blocks.0.attn1.to_q`,
`ff.net.0.proj`, `ff.net.2`, `norm1..3`, `proj_in`, `proj_out`), so a state dict loads unchanged.
"""

from __future__ import annotations

import logging

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from diffusion.ops import PLAIN, Operations

log = logging.getLogger(__name__)


def _split_heads(t: Tensor, heads: int) -> Tensor:
    """(B, N, heads*D) -> (B, heads, N, D) as a view (SDPA accepts strided inputs)."""
    batch, tokens, width = t.shape
    if width % heads:
        raise ValueError(f"attention: width {width} is not divisible by {heads} heads")
    return t.view(batch, tokens, heads, width // heads).transpose(1, 2)


def _prepare_mask(mask: Tensor | None) -> Tensor | None:
    """Broadcast a mask to (B or 1, heads or 1, Nq, Nk), as ComfyUI does.

    (Nq, Nk) applies to every batch item and head; (B, Nq, Nk) to every head. Boolean masks say
    which keys may be attended (True = keep); float masks are added to the logits.
    """
    if mask is None:
        return None
    if mask.ndim == 2:
        mask = mask.unsqueeze(0)
    if mask.ndim == 3:
        mask = mask.unsqueeze(1)
    return mask


def attention(q: Tensor, k: Tensor, v: Tensor, heads: int, mask: Tensor | None = None) -> Tensor:
    """Multi-head scaled dot-product attention with the default scale 1/sqrt(head width).

    q: (B, Nq, heads*D); k, v: (B, Nk, heads*D); mask: see `_prepare_mask`. Returns (B, Nq, heads*D).
    """
    batch, tokens, width = q.shape
    out = F.scaled_dot_product_attention(
        _split_heads(q, heads), _split_heads(k, heads), _split_heads(v, heads), attn_mask=_prepare_mask(mask)
    )
    return out.transpose(1, 2).reshape(batch, tokens, width)


def attention_math(q: Tensor, k: Tensor, v: Tensor, heads: int, mask: Tensor | None = None) -> Tensor:
    """The same result as `attention()` from the plain formula, computed in float32 (reference)."""
    batch, tokens, width = q.shape
    qh, kh, vh = (_split_heads(t.float(), heads) for t in (q, k, v))
    scores = qh @ kh.transpose(-1, -2) * (qh.shape[-1] ** -0.5)
    mask = _prepare_mask(mask)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask.float()
    out = scores.softmax(dim=-1) @ vh
    return out.transpose(1, 2).reshape(batch, tokens, width).to(q.dtype)


class CrossAttention(nn.Module):
    """Attention of x over `context` (self-attention when context is None).

    Keys: to_q, to_k, to_v (no bias), to_out.0 (with bias; to_out.1 is the no-op dropout slot).
    """

    def __init__(
        self,
        query_dim: int,
        context_dim: int | None = None,
        heads: int = 8,
        dim_head: int = 64,
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        operations: Operations = PLAIN,
    ) -> None:
        super().__init__()
        inner = heads * dim_head
        context_dim = query_dim if context_dim is None else context_dim
        self.heads = heads
        self.to_q = operations.Linear(query_dim, inner, bias=False, dtype=dtype, device=device)
        self.to_k = operations.Linear(context_dim, inner, bias=False, dtype=dtype, device=device)
        self.to_v = operations.Linear(context_dim, inner, bias=False, dtype=dtype, device=device)
        self.to_out = nn.Sequential(operations.Linear(inner, query_dim, dtype=dtype, device=device), nn.Dropout(0.0))

    def forward(self, x: Tensor, context: Tensor | None = None, mask: Tensor | None = None) -> Tensor:
        """x: (B, N, query_dim); context: (B, M, context_dim) or None. Returns (B, N, query_dim)."""
        context = x if context is None else context
        out = attention(self.to_q(x), self.to_k(context), self.to_v(context), self.heads, mask)
        return self.to_out(out)


class GEGLU(nn.Module):
    """Gated GELU (Shazeer 2020): one projection to 2x width, value * gelu(gate)."""

    def __init__(self, dim_in: int, dim_out: int, *, dtype=None, device=None, operations: Operations = PLAIN) -> None:
        super().__init__()
        self.proj = operations.Linear(dim_in, dim_out * 2, dtype=dtype, device=device)

    def forward(self, x: Tensor) -> Tensor:
        value, gate = self.proj(x).chunk(2, dim=-1)
        return value * F.gelu(gate)


class FeedForward(nn.Module):
    """GEGLU MLP with 4x inner width; keys net.0.proj and net.2 (net.1 is a no-op dropout)."""

    def __init__(self, dim: int, mult: int = 4, *, dtype=None, device=None, operations: Operations = PLAIN) -> None:
        super().__init__()
        inner = dim * mult
        self.net = nn.Sequential(
            GEGLU(dim, inner, dtype=dtype, device=device, operations=operations),
            nn.Dropout(0.0),
            operations.Linear(inner, dim, dtype=dtype, device=device),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class BasicTransformerBlock(nn.Module):
    """Pre-norm block: self-attention, cross-attention on the text context, GEGLU MLP."""

    def __init__(
        self,
        dim: int,
        heads: int,
        dim_head: int,
        context_dim: int | None,
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        operations: Operations = PLAIN,
    ) -> None:
        super().__init__()
        kw = {"dtype": dtype, "device": device, "operations": operations}
        self.attn1 = CrossAttention(dim, None, heads, dim_head, **kw)
        self.ff = FeedForward(dim, **kw)
        self.attn2 = CrossAttention(dim, context_dim, heads, dim_head, **kw)
        self.norm1 = operations.LayerNorm(dim, dtype=dtype, device=device)
        self.norm2 = operations.LayerNorm(dim, dtype=dtype, device=device)
        self.norm3 = operations.LayerNorm(dim, dtype=dtype, device=device)

    def forward(self, x: Tensor, context: Tensor | None) -> Tensor:
        """x: (B, N, dim); context: (B, M, context_dim)."""
        x = self.attn1(self.norm1(x)) + x
        x = self.attn2(self.norm2(x), context) + x
        return self.ff(self.norm3(x)) + x


class SpatialTransformer(nn.Module):
    """Treat each latent pixel as a token: GroupNorm, project in, transformer blocks, project out, residual.

    `use_linear` (SD2, SDXL) projects with Linear layers on the token layout; otherwise (SD1.x)
    with 1x1 convolutions on the image layout. The two give the same function with differently
    shaped weights: (inner, C) vs (inner, C, 1, 1).
    """

    def __init__(
        self,
        in_channels: int,
        heads: int,
        dim_head: int,
        depth: int = 1,
        context_dim: int | None = None,
        *,
        use_linear: bool = False,
        norm_groups: int = 32,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        operations: Operations = PLAIN,
    ) -> None:
        super().__init__()
        inner = heads * dim_head
        self.use_linear = use_linear
        # eps 1e-6 here (LDM), unlike the 1e-5 of the UNet's resblocks.
        self.norm = operations.GroupNorm(norm_groups, in_channels, eps=1e-6, affine=True, dtype=dtype, device=device)
        if use_linear:
            self.proj_in = operations.Linear(in_channels, inner, dtype=dtype, device=device)
        else:
            self.proj_in = operations.Conv2d(in_channels, inner, kernel_size=1, dtype=dtype, device=device)
        self.transformer_blocks = nn.ModuleList(
            BasicTransformerBlock(
                inner, heads, dim_head, context_dim, dtype=dtype, device=device, operations=operations
            )
            for _ in range(depth)
        )
        if use_linear:
            self.proj_out = operations.Linear(inner, in_channels, dtype=dtype, device=device)
        else:
            self.proj_out = operations.Conv2d(inner, in_channels, kernel_size=1, dtype=dtype, device=device)

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """x: (B, C, H, W); context: (B, M, context_dim). Returns (B, C, H, W)."""
        batch, _, height, width = x.shape
        h = self.norm(x)
        if not self.use_linear:
            h = self.proj_in(h)
        h = h.movedim(1, 3).flatten(1, 2)  # (B, H*W, inner)
        if self.use_linear:
            h = self.proj_in(h)
        for block in self.transformer_blocks:
            h = block(h, context)
        if self.use_linear:
            h = self.proj_out(h)
        # Back to a contiguous NCHW tensor. The movedim view alone has channels-last strides, which
        # every later convolution would follow -- and convert its weight to channels-last on every
        # call (a full copy of each weight per step: it doubled the CPU step time).
        # A model kept channels-last (CUDA, DevicePolicy.channels_last) wants NHWC back, which the
        # movedim view already is.
        layout = torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
        h = h.reshape(batch, height, width, -1).movedim(3, 1).contiguous(memory_format=layout)
        if not self.use_linear:
            h = self.proj_out(h)
        return h + x
