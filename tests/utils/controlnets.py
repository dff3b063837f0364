"""Tiny random ControlNets, Control-LoRAs and T2I-Adapters for tests, in every file layout Loom reads.

All weights come from diffusion.ops.seeded_init_ (a CPU generator), so a (kind, family, seed)
always gives the same numbers. ControlNets use the family's tiny UNet config (tests/utils/
checkpoints.py's tiny checkpoints have the same one), so a tiny ControlNet fits a tiny checkpoint.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import Tensor

from diffusion import families
from diffusion.configs import UNetConfig
from diffusion.controlnet_loading import PTH_PREFIX, controlnet_ldm_to_diffusers
from diffusion.controlnet_model import ControlNetModel
from diffusion.controlnet_t2i import AdapterConfig, build_adapter
from diffusion.ops import seeded_init_

LAYOUTS = ("pth", "bare", "diffusers")
"""control_model.-prefixed original names, unprefixed original names, diffusers names."""


def tiny_controlnet_config(family: str = "sd15") -> UNetConfig:
    unet = families.get(family).tiny().unet
    return replace(unet, out_channels=unet.in_channels)


def random_controlnet(family: str = "sd15", *, seed: int = 0, hint_channels: int = 3) -> ControlNetModel:
    net = ControlNetModel(tiny_controlnet_config(family), hint_channels)
    return seeded_init_(net, seed).requires_grad_(False).eval()


def controlnet_state_dict(
    family: str = "sd15", *, layout: str = "pth", seed: int = 0, dtype: torch.dtype = torch.float32
) -> dict[str, Tensor]:
    net = random_controlnet(family, seed=seed)
    sd = {k: v.to(dtype).contiguous() for k, v in net.state_dict().items()}
    if layout == "pth":
        return {PTH_PREFIX + k: v for k, v in sd.items()}
    if layout == "bare":
        return sd
    if layout == "diffusers":
        return controlnet_ldm_to_diffusers(sd, net.config)
    raise ValueError(f"unknown layout {layout!r}; expected one of {LAYOUTS}")


def write_random_controlnet(
    path: str | Path, family: str = "sd15", *, layout: str = "pth", seed: int = 0, dtype: torch.dtype = torch.float32
) -> Path:
    """A tiny ControlNet file (.safetensors, or a weights-only torch pickle for .pth/.ckpt)."""
    path = Path(path)
    sd = controlnet_state_dict(family, layout=layout, seed=seed, dtype=dtype)
    _write(path, sd)
    return path


def _write(path: Path, sd: Mapping[str, Tensor]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix in (".safetensors", ".sft"):
        save_file(dict(sd), str(path))
    else:
        torch.save(dict(sd), path)


# -- Control-LoRA ---------------------------------------------------------------------------------


def control_lora_state_dict(
    unet_state: Mapping[str, Tensor], config: UNetConfig, *, rank: int = 2, seed: int = 0
) -> dict[str, Tensor]:
    """A Control-LoRA for a UNet: full hint block / zero convs / middle_block_out, up/down pairs for
    every encoder matrix the UNet has, and new biases for the first conv (a replaced full tensor)."""
    donor = seeded_init_(ControlNetModel(config), seed).state_dict()
    gen = torch.Generator("cpu").manual_seed(seed + 1)
    out: dict[str, Tensor] = {"lora_controlnet": torch.tensor([])}
    for key, value in donor.items():
        if key not in unet_state:
            out[key] = value.clone()
        elif value.ndim >= 2 and key.endswith(".weight"):
            base = key[: -len(".weight")]
            out[f"{base}.up"] = torch.randn((value.shape[0], rank, *([1] * (value.ndim - 2))), generator=gen) * 0.1
            out[f"{base}.down"] = torch.randn((rank, *value.shape[1:]), generator=gen) * 0.1
    out["input_blocks.0.0.bias"] = torch.randn(donor["input_blocks.0.0.bias"].shape, generator=gen)
    return out


# -- T2I-Adapter ----------------------------------------------------------------------------------


def adapter_unet_config(*, xl: bool = False, model_channels: int = 8, context_dim: int = 64) -> UNetConfig:
    """A narrow UNet whose input blocks line up with a T2I-Adapter of width `model_channels`:
    SD1.x's 4 levels x 2 blocks (12 input blocks) or SDXL's 3 levels (9 input blocks + middle)."""
    levels = 3 if xl else 4
    mults = (1, 2, 4) if xl else (1, 2, 4, 4)
    n_in = 2 * levels
    return UNetConfig(
        model_channels=model_channels,
        channel_mult=mults,
        num_res_blocks=(2,) * levels,
        transformer_depth=(1, 1) + (0,) * (n_in - 2),
        transformer_depth_middle=0,
        transformer_depth_output=(0,) * (n_in + levels),
        num_heads=2,
        context_dim=context_dim,
        norm_groups=model_channels,
    )


def adapter_config(
    *, light: bool = False, xl: bool = False, channels: int = 8, hint_channels: int = 3
) -> AdapterConfig:
    unshuffle = 16 if xl else 8
    cin = hint_channels * unshuffle * unshuffle
    widths = (channels, channels * 2, channels * 4, channels * 4)
    if light:
        return AdapterConfig(light=True, cin=cin, channels=widths, nums_rb=2)
    return AdapterConfig(light=False, cin=cin, channels=widths, nums_rb=2, ksize=1 if not xl else 3, xl=xl)


def adapter_state_dict(config: AdapterConfig, *, seed: int = 0, diffusers: bool = False) -> dict[str, Tensor]:
    sd = {k: v.contiguous() for k, v in seeded_init_(build_adapter(config), seed).state_dict().items()}
    if not diffusers:
        return sd
    out = {}
    for key, value in sd.items():  # body.<2i+j>. -> adapter.body.<i>.resnets.<j>. (in_conv: level)
        if key.startswith("body."):
            _, n, rest = key.split(".", 2)
            level, block = divmod(int(n), 2)
            if rest.startswith("in_conv."):
                out[f"adapter.body.{level}.{rest}"] = value
            else:
                out[f"adapter.body.{level}.resnets.{block}.{rest}"] = value
        else:
            out[f"adapter.{key}"] = value
    return out


def write_random_adapter(path: str | Path, config: AdapterConfig, *, seed: int = 0, diffusers: bool = False) -> Path:
    path = Path(path)
    _write(path, adapter_state_dict(config, seed=seed, diffusers=diffusers))
    return path


__all__ = [
    "LAYOUTS",
    "adapter_config",
    "adapter_state_dict",
    "adapter_unet_config",
    "control_lora_state_dict",
    "controlnet_state_dict",
    "random_controlnet",
    "tiny_controlnet_config",
    "write_random_adapter",
    "write_random_controlnet",
]
