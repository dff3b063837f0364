"""Key maps between diffusers folders (unet/, vae/, text_encoder/, text_encoder_2/) and the LDM layout.

Loom's architectures use the original single-file (LDM) names, so a diffusers model is renamed
once at load time. Maps are built as {diffusers module prefix: LDM module prefix} from the block
structure (how many resnets per level, which have attention, where the samplers are), so the same
table converts both ways; parameter leaf names (weight, bias) never change.

UNet (diffusers UNet2DConditionModel -> openaimodel.UNetModel):
  conv_in -> input_blocks.0.0; time_embedding.linear_1/2 -> time_embed.0/2;
  add_embedding.linear_1/2 -> label_emb.0.0/0.2; down_blocks.i.resnets.j -> input_blocks.n.0 and
  .attentions.j -> input_blocks.n.1 (n counts blocks, downsamplers.0.conv -> input_blocks.n.0.op);
  mid_block.resnets.0/attentions.0/resnets.1 -> middle_block.0/1/2; up_blocks.r (r = 0 at the
  lowest resolution) -> output_blocks (upsamplers.0.conv -> the level's last block .1/.2 .conv);
  conv_norm_out / conv_out -> out.0 / out.2. Resnet leaves: norm1 in_layers.0, conv1 in_layers.2,
  time_emb_proj emb_layers.1, norm2 out_layers.0, conv2 out_layers.3, conv_shortcut skip_connection.
  Transformer internals have the same names in both.
VAE (diffusers AutoencoderKL -> ldm AutoencoderKL): down_blocks.i.resnets.j -> down.i.block.j,
  mid_block.resnets.0/1 -> mid.block_1/2, mid_block.attentions.0 -> mid.attn_1 (group_norm norm,
  to_q/k/v q/k/v, to_out.0 proj_out; Linear [C, C] <-> 1x1 Conv [C, C, 1, 1]; older files say
  query/key/value/proj_attn), decoder.up_blocks.r -> decoder.up.(levels-1-r), conv_shortcut ->
  nin_shortcut, conv_norm_out -> norm_out.
Text encoders: diffusers stores transformers' CLIPTextModel(WithProjection) -- already the "hf"
  layout Loom's text encoders use -- so only position_ids is dropped.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from core.errors import ModelError
from diffusion.configs import UNetConfig, VAEConfig

_RESNET_LEAVES = (
    ("norm1", "in_layers.0"),
    ("conv1", "in_layers.2"),
    ("time_emb_proj", "emb_layers.1"),
    ("norm2", "out_layers.0"),
    ("conv2", "out_layers.3"),
    ("conv_shortcut", "skip_connection"),
)
_UNET_TOP = (
    ("conv_in", "input_blocks.0.0"),
    ("time_embedding.linear_1", "time_embed.0"),
    ("time_embedding.linear_2", "time_embed.2"),
    ("add_embedding.linear_1", "label_emb.0.0"),
    ("add_embedding.linear_2", "label_emb.0.2"),
    ("conv_norm_out", "out.0"),
    ("conv_out", "out.2"),
)


@dataclass(frozen=True)
class Level:
    """One resolution of a UNet side: attention flag per resnet, and whether a sampler follows."""

    attention: tuple[bool, ...]
    sampler: bool


# -- UNet -----------------------------------------------------------------------------------------


def _indices(keys: Sequence[str] | Mapping[str, Any], prefix: str) -> list[int]:
    pat = re.compile(re.escape(prefix) + r"(\d+)\.")
    return sorted({int(m.group(1)) for k in keys if (m := pat.match(k))})


def _resnet(out: dict[str, str], diffusers: str, ldm: str) -> None:
    for d_leaf, l_leaf in _RESNET_LEAVES:
        out[f"{diffusers}.{d_leaf}"] = f"{ldm}.{l_leaf}"


def unet_module_map(down: Sequence[Level], up: Sequence[Level], mid_attention: bool = True) -> dict[str, str]:
    """{diffusers module path: LDM module path} for a UNet with these levels (up[0] = lowest res)."""
    out = dict(_UNET_TOP)
    n = 1
    for i, level in enumerate(down):
        for j, attn in enumerate(level.attention):
            _resnet(out, f"down_blocks.{i}.resnets.{j}", f"input_blocks.{n}.0")
            if attn:
                out[f"down_blocks.{i}.attentions.{j}"] = f"input_blocks.{n}.1"
            n += 1
        if level.sampler:
            out[f"down_blocks.{i}.downsamplers.0.conv"] = f"input_blocks.{n}.0.op"
            n += 1
    _resnet(out, "mid_block.resnets.0", "middle_block.0")
    if mid_attention:
        out["mid_block.attentions.0"] = "middle_block.1"
        _resnet(out, "mid_block.resnets.1", "middle_block.2")
    m = 0
    for r, level in enumerate(up):
        for j, attn in enumerate(level.attention):
            _resnet(out, f"up_blocks.{r}.resnets.{j}", f"output_blocks.{m}.0")
            if attn:
                out[f"up_blocks.{r}.attentions.{j}"] = f"output_blocks.{m}.1"
            if level.sampler and j == len(level.attention) - 1:
                out[f"up_blocks.{r}.upsamplers.0.conv"] = f"output_blocks.{m}.{2 if attn else 1}.conv"
            m += 1
    return out


def unet_levels_from_diffusers(keys: Sequence[str] | Mapping[str, Any]) -> tuple[list[Level], list[Level], bool]:
    """(down levels, up levels, middle has attention) read off a diffusers UNet's keys."""
    keyset = set(keys)

    def levels(side: str, sampler: str) -> list[Level]:
        out = []
        for i in _indices(keyset, f"{side}."):
            resnets = _indices(keyset, f"{side}.{i}.resnets.")
            attn = tuple(any(k.startswith(f"{side}.{i}.attentions.{j}.") for k in keyset) for j in resnets)
            out.append(Level(attn, f"{side}.{i}.{sampler}.0.conv.weight" in keyset))
        return out

    mid = any(k.startswith("mid_block.attentions.0.") for k in keyset)
    return levels("down_blocks", "downsamplers"), levels("up_blocks", "upsamplers"), mid


