"""JobStore's queue controls without a server: reordering keeps the queue's numbers, a pause is
durable."""

from __future__ import annotations

from pathlib import Path

import pytest

from execution.queue import JobStore
from execution.store import QueueError, UnknownPromptError, renumber


def test_store_move_keeps_numbers_and_breaks_ties(tmp_path: Path) -> None:
    with JobStore(tmp_path / "q.db") as store:
        for name, number in (("a", 5), ("b", 5), ("c", 7), ("d", 2)):
            store.submit({}, outputs_to_execute=[], prompt_id=name, number=number)
        item, order = store.move("c", before="a")
        assert order == ["d", "c", "a", "b"]
        assert [i.prompt_id for i in store.queue()[1]] == order
        assert [i.number for i in store.queue()[1]] == [2, 5, 6, 7]  # the tie 5, 5 became 5, 6
        assert item.number == 5
        with pytest.raises(QueueError):
            store.move("c")
        with pytest.raises(UnknownPromptError):
            store.move("nope", index=0)
    assert renumber([3, 1, 1, 2.5], 4) == [1, 2, 2.5, 3]
    assert renumber([-4, 10, 2], 3) == [-4, 2, 10]


def test_pause_survives_a_restart(tmp_path: Path) -> None:
    with JobStore(tmp_path / "q.db") as store:
        store.submit({}, outputs_to_execute=[], prompt_id="x")
        assert store.set_paused(True) is True
        assert store.set_paused(True) is False
        assert store.claim() is None
        assert store.wait_for_work(0.05) is False
    with JobStore(tmp_path / "q.db") as store:
        assert store.paused
        assert store.claim() is None
        store.set_paused(False)
        assert store.wait_for_work(0.05) is True
        assert store.claim().prompt_id == "x"
