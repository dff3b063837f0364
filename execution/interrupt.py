"""Interrupting a running prompt, from any thread (an HTTP handler, Ctrl+C, shutdown).

Unlike ComfyUI's single global flag (spec §12), a request may name the prompt it is meant for:
`request("abc")` stops prompt "abc" only and leaves any other prompt running; `request()` stops
whatever runs. The executor checks the flag before every node call and a node's progress reports
and `NodeRuntime.check_interrupted()` check it too, so a long loop can be stopped in the middle.

Stdlib only.
"""

from __future__ import annotations

import threading

from core.errors import Interrupted


class InterruptFlag:
    """Thread-safe interrupt requests, global or per prompt."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._everything = False
        self._prompts: set[str] = set()
        # Read without the lock on the hot path (one attribute load per check): a stale False
        # only delays an interrupt to the next check.
        self._any = False

    def request(self, prompt_id: str | None = None) -> None:
        """Ask the running prompt (`None`) or the prompt `prompt_id` to stop."""
        with self._lock:
            if prompt_id is None:
                self._everything = True
            else:
                self._prompts.add(prompt_id)
            self._any = True

    def clear(self, prompt_id: str | None = None) -> None:
        """Forget every request (`None`) or only the one aimed at `prompt_id`."""
        with self._lock:
            if prompt_id is None:
                self._everything = False
                self._prompts.clear()
            else:
                self._prompts.discard(prompt_id)
            self._any = self._everything or bool(self._prompts)

    def begin(self, prompt_id: str) -> None:
        """A new prompt starts: drop stale requests (as ComfyUI clears its flag at each prompt),
        except one already aimed at this very prompt."""
        with self._lock:
            self._everything = False
            self._prompts &= {prompt_id}
            self._any = bool(self._prompts)

    def is_requested(self, prompt_id: str | None = None) -> bool:
        if not self._any:
            return False
        with self._lock:
            return self._everything or prompt_id in self._prompts

    def check(self, prompt_id: str | None = None) -> None:
        """Raise core.errors.Interrupted if `prompt_id` (or everything) was asked to stop."""
        if self._any and self.is_requested(prompt_id):
            raise Interrupted(f"prompt {prompt_id} was interrupted" if prompt_id else "interrupted")

    def __repr__(self) -> str:
        return f"InterruptFlag(everything={self._everything}, prompts={sorted(self._prompts)})"


__all__ = ["InterruptFlag"]
