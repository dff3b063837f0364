"""Model families: detection (exactly one match), configs read from weights, tiny configs, prediction."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from core.errors import ModelError
from diffusion import families
from diffusion.families import sd2
from diffusion.families.base import (
    UNET_PREFIX,
    VAE_PREFIX,
    Family,
    PrefixView,
    text_config_from_state_dict,
    unet_config_from_state_dict,
    unet_facts,
    vae_config_from_state_dict,
)
from diffusion.loading import LazyStateDict
from diffusion.unet import UNetModel
from diffusion.vae import AutoencoderKL
from tests.utils.checkpoints import cached_checkpoint, checkpoint_spec, random_state_dict

FAMILY_NAMES = sorted(families.FAMILIES)


def meta_unet_sd(config, prefix: str = UNET_PREFIX) -> dict:
    """A UNet state dict of meta tensors: shapes without memory."""
    with torch.device("meta"):
        unet = UNetModel(config)
    return {prefix + k: v for k, v in unet.state_dict().items()}


def test_the_four_families_are_registered() -> None:
    assert FAMILY_NAMES == ["sd15", "sd2", "sdxl", "sdxl_refiner"]


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_tiny_checkpoint_round_trips_through_safetensors_and_detects_its_family(name: str) -> None:
    family = families.get(name)
    with LazyStateDict(cached_checkpoint(name, tiny=True)) as sd:
        assert families.detect(sd) is family
        tiny = family.tiny()
        assert family.unet_config(sd) == tiny.unet
        assert vae_config_from_state_dict(PrefixView(sd, VAE_PREFIX)) == tiny.vae
        for slot, config in zip(family.text_encoders, tiny.text, strict=True):
            assert text_config_from_state_dict(PrefixView(sd, slot.prefixes[0]), slot.config) == config


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_reference_unet_is_detected_and_its_config_read_back_exactly(name: str) -> None:
    family = families.get(name)
    sd = meta_unet_sd(family.reference.unet)
    assert families.detect(sd) is family
    assert family.unet_config(sd) == family.reference.unet
    # a UNet-only file has no prefix
    bare = meta_unet_sd(family.reference.unet, prefix="")
    assert families.unet_prefix(bare) == ""
    assert families.detect(bare) is family


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_tiny_configs_keep_what_detection_reads(name: str) -> None:
    family = families.get(name)
    ref, tiny = family.reference, family.tiny()
    ref_facts = unet_facts(meta_unet_sd(ref.unet))
    tiny_facts = unet_facts(meta_unet_sd(tiny.unet))
    assert tiny_facts.adm_in_channels == ref_facts.adm_in_channels
    assert tiny_facts.use_linear_in_transformer == ref_facts.use_linear_in_transformer
    assert tiny_facts.in_channels == ref_facts.in_channels
    # Text features feed the UNet: its context is the (concatenated) encoder widths, real or tiny.
    for configs in (ref, tiny):
        assert configs.unet.context_dim == sum(c.hidden_size for c in configs.text)
    tiny_params = sum(v.numel() for v in meta_unet_sd(tiny.unet).values())
    assert tiny_params < 6_000_000


def test_reference_vae_config_reads_back() -> None:
    with torch.device("meta"):
        vae = AutoencoderKL(families.get("sd15").reference.vae)
    assert vae_config_from_state_dict(vae.state_dict()) == families.get("sd15").reference.vae


def test_text_config_from_open_clip_and_hf_layouts_agree() -> None:
    spec = checkpoint_spec("sdxl")  # clip_g is written in open_clip layout
    g = {
        k[len("conditioner.embedders.1.model.") :]: torch.empty(s, device="meta")
        for k, (s, _) in spec.items()
        if k.startswith("conditioner.embedders.1.model.")
    }
    config = text_config_from_state_dict(g, families.get("sdxl").text_encoders[1].config)
    assert config == families.get("sdxl").reference.text[1]
    assert (config.hidden_size, config.num_layers, config.num_heads, config.projection_dim) == (1280, 32, 20, 1280)


def test_sd15_inpainting_unet_is_still_sd15() -> None:
    config = replace(families.get("sd15").tiny().unet, in_channels=9)
    sd = meta_unet_sd(config)
    assert families.detect(sd).name == "sd15"
    assert families.get("sd15").unet_config(sd).in_channels == 9


def test_unet_matching_no_family_names_what_was_seen() -> None:
    # SD2 unCLIP: linear projections and a 1536-wide vector input -- no supported family.
    config = replace(families.get("sd2").tiny().unet, adm_in_channels=1536)
    with pytest.raises(ModelError) as err:
        families.detect(meta_unet_sd(config))
    message = str(err.value)
    assert "matches no known model family" in message
    assert "adm_in_channels 1536" in message and "linear proj_in" in message


def test_state_dict_without_a_unet_is_refused_clearly() -> None:
    with pytest.raises(ModelError, match="no diffusion model .*input_blocks.0.0.weight"):
        families.detect({"first_stage_model.encoder.conv_in.weight": torch.empty(1)})


def _fake(name: str) -> Family:
    sd15 = families.get("sd15")
    return replace(sd15, name=name, description="fake", matches=lambda facts: facts.adm_in_channels is None)


def test_two_matching_families_is_an_error_not_a_first_match() -> None:
    sd = meta_unet_sd(families.get("sd15").tiny().unet)
    candidates = {**families.FAMILIES, "fake": _fake("fake")}
    with pytest.raises(ModelError, match=r"several model families \(sd15, fake\)"):
        families.detect(sd, families=candidates)


def test_registering_a_conflicting_family_breaks_detection_until_removed() -> None:
    sd = meta_unet_sd(families.get("sd15").tiny().unet)
    families.register(_fake("zz_fake"))
    try:
        with pytest.raises(ModelError, match="several"):
            families.detect(sd)
        with pytest.raises(ModelError, match="already registered"):
            families.register(_fake("zz_fake"))
    finally:
        families.unregister("zz_fake")
    assert families.detect(sd).name == "sd15"


def test_unknown_family_name() -> None:
    with pytest.raises(ModelError, match="unknown model family 'sd9'"):
        families.get("sd9")


# -- prediction type ------------------------------------------------------------------------------


def _sd2_state(bias_std: float, in_channels: int = 4) -> dict:
    sd = random_state_dict("sd2", tiny=True)
    key = sd2.v_pred_probe_key(sd)
    gen = torch.Generator().manual_seed(1)
    sd[key] = torch.randn(sd[key].shape, generator=gen) * bias_std
    if in_channels != 4:
        weight = sd[UNET_PREFIX + "input_blocks.0.0.weight"]
        sd[UNET_PREFIX + "input_blocks.0.0.weight"] = weight.new_zeros(weight.shape[0], in_channels, *weight.shape[2:])
    return sd


def test_sd2_v_prediction_is_told_by_the_norm_bias_statistic() -> None:
    family = families.get("sd2")
    assert family.prediction(_sd2_state(0.0)) == "eps"
    assert family.prediction(_sd2_state(0.05)) == "eps"
    assert family.prediction(_sd2_state(0.5)) == "v_prediction"
    assert family.prediction(_sd2_state(0.5, in_channels=9)) == "eps"  # inpainting models are eps


def test_sd2_probe_is_comfyuis_key_on_the_real_layout() -> None:
    sd = meta_unet_sd(families.get("sd2").reference.unet)
    assert sd2.v_pred_probe_key(sd) == UNET_PREFIX + "output_blocks.11.1.transformer_blocks.0.norm1.bias"


def test_v_pred_marker_key_and_edm_keys() -> None:
    sd = random_state_dict("sdxl", tiny=True)
    family = families.get("sdxl")
    assert family.prediction(sd) == "eps"
    assert family.prediction({**sd, "v_pred": torch.empty(0)}) == "v_prediction"
    with pytest.raises(ModelError, match="EDM"):
        family.prediction({**sd, "edm_mean": torch.empty(0)})
    assert families.get("sd15").prediction({**sd, "v_pred": torch.empty(0)}) == "eps"


# -- latent formats -------------------------------------------------------------------------------


def test_latent_formats() -> None:
    sd15, sdxl = families.get("sd15").latent_format, families.get("sdxl").latent_format
    assert sd15.scale_factor == 0.18215 and sdxl.scale_factor == 0.13025
    assert families.get("sd2").latent_format is sd15
    assert families.get("sdxl_refiner").latent_format is sdxl
    assert len(sd15.latent_rgb_factors) == 4 and sd15.latent_rgb_factors_bias is None
    assert sdxl.latent_rgb_factors_bias == (0.1084, -0.0175, -0.0011)
    x = torch.randn(1, 4, 3, 3)
    assert torch.allclose(sdxl.process_out(sdxl.process_in(x)), x)
    assert torch.equal(sd15.process_in(x), x * 0.18215)


def test_unet_config_walks_uneven_levels() -> None:
    """num_res_blocks and depths per level come from the weights, not from a table."""
    config = replace(
        families.get("sdxl").tiny().unet,
        num_res_blocks=(1, 2, 1),
        transformer_depth=(0, 1, 2, 3),
        transformer_depth_output=(3, 3, 2, 2, 2, 0, 0),
    )
    sd = meta_unet_sd(config)
    assert unet_config_from_state_dict(sd, heads=("num_head_channels", 64)) == config
    assert math.gcd(32, config.model_channels) == config.norm_groups
