"""Helpers shared by the benchmark modules: result rows, medians, /proc memory figures, checkpoints.

Every benchmark module exposes `run(quick: bool) -> list[dict]`; each dict is one row made by
`row()`: {"figure", "target", "value", "unit", "met", "note"}. `bench/run.py` collects them.
"""

from __future__ import annotations

import os
import statistics
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

Row = dict[str, Any]


def row(
    figure: str,
    value: float,
    unit: str,
    *,
    target: str | None = None,
    limit: float | None = None,
    note: str = "",
    higher_is_better: bool = False,
) -> Row:
    """One result row; `limit` (in `unit`) decides `met` (None when there is no target)."""
    met = None
    if limit is not None:
        met = bool(value >= limit) if higher_is_better else bool(value <= limit)
    return {"figure": figure, "target": target, "value": float(value), "unit": unit, "met": met, "note": note}


def error_row(figure: str, exc: BaseException) -> Row:
    """A benchmark that could not run: value NaN, the reason in the note."""
    text = str(exc).strip().splitlines()
    return row(figure, float("nan"), "-", note=f"failed: {type(exc).__name__}: {text[-1] if text else ''}")


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def repeat(fn: Callable[[], Any], times: int) -> list[float]:
    """Wall seconds of `times` calls of fn."""
    import time

    out = []
    for _ in range(times):
        started = time.perf_counter()
        fn()
        out.append(time.perf_counter() - started)
    return out


def sync(device: str) -> None:
    """Wait for a CUDA device's queued work, so a wall-clock time covers it; nothing elsewhere."""
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def step_times(model: Any, positive: Any, negative: Any, size: int, steps: int, device: str = "cpu") -> list[float]:
    """Per-step seconds of a KSampler run (euler / normal, CFG 7, seed 42) at `size` px, each step
    synced on `device` before its time is taken."""
    import time

    import torch

    from diffusion.sampling.ksampler import common_ksampler

    marks = [time.perf_counter()]

    def tick(*_: Any) -> None:
        sync(device)
        marks.append(time.perf_counter())

    latent = {"samples": torch.zeros(1, 4, size // 8, size // 8)}
    common_ksampler(model, 42, steps, 7.0, "euler", "normal", positive, negative, latent, callback=tick)
    return [b - a for a, b in zip(marks, marks[1:], strict=False)]


def load_avg() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


# -- memory -----------------------------------------------------------------------------------------


def status_kib(field: str) -> int:
    """A `kB` field of /proc/self/status (VmHWM, VmRSS, RssAnon, RssFile); 0 where /proc is absent."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux: write 5 to /proc/self/clear_refs); False if unsupported."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as refs:
            refs.write("5")
        return True
    except OSError:
        return False


def memory_snapshot() -> dict[str, int]:
    """KiB: peak since the last reset, resident now, and the anonymous / file-backed parts."""
    return {key: status_kib(key) for key in ("VmHWM", "VmRSS", "RssAnon", "RssFile")}


# -- checkpoints ------------------------------------------------------------------------------------


def sd15_checkpoint(quick: bool) -> Path:
    """The random SD1.5 checkpoint of the golden recipe: tiny for --quick, else full size.

    Full size: $LOOM_SD15_RANDOM_CKPT, else the test cache ($LOOM_TEST_CACHE or tests/.cache), else
    /tmp/loomcache where another session left it, else generated into the test cache (minutes).
    """
    import torch

    from tests.utils.checkpoints import cache_dir, cached_checkpoint

    if quick:
        return cached_checkpoint("sd15", tiny=True, dtype=torch.float16)
    env = os.environ.get("LOOM_SD15_RANDOM_CKPT")
    if env and Path(env).is_file():
        return Path(env)
    name = "sd15-seed0-fp16.safetensors"
    for folder in (cache_dir(), Path("/tmp/loomcache")):
        if (folder / name).is_file():
            return folder / name
    return cached_checkpoint("sd15", tiny=False, dtype=torch.float16)
