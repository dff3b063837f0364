"""Where a sampling step's time goes: `python bench/profile_step.py CHECKPOINT [--device cuda] [--size 512]`.

Prints, for one UNet evaluation at the CFG batch of 2:
- host time to issue the evaluation (the call returning, no sync) and the whole evaluation with a
  sync; on CUDA also the GPU's own time (CUDA events): when host > GPU, Python and kernel launches
  bound the step, not the GPU;
- the number of torch ops it dispatches;
- a full sampler step (euler, CFG 7), so the sampler's own overhead shows against the UNet's;
- the torch profiler's top ops by self host time and (CUDA) by device time.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import step_times, sync


def unet_times(model: Any, x: Any, t: Any, context: Any, device: str, repeat: int = 10) -> dict[str, float]:
    import torch

    issue, total, gpu = [], [], []
    for _ in range(repeat):
        sync(device)
        events = None
        if device.startswith("cuda"):
            events = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            events[0].record()
        started = time.perf_counter()
        model.apply_model(x, t, c_crossattn=context)
        issue.append(time.perf_counter() - started)
        if events is not None:
            events[1].record()
        sync(device)
        total.append(time.perf_counter() - started)
        if events is not None:
            gpu.append(events[0].elapsed_time(events[1]) / 1000)
    out = {"issue_ms": statistics.median(issue) * 1000, "total_ms": statistics.median(total) * 1000}
    if gpu:
        out["gpu_ms"] = statistics.median(gpu) * 1000
    return out


def op_count(model: Any, x: Any, t: Any, context: Any) -> int:
    from torch.overrides import TorchFunctionMode

    class Count(TorchFunctionMode):
        calls = 0

        def __torch_function__(self, func, types, args=(), kwargs=None):
            Count.calls += 1
            return func(*args, **(kwargs or {}))

    with Count():
        model.apply_model(x, t, c_crossattn=context)
    return Count.calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--rows", type=int, default=20)
    parser.add_argument("--compile", action="store_true", help="as with --compile (CUDA graphs on CUDA)")
    parser.add_argument("--compile-backend", default="inductor")
    args = parser.parse_args()
    import torch
    from torch.profiler import ProfilerActivity, profile

    from diffusion.memory import ModelManager, device_policy

    torch.set_grad_enabled(False)
    device = args.device
    policy = device_policy(device=device)
    if args.compile:
        mode = "reduce-overhead" if device.startswith("cuda") else "default"
        policy = dataclasses.replace(policy, compile_mode=mode, compile_backend=args.compile_backend)
    model, clip, _ = ModelManager(policy).load_checkpoint(args.checkpoint)
    positive = clip.encode_from_tokens_scheduled(clip.tokenize("a photograph of an astronaut riding a horse"))
    negative = clip.encode_from_tokens_scheduled(clip.tokenize("blurry"))
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, args.size // 8, args.size // 8, generator=gen).to(device)
    t = torch.full((2,), 500.0, device=device)
    context = torch.cat([positive[0][0], negative[0][0]]).to(device)
    model.apply_model(x, t, c_crossattn=context)  # warm-up
    times = unet_times(model, x, t, context, device)
    print(f"UNet eval (batch 2, {args.size}px): " + ", ".join(f"{k} {v:.2f}" for k, v in times.items()))
    if not args.compile:  # a compiled graph dispatches no torch functions from Python
        print(f"torch function calls per UNet eval: {op_count(model, x, t, context)}")
    steps = step_times(model, positive, negative, args.size, 8, device)[1:]
    print(f"sampler step (euler, CFG 7): median {statistics.median(steps) * 1000:.2f} ms")
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.startswith("cuda") else [])
    with profile(activities=activities) as prof:
        step_times(model, positive, negative, args.size, 3, device)
    table = prof.key_averages()
    print(table.table(sort_by="self_cpu_time_total", row_limit=args.rows))
    if device.startswith("cuda"):
        print(table.table(sort_by="self_cuda_time_total", row_limit=args.rows))


if __name__ == "__main__":
    main()
