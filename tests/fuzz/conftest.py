"""Fuzz tests (hypothesis, schemathesis): a Loom app per module on a background loop, and the count
of cases each fuzzer ran, printed at the end of the session."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.fuzz.fuzz_support import COUNTS, LoopServer, total_budget

_STARTED = time.perf_counter()


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoopServer]:
    """One app (stub nodes) shared by a module's fuzz cases. No worker: accepted prompts only queue
    (running arbitrary accepted prompts is the fault-injection suite's job; IntMath `power` alone
    could take all memory); a test may start it (`server.start_worker()`)."""
    server = LoopServer(tmp_path_factory.mktemp("fuzz"), run_worker=False)
    try:
        yield server
    finally:
        server.close()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not COUNTS:
        return
    seconds = time.perf_counter() - _STARTED
    terminalreporter.section("fuzz cases")
    for name, cases in sorted(COUNTS.items()):
        terminalreporter.write_line(f"{name:>28}: {cases:7d}")
    terminalreporter.write_line(
        f"{'total':>28}: {sum(COUNTS.values()):7d} cases in {seconds:.1f} s "
        f"(budget LOOM_FUZZ_EXAMPLES={total_budget()})"
    )
