"""GPU figures of issue 8 in one run: `python bench/gpu.py [--out FILE] [--skip-sdxl] [--no-compile]`.

Made for a short lease on a CUDA machine: it writes random-weight checkpoints in the golden recipe's
layout (fp16 files, as most published checkpoints are), loads them the way CheckpointLoaderSimple
does, and measures, each row with its target:
- SD1.5 at 512 px, 20 steps, euler, CFG 7 (the UNet runs a batch of 2): denoise iterations per
  second, eager in fp16 and in bf16, and with `--compile` (torch.compile, CUDA graphs);
- SDXL at 1024 px, same settings, eager and compiled;
- VAE decode milliseconds, peak VRAM (torch's allocator peak over load + sampling + decode),
  checkpoint load to GPU (file to UNet on the device).
Rows print as they are measured and the JSON file is rewritten after each, so a run cut short
still reports what it got. `--tiny --device cpu` checks the script itself on tiny models.
`run(quick)` gives the rows to bench/run.py.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import median, repeat, row, step_times, sync

PROMPT = "a photograph of an astronaut riding a horse"
NEGATIVE = "blurry, low quality"

TARGETS = {
    ("sd15", "eager"): 55.0,
    ("sd15", "compiled"): 105.0,
    ("sdxl", "eager"): 15.0,
    ("sdxl", "compiled"): 22.0,
}
VRAM_TARGET_GIB = {"sd15": 3.0, "sdxl": 11.0}
SIZES = {"sd15": 512, "sdxl": 1024}


class Report:
    """Collects rows, prints each at once and keeps the JSON file current."""

    def __init__(self, out: Path | None) -> None:
        self.rows: list[dict[str, Any]] = []
        self.out = out

    def add(self, figure: str, value: float, unit: str, target: str | None = None, met: bool | None = None,
            note: str = "") -> None:  # fmt: skip
        self.rows.append({**row(figure, round(value, 4), unit, target=target, note=note), "met": met})
        mark = "" if met is None else ("  met" if met else "  MISSED")
        print(f"{figure:<44}{value:>12.3f} {unit:<6} target {target or '-':<10}{mark}  {note}", flush=True)
        if self.out is not None:
            self.out.write_text(json.dumps(self.rows, indent=1))


def _policy(device: str, **changes: Any) -> Any:
    from diffusion.memory import device_policy

    return dataclasses.replace(device_policy(device=device), **changes)


def _load(path: Path, policy: Any, device: str) -> tuple[Any, Any, Any, float]:
    """(model, clip, vae, seconds from the file to the UNet on the device)."""
    from diffusion.memory import ModelManager

    started = time.perf_counter()
    model, clip, vae = ModelManager(policy).load_checkpoint(path)
    with model.loaded():
        sync(device)
    return model, clip, vae, time.perf_counter() - started


def _its(step_seconds: list[float]) -> float:
    """Iterations per second from the median step (the first step also builds kernels)."""
    return 1.0 / statistics.median(step_seconds[1:] or step_seconds)


def _median_ms(fn: Callable[[], Any], device: str, times: int = 5) -> float:
    """Median milliseconds of `fn` (synced), after one warm-up call."""
    fn()
    return median(repeat(lambda: (fn(), sync(device)), times)) * 1000


def bench_family(family: str, path: Path, report: Report, args: argparse.Namespace, deadline: float) -> None:
    import torch

    device, size, steps = args.device, args.size or SIZES[family], args.steps
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    with torch.no_grad():
        model, clip, vae, load_s = _load(path, _policy(device), device)
        report.add(
            f"{family} checkpoint load to {device}", load_s, "s", note=f"{path.stat().st_size / 2**30:.2f} GiB file"
        )
        positive = clip.encode_from_tokens_scheduled(clip.tokenize(PROMPT))
        negative = clip.encode_from_tokens_scheduled(clip.tokenize(NEGATIVE))
        step_times(model, positive, negative, size, 3, device)  # warm-up: kernels and cuDNN plans
        its = _its(step_times(model, positive, negative, size, steps, device))
        target = TARGETS.get((family, "eager"))
        report.add(
            f"{family} {size}px {steps} steps eager {unet_dtype(model)}"
            + (" channels-last" if model.manager.policy.channels_last else ""),
            its,
            "it/s",
            f">= {target:g}",
            its >= target if target else None,
        )
        latent = torch.zeros(1, 4, size // 8, size // 8)
        decode = vae.decode
        decode_ms = _median_ms(lambda: decode(latent), device)
        report.add(f"{family} VAE decode {size}px", decode_ms, "ms", note=f"vae {vae_dtype(vae)}")
        if cuda:
            peak = torch.cuda.max_memory_allocated() / 2**30
            limit = VRAM_TARGET_GIB[family]
            report.add(f"{family} peak VRAM (load+sample+decode)", peak, "GiB", f"<= {limit:g}", peak <= limit)
        del model, clip, vae
        _free(device)
        for name in args.variants.split(","):
            if name and time.perf_counter() < deadline - (150 if "compiled" in name else 40):
                run_variant(family, name, path, report, args)
            elif name:
                print(f"{family}: variant {name} skipped (time)", flush=True)


VARIANTS = {
    "bf16": {"unet_dtype": "bfloat16"},
    "cl": {"channels_last": True},
    "nchw": {"channels_last": False},
    "compiled": {"compile_mode": "auto"},
    "compiled-cl": {"compile_mode": "auto", "channels_last": True},
    "compiled-nchw": {"compile_mode": "auto", "channels_last": False},
}
"""Policy changes measured against the default policy's eager run (--variants)."""


