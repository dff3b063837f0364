"""ProgressBar: ComfyUI's `comfy.utils.ProgressBar`, reporting through the running node's runtime.

Nodes (V1 or declarative) and the helpers they call create one with the number of steps and call
`update(1)` per step; the executor turns that into a `progress` event for the right node and
prompt. Each update also checks for an interrupt, so a long loop that reports progress can be
stopped (core.errors.Interrupted is raised from `update`). Outside a node call it does nothing.
"""

from __future__ import annotations

import logging
from typing import Any

from core.runtime import NodeRuntime, current

log = logging.getLogger(__name__)


class ProgressBar:
    """Progress of one long-running step inside a node: `total` units of work."""

    def __init__(self, total: float, node_id: str | None = None, runtime: NodeRuntime | None = None) -> None:
        # The runtime is captured now, not at update time: samplers often call back from code
        # that runs outside the node's context (a thread pool), where current() is None.
        self.runtime = runtime if runtime is not None else current()
        self.total = total
        self.current: float = 0
        # ComfyUI lets a bar report for another node id; Loom routes progress through the
        # runtime of the node that created the bar, so the id is only kept for reference.
        self.node_id = node_id
        if self.runtime is None:
            log.debug("ProgressBar created outside a node call; its updates are ignored")

    def update_absolute(self, value: float, total: float | None = None, preview: Any = None) -> None:
        """Set the progress to `value` (clamped to the total); optionally change the total and
        attach a preview image (the executor decides how to encode it)."""
        if total is not None:
            self.total = total
        self.current = min(value, self.total) if self.total is not None else value
        runtime = self.runtime if self.runtime is not None else current()
        if runtime is not None:
            runtime.progress(self.current, self.total, preview)

    def update(self, value: float) -> None:
        """Advance by `value` units."""
        self.update_absolute(self.current + value)

    def __repr__(self) -> str:
        return f"ProgressBar({self.current}/{self.total})"
