"""Deterministic random-weight checkpoints for tests: the recipe lives in diffusion.random_weights
(product code uses it for --demo-model); this module re-exports it under the names the tests have
always used and adds the test-only pieces: the golden sha256, the on-disk cache, file hashing and
parsing the shared tool's listing.
"""

from __future__ import annotations

import hashlib
import os
import re
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
    "write_random_checkpoint",
    "write_safetensors",
]
