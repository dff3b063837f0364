"""What the stub nodes record, so tests can check which nodes really ran (module state is fine in
a TEST pack; call `reset()` before each test)."""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

CALLS: Counter[str] = Counter()
"""Calls per label (Counter nodes) or per class name (other nodes)."""
FINGERPRINTS: list[dict[str, Any]] = []
"""The keyword arguments of every IS_CHANGED call."""
SLEEPS: list[tuple[str, float, float]] = []
"""(node id, start, end) of every Sleep, in loop time."""
_lock = threading.Lock()


def record(label: str) -> None:
    with _lock:
        CALLS[label] += 1


def reset() -> None:
    with _lock:
        CALLS.clear()
        FINGERPRINTS.clear()
        SLEEPS.clear()
