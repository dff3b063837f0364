"""Architecture configs: plain frozen dataclasses shared by the architectures and the families.

Field names follow the original LDM / ComfyUI `unet_config` names, so a config detected from a
checkpoint reads like ComfyUI's. No torch here: families build configs without touching weights.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class UNetConfig:
    """The LDM UNet (openaimodel.UNetModel) as used by SD1.x, SD2.x and SDXL.

    `transformer_depth` has one entry per input block that holds a resnet (levels x
    num_res_blocks, in order); `transformer_depth_output` one per output block (levels x
    (num_res_blocks + 1)); 0 = no SpatialTransformer in that block. Heads: either `num_heads`
    fixed (SD1.x: 8) or `num_head_channels` per head (SD2/SDXL: 64) with the other set to -1.
    """

    in_channels: int = 4
    out_channels: int = 4
    model_channels: int = 320
    channel_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: tuple[int, ...] = (2, 2, 2, 2)
    transformer_depth: tuple[int, ...] = (1, 1, 1, 1, 1, 1, 0, 0)
    transformer_depth_middle: int = 1
    transformer_depth_output: tuple[int, ...] = (0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1)
    num_heads: int = 8
    num_head_channels: int = -1
    context_dim: int = 768
    use_linear_in_transformer: bool = False
    adm_in_channels: int | None = None
    """Size of the extra vector conditioning (SDXL: pooled text + size embeddings); None = none."""
    norm_groups: int = 32
    """GroupNorm groups (32 in every real model; tiny test models use fewer channels)."""

    @property
    def levels(self) -> int:
        return len(self.channel_mult)


@dataclass(frozen=True)
class VAEConfig:
    """The KL-f8 autoencoder (first_stage_model)."""

    in_channels: int = 3
    out_channels: int = 3
    ch: int = 128
    ch_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    z_channels: int = 4
    embed_dim: int = 4
    norm_groups: int = 32

    @property
    def downscale(self) -> int:
        return 2 ** (len(self.ch_mult) - 1)


@dataclass(frozen=True)
class TextEncoderConfig:
    """One CLIP text transformer (OpenAI CLIP-L, OpenCLIP ViT-H or ViT-bigG).

    `layout` says how its weights are named in a single-file checkpoint: "hf" (transformers'
    CLIPTextModel names, SD1.x / SDXL clip_l) or "open_clip" (SD2.x clip_h, SDXL clip_g; converted
    at load). `hidden_act`: "quick_gelu" for OpenAI CLIP-L, "gelu" for the OpenCLIP models.
    `penultimate`: the family's default output layer is the second to last (SD2, SDXL).
    """

    name: str = "clip_l"
    vocab_size: int = 49408
    hidden_size: int = 768
    intermediate_size: int = 3072
    num_layers: int = 12
    num_heads: int = 12
    max_positions: int = 77
    hidden_act: str = "quick_gelu"
    projection_dim: int | None = None
    """Text projection width (SDXL clip_g's pooled output is projected); None = no projection."""
    layout: str = "hf"
    penultimate: bool = False
    pad_with_end: bool = True
    """Pad with the end token (CLIP-L) rather than token 0 (OpenCLIP)."""
    layer_norm_eps: float = 1e-5
    hidden_final_norm: bool = True
    """Apply the final layer norm to an intermediate layer's output too (penultimate, clip skip):
    True for SD1.x CLIP-L and SD2.x OpenCLIP-H, False for both SDXL encoders (ComfyUI's
    `layer_norm_hidden_state`)."""
