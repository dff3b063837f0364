"""SDXL refiner: linear proj_in, vector conditioning of 2560 = pooled CLIP-G (1280) + height,
width, crop_h, crop_w and aesthetic score (5 x 256), CLIP-G alone at its penultimate layer.

Detection: linear transformer projections and adm_in_channels 2560 (spec §7.4 table).
"""

from __future__ import annotations

from diffusion.configs import UNetConfig
from diffusion.families.base import (
    CLIP_G,
    KL_F8,
    SDXL_LATENT,
    TINY_VAE,
    Family,
    ModelConfigs,
    TextEncoderSlot,
    UNetFacts,
    tiny_text,
)
from diffusion.families.sdxl import prediction

ADM_CHANNELS = 2560
SIZE_FIELDS = ("height", "width", "crop_h", "crop_w", "aesthetic_score")
AESTHETIC_POSITIVE = 6.0
AESTHETIC_NEGATIVE = 2.5
REFERENCE_UNET = UNetConfig(
    model_channels=384,
    channel_mult=(1, 2, 4, 4),
    num_res_blocks=(2, 2, 2, 2),
    transformer_depth=(0, 0, 4, 4, 4, 4, 0, 0),
    transformer_depth_middle=4,
    transformer_depth_output=(0, 0, 0, 4, 4, 4, 4, 4, 4, 0, 0, 0),
    num_heads=-1,
    num_head_channels=64,
    context_dim=1280,
    use_linear_in_transformer=True,
    adm_in_channels=ADM_CHANNELS,
)
TINY_CLIP_G = tiny_text(CLIP_G, 128, projection_dim=CLIP_G.projection_dim)
TINY_UNET = UNetConfig(
    model_channels=32,
    channel_mult=(1, 2, 2),
    num_res_blocks=(1, 1, 1),
    transformer_depth=(0, 1, 0),
    transformer_depth_middle=1,
    transformer_depth_output=(0, 0, 1, 1, 0, 0),
    num_heads=-1,
    num_head_channels=64,
    context_dim=TINY_CLIP_G.hidden_size,
    use_linear_in_transformer=True,
    adm_in_channels=ADM_CHANNELS,
    norm_groups=32,
)


def matches(facts: UNetFacts) -> bool:
    return facts.use_linear_in_transformer and facts.adm_in_channels == ADM_CHANNELS


FAMILY = Family(
    name="sdxl_refiner",
    description="Stable Diffusion XL refiner",
    matches=matches,
    heads=("num_head_channels", 64),
    text_encoders=(TextEncoderSlot(CLIP_G, ("conditioner.embedders.0.model.",)),),
    latent_format=SDXL_LATENT,
    reference=ModelConfigs(REFERENCE_UNET, KL_F8, (CLIP_G,)),
    tiny_configs=ModelConfigs(TINY_UNET, TINY_VAE, (TINY_CLIP_G,)),
    adm="sdxl_refiner",
    prediction_rule=prediction,
)
