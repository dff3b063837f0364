"""What a model family is, and the state-dict readers every family shares.

A `Family` (SD1.x, SD2.x, SDXL, SDXL refiner ...) owns: a detection rule over the UNet's keys and
shapes, the text encoders and where their weights sit in a single-file checkpoint, the latent
format, the prediction type and a `tiny()` set of configs for tests. It holds no weights and
imports no torch: detection reads shapes (and, for SD2's v-prediction test, one small tensor).

Configs are derived from the weights themselves (`unet_config_from_state_dict` walks the blocks
like ComfyUI's detect_unet_config), so a checkpoint whose depths or widths differ from the
reference model (SSD-1B, a tiny test model) gets the architecture its weights describe. The
family contributes only what the weights cannot say: head layout, activation, default layers.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from core.errors import ModelError
from diffusion.configs import TextEncoderConfig, UNetConfig, VAEConfig

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."

if TYPE_CHECKING:  # annotations only: this module stays free of torch
    import torch
    from torch import Tensor

StateDict = Mapping[str, Any]
"""key -> tensor (or a lazy mapping that also offers `shape(key)` without reading the data)."""


# -- state-dict access ----------------------------------------------------------------------------


def shape_of(sd: StateDict, key: str) -> tuple[int, ...]:
    """The shape of sd[key] without loading it when the mapping is lazy (loading.LazyStateDict)."""
    reader = getattr(sd, "shape", None)
    if callable(reader):
        return tuple(reader(key))
    return tuple(sd[key].shape)


def read_as(sd: StateDict, key: str, dtype: torch.dtype) -> Tensor:
    """sd[key] with floating-point values in `dtype`, in its own memory. Lazy mappings
    (loading.LazyStateDict and views over it) convert straight from the file, with no copy in
    the file's dtype in between."""
    reader = getattr(sd, "read_as", None)
    if callable(reader):
        return reader(key, dtype)
    value = sd[key]
    return value.to(dtype) if value.is_floating_point() else value


class PrefixView(Mapping[str, Any]):
    """The entries of `sd` under `prefix`, with the prefix stripped (and `add` put in front);
    no copy, stays lazy."""

    def __init__(self, sd: StateDict, prefix: str, add: str = "") -> None:
        self._sd = sd
        self._prefix = prefix
        self._add = add
        self._keys = [add + k[len(prefix) :] for k in sd if k.startswith(prefix)]

    def _source(self, key: str) -> str:
        if not key.startswith(self._add):
            raise KeyError(key)
        return self._prefix + key[len(self._add) :]

    def __getitem__(self, key: str) -> Any:
        return self._sd[self._source(key)]

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key.startswith(self._add) and self._source(key) in self._sd

    def shape(self, key: str) -> tuple[int, ...]:
        return shape_of(self._sd, self._source(key))

    def read_as(self, key: str, dtype: torch.dtype) -> Tensor:
        return read_as(self._sd, self._source(key), dtype)


def _indices(keys: Mapping[str, Any], prefix: str) -> list[int]:
    """Sorted distinct integers i of keys `prefix<i>.` ..."""
    pat = re.compile(re.escape(prefix) + r"(\d+)\.")
    return sorted({int(m.group(1)) for k in keys if (m := pat.match(k))})


def _depth_at(sd: StateDict, block: str) -> int:
    """Transformer blocks in `<block>1.` (0 when that slot holds no SpatialTransformer)."""
    return len(_indices(sd, f"{block}1.transformer_blocks."))


# -- latent formats -------------------------------------------------------------------------------


@dataclass(frozen=True)
class LatentFormat:
    """How a family's latents relate to the VAE's, plus the latent->RGB projection for previews.

    `process_in` maps a VAE latent to the space the diffusion model works in (x scale_factor);
    `process_out` is the inverse (ComfyUI's names). rgb factors: one row (R, G, B) per channel.
    """

    name: str
    scale_factor: float
    latent_rgb_factors: tuple[tuple[float, float, float], ...]
    latent_rgb_factors_bias: tuple[float, float, float] | None = None
    latent_channels: int = 4
    taesd_decoder_name: str | None = None

    def process_in(self, latent: Any) -> Any:
        return latent * self.scale_factor

    def process_out(self, latent: Any) -> Any:
        return latent / self.scale_factor


# -- family ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TextEncoderSlot:
    """One text encoder of a family: its reference config and its checkpoint prefixes.

    `prefixes[0]` is where the reference single-file layout keeps it (and where the test generator
    writes it); the others are alternative layouts that real files use (sgm-style SD2).
    """

    config: TextEncoderConfig
    prefixes: tuple[str, ...]

    @property
    def name(self) -> str:
        return self.config.name


