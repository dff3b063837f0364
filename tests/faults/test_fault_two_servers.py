"""Two servers pointed at the same database: the second is refused at start with a message that
names the database, the holder's pid and what to do, and exits 1 without touching the first, which
keeps serving and running prompts. When the first stops, the lock (a flock, released by the kernel
even on kill -9) lets a new server start on the same database with the queue intact."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.server.live_server import LiveServer, write_test_pack

pytestmark = pytest.mark.slow


def sink_prompt(value: int) -> dict:
    return {
        "1": {"class_type": "LiveConst", "inputs": {"value": value}},
        "2": {"class_type": "LiveSink", "inputs": {"value": ["1", 0]}},
    }


def test_second_server_on_the_same_database_is_refused_and_the_first_keeps_working(tmp_path: Path) -> None:
    pack = write_test_pack(tmp_path / "packs")
    base = tmp_path / "loom"
    first = LiveServer(base, "--custom-nodes-dir", str(pack))
    second = LiveServer(base, "--custom-nodes-dir", str(pack))
    try:
        first.start().wait_ready("/object_info/LiveSink")
        before = first.queue_prompt(sink_prompt(1))
        assert first.wait_history(before)["status"]["status_str"] == "success"

        second.start()
        assert second.process is not None
        assert second.process.wait(60) == 1
        log = second.log()
        assert "cannot start" in log and str(base / "user" / "loom.db") in log
        assert f"pid {first.process.pid}" in log and "another Loom process" in log

        # The first server never noticed.
        after = first.queue_prompt(sink_prompt(2))
        assert first.wait_history(after)["outputs"]["2"]["value"] == [2]
        assert first.stop() == 0

        # Once the first is gone, a server starts on the same database and sees its history.
        second.start().wait_ready("/object_info/LiveSink")
        assert second.history(before)["status"]["status_str"] == "success"
        assert second.history(after)["status"]["status_str"] == "success"
        assert os.path.exists(base / "user" / "loom.db.lock")
    finally:
        first.stop()
        second.stop()
