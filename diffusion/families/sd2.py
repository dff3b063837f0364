"""Stable Diffusion 2.x (512 eps and 768 v-prediction): linear proj_in, no vector conditioning,
OpenCLIP ViT-H/14 taken at the penultimate layer (spec §7.4).

Detection: a classic UNet with linear transformer projections that takes no `y` (SD2's unCLIP
variants take one and match nothing here). Prediction (spec §7.5): the 768-v models cannot be told
from the 512 ones by shape, so ComfyUI looks at a weight statistic -- the std of the last output
block's first transformer norm1 bias is > 0.09 in the v models. Inpainting (9 channels) is eps.
"""

from __future__ import annotations

import re

from diffusion.configs import UNetConfig
from diffusion.families.base import (
    CLIP_H,
    KL_F8,
    SD15_LATENT,
    TINY_VAE,
    UNET_PREFIX,
    Family,
    ModelConfigs,
    StateDict,
    TextEncoderSlot,
    UNetFacts,
    prediction_from_keys,
    shape_of,
    tiny_text,
)

V_PRED_STD = 0.09
REFERENCE_UNET = UNetConfig(num_heads=-1, num_head_channels=64, context_dim=1024, use_linear_in_transformer=True)
TINY_CLIP_H = tiny_text(CLIP_H, 64, projection_dim=64)
TINY_UNET = UNetConfig(
    model_channels=64,
    channel_mult=(1, 2),
    num_res_blocks=(1, 1),
    transformer_depth=(1, 0),
    transformer_depth_middle=1,
    transformer_depth_output=(0, 0, 1, 1),
    num_heads=-1,
    num_head_channels=64,
    context_dim=TINY_CLIP_H.hidden_size,
    use_linear_in_transformer=True,
    norm_groups=32,
)


def matches(facts: UNetFacts) -> bool:
    return (
        facts.adm_in_channels is None
        and facts.context_dim is not None
        and facts.use_linear_in_transformer
        and facts.in_channels in (4, 9)
    )


def v_pred_probe_key(sd: StateDict, prefix: str = UNET_PREFIX) -> str | None:
    """`output_blocks.11.1.transformer_blocks.0.norm1.bias` in the real model (ComfyUI's probe);
    in a model with fewer blocks, the last output block that has a transformer."""
    pat = re.compile(re.escape(prefix) + r"output_blocks\.(\d+)\.1\.transformer_blocks\.0\.norm1\.bias$")
    found = sorted((int(m.group(1)), k) for k in sd if (m := pat.match(k)))
    return found[-1][1] if found else None


def prediction(sd: StateDict, prefix: str = UNET_PREFIX) -> str:
    if prediction_from_keys(sd, prefix) == "v_prediction":
        return "v_prediction"
    if shape_of(sd, f"{prefix}input_blocks.0.0.weight")[1] != 4:
        return "eps"  # SD2 inpainting models are eps
    key = v_pred_probe_key(sd, prefix)
    if key is None:
        return "eps"
    bias = sd[key].float()
    return "v_prediction" if float(bias.std(unbiased=False)) > V_PRED_STD else "eps"


FAMILY = Family(
    name="sd2",
    description="Stable Diffusion 2.x",
    matches=matches,
    heads=("num_head_channels", 64),
    text_encoders=(TextEncoderSlot(CLIP_H, ("cond_stage_model.model.", "conditioner.embedders.0.model.")),),
    latent_format=SD15_LATENT,
    reference=ModelConfigs(REFERENCE_UNET, KL_F8, (CLIP_H,)),
    tiny_configs=ModelConfigs(TINY_UNET, TINY_VAE, (TINY_CLIP_H,)),
    prediction_rule=prediction,
)
