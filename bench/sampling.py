"""Diffusion engine speed on the full-size random SD1.5 checkpoint: `.venv/bin/python bench/sampling.py [--quick]`.

Figures, each next to ComfyUI's on the reference machine (shared/golden/README.md, "Timings of
ComfyUI on that machine": 2-core CPU, torch 2.13 CPU):
- checkpoint load (CheckpointLoaderSimple's path: ModelManager.load_checkpoint), measured in a
  fresh subprocess so its memory figure is the load's own: the import of the engine and of
  transformers' CLIP code first (timed apart: ComfyUI pays it at server start, Loom on the first
  load), then a cold-ish load (fresh process, file in the page cache) and a warm one (second load
  in the same process), with the peak resident memory (VmHWM) above the size before loading;
- CLIPTextEncode (tokenize + encode one prompt);
- seconds per sampling step (euler, CFG 7, so the UNet runs a batch of 2) at each size, from a
  KSampler run's per-step callbacks: the median step, and the first step (which also builds
  oneDNN primitives) separately;
- VAE decode of one latent at each size;
- from torch.profiler, the share of a 128 px UNet evaluation spent outside convolution / matmul /
  attention kernels (norms, activations, copies, Python).

No assertions on time: the machine decides the numbers. The load average is printed before and
after, because other processes on a 2-core machine distort every figure; rerun when it is quiet.
The checkpoint comes from tests/utils/checkpoints.py (generated once into $LOOM_TEST_CACHE, else
tests/.cache/; about 40 s the first time).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

PROMPT = "a photograph of an astronaut riding a horse"
NEGATIVE = "blurry, low quality"

COMFY = {
    "import": None,
    "load cold-ish": (2.5, 3.0),
    "load warm": None,
    "load peak RSS": None,
    "CLIPTextEncode": (0.2, 0.2),
    "step 128px": (2.45, 2.66),
    "step 256px": (5.4, 5.4),
    "VAE decode 128px": (1.3, 1.3),
    "VAE decode 256px": (5.5, 5.5),
}
"""ComfyUI 0.8.0 on the golden machine (seconds); None where the README gives no figure."""

COMPUTE_OPS = (
    "convolution",
    "addmm",
    "aten::mm",
    "bmm",
    "matmul",
    "scaled_dot_product",
    "flash_attention",
    "baddbmm",
)
"""Profiler op names counted as the UNet's real work (substring match on the op name)."""


# -- the load, in a child process -----------------------------------------------------------------


def _status_kib(field: str) -> int:
    """A `kB` field of /proc/self/status (VmHWM, VmRSS); 0 where /proc is absent."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def load_child(path: str, device: str) -> dict[str, float]:
    """Runs in the child: import, then two loads. Returns seconds and KiB."""
    started = time.perf_counter()
    import torch

    from diffusion.memory import ModelManager, device_policy

    engine = time.perf_counter() - started
    # The first load in a process imports transformers' CLIP model code (the text encoders are
    # built on it); ComfyUI imports it at startup, so it is timed apart from the load.
    importlib.import_module("transformers.models.clip.modeling_clip")
    text_stack = time.perf_counter() - started - engine
    rss_before = _status_kib("VmRSS")
    times, figures = [], {}
    with torch.no_grad():
        for _ in range(2):
            manager = ModelManager(device_policy(device=device))
            started = time.perf_counter()
            handles = manager.load_checkpoint(path)
            times.append(time.perf_counter() - started)
            if not figures:  # the first load's own figures, before the second adds to them
                figures["peak_kib"] = _status_kib("VmHWM") - rss_before
                figures["kept_kib"] = _status_kib("VmRSS") - rss_before
            del handles, manager
    return {"import": engine + text_stack, "import_text": text_stack, "cold": times[0], "warm": times[1], **figures}


def measure_load(path: Path, device: str) -> dict[str, float]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--load-child", str(path), "--device", device]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"load subprocess failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# -- in-process figures ---------------------------------------------------------------------------


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def best_of(fn: Callable[[], Any], repeat: int, device: str) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        _sync(device)
        best = min(best, time.perf_counter() - started)
    return best


def step_times(model: Any, positive: Any, negative: Any, size: int, steps: int, device: str) -> list[float]:
    """Per-step seconds of a KSampler run (euler / normal, CFG 7) at `size` px."""
    import torch

    from diffusion.sampling.ksampler import common_ksampler

    marks = [time.perf_counter()]

    def tick(step: int, x0: Any, x: Any, total: int) -> None:
        _sync(device)
        marks.append(time.perf_counter())

    latent = {"samples": torch.zeros(1, 4, size // 8, size // 8)}
    common_ksampler(model, 42, steps, 7.0, "euler", "normal", positive, negative, latent, callback=tick)
    return [b - a for a, b in zip(marks, marks[1:], strict=False)]


def profile_share(model: Any, positive: Any, negative: Any, size: int) -> float:
    """Share of one CFG batch UNet evaluation's wall time outside conv / matmul / attention kernels."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    x = torch.randn(2, 4, size // 8, size // 8, generator=torch.Generator().manual_seed(0))
    t = torch.full((2,), 500.0)
    context = torch.cat([positive[0][0], negative[0][0]])
    model.apply_model(x, t, context)  # warm-up: primitives built outside the profile
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        started = time.perf_counter()
        model.apply_model(x, t, context)
        wall = time.perf_counter() - started
    compute_us = sum(
        event.self_cpu_time_total for event in prof.key_averages() if any(op in event.key for op in COMPUTE_OPS)
    )
    return max(0.0, 1.0 - compute_us / 1e6 / wall)


