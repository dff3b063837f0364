"""Stable Diffusion 1.x: conv proj_in/proj_out, no vector conditioning, CLIP ViT-L/14 (spec §7.4).

Detection: a classic UNet whose transformers use 1x1-conv projections and that takes no `y`.
In ComfyUI's table SD15 also pins context_dim 768 and model_channels 320; here those are checked
against the text encoder when the checkpoint is loaded instead (loading.check_text_fits_unet), so a
narrow test model of the same architecture is still "sd15". in_channels 9 = inpainting model.
Prediction: always eps (ComfyUI's ModelSamplingDiscrete node overrides it).
"""

from __future__ import annotations

from diffusion.configs import UNetConfig
from diffusion.families.base import (
    CLIP_L,
    KL_F8,
    SD15_LATENT,
    TINY_VAE,
    Family,
    ModelConfigs,
    TextEncoderSlot,
    UNetFacts,
    tiny_text,
)

REFERENCE_UNET = UNetConfig()  # the UNetConfig defaults are SD1.5's
TINY_CLIP_L = tiny_text(CLIP_L, 64)
TINY_UNET = UNetConfig(
    model_channels=32,
    channel_mult=(1, 2),
    num_res_blocks=(1, 1),
    transformer_depth=(1, 0),
    transformer_depth_middle=1,
    transformer_depth_output=(0, 0, 1, 1),
    num_heads=8,
    context_dim=TINY_CLIP_L.hidden_size,
    norm_groups=32,
)


def matches(facts: UNetFacts) -> bool:
    return (
        facts.adm_in_channels is None
        and facts.context_dim is not None
        and not facts.use_linear_in_transformer
        and facts.in_channels in (4, 9)
    )


FAMILY = Family(
    name="sd15",
    description="Stable Diffusion 1.x",
    matches=matches,
    heads=("num_heads", 8),
    text_encoders=(TextEncoderSlot(CLIP_L, ("cond_stage_model.transformer.",)),),
    latent_format=SD15_LATENT,
    reference=ModelConfigs(REFERENCE_UNET, KL_F8, (CLIP_L,)),
    tiny_configs=ModelConfigs(TINY_UNET, TINY_VAE, (TINY_CLIP_L,)),
    prediction_rule=lambda sd, prefix: "eps",
)
