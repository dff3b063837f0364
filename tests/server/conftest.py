"""Server tests: the real app (create_app) with the stub node pack and a JobStore in tmp_path.

pytest-aiohttp's `aiohttp_client` runs the app on a loopback port; the worker thread, the hub and
the store are the real ones. Modules of coroutine tests set `pytestmark = pytest.mark.asyncio`
(pytest-asyncio's strict mode).
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # `pytest` run without `python -m` from the repo root
    sys.path.insert(0, str(ROOT))

from aiohttp.test_utils import TestClient  # noqa: E402

from server.app import create_app  # noqa: E402
from tests.server.helpers import make_services  # noqa: E402

AppFactory = Callable[..., Awaitable[TestClient]]


@pytest.fixture
def start(aiohttp_client: Any, tmp_path: Path) -> AppFactory:
    """`await start(**service overrides)` -> a TestClient on a fresh app (worker running unless
    run_worker=False)."""

    async def factory(**overrides: Any) -> TestClient:
        return await aiohttp_client(create_app(make_services(tmp_path, **overrides)))

    return factory


@pytest_asyncio.fixture
async def client(start: AppFactory) -> TestClient:
    return await start()


@pytest_asyncio.fixture
async def idle_client(start: AppFactory) -> TestClient:
    """No worker: queued prompts stay pending."""
    return await start(run_worker=False)
