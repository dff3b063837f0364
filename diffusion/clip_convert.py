"""open_clip <-> transformers ("hf") key layout of CLIP text transformers.

SD2.x's OpenCLIP ViT-H (`cond_stage_model.model.*`) and SDXL's ViT-bigG
(`conditioner.embedders.1.model.*`) are stored in open_clip's layout; ClipTextEncoder holds
transformers' layout. Both functions take state dicts with the checkpoint prefix already removed.

open_clip                                     hf
token_embedding.weight                        text_model.embeddings.token_embedding.weight
positional_embedding                          text_model.embeddings.position_embedding.weight
transformer.resblocks.N.ln_1 / ln_2           text_model.encoder.layers.N.layer_norm1 / layer_norm2
transformer.resblocks.N.attn.in_proj_*        ...layers.N.self_attn.{q,k,v}_proj.* (rows split in 3)
transformer.resblocks.N.attn.out_proj         ...layers.N.self_attn.out_proj
transformer.resblocks.N.mlp.c_fc / c_proj     ...layers.N.mlp.fc1 / fc2
ln_final                                      text_model.final_layer_norm
text_projection  [width, proj] (x @ P)        text_projection.weight [proj, width] (Linear: transposed)
logit_scale, attn_mask                        (dropped: not part of the text encoder)
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch
from torch import Tensor

from core.errors import ModelError

_HF = "text_model."
_TOP = {
    "token_embedding.weight": _HF + "embeddings.token_embedding.weight",
    "positional_embedding": _HF + "embeddings.position_embedding.weight",
    "ln_final.weight": _HF + "final_layer_norm.weight",
    "ln_final.bias": _HF + "final_layer_norm.bias",
}
_BLOCK = {
    "ln_1": "layer_norm1",
    "ln_2": "layer_norm2",
    "attn.out_proj": "self_attn.out_proj",
    "mlp.c_fc": "mlp.fc1",
    "mlp.c_proj": "mlp.fc2",
}
_DROPPED = ("logit_scale", "attn_mask")
_QKV = ("q_proj", "k_proj", "v_proj")
_OC_BLOCK_KEY = re.compile(r"transformer\.resblocks\.(\d+)\.(.+)\.(weight|bias)$")
_OC_IN_PROJ = re.compile(r"transformer\.resblocks\.(\d+)\.attn\.in_proj_(weight|bias)$")
_HF_LAYER_KEY = re.compile(r"text_model\.encoder\.layers\.(\d+)\.(.+)\.(weight|bias)$")


def is_open_clip(sd: Mapping[str, object]) -> bool:
    """True when a (prefix-stripped) text encoder state dict is in open_clip's layout."""
    return "positional_embedding" in sd or any(k.startswith("transformer.resblocks.") for k in sd)


def _unknown(keys: list[str], direction: str) -> ModelError:
    shown = ", ".join(sorted(keys)[:8]) + (" ..." if len(keys) > 8 else "")
    return ModelError(f"{direction}: {len(keys)} unexpected text encoder key(s): {shown}")


def open_clip_to_hf(sd: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Convert an open_clip text transformer state dict to transformers' CLIPTextModel layout."""
    out: dict[str, Tensor] = {}
    unknown: list[str] = []
    for key, value in sd.items():
        if key in _TOP:
            out[_TOP[key]] = value
        elif key == "text_projection":
            out["text_projection.weight"] = value.transpose(0, 1).contiguous()
        elif key == "text_projection.weight":  # some exports already store a Linear weight
            out[key] = value
        elif key in _DROPPED:
            continue
        elif m := _OC_IN_PROJ.fullmatch(key):
            layer, kind = m.groups()
            for name, part in zip(_QKV, torch.chunk(value, 3, dim=0), strict=True):
                out[f"{_HF}encoder.layers.{layer}.self_attn.{name}.{kind}"] = part.contiguous()
        elif (m := _OC_BLOCK_KEY.fullmatch(key)) and m.group(2) in _BLOCK:
            layer, name, kind = m.groups()
            out[f"{_HF}encoder.layers.{layer}.{_BLOCK[name]}.{kind}"] = value
        else:
            unknown.append(key)
    if unknown:
        raise _unknown(unknown, "open_clip -> hf conversion")
    return out


def hf_to_open_clip(sd: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The inverse of open_clip_to_hf (for tests, and for saving in the original layout)."""
    top = {hf: oc for oc, hf in _TOP.items()}
    block = {hf: oc for oc, hf in _BLOCK.items()}
    out: dict[str, Tensor] = {}
    qkv: dict[tuple[str, str], dict[str, Tensor]] = {}
    unknown: list[str] = []
    for key, value in sd.items():
        if key in top:
            out[top[key]] = value
        elif key == "text_projection.weight":
            out["text_projection"] = value.transpose(0, 1).contiguous()
        elif key == _HF + "embeddings.position_ids":
            continue
        elif m := _HF_LAYER_KEY.fullmatch(key):
            layer, name, kind = m.groups()
            if name.startswith("self_attn.") and name[len("self_attn.") :] in _QKV:
                qkv.setdefault((layer, kind), {})[name[len("self_attn.") :]] = value
            elif name in block:
                out[f"transformer.resblocks.{layer}.{block[name]}.{kind}"] = value
            else:
                unknown.append(key)
        else:
            unknown.append(key)
    for (layer, kind), parts in qkv.items():
        if set(parts) != set(_QKV):
            unknown.append(f"encoder.layers.{layer} q/k/v {kind} incomplete (has {sorted(parts)})")
            continue
        out[f"transformer.resblocks.{layer}.attn.in_proj_{kind}"] = torch.cat([parts[n] for n in _QKV], dim=0)
    if unknown:
        raise _unknown(unknown, "hf -> open_clip conversion")
    return out