def unet_levels_from_config(cfg: UNetConfig) -> tuple[list[Level], list[Level], bool]:
    """The same structure described by an LDM UNetConfig."""
    down, up = [], []
    depths, out_depths = list(cfg.transformer_depth), list(cfg.transformer_depth_output)
    for level in range(cfg.levels):
        n = cfg.num_res_blocks[level]
        down.append(Level(tuple(d > 0 for d in depths[:n]), level != cfg.levels - 1))
        depths = depths[n:]
    for level in reversed(range(cfg.levels)):
        n = cfg.num_res_blocks[level] + 1
        up.append(Level(tuple(d > 0 for d in out_depths[:n]), level != 0))
        out_depths = out_depths[n:]
    return down, up, cfg.transformer_depth_middle >= 0


def _rename(sd: Mapping[str, Any], table: Mapping[str, str], what: str) -> dict[str, Any]:
    """Rename every key by its longest module prefix found in `table`; unknown keys are an error."""
    out: dict[str, Any] = {}
    unknown = []
    for key in sd:
        parts = key.split(".")
        for cut in range(len(parts) - 1, 0, -1):
            head = ".".join(parts[:cut])
            if head in table:
                out[table[head] + "." + ".".join(parts[cut:])] = sd[key]
                break
        else:
            unknown.append(key)
    if unknown:
        shown = ", ".join(sorted(unknown)[:6])
        raise ModelError(f"{what}: {len(unknown)} key(s) with no mapping, e.g. {shown}")
    return out


def unet_diffusers_to_ldm(sd: Mapping[str, Any]) -> dict[str, Any]:
    """A diffusers UNet2DConditionModel state dict in LDM (`input_blocks...`) names."""
    down, up, mid = unet_levels_from_diffusers(list(sd))
    return _rename(sd, unet_module_map(down, up, mid), "diffusers UNet")


def unet_ldm_to_diffusers(sd: Mapping[str, Any], cfg: UNetConfig) -> dict[str, Any]:
    """The inverse, for a UNet described by `cfg` (tests write diffusers folders with it)."""
    down, up, mid = unet_levels_from_config(cfg)
    table = {ldm: diffusers for diffusers, ldm in unet_module_map(down, up, mid).items()}
    return _rename(sd, table, "LDM UNet")


def is_diffusers_unet(sd: Mapping[str, Any]) -> bool:
    return "conv_in.weight" in sd and any(k.startswith("down_blocks.") for k in sd)


# -- VAE ------------------------------------------------------------------------------------------

_VAE_ATTN = (("group_norm", "norm"), ("to_q", "q"), ("to_k", "k"), ("to_v", "v"), ("to_out.0", "proj_out"))
_VAE_ATTN_OLD = (("query", "q"), ("key", "k"), ("value", "v"), ("proj_attn", "proj_out"))
_VAE_RESNET = (("norm1", "norm1"), ("conv1", "conv1"), ("norm2", "norm2"), ("conv2", "conv2"))


