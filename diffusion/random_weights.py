"""Deterministic random-weight checkpoints: the documented recipe (shared/golden/README.md).

Product code uses it for `--demo-model` (a tiny SD1.5-family checkpoint a newcomer can run the
default workflow on at once); the tests use it for tiny models and for the full-size reference file.

Keys and shapes come from Loom's own architectures (UNetModel, AutoencoderKL, ClipTextEncoder built
on the meta device) placed under the family's single-file prefixes; OpenCLIP encoders are written
in open_clip's layout (plus `logit_scale`), as real SD2 / SDXL files are. Values: every tensor is
drawn on the CPU in float32 from its own generator seeded with (seed + crc32(key)) % 2**63, then
cast -- conv/linear weights randn/sqrt(fan_in), norm weights 1, biases 0, token/position
embeddings randn*0.02, logit_scale log(1/0.07). A tensor's value depends only on (seed, key, shape).

The writer is byte-stable: sorted compact JSON header padded to 8 bytes, tensors in sorted key
order, and the same `__metadata__` as the shared tool (make_random_checkpoint.py) writes, so the
full-size sd15 file has the reference sha256. One tensor is in memory at a time.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import zlib
from collections import OrderedDict
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from torch import Tensor

from diffusion import families
from diffusion.clip import ClipTextEncoder
from diffusion.clip_convert import hf_to_open_clip
from diffusion.configs import TextEncoderConfig
from diffusion.families.base import UNET_PREFIX, VAE_PREFIX, ModelConfigs
from diffusion.unet import UNetModel
from diffusion.vae import AutoencoderKL

Spec = "OrderedDict[str, tuple[tuple[int, ...], str]]"

ST_DTYPES = {torch.float16: "F16", torch.float32: "F32", torch.bfloat16: "BF16", torch.int64: "I64"}
DTYPE_NAMES = {torch.float16: "fp16", torch.float32: "fp32", torch.bfloat16: "bf16"}


# -- the key/shape/kind spec ----------------------------------------------------------------------


def _kind(key: str, shape: tuple[int, ...]) -> str:
    """How the recipe fills a tensor, from its name and rank (the shared tool's kinds)."""
    leaf = key.rsplit(".", 1)[-1]
    if leaf == "logit_scale":
        return "logit"
    if leaf == "position_ids":
        return "position_ids"
    if key.endswith(("token_embedding.weight", "position_embedding.weight")) or leaf == "positional_embedding":
        return "emb"
    if leaf == "text_projection":  # open_clip: used as x @ P, fan_in is the first dim
        return "wT"
    if leaf in ("bias", "in_proj_bias"):
        return "zeros"
    if len(shape) >= 2:
        return "w"
    return "ones"


def _text_spec(config: TextEncoderConfig, layout: str) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        encoder = ClipTextEncoder(config)
    sd = encoder.state_dict()
    if layout == "open_clip":
        sd = hf_to_open_clip(sd)
        sd["logit_scale"] = torch.empty((), device="meta")
    return {k: tuple(v.shape) for k, v in sd.items()}


def checkpoint_spec(family: str = "sd15", *, tiny: bool = False, configs: ModelConfigs | None = None) -> Spec:
    """OrderedDict key -> (shape, kind) of a family's single-file checkpoint, in the shared tool's
    order (UNet, VAE, text encoders; within each, the order the layers are built in)."""
    fam = families.get(family)
    configs = configs or (fam.tiny() if tiny else fam.reference)
    with torch.device("meta"):
        unet = UNetModel(configs.unet)
        vae = AutoencoderKL(configs.vae)
    sections = [
        (UNET_PREFIX, {k: tuple(v.shape) for k, v in unet.state_dict().items()}),
        (VAE_PREFIX, {k: tuple(v.shape) for k, v in vae.state_dict().items()}),
    ]
    for slot, config in zip(fam.text_encoders, configs.text, strict=True):
        sections.append((slot.prefixes[0], _text_spec(config, slot.config.layout)))
    spec: OrderedDict[str, tuple[tuple[int, ...], str]] = OrderedDict()
    for prefix, section in sections:
        for key in sorted(section, key=build_order):
            spec[prefix + key] = (section[key], _kind(key, section[key]))
    return spec


# Module and parameter names in the order the layers are constructed (LDM / open_clip / transformers).
# Only names that share a parent need a relative order; one list satisfies all of them.
_BUILD_ORDER = (
    "time_embed", "label_emb", "input_blocks", "middle_block", "output_blocks", "out",
    "in_layers", "emb_layers", "out_layers", "skip_connection", "op",
    "norm", "proj_in", "q", "k", "v", "transformer_blocks", "proj_out",
    "attn1", "attn2", "ff", "norm1", "conv1", "norm2", "conv2", "norm3", "nin_shortcut",
    "to_q", "to_k", "to_v", "to_out", "net", "proj",
    "embeddings", "encoder", "final_layer_norm", "quant_conv", "post_quant_conv", "decoder",
    "conv_in", "down", "mid", "up", "norm_out", "conv_out",
    "block", "downsample", "upsample", "conv", "block_1", "attn_1", "block_2",
    "text_model", "token_embedding", "position_embedding", "position_ids", "positional_embedding",
    "transformer", "ln_final", "text_projection", "logit_scale",
    "layers", "resblocks", "self_attn", "layer_norm1", "ln_1", "attn", "ln_2", "mlp", "layer_norm2",
    "q_proj", "k_proj", "v_proj", "in_proj_weight", "in_proj_bias", "out_proj", "c_fc", "c_proj", "fc1", "fc2",
    "weight", "bias",
)  # fmt: skip
_RANK = {name: i for i, name in enumerate(_BUILD_ORDER)}


def build_order(key: str) -> tuple[tuple[int, int], ...]:
    """Sort key giving construction order: names by _BUILD_ORDER, indices numerically (the VAE
    decoder builds `up.N` from the lowest resolution, i.e. in reverse)."""
    parts = key.split(".")
    out = []
    for i, part in enumerate(parts):
        if part.isdigit():
            value = int(part)
            out.append((0, -value if i and parts[i - 1] == "up" else value))
        elif part in _RANK:
            out.append((1, _RANK[part]))
        else:
            raise KeyError(f"build_order: no rank for '{part}' in {key}")
    return tuple(out)


def spec_lines(spec: Spec) -> list[str]:
    """`key [shape] kind` lines, as the shared tool's --list prints them."""
    return [f"{k} {list(shape)} {kind}" for k, (shape, kind) in spec.items()]


# -- values ---------------------------------------------------------------------------------------


def key_seed(seed: int, key: str) -> int:
    return (seed + zlib.crc32(key.encode("utf-8"))) % (2**63)


def make_tensor(key: str, shape: tuple[int, ...], kind: str, seed: int, dtype: torch.dtype) -> Tensor:
    """One tensor of the recipe (drawn in float32 on the CPU, then cast)."""
    if kind == "ones":
        return torch.ones(shape, dtype=dtype)
    if kind == "zeros":
        return torch.zeros(shape, dtype=dtype)
    if kind == "logit":
        return torch.full(shape, math.log(1 / 0.07), dtype=dtype)
    if kind == "position_ids":
        return torch.arange(shape[-1], dtype=torch.int64).reshape(shape)
    gen = torch.Generator(device="cpu").manual_seed(key_seed(seed, key))
    values = torch.randn(shape, generator=gen, dtype=torch.float32)
    if kind == "emb":
        std = 0.02
    elif kind == "w":
        std = 1.0 / math.sqrt(math.prod(shape[1:]))
    elif kind == "wT":
        std = 1.0 / math.sqrt(shape[0])
    else:
        raise ValueError(f"unknown tensor kind {kind!r} for {key}")
    return (values * std).to(dtype)


def random_state_dict(
    family: str = "sd15", *, seed: int = 0, dtype: torch.dtype = torch.float32, tiny: bool = True
) -> dict[str, Tensor]:
    """The whole checkpoint in memory (for tiny models; the full ones are gigabytes)."""
    return {
        k: make_tensor(k, shape, kind, seed, dtype) for k, (shape, kind) in checkpoint_spec(family, tiny=tiny).items()
    }


# -- byte-stable safetensors ----------------------------------------------------------------------


def _header(entries: list[tuple[str, tuple[int, ...], str, int]], metadata: Mapping[str, str] | None) -> bytes:
    header: dict[str, object] = {}
    offset = 0
    for key, shape, st_dtype, nbytes in entries:
        header[key] = {"dtype": st_dtype, "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    if metadata is not None:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    raw = json.dumps(header, sort_keys=True, separators=(",", ":")).encode("utf-8")
    return raw + b" " * (-len(raw) % 8)


def _write(path: Path, entries: list, produce: Callable[[str], Tensor], metadata: Mapping[str, str] | None) -> Path:
    """Write header + tensors (produce(key) -> tensor, called in sorted key order) atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    header = _header(entries, metadata)
    with open(tmp, "wb") as f:
        f.write(len(header).to_bytes(8, "little"))
        f.write(header)
        for key, shape, _, nbytes in entries:
            tensor = produce(key).contiguous()
            if tuple(tensor.shape) != tuple(shape):
                raise ValueError(f"{key}: produced shape {tuple(tensor.shape)}, expected {shape}")
            data = tensor.reshape(-1).view(torch.uint8).numpy()
            if data.nbytes != nbytes:
                raise ValueError(f"{key}: {data.nbytes} bytes, expected {nbytes}")
            f.write(data)
    os.replace(tmp, path)
    return path


def write_safetensors(
    path: str | Path, tensors: Mapping[str, Tensor], metadata: Mapping[str, str] | None = None
) -> Path:
    """Byte-stable safetensors of an in-memory state dict (sorted keys, compact sorted header)."""
    entries = []
    for key in sorted(tensors):
        t = tensors[key]
        entries.append((key, tuple(t.shape), ST_DTYPES[t.dtype], t.numel() * t.element_size()))
    return _write(Path(path), entries, lambda k: tensors[k].detach().cpu(), metadata)


def tool_metadata(family: str, seed: int, dtype: torch.dtype, spec: Spec) -> dict[str, str]:
    """The `__metadata__` the shared tool writes (it is part of the bytes, so of the sha256)."""
    return {
        "format": "pt",
        "generator": "make_random_checkpoint.py",
        "family": family,
        "seed": str(seed),
        "dtype": DTYPE_NAMES[dtype],
        "spec_sha256": hashlib.sha256("\n".join(spec_lines(spec)).encode()).hexdigest(),
    }


def write_random_checkpoint(
    path: str | Path, family: str = "sd15", seed: int = 0, dtype: torch.dtype = torch.float16, tiny: bool = False
) -> Path:
    """Write the recipe's checkpoint for `family` (tiny: the family's tiny() configs)."""
    spec = checkpoint_spec(family, tiny=tiny)
    entries = []
    for key in sorted(spec):
        shape, kind = spec[key]
        st_dtype = "I64" if kind == "position_ids" else ST_DTYPES[dtype]
        size = 8 if kind == "position_ids" else torch.empty((), dtype=dtype).element_size()
        entries.append((key, shape, st_dtype, math.prod(shape) * size))
    metadata = tool_metadata(family, seed, dtype, spec)
    return _write(Path(path), entries, lambda k: make_tensor(k, *spec[k], seed, dtype), metadata)


# -- the demo checkpoint (--demo-model) -----------------------------------------------------------

DEMO_CHECKPOINT = "loom_demo_tiny.safetensors"
"""File name of the `--demo-model` checkpoint in models/checkpoints/."""


def ensure_demo_checkpoint(checkpoints_dir: str | Path, *, seed: int = 0) -> tuple[Path, bool]:
    """(path, created): the tiny random-weight SD1.5-family checkpoint in `checkpoints_dir`, written
    once (a second call finds it). Its pictures are coloured noise; it exists so that the default
    workflow runs end to end, in seconds on a CPU, before any real model is downloaded."""
    path = Path(checkpoints_dir) / DEMO_CHECKPOINT
    if path.is_file():
        return path, False
    # float32: the tiny model is a few MB either way, and fp32 computes on every device.
    return write_random_checkpoint(path, "sd15", seed=seed, dtype=torch.float32, tiny=True), True


__all__ = [
    "DEMO_CHECKPOINT",
    "DTYPE_NAMES",
    "ST_DTYPES",
    "build_order",
    "checkpoint_spec",
    "ensure_demo_checkpoint",
    "key_seed",
    "make_tensor",
    "random_state_dict",
    "spec_lines",
    "tool_metadata",
    "write_random_checkpoint",
    "write_safetensors",
]
