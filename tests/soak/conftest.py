"""Soak and load tests: their measured figures go to pytest's terminal summary."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    from tests.soak.soak_utils import write_summary

    write_summary(terminalreporter)
