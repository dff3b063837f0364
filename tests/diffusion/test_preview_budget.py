"""Previews never take more than their share of the sampling time, however slow they are."""

from __future__ import annotations

from diffusion.previews import BudgetedPreviewer


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_slow_previewer_is_skipped_to_stay_within_its_share() -> None:
    clock = FakeClock()

    def slow_preview(x0: object) -> str:
        clock.now += 1.0  # a preview costs 1 s
        return "image"

    previewer = BudgetedPreviewer(slow_preview, share=0.05, clock=clock)
    shown = []
    for step in range(1000):
        clock.now += 0.5  # a step costs 0.5 s
        shown.append(previewer(object(), force=step == 999) is not None)
    preview_time = previewer.shown * 1.0
    assert preview_time / clock.now <= 0.06  # 5 %, give or take the first and the forced last one
    assert shown[0] and shown[-1] and previewer.skipped > 0


def test_a_cheap_previewer_runs_every_step() -> None:
    clock = FakeClock()
    previewer = BudgetedPreviewer(lambda x0: "image", share=0.04, clock=clock)
    for _ in range(10):
        clock.now += 1.0
        assert previewer(object()) == "image"
