"""The LDM UNet (SD1.x, SD2.x, SDXL base and refiner) in the original checkpoint key layout.

`UNetModel(config).state_dict()` has exactly the keys of a single-file checkpoint under
`model.diffusion_model.` (prefix stripped): time_embed, label_emb (when the config has
adm_in_channels), input_blocks, middle_block, output_blocks, out. The network predicts eps or v;
which one is the family's business (sampling), not the architecture's.

Layout (per level of `channel_mult`): `num_res_blocks[level]` input blocks [ResBlock,
SpatialTransformer?], then a Downsample block except at the last level; the middle block is
ResBlock, SpatialTransformer, ResBlock; output levels run in reverse with one more block each,
each block [ResBlock on concat(h, skip), SpatialTransformer?, Upsample? (last block of a level but
the top one)].

`transformer_depth_output` is read in output-block order (block 0 = lowest resolution), as
configs.py documents: SDXL is (10, 10, 10, 2, 2, 2, 0, 0, 0). ComfyUI stores the same list the
other way round and pops from its end; copying its list verbatim would misplace the transformers
(the state dict keys would then not match, so loading fails loudly rather than silently).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from core.errors import ModelError
from diffusion.attention import SpatialTransformer
from diffusion.configs import UNetConfig
from diffusion.layers import (
    Downsample,
    ResBlock,
    TimestepEmbedSequential,
    Upsample,
    timestep_embedding,
    with_small_input_convs,
)
from diffusion.ops import PLAIN, Operations

log = logging.getLogger(__name__)

ControlSignals = Mapping[str, Sequence[Tensor | None]]
"""ControlNet residuals: "input" / "middle" / "output" lists, consumed from the end (ComfyUI's order)."""


def _check_config(cfg: UNetConfig) -> None:
    levels = cfg.levels
    problems = []
    if len(cfg.num_res_blocks) != levels:
        problems.append(f"num_res_blocks has {len(cfg.num_res_blocks)} entries for {levels} levels")
    n_in = sum(cfg.num_res_blocks)
    n_out = n_in + levels
    if len(cfg.transformer_depth) != n_in:
        problems.append(f"transformer_depth has {len(cfg.transformer_depth)} entries, needs {n_in}")
    if len(cfg.transformer_depth_output) != n_out:
        problems.append(f"transformer_depth_output has {len(cfg.transformer_depth_output)} entries, needs {n_out}")
    if (cfg.num_heads == -1) == (cfg.num_head_channels == -1):
        problems.append("set exactly one of num_heads and num_head_channels (the other -1)")
    if problems:
        raise ModelError("invalid UNetConfig: " + "; ".join(problems))


def time_and_label_embeddings(
    config: UNetConfig, operations: Operations, dtype: torch.dtype | None, device: torch.device | str | None
) -> tuple[nn.Sequential, nn.Sequential | None]:
    """`time_embed` and (with adm_in_channels) `label_emb`, shared by the UNet and ControlNet.

    label_emb is a nested Sequential: the checkpoint keys are label_emb.0.0 / label_emb.0.2."""
    mc, emb_dim = config.model_channels, config.model_channels * 4
    lin = {"dtype": dtype, "device": device}
    time_embed = nn.Sequential(
        operations.Linear(mc, emb_dim, **lin), nn.SiLU(), operations.Linear(emb_dim, emb_dim, **lin)
    )
    if config.adm_in_channels is None:
        return time_embed, None
    label_emb = nn.Sequential(
        nn.Sequential(
            operations.Linear(config.adm_in_channels, emb_dim, **lin),
            nn.SiLU(),
            operations.Linear(emb_dim, emb_dim, **lin),
        )
    )
    return time_embed, label_emb


class UNetModel(nn.Module):
    """forward(x, timesteps, context, y=None, control=None) -> eps or v, same shape as x."""

    def __init__(
        self,
        config: UNetConfig,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        operations: Operations = PLAIN,
    ) -> None:
        super().__init__()
        _check_config(config)
        operations = with_small_input_convs(operations)  # the 2x2 / 4x4 levels' convs on the CPU
        self.config = config
        self.compute_dtype: torch.dtype | None = None
        self._kw = {"dtype": dtype, "device": device, "operations": operations}
        mc = config.model_channels
        emb_dim = mc * 4
        lin = {"dtype": dtype, "device": device}
        self.time_embed, self.label_emb = time_and_label_embeddings(config, operations, dtype, device)
        skip_channels = self._build_input_blocks(emb_dim)
        self._build_middle_block(emb_dim)
        self._build_output_blocks(emb_dim, skip_channels)
        self.out = nn.Sequential(
            operations.GroupNorm(config.norm_groups, mc, **lin),
            nn.SiLU(),
            operations.Conv2d(mc, config.out_channels, 3, padding=1, **lin),
        )
        del self._kw  # only needed while building

    # -- construction -------------------------------------------------------------------------

    def _heads(self, channels: int) -> tuple[int, int]:
        """(heads, head width) at a given width: fixed head count (SD1) or fixed head width (SD2/XL)."""
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
            channels,
            heads,
            dim_head,
            depth,
            cfg.context_dim,
            use_linear=cfg.use_linear_in_transformer,
            norm_groups=cfg.norm_groups,
            **self._kw,
        )

    def _build_input_blocks(self, emb_dim: int) -> list[int]:
        """Builds input_blocks; returns the width of every skip connection, in push order."""
        cfg = self.config
        ops, kw = self._kw["operations"], {"dtype": self._kw["dtype"], "device": self._kw["device"]}
        conv_in = ops.Conv2d(cfg.in_channels, cfg.model_channels, 3, padding=1, **kw)
        self.input_blocks = nn.ModuleList([TimestepEmbedSequential(conv_in)])
        skips = [cfg.model_channels]
        ch = cfg.model_channels
        depths = iter(cfg.transformer_depth)
        for level, mult in enumerate(cfg.channel_mult):
            for _ in range(cfg.num_res_blocks[level]):
                layers: list[nn.Module] = [self._resblock(ch, emb_dim, mult * cfg.model_channels)]
                ch = mult * cfg.model_channels
                depth = next(depths)
                if depth > 0:
                    layers.append(self._transformer(ch, depth))
                self.input_blocks.append(TimestepEmbedSequential(*layers))
                skips.append(ch)
            if level != cfg.levels - 1:
                self.input_blocks.append(TimestepEmbedSequential(Downsample(ch, **self._kw)))
                skips.append(ch)
        self._mid_channels = ch
        return skips

    def _build_middle_block(self, emb_dim: int) -> None:
        """ResBlock, SpatialTransformer, ResBlock; depth -1 leaves only the first ResBlock (ComfyUI)."""
        ch = self._mid_channels
        layers: list[nn.Module] = [self._resblock(ch, emb_dim, ch)]
        if self.config.transformer_depth_middle >= 0:
            layers += [self._transformer(ch, self.config.transformer_depth_middle), self._resblock(ch, emb_dim, ch)]
        self.middle_block = TimestepEmbedSequential(*layers)

    def _build_output_blocks(self, emb_dim: int, skips: list[int]) -> None:
        cfg = self.config
        self.output_blocks = nn.ModuleList()
        ch = self._mid_channels
        depths = iter(cfg.transformer_depth_output)
        for level in reversed(range(cfg.levels)):
            out_ch = cfg.channel_mult[level] * cfg.model_channels
            for i in range(cfg.num_res_blocks[level] + 1):
                layers: list[nn.Module] = [self._resblock(ch + skips.pop(), emb_dim, out_ch)]
                ch = out_ch
                depth = next(depths)
                if depth > 0:
                    layers.append(self._transformer(ch, depth))
                if level and i == cfg.num_res_blocks[level]:
                    layers.append(Upsample(ch, **self._kw))
                self.output_blocks.append(TimestepEmbedSequential(*layers))

    # -- inference ----------------------------------------------------------------------------

    @property
    def dtype(self) -> torch.dtype:
        """The compute dtype: `compute_dtype` when set (weights stored in another dtype and cast per
        call by MANUAL_CAST layers), else the weights' own (read live, so `.to(...)` is honoured)."""
        return self.compute_dtype or self.time_embed[0].weight.dtype

    def forward(
        self,
        x: Tensor,
        timesteps: Tensor,
        context: Tensor | None,
        y: Tensor | None = None,
        control: ControlSignals | None = None,
    ) -> Tensor:
        """x: (B, in_channels, H, W) latents; timesteps: (B,) or a scalar (0..999, may be fractional);
        context: (B, M, context_dim) text tokens; y: (B, adm_in_channels) for SDXL-style models.
        Returns (B, out_channels, H, W) in x's dtype; the model computes in its weights' dtype."""
        if (y is None) != (self.label_emb is None):
            need = f"needs y of width {self.config.adm_in_channels}" if self.label_emb is not None else "takes no y"
            raise ModelError(f"UNetModel {need} (vector conditioning); got y={'None' if y is None else tuple(y.shape)}")
        dtype = self.dtype
        timesteps = torch.as_tensor(timesteps, device=x.device).reshape(-1)
        if timesteps.numel() == 1 and x.shape[0] > 1:
            timesteps = timesteps.expand(x.shape[0])
        emb = self.time_embed(timestep_embedding(timesteps, self.config.model_channels).to(dtype))
        if y is not None:
            emb = emb + self.label_emb(y.to(dtype))
        if context is not None:
            context = context.to(dtype)
        pending = {name: list(values) for name, values in (control or {}).items()}

        h = x.to(dtype)
        skips = []
        for block in self.input_blocks:
            h = _add_control(block(h, emb, context), pending, "input")
            skips.append(h)
        h = _add_control(self.middle_block(h, emb, context), pending, "middle")
        for block in self.output_blocks:
            skip = _add_control(skips.pop(), pending, "output")
            h = torch.cat([h, skip], dim=1)
            # Upsample to the next skip's size, so latents with odd sizes (e.g. 13x13) work.
            target = skips[-1].shape[2:] if skips else None
            h = block(h, emb, context, target)
        return self.out(h).to(x.dtype)


def _add_control(h: Tensor, pending: dict[str, list[Tensor | None]], name: str) -> Tensor:
    """Add the next ControlNet residual for this stage, if any (taken from the list's end)."""
    residuals = pending.get(name)
    if not residuals:
        return h
    residual = residuals.pop()
    if residual is None:
        return h
    try:
        fits = torch.broadcast_shapes(h.shape, residual.shape) == h.shape
    except RuntimeError:
        fits = False
    if not fits:
        log.warning(
            "control residual for %s has shape %s, feature map %s; skipped", name, tuple(residual.shape), tuple(h.shape)
        )
        return h
    return h + residual.to(h.dtype)
