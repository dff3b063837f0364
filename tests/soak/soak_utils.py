"""Shared bits of the soak and load tests: the full/reduced switch, RSS of a process, percentiles."""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

FULL = os.environ.get("LOOM_SOAK_FULL") == "1"
"""LOOM_SOAK_FULL=1: the sizes the issue names (slow); otherwise reduced sizes for CI."""

FIGURES: list[str] = []
"""Measured figures of this run, shown in pytest's terminal summary (tests/soak/conftest.py and
tests/faults/conftest.py), so that CI logs carry them without -s."""


def report(line: str) -> None:
    FIGURES.append(line)


def write_summary(terminalreporter: Any) -> None:
    """pytest_terminal_summary body: print the figures once, whichever conftest gets here first."""
    if FIGURES:
        terminalreporter.section("reliability figures")
        for line in FIGURES:
            terminalreporter.write_line(line)
        FIGURES.clear()


def sized(full: int, reduced: int) -> int:
    return full if FULL else reduced


def rss_mb(pid: int) -> float:
    """Resident set size of a process in MiB (VmRSS in /proc/<pid>/status)."""
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) by the nearest-rank method."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def install_checkpoints(base: Path, seeds: Sequence[int] = (0,)) -> list[str]:
    """Copy the tiny random sd15 checkpoints (one per seed) into base/models/checkpoints."""
    from tests.utils.checkpoints import cached_checkpoint

    folder = base / "models" / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for seed in seeds:
        name = f"tiny-{seed}.safetensors"
        shutil.copy(cached_checkpoint("sd15", tiny=True, seed=seed), folder / name)
        names.append(name)
    return names


def txt2img(ckpt: str, seed: int, *, steps: int = 1, size: int = 32, prefix: str = "soak") -> dict[str, Any]:
    """The default workflow, tiny: CheckpointLoaderSimple -> CLIPTextEncode x2 -> KSampler -> VAEDecode -> SaveImage."""
    return {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": size, "height": size, "batch_size": 1}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a glass bottle", "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "watermark", "clip": ["4", 1]}},
        "3": {"class_type": "KSampler", "inputs": {
            "seed": seed, "steps": steps, "cfg": 7.0, "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0,
            "model": ["4", 0], "positive": ["6", 0], "negative": ["7", 0], "latent_image": ["5", 0]}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": prefix, "images": ["8", 0]}},
    }  # fmt: skip
