"""Fixtures for the executor tests: a Runner per cache policy and the stub pack's call records."""

from __future__ import annotations

from collections import Counter

import pytest

from tests.harness import POLICIES, Runner
from tests.testing_nodes import tracking


@pytest.fixture
def calls() -> Counter[str]:
    """The stub pack's call counter, reset for this test."""
    tracking.reset()
    return tracking.CALLS


@pytest.fixture(params=POLICIES)
def runner(request: pytest.FixtureRequest, calls: Counter[str]) -> Runner:
    """A fresh Runner for each cache policy (tests assert did_run / was_cached per node)."""
    return Runner(request.param)
