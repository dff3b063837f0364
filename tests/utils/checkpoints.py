"""Deterministic random-weight checkpoints for tests: the recipe lives in diffusion.random_weights
(product code uses it for --demo-model); this module re-exports it under the names the tests have
always used and adds the test-only pieces: the golden sha256, the on-disk cache, file hashing and
parsing the shared tool's listing.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path

import torch

from diffusion.random_weights import (
    DTYPE_NAMES,
    ST_DTYPES,
    Spec,
    build_order,
    checkpoint_spec,
    key_seed,
    make_tensor,
    random_state_dict,
    spec_lines,
    tool_metadata,
    write_random_checkpoint,
    write_safetensors,
)

SD15_SHA256 = "89508761848c3fedb61ea482455f3f7a95164226114037aa754746584c2a9863"
"""sha256 of write_random_checkpoint(p, "sd15", seed=0, dtype=torch.float16) (the golden file)."""

_ST_DTYPES = ST_DTYPES  # the names this module had before the recipe moved
_DTYPE_NAMES = DTYPE_NAMES


# -- cache ----------------------------------------------------------------------------------------


def cache_dir() -> Path:
    """$LOOM_TEST_CACHE, else tests/.cache/ (kept across runs; never committed)."""
    env = os.environ.get("LOOM_TEST_CACHE")
    return Path(env) if env else Path(__file__).resolve().parents[1] / ".cache"


def cached_checkpoint(
    family: str = "sd15", *, tiny: bool = True, seed: int = 0, dtype: torch.dtype = torch.float16
) -> Path:
    """The recipe's checkpoint, generated once into the cache folder and reused."""
    name = f"{family}{'-tiny' if tiny else ''}-seed{seed}-{DTYPE_NAMES[dtype]}.safetensors"
    path = cache_dir() / name
    if not path.is_file():
        write_random_checkpoint(path, family, seed=seed, dtype=dtype, tiny=tiny)
    return path


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            digest.update(block)
    return digest.hexdigest()


_TOOL_LINE = re.compile(r"^(\S+) \[([\d, ]*)\] (\w+)$")


def parse_tool_listing(text: str) -> list[str]:
    """The key lines of `make_random_checkpoint.py --list` (for comparing with spec_lines)."""
    return [line for line in text.splitlines() if _TOOL_LINE.match(line)]


# -- other layouts of a checkpoint ------------------------------------------------------------------


def _under(sd: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}


def write_diffusers_folder(folder: str | Path, family_name: str, sd: Mapping[str, torch.Tensor]) -> Path:
    """A diffusers pipeline folder (unet/, vae/, text_encoder(_2)/, model_index.json) holding the
    same weights as the single-file state dict `sd`, renamed with diffusion.diffusers_keys' inverse
    maps (the UNet / VAE configs are read from the weights, so any size works)."""
    from diffusion import diffusers_keys, families
    from diffusion.clip_convert import open_clip_to_hf
    from diffusion.families.base import UNET_PREFIX, VAE_PREFIX, vae_config_from_state_dict

    folder = Path(folder)
    family = families.get(family_name)
    unet, vae = _under(sd, UNET_PREFIX), _under(sd, VAE_PREFIX)
    parts = {
        "unet/diffusion_pytorch_model.safetensors": diffusers_keys.unet_ldm_to_diffusers(
            unet, family.unet_config(unet, "")
        ),
        "vae/diffusion_pytorch_model.safetensors": diffusers_keys.vae_ldm_to_diffusers(
            vae, vae_config_from_state_dict(vae)
        ),
    }
    # diffusers keeps the last (or a refiner's only) encoder in text_encoder_2/
    names = ["text_encoder", "text_encoder_2"][: len(family.text_encoders)]
    if family_name == "sdxl_refiner":
        names = ["text_encoder_2"]
    for name, slot in zip(names, family.text_encoders, strict=True):
        weights = _under(sd, slot.prefixes[0])
        if slot.config.layout == "open_clip":
            weights = open_clip_to_hf(weights)
        parts[f"{name}/model.safetensors"] = weights
    for rel, tensors in parts.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        write_safetensors(folder / rel, tensors)
    pipeline = "StableDiffusionXLPipeline" if family_name.startswith("sdxl") else "StableDiffusionPipeline"
    (folder / "model_index.json").write_text(json.dumps({"_class_name": pipeline}))
    return folder


__all__ = [
    "SD15_SHA256",
    "Spec",
    "build_order",
    "cache_dir",
    "cached_checkpoint",
    "checkpoint_spec",
    "key_seed",
    "make_tensor",
    "parse_tool_listing",
    "random_state_dict",
    "sha256_file",
    "spec_lines",
    "tool_metadata",
    "write_diffusers_folder",
    "write_random_checkpoint",
    "write_safetensors",
]