@dataclass(frozen=True)
class ModelConfigs:
    """A complete architecture: what `Family.tiny()` returns and what a load derives."""

    unet: UNetConfig
    vae: VAEConfig
    text: tuple[TextEncoderConfig, ...]


@dataclass(frozen=True)
class UNetFacts:
    """The shape facts detection reads (ComfyUI's detect_unet_config, spec §7.3)."""

    in_channels: int
    out_channels: int
    model_channels: int
    context_dim: int | None
    use_linear_in_transformer: bool
    adm_in_channels: int | None

    def describe(self) -> str:
        proj = "linear" if self.use_linear_in_transformer else "conv"
        return (
            f"in_channels {self.in_channels}, model_channels {self.model_channels}, context_dim "
            f"{self.context_dim}, {proj} proj_in, adm_in_channels {self.adm_in_channels}"
        )


@dataclass(frozen=True)
class Family:
    """A model family. Construct one per file in diffusion/families/ and register it.

    `matches(facts)` must read only this family's distinguishing facts; the registry requires
    exactly one family to match. `heads` is the UNet head layout the weights cannot tell:
    ("num_heads", 8) for SD1.x, ("num_head_channels", 64) for the others.
    """

    name: str
    description: str
    matches: Callable[[UNetFacts], bool]
    heads: tuple[str, int]
    text_encoders: tuple[TextEncoderSlot, ...]
    latent_format: LatentFormat
    reference: ModelConfigs
    tiny_configs: ModelConfigs
    adm: str | None = None
    """How the UNet's vector input `y` is built: None, "sdxl" (pooled + 6 sizes) or "sdxl_refiner"."""
    prediction_rule: Callable[[StateDict, str], str] | None = None
    """(state dict, unet prefix) -> "eps" | "v_prediction"; None = the `v_pred` key or eps."""

    def facts(self, sd: StateDict, prefix: str = UNET_PREFIX) -> UNetFacts | None:
        return unet_facts(sd, prefix)

    def detect(self, sd: StateDict, prefix: str = UNET_PREFIX) -> bool:
        facts = unet_facts(sd, prefix)
        return facts is not None and self.matches(facts)

    def unet_config(self, sd: StateDict, prefix: str = UNET_PREFIX) -> UNetConfig:
        return unet_config_from_state_dict(sd, prefix, heads=self.heads)

    def prediction(self, sd: StateDict, prefix: str = UNET_PREFIX) -> str:
        if self.prediction_rule is not None:
            return self.prediction_rule(sd, prefix)
        return prediction_from_keys(sd, prefix)

    def tiny(self) -> ModelConfigs:
        """Small configs with every dimension detection reads kept, for fast tests."""
        return self.tiny_configs

    def text_slot(self, name: str) -> TextEncoderSlot:
        for slot in self.text_encoders:
            if slot.name == name:
                return slot
        raise ModelError(f"family {self.name} has no text encoder '{name}'")


def prediction_from_keys(sd: StateDict, prefix: str) -> str:
    """ComfyUI marks v-prediction checkpoints it saves with an empty `v_pred` tensor (spec §7.5)."""
    for key in ("v_pred", prefix + "v_pred"):
        if key in sd:
            return "v_prediction"
    return "eps"


def uses_zsnr(sd: StateDict, prefix: str) -> bool:
    """An empty `ztsnr` key marks zero-terminal-SNR training (with v_pred)."""
    return "ztsnr" in sd or (prefix + "ztsnr") in sd


# -- UNet config from weights ---------------------------------------------------------------------


def unet_facts(sd: StateDict, prefix: str = UNET_PREFIX) -> UNetFacts | None:
    """Detection facts of a classic LDM UNet under `prefix`; None when there is none."""
    conv_in = f"{prefix}input_blocks.0.0.weight"
    if conv_in not in sd:
        return None
    model_channels, in_channels = shape_of(sd, conv_in)[:2]
    out_key = f"{prefix}out.2.weight"
    out_channels = shape_of(sd, out_key)[0] if out_key in sd else 4
    adm_key = f"{prefix}label_emb.0.0.weight"
    adm = shape_of(sd, adm_key)[1] if adm_key in sd else None
    context_dim, linear = None, False
    first = _first_transformer(sd, prefix)
    if first is not None:
        context_dim = shape_of(sd, f"{first}transformer_blocks.0.attn2.to_k.weight")[1]
        linear = len(shape_of(sd, f"{first}proj_in.weight")) == 2
    return UNetFacts(in_channels, out_channels, model_channels, context_dim, linear, adm)


