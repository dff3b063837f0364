"""Diffusion engine speed on the full-size random SD1.5 checkpoint: `.venv/bin/python bench/sampling.py [--quick]`.

Figures (the load itself is bench/memory.py's), each next to ComfyUI's on the reference machine
where shared/golden/README.md gives one ("Timings of ComfyUI on that machine": 2-core CPU,
torch 2.13 CPU):
- CLIPTextEncode (tokenize + encode one prompt), median of several;
- seconds per sampling step (euler, CFG 7, so the UNet runs a batch of 2) at 128, 256 and 512 px,
  from a KSampler run's per-step callbacks: the median step after the first (the first also
  builds oneDNN primitives; shown in the note);
- VAE decode at 128 and 256 px (512 px: bench/memory.py);
- live previews: latent2rgb and TAESD (random weights, the real architecture), the previewer plus
  the server's JPEG encoding, per step, as a share of the step at that size (target <= 5 %);
- from torch.profiler over one 128 px CFG batch UNet evaluation: the share of wall time outside
  the matrix work (self time of convolution / addmm / mm / bmm / SDPA kernels), with the largest
  other ops named in the note.

`--quick` uses the tiny random checkpoint at 64 px (seconds in all: it checks that the code runs,
the numbers mean little). No assertions on time: the machine decides. The load average is
printed, because other processes on a 2-core machine distort every figure.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import Row, load_avg, median, repeat, row, sd15_checkpoint, step_times

PROMPT = "a photograph of an astronaut riding a horse"
NEGATIVE = "blurry, low quality"
PREVIEW_TARGET = 5.0
"""Percent of a step a preview may cost."""

COMFY = {
    "CLIPTextEncode": 0.2,
    "step 128 px": 2.45,
    "step 256 px": 5.4,
    "VAE decode 128 px": 1.3,
    "VAE decode 256 px": 5.5,
}
"""ComfyUI 0.8.0 on the golden machine (seconds; the faster end of the README's range)."""

COMPUTE_OPS = (
    "convolution",
    "addmm",
    "aten::mm",
    "bmm",
    "scaled_dot_product",
    "flash_attention",
)
"""Profiler op names counted as the UNet's matrix work (substring match; self times do not overlap)."""


def _comfy(name: str) -> str:
    ref = COMFY.get(name)
    return f"; ComfyUI {ref:.2f} s on the golden machine" if ref is not None else ""


# -- pieces ---------------------------------------------------------------------------------------


def profile_share(model: Any, positive: Any, negative: Any, size: int) -> tuple[float, str]:
    """(share of one CFG batch UNet evaluation's wall time outside the matrix kernels, top others)."""
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
    events = prof.key_averages()
    compute = sum(e.self_cpu_time_total for e in events if any(op in e.key for op in COMPUTE_OPS)) / 1e6
    others = sorted(
        (e for e in events if not any(op in e.key for op in COMPUTE_OPS)), key=lambda e: -e.self_cpu_time_total
    )
    top = ", ".join(f"{e.key} {e.self_cpu_time_total / 1e6 / wall * 100:.1f}%" for e in others[:4])
    return max(0.0, 1.0 - compute / wall), top


def preview_cost(previewer: Callable[[Any], Any], size: int, times: int) -> float:
    """Median seconds of one preview of a `size` px latent: the previewer, then the JPEG the server sends."""
    import torch

    from server.protocol import encode_preview

    x0 = torch.randn(1, 4, size // 8, size // 8, generator=torch.Generator().manual_seed(3))
    return median(repeat(lambda: encode_preview(previewer(x0), 512), times))


def budgeted_share(
    model: Any, positive: Any, negative: Any, size: int, steps: int, previewer: Any
) -> tuple[float, str]:
    """A whole KSampler run with a budgeted previewer asked at every step (the last one forced):
    (share of the run's wall time spent on previews, 'shown/steps')."""
    import torch

    from diffusion.previews import BudgetedPreviewer
    from diffusion.sampling.ksampler import common_ksampler
    from server.protocol import encode_preview

    budget = BudgetedPreviewer(previewer)
    spent = [0.0]

    def tick(step: int, x0: Any, x: Any, total: int) -> None:
        started = time.perf_counter()
        image = budget(x0, force=step + 1 >= total)
        if image is not None:
            encode_preview(image, 512)
        spent[0] += time.perf_counter() - started

    latent = {"samples": torch.zeros(1, 4, size // 8, size // 8)}
    started = time.perf_counter()
    common_ksampler(model, 42, steps, 7.0, "euler", "normal", positive, negative, latent, callback=tick)
    return spent[0] / (time.perf_counter() - started), f"{budget.shown}/{steps}"


def _previewers(model: Any) -> dict[str, Callable[[Any], Any]]:
    import torch

    from diffusion.previews import latent2rgb_previewer, taesd_previewer
    from diffusion.taesd import TAESDDecoder

    torch.manual_seed(0)
    out = {}
    fast = latent2rgb_previewer(model.latent_format, 512)
    if fast is not None:
        out["latent2rgb"] = fast
    out["TAESD"] = taesd_previewer(TAESDDecoder(4).eval(), 512)
    return out


# -- the run --------------------------------------------------------------------------------------


def run(quick: bool) -> list[Row]:
    import torch

    from diffusion.memory import ModelManager, device_policy

    path = sd15_checkpoint(quick)
    sizes = [64] if quick else [128, 256, 512]
    reps = 2 if quick else 5
    rows: list[Row] = []
    with torch.no_grad():
        model, clip, vae = ModelManager(device_policy(device="cpu")).load_checkpoint(path)

        def encode(text: str) -> Any:
            return clip.encode_from_tokens_scheduled(clip.tokenize(text))

        positive, negative = encode(PROMPT), encode(NEGATIVE)
        clip_s = median(repeat(lambda: encode(PROMPT), reps))
        rows.append(row("CLIPTextEncode", clip_s, "s", note=f"median of {reps}" + _comfy("CLIPTextEncode")))
        steps_at = {}
        for size in sizes:
            steps = 3 if quick else {128: 5, 256: 4, 512: 3}[size]
            times = step_times(model, positive, negative, size, steps)
            later = times[1:] or times
            steps_at[size] = median(later)
            rows.append(
                row(
                    f"sampling step {size} px",
                    steps_at[size],
                    "s",
                    target="as fast as the hardware allows",
                    note=f"euler, CFG 7 (batch 2); median of {len(later)}, first step {times[0]:.2f} s"
                    + _comfy(f"step {size} px"),
                )
            )
        for size in sizes[:2]:
            latent = torch.randn(1, 4, size // 8, size // 8, generator=torch.Generator().manual_seed(1))
            vae.decode(latent)  # warm-up
            seconds = median(repeat(lambda latent=latent: vae.decode(latent), 1 if quick else 3))
            rows.append(row(f"VAE decode {size} px", seconds, "s", note="median" + _comfy(f"VAE decode {size} px")))
        for name, previewer in _previewers(model).items():
            for size in dict.fromkeys((sizes[0], sizes[-1])):
                cost = preview_cost(previewer, size, 3 if quick else 10)
                share = cost / steps_at[size] * 100
                rows.append(
                    row(
                        f"preview cost {name} {size} px",
                        share,
                        "% of a step",
                        target=None if quick else f"<= {PREVIEW_TARGET:.0f} %",
                        limit=None if quick else PREVIEW_TARGET,
                        note=f"{cost * 1000:.1f} ms per preview (previewer + JPEG) vs {steps_at[size]:.2f} s step",
                    )
                )
        steps = 3 if quick else 20
        taesd = _previewers(model)["TAESD"]
        spent, shown = budgeted_share(model, positive, negative, sizes[0], steps, taesd)
        rows.append(
            row(
                f"preview cost TAESD budgeted, {sizes[0]} px run",
                spent * 100,
                "% of the run",
                target=None if quick else f"<= {PREVIEW_TARGET:.0f} %",
                limit=None if quick else PREVIEW_TARGET,
                note=f"{steps} steps, previews shown {shown} (diffusion.previews.BudgetedPreviewer, last step forced)",
            )
        )
        share, top = profile_share(model, positive, negative, sizes[0])
        rows.append(
            row(
                f"step time outside matrix work, {sizes[0]} px",
                share * 100,
                "%",
                target="as low as it goes",
                note=f"torch.profiler, one CFG batch UNet call; largest others: {top}",
            )
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the tiny checkpoint at 64 px (CI)")
    args = parser.parse_args(argv)
    import torch

    print(
        f"sampling benchmark: torch {torch.__version__}, {os.cpu_count()} cores, {torch.get_num_threads()} threads; "
        f"load average {load_avg()}"
    )
    for r in run(args.quick):
        print(f"{r['figure']:<40}{r['value']:>10.3f} {r['unit']:<12} {r['note']}")
    print(f"load average after: {load_avg()} (figures are unreliable when it exceeds the core count)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
