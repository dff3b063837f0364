"""Where the project's shared/ folder is: beside the repository (as CI lays it), or $LOOM_SHARED_DIR."""

from __future__ import annotations

import os
from pathlib import Path

SHARED = Path(os.environ.get("LOOM_SHARED_DIR", Path(__file__).resolve().parents[3] / "shared"))
GOLDEN = Path(os.environ.get("LOOM_GOLDEN_DIR", SHARED / "golden"))
CHECKPOINT_TOOL = SHARED / "tools" / "make_random_checkpoint.py"


def sd15_random_checkpoint() -> Path | None:
    """The full-size random SD1.5 checkpoint of the golden recipe, for parity checks: $LOOM_SD15_RANDOM_CKPT,
    else generated once into the test cache -- only where the golden numbers are at hand (None otherwise)."""
    env = os.environ.get("LOOM_SD15_RANDOM_CKPT")
    if env:
        return Path(env) if Path(env).is_file() else None
    if not (GOLDEN / "latents").is_dir():
        return None
    import torch

    from tests.utils.checkpoints import cached_checkpoint

    return cached_checkpoint("sd15", tiny=False, dtype=torch.float16)