def _first_transformer(sd: StateDict, prefix: str) -> str | None:
    for i in _indices(sd, f"{prefix}input_blocks."):
        block = f"{prefix}input_blocks.{i}.1."
        if f"{block}transformer_blocks.0.attn2.to_k.weight" in sd:
            return block
    block = f"{prefix}middle_block.1."
    if f"{block}transformer_blocks.0.attn2.to_k.weight" in sd:
        return block
    return None


def norm_groups_for(channels: int) -> int:
    """GroupNorm groups: 32 in every real SD model; narrower test models use gcd(32, channels)."""
    return math.gcd(32, channels)


def unet_config_from_state_dict(sd: StateDict, prefix: str = UNET_PREFIX, *, heads: tuple[str, int]) -> UNetConfig:
    """Walk input_blocks / middle_block / output_blocks and describe the UNet the weights hold.

    Levels end at a Downsample (`<block>.0.op.weight`); a ResBlock (`0.in_layers.0.weight`)
    counts into its level's num_res_blocks and sets channel_mult from its output width; each
    block's transformer depth is the number of `1.transformer_blocks.<k>`.
    """
    facts = unet_facts(sd, prefix)
    if facts is None:
        raise ModelError(f"no UNet in this state dict (no key {prefix}input_blocks.0.0.weight)")
    mc = facts.model_channels
    num_res, mults, depths = [], [], []
    res_in_level, mult = 0, 1
    for i in _indices(sd, f"{prefix}input_blocks."):
        block = f"{prefix}input_blocks.{i}."
        if i == 0:
            continue
        if f"{block}0.op.weight" in sd:  # a Downsample closes the level
            num_res.append(res_in_level)
            mults.append(mult)
            res_in_level = 0
            continue
        if f"{block}0.in_layers.0.weight" in sd:
            res_in_level += 1
            mult = shape_of(sd, f"{block}0.out_layers.3.weight")[0] // mc
            depths.append(_depth_at(sd, block))
    num_res.append(res_in_level)
    mults.append(mult)
    out_depths = [_depth_at(sd, f"{prefix}output_blocks.{i}.") for i in _indices(sd, f"{prefix}output_blocks.")]
    middle = f"{prefix}middle_block."
    depth_middle = _depth_at(sd, middle) if f"{middle}1.transformer_blocks.0.norm1.weight" in sd else -1
    head_kind, head_value = heads
    return UNetConfig(
        in_channels=facts.in_channels,
        out_channels=facts.out_channels,
        model_channels=mc,
        channel_mult=tuple(mults),
        num_res_blocks=tuple(num_res),
        transformer_depth=tuple(depths),
        transformer_depth_middle=depth_middle,
        transformer_depth_output=tuple(out_depths),
        num_heads=head_value if head_kind == "num_heads" else -1,
        num_head_channels=head_value if head_kind == "num_head_channels" else -1,
        context_dim=facts.context_dim if facts.context_dim is not None else 768,
        use_linear_in_transformer=facts.use_linear_in_transformer,
        adm_in_channels=facts.adm_in_channels,
        norm_groups=norm_groups_for(mc),
    )


# -- VAE and text encoder configs from weights ----------------------------------------------------


