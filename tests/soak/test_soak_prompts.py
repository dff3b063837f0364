"""Soak: consecutive small txt2img prompts on the tiny random checkpoint against a live server,
with the server's RSS (VmRSS) sampled after every batch. Growth is measured from the end of the
warm-up (first loads, allocator pools, caches filling) to the end. The issue's target is < 50 MB;
the test asserts a generous 150 MB only at full size (LOOM_SOAK_FULL=1: 500 prompts), and always
prints the figures. Reduced (CI): 30 prompts."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.server.live_server import LiveServer
from tests.soak.soak_utils import FULL, install_checkpoints, report, rss_mb, sized, txt2img

pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600 if FULL else 300)]

PROMPTS = sized(500, 30)
BATCH = 10
WARMUP = sized(50, 10)


def run_batch(server: LiveServer, ckpt: str, first_seed: int, count: int) -> None:
    ids = [server.queue_prompt(txt2img(ckpt, first_seed + i)) for i in range(count)]
    for prompt_id in ids:
        status = server.wait_history(prompt_id, timeout=120)["status"]
        assert status["status_str"] == "success", status


def test_consecutive_prompts_keep_memory_flat(tmp_path: Path) -> None:
    base = tmp_path / "loom"
    (ckpt,) = install_checkpoints(base)
    with LiveServer(base).start() as server:
        server.wait_ready("/object_info/KSampler", timeout=180)
        assert server.process is not None
        pid = server.process.pid
        samples: list[tuple[int, float]] = []
        started = time.perf_counter()
        done = 0
        while done < PROMPTS:
            count = min(BATCH, PROMPTS - done)
            run_batch(server, ckpt, done, count)
            done += count
            samples.append((done, rss_mb(pid)))
        elapsed = time.perf_counter() - started
        after_warmup = next(rss for count, rss in samples if count >= WARMUP)
        end, peak = samples[-1][1], max(rss for _, rss in samples)
        growth = end - after_warmup
        report(
            f"soak: {PROMPTS} prompts in {elapsed:.1f} s ({elapsed / PROMPTS * 1000:.0f} ms each); RSS after "
            f"{WARMUP} warm-up prompts {after_warmup:.1f} MB, end {end:.1f} MB, peak {peak:.1f} MB, growth "
            f"{growth:+.1f} MB; samples {[round(rss) for _, rss in samples]}"
        )
        _, queue = server.request("GET", "/queue")
        assert queue == {"queue_running": [], "queue_pending": []}
        outputs = sorted((base / "output").glob("soak_*.png"))
        assert len(outputs) == PROMPTS
        if FULL:
            assert growth < 150, f"RSS grew {growth:.1f} MB over {PROMPTS - WARMUP} prompts"
        assert server.stop() == 0
