"""ControlNet / T2I-Adapter files: reading, telling the kinds apart, key conversion, building.

Kinds (`detect_kind`), checked in this order as ComfyUI does:
- "control_lora": a `lora_controlnet` marker; low-rank deltas over the base UNet's encoder (Stability's
  Control-LoRA), built against the sampling model at run time (controlnet.ControlLora);
- "diffusers": diffusers' ControlNetModel names (controlnet_cond_embedding, down_blocks,
  controlnet_down_blocks, controlnet_mid_block ...), renamed to the original layout here;
- "controlnet": the original layout, with (`control_model.` prefix, the .pth release) or without it;
- "t2i_adapter": a TencentARC T2I-Adapter (full, light or SDXL; original or diffusers names).
Anything else -- SD3 / Flux / HunyuanDiT ControlNets, ControlNet-Union, Stable Cascade controls --
raises a ModelError that names what it saw.

The architecture comes from the weights: widths and depths by walking the blocks (families.base
`unet_config_from_state_dict`), the head layout from the model family the encoder matches (SD1.x:
8 heads; SD2.x / SDXL: 64-wide heads; SDXL also has label_emb). Loading is strict over the
ControlNet's own keys: missing, unexpected or misshapen ones raise (loading.check_keys).
"""

from __future__ import annotations

import logging
import re
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from core.errors import ModelError
from diffusion import families, loading
from diffusion.configs import UNetConfig
from diffusion.controlnet_model import ControlNetModel
from diffusion.controlnet_t2i import (
    adapter_config_from_state_dict,
    adapter_diffusers_to_original,
    build_adapter,
    is_t2i_adapter,
)
from diffusion.diffusers_keys import Level, unet_levels_from_config, unet_levels_from_diffusers, unet_module_map
from diffusion.families.base import PrefixView, StateDict, shape_of, unet_config_from_state_dict

log = logging.getLogger(__name__)

PTH_PREFIX = "control_model."
LORA_MARKER = "lora_controlnet"
DIFFERENCE_MARKER = "difference"
DIFFUSERS_PROBE = "controlnet_cond_embedding.conv_in.weight"
_UNSUPPORTED = (
    ("control_add_embedding.linear_1.bias", "ControlNet-Union (ControlNet++)"),
    ("after_proj_list.18.bias", "a HunyuanDiT ControlNet"),
    ("controlnet_blocks.0.weight", "an SD3 / Flux ControlNet"),
    ("controlnet_blocks.0.linear.weight", "a Flux (Mistoline) ControlNet"),
    ("backbone.0.0.weight", "a Stable Cascade ControlNet"),
    ("backbone.10.blocks.0.weight", "a Stable Cascade ControlNet"),
)


# -- reading --------------------------------------------------------------------------------------


def read_weights(path: str | Path) -> StateDict:
    """The file's tensors: safetensors lazily (mmap); pickles with weights_only (no code runs),
    unwrapping a top-level `state_dict` or `adapter` dict (some T2I-Adapter releases)."""
    path = Path(path)
    if path.suffix.lower() in loading.SAFETENSORS_SUFFIXES or not path.is_file():
        return loading.open_state_dict(path)
    try:
        data = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except Exception as exc:  # UnpicklingError for code-running pickles, RuntimeError/EOFError for junk
        raise ModelError(
            f"cannot load '{path.name}' as plain tensors (only weights_only pickles or safetensors are "
            f"accepted): {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
        ) from exc
    for wrapper in ("state_dict", "adapter"):
        if isinstance(data, Mapping) and isinstance(data.get(wrapper), Mapping):
            data = data[wrapper]
    if not isinstance(data, Mapping):
        raise ModelError(f"'{path.name}' holds a {type(data).__name__}, not a state dict of tensors")
    return loading.TensorDict({k: v for k, v in data.items() if isinstance(k, str) and isinstance(v, Tensor)})


# -- detection ------------------------------------------------------------------------------------