def vae_config_from_state_dict(sd: StateDict, prefix: str = "") -> VAEConfig:
    """The KL autoencoder the weights describe (keys `encoder.*`, `decoder.*`, quant convs)."""
    conv_in = f"{prefix}encoder.conv_in.weight"
    if conv_in not in sd:
        raise ModelError(f"no VAE encoder in this state dict (no key {conv_in})")
    ch, in_channels = shape_of(sd, conv_in)[:2]
    levels = _indices(sd, f"{prefix}encoder.down.")
    mults = tuple(shape_of(sd, f"{prefix}encoder.down.{i}.block.0.conv1.weight")[0] // ch for i in levels)
    num_res = len(_indices(sd, f"{prefix}encoder.down.0.block."))
    z_channels = shape_of(sd, f"{prefix}decoder.conv_in.weight")[1]
    embed_dim = shape_of(sd, f"{prefix}post_quant_conv.weight")[1]
    out_channels = shape_of(sd, f"{prefix}decoder.conv_out.weight")[0]
    return VAEConfig(
        in_channels=in_channels,
        out_channels=out_channels,
        ch=ch,
        ch_mult=mults,
        num_res_blocks=num_res,
        z_channels=z_channels,
        embed_dim=embed_dim,
        norm_groups=norm_groups_for(ch),
    )


CLIP_HEAD_WIDTH = 64
"""Every CLIP text tower SD uses (L/14, H/14, bigG/14) has 64-wide attention heads."""


def text_config_from_state_dict(sd: StateDict, reference: TextEncoderConfig) -> TextEncoderConfig:
    """`reference` with the sizes the weights actually have (hf `text_model.*` or open_clip layout).

    Only the widths, depth and vocabulary come from the weights; the head count follows the
    64-wide heads of every SD text encoder; activation, padding and layer defaults stay the
    family's."""
    if "text_model.embeddings.token_embedding.weight" in sd:
        tok, pos = "text_model.embeddings.token_embedding.weight", "text_model.embeddings.position_embedding.weight"
        layers = len(_indices(sd, "text_model.encoder.layers."))
        fc1 = "text_model.encoder.layers.0.mlp.fc1.weight"
        proj = shape_of(sd, "text_projection.weight")[0] if "text_projection.weight" in sd else None
    elif "positional_embedding" in sd:
        tok, pos = "token_embedding.weight", "positional_embedding"
        layers = len(_indices(sd, "transformer.resblocks."))
        fc1 = "transformer.resblocks.0.mlp.c_fc.weight"
        proj = shape_of(sd, "text_projection")[1] if "text_projection" in sd else None
    else:
        sample = ", ".join(sorted(sd)[:4]) or "none"
        raise ModelError(f"no {reference.name} text encoder weights here (first keys: {sample})")
    vocab, hidden = shape_of(sd, tok)
    return replace(
        reference,
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=shape_of(sd, fc1)[0],
        num_layers=layers,
        num_heads=max(1, hidden // CLIP_HEAD_WIDTH),
        max_positions=shape_of(sd, pos)[0],
        projection_dim=proj if reference.projection_dim is not None else None,
    )


# -- shared reference and tiny pieces -------------------------------------------------------------

KL_F8 = VAEConfig()
"""The KL-f8 autoencoder every SD1.x / SD2.x / SDXL checkpoint ships (ch 128, mult 1,2,4,4)."""

TINY_VAE = VAEConfig(ch=16, ch_mult=(1, 1, 2, 2), num_res_blocks=1, norm_groups=norm_groups_for(16))
"""Four levels like the real one (so latents are still 1/8 of the image), 16 channels wide."""


def tiny_text(reference: TextEncoderConfig, hidden: int, projection_dim: int | None = None) -> TextEncoderConfig:
    """A 2-layer version of a text encoder: the real vocabulary (the tokenizer's ids), narrow."""
    return replace(
        reference,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_layers=2,
        num_heads=max(1, hidden // CLIP_HEAD_WIDTH),
        projection_dim=projection_dim,
    )


CLIP_L = TextEncoderConfig(name="clip_l")
"""OpenAI CLIP ViT-L/14 text tower (SD1.x; SDXL's first encoder with penultimate=True)."""

CLIP_H = TextEncoderConfig(
    name="clip_h",
    hidden_size=1024,
    intermediate_size=4096,
    num_layers=24,
    num_heads=16,
    hidden_act="gelu",
    projection_dim=1024,
    layout="open_clip",
    penultimate=True,
    pad_with_end=False,
)
"""OpenCLIP ViT-H/14 text tower (SD2.x)."""

CLIP_G = TextEncoderConfig(
    name="clip_g",
    hidden_size=1280,
    intermediate_size=5120,
    num_layers=32,
    num_heads=20,
    hidden_act="gelu",
    projection_dim=1280,
    layout="open_clip",
    penultimate=True,
    pad_with_end=False,
    hidden_final_norm=False,
)
"""OpenCLIP ViT-bigG/14 text tower (SDXL's second encoder, the refiner's only one)."""

SD15_LATENT = LatentFormat(
    name="sd15",
    scale_factor=0.18215,
    latent_rgb_factors=(
        (0.3512, 0.2297, 0.3227),
        (0.3250, 0.4974, 0.2350),
        (-0.2829, 0.1762, 0.2721),
        (-0.2120, -0.2616, -0.7177),
    ),
    taesd_decoder_name="taesd_decoder",
)
"""SD1.x and SD2.x latents (ComfyUI latent_formats.SD15)."""

SDXL_LATENT = LatentFormat(
    name="sdxl",
    scale_factor=0.13025,
    latent_rgb_factors=(
        (0.3651, 0.4232, 0.4341),
        (-0.2533, -0.0042, 0.1068),
        (0.1076, 0.1111, -0.0362),
        (-0.3165, -0.2492, -0.2188),
    ),
    latent_rgb_factors_bias=(0.1084, -0.0175, -0.0011),
    taesd_decoder_name="taesdxl_decoder",
)
"""SDXL base and refiner latents (ComfyUI latent_formats.SDXL)."""
