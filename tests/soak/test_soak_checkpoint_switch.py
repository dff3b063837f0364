"""Soak: switching between two checkpoints, prompt after prompt, against a live server. Every
switch first POSTs /free {unload_models, free_memory} -- what the editor's "unload models" does --
so each switch really drops the other model and loads this one from disk again; RSS (VmRSS) is
sampled after every switch and must come back to the level it had once both had been loaded.
50 switches with LOOM_SOAK_FULL=1, 8 otherwise; growth asserted (< 100 MB) only at full size,
printed always."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.server.live_server import LiveServer
from tests.soak.soak_utils import FULL, install_checkpoints, report, rss_mb, sized, txt2img

pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600 if FULL else 300)]

SWITCHES = sized(50, 8)
WARMUP = 4


def test_switching_checkpoints_returns_memory_to_its_level(tmp_path: Path) -> None:
    base = tmp_path / "loom"
    names = install_checkpoints(base, seeds=(0, 1))
    with LiveServer(base).start() as server:
        server.wait_ready("/object_info/KSampler", timeout=180)
        assert server.process is not None
        pid = server.process.pid
        samples = []
        started = time.perf_counter()
        for switch in range(SWITCHES):
            status, _ = server.request("POST", "/free", {"unload_models": True, "free_memory": True})
            assert status == 200
            prompt_id = server.queue_prompt(txt2img(names[switch % 2], switch, prefix=f"switch{switch % 2}"))
            entry = server.wait_history(prompt_id, timeout=120)
            assert entry["status"]["status_str"] == "success", entry["status"]
            samples.append(rss_mb(pid))
        elapsed = time.perf_counter() - started
        level = samples[WARMUP - 1]
        growth = samples[-1] - level
        report(
            f"checkpoint switching: {SWITCHES} switches (each a reload) in {elapsed:.1f} s; RSS level after "
            f"{WARMUP} switches {level:.1f} MB, end {samples[-1]:.1f} MB ({growth:+.1f} MB), peak {max(samples):.1f} MB; "
            f"samples {[round(s) for s in samples]}"
        )
        # The two checkpoints differ (seed 0 and 1), so the images do too: both really ran.
        first = sorted((base / "output").glob("switch0_*.png"))
        second = sorted((base / "output").glob("switch1_*.png"))
        assert len(first) + len(second) == SWITCHES
        assert first[0].read_bytes() != second[0].read_bytes()
        if FULL:
            assert growth < 100, f"RSS grew {growth:.1f} MB over {SWITCHES - WARMUP} switches"
        assert server.stop() == 0
