"""Where the project's shared/ folder is: beside the repository (as CI lays it), or $LOOM_SHARED_DIR."""

from __future__ import annotations

import os
from pathlib import Path

SHARED = Path(os.environ.get("LOOM_SHARED_DIR", Path(__file__).resolve().parents[3] / "shared"))
GOLDEN = Path(os.environ.get("LOOM_GOLDEN_DIR", SHARED / "golden"))
CHECKPOINT_TOOL = SHARED / "tools" / "make_random_checkpoint.py"
