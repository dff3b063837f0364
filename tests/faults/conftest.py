"""Fault-injection fixtures: the real app in-process (worker thread, hub, store in tmp_path) with
the stub nodes plus tests/faults/fault_nodes.py, and a tiny-checkpoint engine with its own
ModelManager (so freeing models here never touches another test's)."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from aiohttp.test_utils import TestClient  # noqa: E402

from nodes.compat import v1_definitions  # noqa: E402
from server.app import create_app  # noqa: E402
from tests.faults import fault_nodes  # noqa: E402
from tests.server.helpers import make_services, server_registry  # noqa: E402

AppFactory = Callable[..., Awaitable[TestClient]]


@pytest.fixture
def start(aiohttp_client: Any, tmp_path: Path) -> Iterator[AppFactory]:
    """`await start(**service overrides)` -> a TestClient on a fresh app with the fault nodes."""
    fault_nodes.RELEASE.clear()
    fault_nodes.ENTERED.clear()

    async def factory(**overrides: Any) -> TestClient:
        overrides.setdefault("registry", {**server_registry(), **v1_definitions(fault_nodes.FAULT_NODES)})
        return await aiohttp_client(create_app(make_services(tmp_path, **overrides)))

    yield factory
    fault_nodes.RELEASE.set()  # never leave a worker thread blocked behind a failed test


@pytest.fixture
def engine_root(tmp_path: Path) -> Iterator[Path]:
    """A Loom folder with models/checkpoints/tiny.safetensors (the tiny random sd15) and empty
    loras/, input/, output/, temp/ folders."""
    from tests.utils.checkpoints import cached_checkpoint

    root = tmp_path / "loom"
    (root / "models" / "checkpoints").mkdir(parents=True)
    (root / "models" / "loras").mkdir()
    for kind in ("input", "output", "temp"):
        (root / kind).mkdir()
    shutil.copy(cached_checkpoint("sd15", tiny=True), root / "models" / "checkpoints" / "tiny.safetensors")
    yield root


def pytest_terminal_summary(terminalreporter: Any) -> None:
    from tests.soak.soak_utils import write_summary

    write_summary(terminalreporter)
