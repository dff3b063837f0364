"""Checkpoint load memory and time, and VAE decode memory: `.venv/bin/python bench/memory.py [--quick] [--stages]`.

Everything runs in a fresh subprocess, so the figures are the load's own:
- the import of torch, of the engine and of transformers' CLIP code, each with the resident size
  after it (the baseline the load starts from);
- the load itself (ModelManager.load_checkpoint, CheckpointLoaderSimple's path) with the peak
  resident memory (VmHWM, reset just before through /proc/self/clear_refs) above the resident size
  before the load, next to the size of the weights in float32 (target: peak <= 1.3x weights);
  `--stages` prints the peak of each stage (reading the header and detecting the family, UNet,
  VAE, text encoders) with the anonymous / file-backed split of the resident size;
- the load time in a fresh process (the file in the page cache) and a second load in the same
  process (target: <= 3 s warm);
- VAE decode at 512 px (64 px on the tiny model with --quick): time, peak memory above the
  resident size before it, and whether the automatic tiling ran -- once with the memory this
  machine has, once with half the estimated need free (diffusion.vae.available_memory patched),
  which must tile.
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import Row, median, memory_snapshot, reset_peak, row, sd15_checkpoint

GIB = 2**30
TARGET_RATIO = 1.3
TARGET_WARM_S = 3.0


# -- the child ----------------------------------------------------------------------------------------


def _fp32_bytes(*modules: Any) -> int:
    """What the modules' floating-point weights take in float32 (integer buffers at their own size)."""
    total = 0
    for module in modules:
        for tensor in module.state_dict().values():
            total += tensor.numel() * (4 if tensor.is_floating_point() else tensor.element_size())
    return total


class _StageProbe:
    """Wraps the loader's build steps to record the peak memory of each (VmHWM reset between)."""

    def __init__(self) -> None:
        self.stages: list[dict[str, Any]] = []

    def mark(self, name: str) -> None:
        self.stages.append({"stage": name, **memory_snapshot()})
        reset_peak()

    def install(self) -> None:
        from diffusion import loading

        for name in ("build_unet", "build_vae", "build_text_encoders"):
            original = getattr(loading, name)

            def wrapped(*args: Any, _original: Any = original, _name: str = name, **kwargs: Any) -> Any:
                self.mark(f"before {_name.removeprefix('build_')}")
                result = _original(*args, **kwargs)
                self.mark(_name.removeprefix("build_"))
                return result

            setattr(loading, name, wrapped)


