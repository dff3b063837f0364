"""ProgressBar reports through the running node's NodeRuntime, like comfy.utils.ProgressBar."""

from __future__ import annotations

from typing import Any

import pytest

from core.errors import Interrupted
from core.runtime import NodeRuntime, reset_current, set_current
from nodes.progress import ProgressBar


def _runtime(calls: list[tuple[Any, ...]], interrupted: list[bool] | None = None) -> NodeRuntime:
    def check() -> None:
        if interrupted and interrupted[0]:
            raise Interrupted("interrupted by test")

    return NodeRuntime(
        node_id="3", class_type="KSampler", report_progress=lambda *args: calls.append(args), interrupt_check=check
    )


def test_update_and_update_absolute_report_value_total_and_preview() -> None:
    calls: list[tuple[Any, ...]] = []
    token = set_current(_runtime(calls))
    try:
        bar = ProgressBar(4)
        bar.update(1)
        bar.update(2)
        bar.update_absolute(1, preview="preview-image")
        bar.update_absolute(8, total=10)
        bar.update(5)  # clamped to the total, as in ComfyUI
    finally:
        reset_current(token)
    assert calls == [(1, 4, None), (3, 4, None), (1, 4, "preview-image"), (8, 10, None), (10, 10, None)]
    assert bar.current == 10 and bar.total == 10


def test_bar_keeps_reporting_to_its_node_when_updated_outside_the_context() -> None:
    # Samplers call back from code that may run outside the node's context (a thread pool).
    calls: list[tuple[Any, ...]] = []
    token = set_current(_runtime(calls))
    try:
        bar = ProgressBar(2)
    finally:
        reset_current(token)
    bar.update(1)
    assert calls == [(1, 2, None)]


def test_outside_a_node_updates_do_nothing() -> None:
    bar = ProgressBar(3)
    bar.update(1)
    bar.update_absolute(2)
    assert bar.current == 2


def test_an_interrupt_stops_the_loop_at_the_next_update() -> None:
    calls: list[tuple[Any, ...]] = []
    interrupted = [False]
    bar = ProgressBar(10, runtime=_runtime(calls, interrupted))
    bar.update(1)
    interrupted[0] = True
    with pytest.raises(Interrupted):
        bar.update(1)
    assert calls == [(1, 10, None)]
