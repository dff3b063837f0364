"""The ControlNet network (lllyasviel's cldm.ControlNet) in the original checkpoint key layout.

A ControlNet is a trainable copy of the UNet's encoder half: time_embed (+ label_emb for SDXL),
input_blocks and middle_block built exactly like diffusion/unet.py's (same building blocks, same
key names), plus
- `input_hint_block`: eight 3x3 convolutions with SiLU between them that take the hint image
  (pixels, 8x the latent size) down to the latent size and `model_channels` wide; its output is
  added to the first input block's output;
- `zero_convs.<n>.0`: a 1x1 convolution after every input block (the residual for that skip
  connection) and `middle_block_out.0` after the middle block.

`forward(x, hint, timesteps, context, y=None)` returns {"output": [one residual per input block,
in block order], "middle": [one residual]}: the UNet pops "output" from the end while it pops its
skip connections, so entry n lands on input block n's skip (diffusion/unet.py `control=`).
"""

from __future__ import annotations

import logging

import torch
from torch import Tensor, nn

from core.errors import ModelError
from diffusion.attention import SpatialTransformer
from diffusion.configs import UNetConfig
from diffusion.layers import Downsample, ResBlock, TimestepEmbedSequential, timestep_embedding
from diffusion.ops import PLAIN, Operations
from diffusion.unet import time_and_label_embeddings

log = logging.getLogger(__name__)

HINT_WIDTHS = (16, 16, 32, 32, 96, 96, 256)
"""Output widths of the hint block's first seven convolutions (the eighth goes to model_channels)."""
HINT_STRIDES = (1, 1, 2, 1, 2, 1, 2, 1)
"""Three stride-2 convolutions: the hint enters at 8x the latent size."""
HINT_DOWNSCALE = 8