# -- report ---------------------------------------------------------------------------------------


def _comfy(name: str) -> str:
    ref = COMFY.get(name)
    if ref is None:
        return "-"
    low, high = ref
    return f"{low:.2f} s" if low == high else f"{low:.2f}-{high:.2f} s"


def print_table(rows: Sequence[tuple[str, str, str]]) -> None:
    header = f"{'figure':<22}{'ComfyUI (README)':>18}{'Loom':>14}   notes"
    print(header)
    print("-" * (len(header) + 30))
    for name, ours, note in rows:
        print(f"{name:<22}{_comfy(name):>18}{ours:>14}   {note}")


def _load_avg() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def run(args: argparse.Namespace) -> list[tuple[str, str, str]]:
    import torch

    from diffusion.memory import ModelManager, device_policy
    from tests.utils.checkpoints import cached_checkpoint

    path = cached_checkpoint("sd15", tiny=False, dtype=torch.float16)
    rows: list[tuple[str, str, str]] = []
    load = measure_load(path, args.device)
    note = f"torch + engine, then transformers' CLIP code ({load['import_text']:.2f} s; paid by the first load)"
    rows.append(("import", f"{load['import']:.2f} s", note))
    rows.append(("load cold-ish", f"{load['cold']:.2f} s", "first load in a fresh process, file in page cache"))
    rows.append(("load warm", f"{load['warm']:.2f} s", "second load, same process"))
    peak, kept = load["peak_kib"] / 2**20, load["kept_kib"] / 2**20
    note = f"VmHWM above the size before; {kept:.2f} GiB stays (weights), the rest is the mapped file"
    rows.append(("load peak RSS", f"{peak:.2f} GiB", note))

    with torch.no_grad():
        model, clip, vae = ModelManager(device_policy(device=args.device)).load_checkpoint(path)

        def encode(text: str) -> Any:
            return clip.encode_from_tokens_scheduled(clip.tokenize(text))

        positive, negative = encode(PROMPT), encode(NEGATIVE)
        rows.append(("CLIPTextEncode", f"{best_of(lambda: encode(PROMPT), args.repeat, args.device):.3f} s", ""))
        for size in args.sizes:
            steps = args.steps if size <= 256 else max(2, args.steps // 2)
            times = step_times(model, positive, negative, size, steps, args.device)
            later = times[1:] or times
            note = f"median of {len(later)}; first step {times[0]:.2f} s"
            rows.append((f"step {size}px", f"{statistics.median(later):.2f} s", note))
        for size in args.sizes:
            latent = torch.randn(1, 4, size // 8, size // 8, generator=torch.Generator().manual_seed(1))
            repeat = args.repeat if size <= 256 else 1
            seconds = best_of(lambda latent=latent: vae.decode(latent), repeat, args.device)
            rows.append((f"VAE decode {size}px", f"{seconds:.2f} s", f"best of {repeat}"))
        if args.device == "cpu":
            share = profile_share(model, positive, negative, 128)
            rows.append(("outside conv/matmul", f"{share * 100:.1f} %", "of a 128px UNet evaluation (profiler)"))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="128 px only, fewer repetitions (CI)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256, 512], help="image sizes in px")
    parser.add_argument("--repeat", type=int, default=3, help="runs per CLIP / VAE figure; the best is shown")
    parser.add_argument("--steps", type=int, default=4, help="sampler steps at <= 256 px (half above)")
    parser.add_argument("--device", default="cpu", help="cpu (the reference) or cuda")
    parser.add_argument("--load-child", metavar="PATH", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.load_child:
        print(json.dumps(load_child(args.load_child, args.device)))
        return 0
    if args.quick:
        args.sizes, args.repeat, args.steps = [128], 1, 3
    import torch

    print(
        f"sampling benchmark: torch {torch.__version__}, {os.cpu_count()} cores, {torch.get_num_threads()} threads, "
        f"device {args.device}; load average {_load_avg()}"
    )
    rows = run(args)
    print()
    print_table(rows)
    print(f"\nload average after: {_load_avg()} (figures are unreliable when it exceeds the core count)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