def run_variant(family: str, name: str, path: Path, report: Report, args: argparse.Namespace) -> None:
    import torch

    device, size, steps = args.device, args.size or SIZES[family], args.steps
    changes = dict(VARIANTS[name])
    if "unet_dtype" in changes:
        changes["unet_dtype"] = getattr(torch, changes["unet_dtype"])
    if changes.get("compile_mode") == "auto":
        changes["compile_mode"] = "reduce-overhead" if device.startswith("cuda") else "default"
    compiled = "compile_mode" in changes
    with torch.no_grad():
        model, clip, _, _ = _load(path, _policy(device, **changes), device)
        positive = clip.encode_from_tokens_scheduled(clip.tokenize(PROMPT))
        negative = clip.encode_from_tokens_scheduled(clip.tokenize(NEGATIVE))
        started = time.perf_counter()
        step_times(model, positive, negative, size, 3, device)
        if compiled:
            report.add(f"{family} {name}: compile, first run", time.perf_counter() - started, "s", note="3 steps")
        its = _its(step_times(model, positive, negative, size, steps, device))
        target = TARGETS.get((family, "compiled" if compiled else "eager"))
        met = its >= target if target else None
        label = f"{family} {size}px {steps} steps {name} {unet_dtype(model)}"
        report.add(label, its, "it/s", f">= {target:g}" if target else None, met)
        del model, clip
        _free(device)


def unet_dtype(model: Any) -> str:
    return str(model.record.module.dtype).replace("torch.", "")


def vae_dtype(vae: Any) -> str:
    module = getattr(getattr(vae, "record", None), "module", None)
    for param in module.parameters() if module is not None else ():
        return str(param.dtype).replace("torch.", "")
    return "?"


def _free(device: str) -> None:
    import gc

    import torch

    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()


def make_checkpoint(family: str, folder: Path, tiny: bool) -> Path:
    import torch

    from diffusion.random_weights import write_random_checkpoint

    path = folder / f"{family}{'_tiny' if tiny else ''}_random_fp16.safetensors"
    if not path.exists():
        started = time.perf_counter()
        write_random_checkpoint(path, family, seed=0, dtype=torch.float16, tiny=tiny)
        print(f"wrote {path.name} in {time.perf_counter() - started:.1f} s", flush=True)
    return path


def environment() -> str:
    import torch

    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        card = f"{props.name}, {props.total_memory / 2**30:.0f} GiB"
    else:
        card = "no CUDA device"
    return f"torch {torch.__version__}, {card}"


def main(argv: list[str] | None = None) -> Report:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--out", type=Path, help="JSON file for the rows")
    parser.add_argument("--folder", type=Path, help="where the random checkpoints are written (kept)")
    parser.add_argument("--tiny", action="store_true", help="tiny models: checks the script, not the speed")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--size", type=int, help="image size (default 512 for SD1.5, 1024 for SDXL)")
    parser.add_argument("--skip-sdxl", action="store_true")
    parser.add_argument("--no-compile", action="store_true", help="drop the compiled variants")
    parser.add_argument("--variants", default="bf16,compiled", help=f"after the eager run: {', '.join(VARIANTS)}")
    parser.add_argument("--budget-s", type=float, default=480.0, help="skip sections that would overrun this")
    args = parser.parse_args(argv)
    if args.no_compile:
        args.variants = ",".join(v for v in args.variants.split(",") if "compiled" not in v)
    deadline = time.perf_counter() + args.budget_s
    import torch

    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    print(environment(), flush=True)
    report = Report(args.out)
    folder = args.folder or Path(tempfile.mkdtemp(prefix="loom-gpu-bench-"))
    folder.mkdir(parents=True, exist_ok=True)
    for family in ("sd15", "sdxl"):
        if family == "sdxl" and (args.skip_sdxl or time.perf_counter() > deadline - 150):
            print("sdxl skipped", flush=True)
            continue
        try:
            bench_family(family, make_checkpoint(family, folder, args.tiny), report, args, deadline)
        except Exception as exc:  # one family failing must not lose the other's figures
            import traceback

            traceback.print_exc()
            report.add(f"{family} failed", 0.0, "-", note=f"{type(exc).__name__}: {exc}"[:200])
        _free(args.device)
    return report


def run(quick: bool) -> list[dict[str, Any]]:
    """bench/run.py's entry: the full GPU figures (quick: SD1.5 only, no compile)."""
    argv = ["--skip-sdxl", "--no-compile"] if quick else []
    return main(argv + ["--folder", os.environ.get("LOOM_GPU_BENCH_DIR", tempfile.gettempdir())]).rows


if __name__ == "__main__":
    sys.exit(1 if any(row["figure"].endswith(" failed") for row in main().rows) else 0)