def _vae_resnet(out: dict[str, str], diffusers: str, ldm: str) -> None:
    for d_leaf, l_leaf in (*_VAE_RESNET, ("conv_shortcut", "nin_shortcut")):
        out[f"{diffusers}.{d_leaf}"] = f"{ldm}.{l_leaf}"


def vae_module_map(levels: int, down_resnets: int, up_resnets: int, old_attention: bool = False) -> dict[str, str]:
    """{diffusers module path: LDM module path} for a KL autoencoder with `levels` resolutions."""
    out = {"quant_conv": "quant_conv", "post_quant_conv": "post_quant_conv"}
    attn = _VAE_ATTN_OLD + (("group_norm", "norm"),) if old_attention else _VAE_ATTN
    for side in ("encoder", "decoder"):
        out[f"{side}.conv_in"] = f"{side}.conv_in"
        out[f"{side}.conv_out"] = f"{side}.conv_out"
        out[f"{side}.conv_norm_out"] = f"{side}.norm_out"
        _vae_resnet(out, f"{side}.mid_block.resnets.0", f"{side}.mid.block_1")
        _vae_resnet(out, f"{side}.mid_block.resnets.1", f"{side}.mid.block_2")
        for d_leaf, l_leaf in attn:
            out[f"{side}.mid_block.attentions.0.{d_leaf}"] = f"{side}.mid.attn_1.{l_leaf}"
    for i in range(levels):
        for j in range(down_resnets):
            _vae_resnet(out, f"encoder.down_blocks.{i}.resnets.{j}", f"encoder.down.{i}.block.{j}")
        if i != levels - 1:
            out[f"encoder.down_blocks.{i}.downsamplers.0.conv"] = f"encoder.down.{i}.downsample.conv"
        ldm_level = levels - 1 - i
        for j in range(up_resnets):
            _vae_resnet(out, f"decoder.up_blocks.{i}.resnets.{j}", f"decoder.up.{ldm_level}.block.{j}")
        if ldm_level != 0:
            out[f"decoder.up_blocks.{i}.upsamplers.0.conv"] = f"decoder.up.{ldm_level}.upsample.conv"
    return out


def _is_attention_matrix(ldm_key: str) -> bool:
    return bool(re.search(r"\.mid\.attn_1\.(q|k|v|proj_out)\.weight$", ldm_key))


def vae_diffusers_to_ldm(sd: Mapping[str, Any]) -> dict[str, Any]:
    """A diffusers AutoencoderKL state dict in LDM names (attention Linear -> 1x1 Conv weights)."""
    keys = list(sd)
    levels = len(_indices(keys, "encoder.down_blocks."))
    down_resnets = len(_indices(keys, "encoder.down_blocks.0.resnets."))
    up_resnets = len(_indices(keys, "decoder.up_blocks.0.resnets."))
    old = any(".mid_block.attentions.0.query." in k for k in keys)
    out = _rename(sd, vae_module_map(levels, down_resnets, up_resnets, old), "diffusers VAE")
    for key, value in out.items():
        if _is_attention_matrix(key) and len(value.shape) == 2:
            out[key] = value.reshape(*value.shape, 1, 1)
    return out


def vae_ldm_to_diffusers(sd: Mapping[str, Any], cfg: VAEConfig) -> dict[str, Any]:
    """The inverse (current diffusers names, Linear attention weights)."""
    table = vae_module_map(len(cfg.ch_mult), cfg.num_res_blocks, cfg.num_res_blocks + 1)
    out = _rename(sd, {ldm: diffusers for diffusers, ldm in table.items()}, "LDM VAE")
    for key in list(out):
        if re.search(r"\.mid_block\.attentions\.0\.(to_q|to_k|to_v|to_out\.0)\.weight$", key):
            out[key] = out[key].reshape(out[key].shape[0], out[key].shape[1])
    return out


def is_diffusers_vae(sd: Mapping[str, Any]) -> bool:
    return any(k.startswith("encoder.down_blocks.") for k in sd)


# -- text encoders --------------------------------------------------------------------------------

TEXT_IGNORED = ("text_model.embeddings.position_ids",)


def text_diffusers_to_hf(sd: Mapping[str, Any]) -> dict[str, Any]:
    """diffusers text_encoder(_2) weights are transformers' own: drop only the position_ids buffer."""
    return {k: v for k, v in sd.items() if k not in TEXT_IGNORED}