def _decode_figures(path: str, size: int, repeats: int, short: int | None) -> dict[str, Any]:
    """Decode one latent of `size` px through the VAE handle; (median s, peak KiB, tiled?)."""
    import torch

    from diffusion import vae as vae_module
    from diffusion.memory import ModelManager, device_policy

    handle = ModelManager(device_policy(device="cpu")).load_vae(path)
    module = handle.record.module
    tiled = {"count": 0}
    original_tiled = module.decode_tiled

    def counting(*args: Any, **kwargs: Any) -> Any:
        tiled["count"] += 1
        return original_tiled(*args, **kwargs)

    module.decode_tiled = counting
    original_free = getattr(vae_module, "available_memory", None)
    if short is not None and original_free is not None:
        vae_module.available_memory = lambda device: short
    latent = torch.randn(1, 4, size // 8, size // 8, generator=torch.Generator().manual_seed(1))
    try:
        with torch.no_grad():
            if size <= 256:  # warm-up (oneDNN primitives); at 512 px it is lost in the decode's own time
                handle.decode(latent)
            gc.collect()
            before = memory_snapshot()["VmRSS"]
            reset_peak()
            times = []
            for _ in range(repeats):
                started = time.perf_counter()
                handle.decode(latent)
                times.append(time.perf_counter() - started)
            peak = memory_snapshot()["VmHWM"] - before
    finally:
        if original_free is not None:
            vae_module.available_memory = original_free
    return {"seconds": median(times), "peak_kib": peak, "tiled": tiled["count"] > 0, "repeats": repeats}


def child(path: str, quick: bool) -> dict[str, Any]:
    started = time.perf_counter()
    probe = _StageProbe()
    probe.mark("python")
    import torch

    probe.mark("import torch")
    from diffusion.memory import ModelManager, device_policy

    probe.mark("import engine")
    import importlib

    importlib.import_module("transformers.models.clip.modeling_clip")
    probe.mark("import transformers CLIP")
    imports = time.perf_counter() - started
    probe.install()
    gc.collect()
    before = memory_snapshot()["VmRSS"]
    reset_peak()
    times = []
    with torch.no_grad():
        started = time.perf_counter()
        model, clip, vae = ModelManager(device_policy(device="cpu")).load_checkpoint(path)
        times.append(time.perf_counter() - started)
        probe.mark("end of load")
        after = memory_snapshot()["VmRSS"]
        weights = _fp32_bytes(model.record.module, clip.record.module, vae.record.module)
        load_stages = [s for s in probe.stages if s["stage"] not in ("python",) and not s["stage"].startswith("import")]
        peak = max(s["VmHWM"] for s in load_stages) - before
        del model, clip, vae
        gc.collect()
        started = time.perf_counter()
        handles = ModelManager(device_policy(device="cpu")).load_checkpoint(path)
        times.append(time.perf_counter() - started)
        del handles
        gc.collect()
    try:
        from diffusion.vae import decode_bytes
    except ImportError:  # a revision before automatic tiling (--compare): the same estimate

        def decode_bytes(height: int, width: int, element_size: int) -> int:
            return 1100 * element_size * height * width

    size = 64 if quick else 512
    repeats = 2
    decode = _decode_figures(path, size, repeats, None)
    # Half the estimated need: the decode must tile (about 512 MiB at 512 px).
    short_bytes = decode_bytes(size, size, 4) // 2
    short = _decode_figures(path, size, 1 if not quick else repeats, short_bytes)
    return {
        "imports_s": imports,
        "baseline_kib": before,
        "peak_kib": peak,
        "kept_kib": after - before,
        "weights_bytes": weights,
        "load_s": times,
        "stages": probe.stages,
        "decode_size": size,
        "decode": decode,
        "decode_short": short,
        "short_bytes": short_bytes,
        "quick": quick,
    }


def measure(path: Path, quick: bool) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", str(path)] + (["--quick"] if quick else [])
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"memory child failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# -- rows ---------------------------------------------------------------------------------------------


def rows_from(figures: dict[str, Any], path: Path) -> list[Row]:
    weights = figures["weights_bytes"]
    peak = figures["peak_kib"] * 1024
    ratio = peak / weights
    name = path.name
    load_first, load_warm = figures["load_s"]
    stages = {s["stage"]: s for s in figures["stages"]}
    worst = max(
        (s for s in figures["stages"] if s["stage"] in ("unet", "vae", "text_encoders", "before unet")),
        key=lambda s: s["VmHWM"],
        default=None,
    )
    where = f"; highest in stage '{worst['stage']}'" if worst else ""
    out = [
        row(
            "checkpoint load: peak RSS / fp32 weights",
            ratio,
            "x",
            target=None if figures["quick"] else f"<= {TARGET_RATIO}x",
            limit=None if figures["quick"] else TARGET_RATIO,
            note=("tiny checkpoint: the target is for the full-size one; " if figures["quick"] else "")
            + f"peak {peak / GIB:.2f} GiB above the {figures['baseline_kib'] / 2**20:.2f} GiB before the load, "
            f"weights {weights / GIB:.2f} GiB fp32{where} ({name})",
        ),
        row("checkpoint load: fp32 weights", weights / GIB, "GiB", note="UNet + VAE + text encoders in float32"),
        row(
            "checkpoint load: resident after",
            figures["kept_kib"] / 2**20,
            "GiB",
            note="what the loaded models keep (above the size before the load)",
        ),
        row("checkpoint load: first in a fresh process", load_first, "s", note="file in the page cache"),
        row(
            "checkpoint load: warm",
            load_warm,
            "s",
            target=f"<= {TARGET_WARM_S:.0f} s",
            limit=TARGET_WARM_S,
            note="second load in the same process",
        ),
        row(
            "imports before the first load",
            figures["imports_s"],
            "s",
            note=f"torch, engine, transformers CLIP; RSS then "
            f"{stages.get('import transformers CLIP', {}).get('VmRSS', 0) / 2**20:.2f} GiB",
        ),
    ]
    size = figures["decode_size"]
    short = f"{figures['short_bytes'] / 2**20:.0f} MiB free simulated"
    for key, label in (("decode", "free memory"), ("decode_short", short)):
        d = figures[key]
        out.append(
            row(
                f"VAE decode {size} px ({label})",
                d["seconds"],
                "s",
                note=f"median of {d['repeats']}; peak {d['peak_kib'] / 2**20:.2f} GiB above before; "
                f"tiled: {'yes' if d['tiled'] else 'no'}",
            )
        )
    return out


def stage_table(figures: dict[str, Any]) -> str:
    lines = [f"{'stage':<26}{'peak GiB':>10}{'RSS GiB':>10}{'anon GiB':>10}{'file GiB':>10}"]
    for s in figures["stages"]:
        lines.append(
            f"{s['stage']:<26}{s['VmHWM'] / 2**20:>10.2f}{s['VmRSS'] / 2**20:>10.2f}"
            f"{s['RssAnon'] / 2**20:>10.2f}{s['RssFile'] / 2**20:>10.2f}"
        )
    return "\n".join(lines)


def run(quick: bool) -> list[Row]:
    path = sd15_checkpoint(quick)
    return rows_from(measure(path, quick), path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the tiny checkpoint, 64 px decode")
    parser.add_argument("--stages", action="store_true", help="print the peak memory of each load stage")
    parser.add_argument("--child", metavar="PATH", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.quick)))
        return 0
    path = sd15_checkpoint(args.quick)
    figures = measure(path, args.quick)
    if args.stages:
        print(stage_table(figures))
        print()
    for r in rows_from(figures, path):
        print(f"{r['figure']:<44}{r['value']:>9.3f} {r['unit']:<4} {r['note']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
