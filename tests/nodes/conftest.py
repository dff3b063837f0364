"""Shared helpers for the node-side tests: call a definition the way the executor does."""

from __future__ import annotations

import asyncio
import inspect
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # `pytest` run without `python -m` from the repo root
    sys.path.insert(0, str(ROOT))

from core.runtime import NodeRuntime, reset_current, set_current  # noqa: E402
from core.spec import NodeDefinition  # noqa: E402

PACKAGES = Path(__file__).parent / "packages"


def call_node(
    definition: NodeDefinition, inputs: Mapping[str, Any] | None = None, runtime: NodeRuntime | None = None
) -> Any:
    """Create an instance and execute it once inside a NodeRuntime, awaiting async results."""
    runtime = runtime or NodeRuntime(node_id="1", class_type=definition.class_type)
    token = set_current(runtime)
    try:
        result = definition.execute(definition.create(), dict(inputs or {}))
        if inspect.isawaitable(result):
            result = asyncio.run(_await(result))
        return result
    finally:
        reset_current(token)


async def _await(awaitable: Any) -> Any:
    return await awaitable


@pytest.fixture
def run_node() -> Callable[..., Any]:
    return call_node


@pytest.fixture
def packages_dir() -> Path:
    return PACKAGES