class ControlNetModel(nn.Module):
    """forward(x, hint, timesteps, context, y=None) -> {"output": [...], "middle": [...]}."""

    def __init__(
        self,
        config: UNetConfig,
        hint_channels: int = 3,
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        operations: Operations = PLAIN,
    ) -> None:
        super().__init__()
        if (config.num_heads == -1) == (config.num_head_channels == -1):
            raise ModelError("invalid ControlNet config: set exactly one of num_heads and num_head_channels")
        if len(config.num_res_blocks) != config.levels or len(config.transformer_depth) != sum(config.num_res_blocks):
            raise ModelError(
                f"invalid ControlNet config: {len(config.num_res_blocks)} num_res_blocks / "
                f"{len(config.transformer_depth)} transformer depths for {config.levels} levels"
            )
        self.config = config
        self.hint_channels = hint_channels
        self._kw = {"dtype": dtype, "device": device, "operations": operations}
        mc = config.model_channels
        emb_dim = mc * 4
        self.time_embed, self.label_emb = time_and_label_embeddings(config, operations, dtype, device)
        self.input_hint_block = self._hint_block(hint_channels, mc)
        self._build_input_blocks(emb_dim)
        self._build_middle_block(emb_dim)
        del self._kw  # only needed while building

    # -- construction -------------------------------------------------------------------------

    def _conv(self, c_in: int, c_out: int, kernel: int, stride: int = 1) -> nn.Module:
        ops = self._kw["operations"]
        return ops.Conv2d(
            c_in, c_out, kernel, stride=stride, padding=kernel // 2, dtype=self._kw["dtype"], device=self._kw["device"]
        )

    def _hint_block(self, hint_channels: int, model_channels: int) -> TimestepEmbedSequential:
        # SiLU slots are kept so the conv indices are the checkpoint's (0, 2, 4, ..., 14).
        layers: list[nn.Module] = []
        widths = (hint_channels, *HINT_WIDTHS, model_channels)
        for i, stride in enumerate(HINT_STRIDES):
            if i:
                layers.append(nn.SiLU())
            layers.append(self._conv(widths[i], widths[i + 1], 3, stride))
        return TimestepEmbedSequential(*layers)

    def _zero_conv(self, channels: int) -> TimestepEmbedSequential:
        return TimestepEmbedSequential(self._conv(channels, channels, 1))

    def _heads(self, channels: int) -> tuple[int, int]:
        cfg = self.config
        if cfg.num_head_channels == -1:
            return cfg.num_heads, channels // cfg.num_heads
        return channels // cfg.num_head_channels, cfg.num_head_channels

    def _resblock(self, channels: int, emb_dim: int, out_channels: int) -> ResBlock:
        return ResBlock(channels, emb_dim, out_channels, norm_groups=self.config.norm_groups, **self._kw)

    def _transformer(self, channels: int, depth: int) -> SpatialTransformer:
        heads, dim_head = self._heads(channels)
        cfg = self.config
        return SpatialTransformer(
            channels, heads, dim_head, depth, cfg.context_dim,
            use_linear=cfg.use_linear_in_transformer, norm_groups=cfg.norm_groups, **self._kw,
        )  # fmt: skip

    def _build_input_blocks(self, emb_dim: int) -> None:
        """The UNet's input blocks (same order and names) with a zero conv after each."""
        cfg = self.config
        ch = cfg.model_channels
        self.input_blocks = nn.ModuleList([TimestepEmbedSequential(self._conv(cfg.in_channels, ch, 3))])
        self.zero_convs = nn.ModuleList([self._zero_conv(ch)])
        depths = iter(cfg.transformer_depth)
        for level, mult in enumerate(cfg.channel_mult):
            for _ in range(cfg.num_res_blocks[level]):
                layers: list[nn.Module] = [self._resblock(ch, emb_dim, mult * cfg.model_channels)]
                ch = mult * cfg.model_channels
                depth = next(depths)
                if depth > 0:
                    layers.append(self._transformer(ch, depth))
                self.input_blocks.append(TimestepEmbedSequential(*layers))
                self.zero_convs.append(self._zero_conv(ch))
            if level != cfg.levels - 1:
                self.input_blocks.append(TimestepEmbedSequential(Downsample(ch, **self._kw)))
                self.zero_convs.append(self._zero_conv(ch))
        self._mid_channels = ch

    def _build_middle_block(self, emb_dim: int) -> None:
        ch = self._mid_channels
        layers: list[nn.Module] = [self._resblock(ch, emb_dim, ch)]
        if self.config.transformer_depth_middle >= 0:
            layers += [self._transformer(ch, self.config.transformer_depth_middle), self._resblock(ch, emb_dim, ch)]
        self.middle_block = TimestepEmbedSequential(*layers)
        self.middle_block_out = self._zero_conv(ch)

    # -- inference ----------------------------------------------------------------------------

    @property
    def dtype(self) -> torch.dtype:
        return self.time_embed[0].weight.dtype

    @property
    def device(self) -> torch.device:
        return self.time_embed[0].weight.device

    def forward(
        self, x: Tensor, hint: Tensor, timesteps: Tensor, context: Tensor | None, y: Tensor | None = None
    ) -> dict[str, list[Tensor]]:
        """x: (B, in_channels, h, w) scaled latents; hint: (B, hint_channels, 8h, 8w); timesteps:
        (B,); context: (B, T, context_dim); y: (B, adm_in_channels) for SDXL ControlNets.
        Returns the residuals in the network's dtype."""
        if self.label_emb is not None and y is None:
            raise ModelError(
                f"this ControlNet needs the vector conditioning y (width {self.config.adm_in_channels}, SDXL); "
                "the model's conditioning has none"
            )
        emb = self.time_embed(timestep_embedding(timesteps, self.config.model_channels).to(x.dtype))
        guided_hint: Tensor | None = self.input_hint_block(hint, emb, context)
        if self.label_emb is not None:
            emb = emb + self.label_emb(y)
        outputs = []
        h = x
        for block, zero_conv in zip(self.input_blocks, self.zero_convs, strict=True):
            h = block(h, emb, context)
            if guided_hint is not None:  # the hint joins once, after the first block (conv_in)
                h = h + guided_hint
                guided_hint = None
            outputs.append(zero_conv(h, emb, context))
        h = self.middle_block(h, emb, context)
        return {"output": outputs, "middle": [self.middle_block_out(h, emb, context)]}


__all__ = ["HINT_DOWNSCALE", "ControlNetModel"]