def detect_kind(sd: StateDict) -> str:
    """ "control_lora" | "diffusers" | "controlnet" | "t2i_adapter"; ModelError for anything else."""
    if LORA_MARKER in sd:
        return "control_lora"
    for probe, what in _UNSUPPORTED:
        if probe in sd:
            raise ModelError(f"this file is {what}, which Loom does not support yet (found key {probe})")
    if DIFFUSERS_PROBE in sd:
        return "diffusers"
    if f"{PTH_PREFIX}zero_convs.0.0.weight" in sd or "zero_convs.0.0.weight" in sd:
        return "controlnet"
    if is_t2i_adapter(sd):
        return "t2i_adapter"
    sample = ", ".join(sorted(sd)[:5]) or "no keys"
    raise ModelError(f"not a ControlNet, Control-LoRA or T2I-Adapter (first keys: {sample})")


def controlnet_prefix(sd: StateDict) -> str:
    return PTH_PREFIX if f"{PTH_PREFIX}zero_convs.0.0.weight" in sd else ""


def controlnet_config(sd: StateDict, prefix: str = "") -> tuple[UNetConfig, int, families.Family]:
    """(UNet-encoder config, hint channels, matching family) of original-layout ControlNet weights."""
    hint_key = f"{prefix}input_hint_block.0.weight"
    if hint_key not in sd:
        raise ModelError(f"ControlNet weights have no hint block (no key {hint_key})")
    try:
        family = families.detect(sd, prefix=prefix)
    except ModelError as exc:
        raise ModelError(f"cannot tell which model family this ControlNet is for: {exc}") from exc
    cfg = unet_config_from_state_dict(sd, prefix, heads=family.heads)
    # A ControlNet has no decoder half; fill the decoder fields so the config is a valid UNet's.
    n_out = sum(cfg.num_res_blocks) + cfg.levels
    cfg = replace(cfg, out_channels=cfg.in_channels, transformer_depth_output=(0,) * n_out)
    return cfg, shape_of(sd, hint_key)[1], family


# -- diffusers names ------------------------------------------------------------------------------


class _RenamedView(Mapping[str, Any]):
    """`sd` under new names ({new: old}); stays lazy (shape() without reading)."""

    def __init__(self, sd: StateDict, names: Mapping[str, str]) -> None:
        self._sd, self._names = sd, dict(names)

    def __getitem__(self, key: str) -> Any:
        return self._sd[self._names[key]]

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def __contains__(self, key: object) -> bool:
        return key in self._names

    def shape(self, key: str) -> tuple[int, ...]:
        return shape_of(self._sd, self._names[key])


def _hint_module_map(sd_keys: set[str]) -> dict[str, str]:
    """controlnet_cond_embedding.conv_in / blocks.<k> / conv_out -> input_hint_block.<0 / 2k+2 / last>."""
    blocks = sorted(
        {int(m.group(1)) for k in sd_keys if (m := re.match(r"controlnet_cond_embedding\.blocks\.(\d+)\.", k))}
    )
    table = {"controlnet_cond_embedding.conv_in": "input_hint_block.0"}
    for k in blocks:
        table[f"controlnet_cond_embedding.blocks.{k}"] = f"input_hint_block.{2 * k + 2}"
    table["controlnet_cond_embedding.conv_out"] = f"input_hint_block.{2 * len(blocks) + 2}"
    return table


def controlnet_module_map(down: list[Level], mid_attention: bool, hint_blocks: int = 6) -> dict[str, str]:
    """{diffusers module: original module} for a ControlNet with these encoder levels."""
    table = {d: o for d, o in unet_module_map(down, [], mid_attention).items() if not o.startswith("out.")}
    n_inputs = 1 + sum(len(level.attention) + level.sampler for level in down)
    for n in range(n_inputs):
        table[f"controlnet_down_blocks.{n}"] = f"zero_convs.{n}.0"
    table["controlnet_mid_block"] = "middle_block_out.0"
    keys = {f"controlnet_cond_embedding.blocks.{k}.weight" for k in range(hint_blocks)}
    table.update(_hint_module_map(keys))
    return table


