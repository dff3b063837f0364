"""Custom node packages that misbehave, against a real `main.py` process:

- one fails to import (its dependency is missing), one raises from INPUT_TYPES: the server starts,
  logs which package failed and why, and every other node is listed and runs;
- one raises on every call: each prompt using it fails with its message, nothing is cached from
  it, and prompts without it run;
- one never returns and never checks for interrupts: POST /interrupt cannot stop it (see
  test_fault_node_hangs.py), the server keeps answering, SIGTERM still ends the process (the
  worker is given WORKER_STOP_SECONDS, then abandoned), and the next start records the stuck
  prompt as interrupted and runs what was pending behind it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from server.app import WORKER_STOP_SECONDS
from tests.server.live_server import LiveServer, write_test_pack

pytestmark = pytest.mark.slow

BROKEN_IMPORT = """
import loom_missing_dependency_for_tests  # noqa: F401  (not installed anywhere)

NODE_CLASS_MAPPINGS = {}
"""

MISBEHAVING = '''
import time


class RaiseAlways:
    calls = 0

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {"default": 0})}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "run"
    CATEGORY = "faults"

    def run(self, value):
        RaiseAlways.calls += 1
        raise RuntimeError(f"RaiseAlways failed on call {RaiseAlways.calls}")


class BadInputTypes:
    @classmethod
    def INPUT_TYPES(cls):
        raise KeyError("INPUT_TYPES exploded")

    RETURN_TYPES = ("INT",)
    FUNCTION = "run"
    CATEGORY = "faults"

    def run(self):
        return (1,)


class NeverReturns:
    """Sleeps forever in plain Python: no progress, no check_interrupted."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {"default": 0})}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "run"
    CATEGORY = "faults"

    def run(self, value):
        while True:
            time.sleep(0.05)


NODE_CLASS_MAPPINGS = {"RaiseAlways": RaiseAlways, "BadInputTypes": BadInputTypes, "NeverReturns": NeverReturns}
'''


@pytest.fixture
def packs(tmp_path: Path) -> Path:
    folder = write_test_pack(tmp_path / "packs")
    for name, source in (("broken_import_pack", BROKEN_IMPORT), ("misbehaving_pack", MISBEHAVING)):
        (folder / name).mkdir()
        (folder / name / "__init__.py").write_text(source)
    return folder


def chain(node: str, value: int) -> dict[str, Any]:
    return {
        "1": {"class_type": node, "inputs": {"value": value}},
        "2": {"class_type": "LiveSink", "inputs": {"value": ["1", 0]}},
    }


def test_broken_and_raising_packages_leave_the_server_and_other_nodes_working(tmp_path: Path, packs: Path) -> None:
    with LiveServer(tmp_path / "loom", "--custom-nodes-dir", str(packs)).start() as server:
        server.wait_ready("/object_info/LiveConst")
        status, info = server.request("GET", "/object_info")
        assert status == 200
        assert {"LiveConst", "LiveSink", "RaiseAlways", "NeverReturns"} <= set(info)
        assert "BadInputTypes" not in info  # left out of the listing, not a 500
        log = server.log()
        assert "broken_import_pack" in log and "loom_missing_dependency_for_tests" in log
        assert "BadInputTypes" in log

        for attempt in (1, 2):  # every call raises; the failure is never cached
            entry = server.wait_history(server.queue_prompt(chain("RaiseAlways", 5)))
            error = dict(entry["status"]["messages"])["execution_error"]
            assert error["node_type"] == "RaiseAlways"
            assert error["exception_message"] == f"RaiseAlways failed on call {attempt}"
            good = server.wait_history(server.queue_prompt(chain("LiveConst", attempt)))
            assert good["status"]["status_str"] == "success" and good["outputs"]["2"]["value"] == [attempt]
        assert server.request("GET", "/system_stats")[0] == 200
        assert server.stop() == 0


def test_a_node_that_never_returns_is_recovered_by_a_restart(tmp_path: Path, packs: Path) -> None:
    server = LiveServer(tmp_path / "loom", "--custom-nodes-dir", str(packs))
    try:
        server.start().wait_ready("/object_info/NeverReturns")
        stuck = server.queue_prompt(chain("NeverReturns", 1), prompt_id="stuck")
        behind = server.queue_prompt(chain("LiveConst", 2), prompt_id="behind")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            _, queue = server.request("GET", "/queue")
            if [item[1] for item in queue["queue_running"]] == [stuck]:
                break
            time.sleep(0.05)
        assert server.request("POST", "/interrupt", {})[0] == 200
        time.sleep(0.5)
        began = time.perf_counter()
        _, queue = server.request("GET", "/queue")
        assert time.perf_counter() - began < 1.0  # the server answers while the worker is stuck
        assert [item[1] for item in queue["queue_running"]] == [stuck], server.log()[-3000:]
        assert [item[1] for item in queue["queue_pending"]] == [behind]

        began = time.perf_counter()
        assert server.stop(timeout=WORKER_STOP_SECONDS + 30) == 0
        assert time.perf_counter() - began < WORKER_STOP_SECONDS + 15
        assert "did not stop within" in server.log()

        server.start().wait_ready("/")
        assert "marked interrupted: stuck" in server.log()
        assert server.wait_history(behind)["status"]["status_str"] == "success"
        crashed = server.history(stuck)
        assert crashed["status"]["status_str"] == "error" and not crashed["status"]["completed"]
        assert "restart or crash" in dict(crashed["status"]["messages"])["execution_interrupted"]["reason"]
    finally:
        server.stop()
