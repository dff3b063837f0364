"""SDXL base: linear proj_in, vector conditioning of 2816 = pooled CLIP-G (1280) + six 256-wide
size embeddings, CLIP-L and CLIP-G at their penultimate layers, concatenated (spec §7.4, §7.7).

Detection: linear transformer projections and adm_in_channels 2816. SSD-1B / Segmind-Vega /
KOALA are SDXL with fewer transformer blocks: their config is read from the weights, so they
load as SDXL too. Prediction: eps unless ComfyUI's `v_pred` marker key is present; EDM variants
(Playground 2.5 `edm_mean`, CosXL `edm_vpred.sigma_max`) are refused with a clear error.
"""

from __future__ import annotations

from dataclasses import replace

from core.errors import ModelError
from diffusion.configs import UNetConfig
from diffusion.families.base import (
    CLIP_G,
    CLIP_L,
    KL_F8,
    SDXL_LATENT,
    TINY_VAE,
    UNET_PREFIX,
    Family,
    ModelConfigs,
    StateDict,
    TextEncoderSlot,
    UNetFacts,
    prediction_from_keys,
    tiny_text,
)

ADM_CHANNELS = 2816
SIZE_FIELDS = ("height", "width", "crop_h", "crop_w", "target_height", "target_width")
SDXL_CLIP_L = replace(CLIP_L, penultimate=True, hidden_final_norm=False)
REFERENCE_UNET = UNetConfig(
    channel_mult=(1, 2, 4),
    num_res_blocks=(2, 2, 2),
    transformer_depth=(0, 0, 2, 2, 10, 10),
    transformer_depth_middle=10,
    transformer_depth_output=(10, 10, 10, 2, 2, 2, 0, 0, 0),
    num_heads=-1,
    num_head_channels=64,
    context_dim=2048,
    use_linear_in_transformer=True,
    adm_in_channels=ADM_CHANNELS,
)
TINY_CLIP_L = tiny_text(SDXL_CLIP_L, 64)
TINY_CLIP_G = tiny_text(CLIP_G, 128, projection_dim=CLIP_G.projection_dim)
TINY_UNET = UNetConfig(
    model_channels=32,
    channel_mult=(1, 2, 4),
    num_res_blocks=(1, 1, 1),
    transformer_depth=(0, 1, 1),
    transformer_depth_middle=1,
    transformer_depth_output=(1, 1, 1, 1, 0, 0),
    num_heads=-1,
    num_head_channels=64,
    context_dim=TINY_CLIP_L.hidden_size + TINY_CLIP_G.hidden_size,
    use_linear_in_transformer=True,
    adm_in_channels=ADM_CHANNELS,
    norm_groups=32,
)

EDM_KEYS = ("edm_mean", "edm_std", "edm_vpred.sigma_max")


def matches(facts: UNetFacts) -> bool:
    return facts.use_linear_in_transformer and facts.adm_in_channels == ADM_CHANNELS


def prediction(sd: StateDict, prefix: str = UNET_PREFIX) -> str:
    found = [k for k in EDM_KEYS if k in sd]
    if found:
        raise ModelError(
            f"this SDXL checkpoint uses EDM sampling (keys {', '.join(found)}: Playground 2.5 / CosXL), "
            "which Loom does not support yet"
        )
    return prediction_from_keys(sd, prefix)


FAMILY = Family(
    name="sdxl",
    description="Stable Diffusion XL base",
    matches=matches,
    heads=("num_head_channels", 64),
    text_encoders=(
        TextEncoderSlot(SDXL_CLIP_L, ("conditioner.embedders.0.transformer.",)),
        TextEncoderSlot(CLIP_G, ("conditioner.embedders.1.model.",)),
    ),
    latent_format=SDXL_LATENT,
    reference=ModelConfigs(REFERENCE_UNET, KL_F8, (SDXL_CLIP_L, CLIP_G)),
    tiny_configs=ModelConfigs(TINY_UNET, TINY_VAE, (TINY_CLIP_L, TINY_CLIP_G)),
    adm="sdxl",
    prediction_rule=prediction,
)