def _split(key: str, table: Mapping[str, str]) -> str | None:
    parts = key.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        head = ".".join(parts[:cut])
        if head in table:
            return table[head] + "." + ".".join(parts[cut:])
    return None


def controlnet_diffusers_names(sd: StateDict) -> dict[str, str]:
    """{original key: diffusers key} for a diffusers ControlNet; keys with no counterpart are
    logged and left out (ComfyUI's "leftover keys"), so strict loading reports what is missing."""
    keys = set(sd)
    down, _up, mid = unet_levels_from_diffusers(sorted(keys))
    table = controlnet_module_map(down, mid)
    table.update(_hint_module_map(keys))
    names, leftover = {}, []
    for key in sorted(keys):
        new = _split(key, table)
        if new is None:
            leftover.append(key)
        else:
            names[new] = key
    if leftover:
        log.warning("diffusers ControlNet: %d key(s) with no mapping ignored, e.g. %s", len(leftover), leftover[:4])
    return names


def controlnet_ldm_to_diffusers(sd: Mapping[str, Any], config: UNetConfig) -> dict[str, Any]:
    """The inverse (original names -> diffusers), for a ControlNet described by `config`."""
    down, _up, mid = unet_levels_from_config(config)
    table = {o: d for d, o in controlnet_module_map(down, mid).items()}
    out = {}
    for key, value in sd.items():
        new = _split(key, table)
        if new is None:
            raise ModelError(f"ControlNet key {key} has no diffusers name")
        out[new] = value
    return out


# -- building -------------------------------------------------------------------------------------


def controlnet_weights(sd: StateDict, kind: str) -> StateDict:
    """The original-layout, unprefixed view of a "controlnet" or "diffusers" file's weights."""
    if kind == "diffusers":
        return _RenamedView(sd, controlnet_diffusers_names(sd))
    prefix = controlnet_prefix(sd)
    if not prefix:
        return sd
    view = PrefixView(sd, prefix)
    others = len(sd) - len(view)
    if others:  # the first .pth releases bundle a whole SD checkpoint beside control_model.*
        log.debug("ControlNet file: %d keys outside %s ignored", others, prefix)
    return view


def add_difference(weights: StateDict, unet_state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """A "diff" ControlNet stores control weights minus the base UNet's: add the UNet back (in the
    file's dtype, as ComfyUI's DiffControlNetLoader does)."""
    out = {}
    for key in weights:
        value = weights[key]
        base = unet_state.get(key)
        if base is not None and base.shape == value.shape and value.is_floating_point():
            value = value + base.to(value.device, value.dtype)
        out[key] = value
    return out


def build_controlnet(weights: StateDict, *, dtype: torch.dtype = torch.float32) -> ControlNetModel:
    """Strictly load original-layout, unprefixed ControlNet weights."""
    config, hint_channels, family = controlnet_config(weights)
    log.debug("ControlNet for %s: %s, hint %d channels", family.name, config, hint_channels)
    return loading.build_module(  # type: ignore[return-value]
        lambda: ControlNetModel(config, hint_channels), weights, dtype, f"ControlNet ({family.description})"
    )


def adapter_weights(sd: StateDict) -> StateDict:
    if "adapter.body.0.resnets.0.block1.weight" in sd:
        return adapter_diffusers_to_original(sd)
    return sd


def build_t2i_adapter(weights: StateDict, *, dtype: torch.dtype = torch.float32) -> nn.Module:
    """Strictly load original-layout T2I-Adapter weights (full, light or SDXL)."""
    config = adapter_config_from_state_dict(weights)
    kind = "light" if config.light else "SDXL" if config.xl else "full"
    return loading.build_module(lambda: build_adapter(config), weights, dtype, f"T2I-Adapter ({kind})")


__all__ = [
    "PTH_PREFIX",
    "add_difference",
    "adapter_weights",
    "build_controlnet",
    "build_t2i_adapter",
    "controlnet_config",
    "controlnet_diffusers_names",
    "controlnet_ldm_to_diffusers",
    "controlnet_module_map",
    "controlnet_prefix",
    "controlnet_weights",
    "detect_kind",
    "read_weights",
]
