"""What a running node can reach: its NodeRuntime (progress, interrupt check, services).

The executor sets the current runtime in a context variable around every node call, so helpers a
node calls deep down (a sampler loop, a V1 `ProgressBar`) find the right node and prompt without
module globals, and concurrently running async nodes each see their own.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from core.errors import EngineError


class ExecutionBlocker:
    """Returned in place of an output to block every consumer of it (spec §3.2).

    `message=None` blocks silently; a message is reported once as a non-fatal error event.
    """

    __slots__ = ("message",)

    def __init__(self, message: str | None) -> None:
        self.message = message

    def __repr__(self) -> str:
        return f"ExecutionBlocker({self.message!r})"


def _no_progress(value: float, total: float | None, preview: Any = None) -> None:
    return None


def _never_interrupted() -> None:
    return None


@dataclass
class NodeRuntime:
    """Handed to each node call (declarative nodes get it as `ctx`; V1 nodes reach it through
    helpers such as ProgressBar)."""

    node_id: str
    class_type: str
    prompt_id: str = ""
    display_node_id: str | None = None
    report_progress: Callable[[float, float | None, Any], None] = _no_progress
    interrupt_check: Callable[[], None] = _never_interrupted
    services: Mapping[str, Any] = field(default_factory=dict)
    """What the composition root provides to nodes: paths, model manager, output dirs..."""
    extra_data: Mapping[str, Any] = field(default_factory=dict)
    """The prompt's extra_data (POST /prompt): e.g. a per-prompt `preview_method`."""

    def progress(self, value: float, total: float | None = None, preview: Any = None) -> None:
        """Report progress (and optionally a preview image); also checks for an interrupt."""
        self.interrupt_check()
        self.report_progress(value, total, preview)

    def check_interrupted(self) -> None:
        """Raise core.errors.Interrupted if the prompt was interrupted. Long loops call this."""
        self.interrupt_check()

    def service(self, name: str) -> Any:
        try:
            return self.services[name]
        except KeyError:
            raise EngineError(
                f"node {self.node_id} ({self.class_type}) needs the '{name}' service, which this "
                "Loom instance does not provide"
            ) from None


_current: ContextVar[NodeRuntime | None] = ContextVar("loom_node_runtime", default=None)

# The services of this Loom process, for node code that runs outside any node call: combo lists
# (`/object_info`), validation hooks. Set once by the composition root (main.py) -- the one place
# that knows the folders -- and read through `services()`; ComfyUI's equivalent is the module
# state of folder_paths. A plain holder, not a ContextVar: worker threads must see it too.
_installed: dict[str, Mapping[str, Any]] = {"services": {}}


def install_services(services: Mapping[str, Any] | None) -> None:
    """Make `services` what node code sees outside a node call (None forgets them)."""
    _installed["services"] = dict(services or {})


def services() -> Mapping[str, Any]:
    """The running node's services, else the installed ones (see install_services)."""
    runtime = _current.get()
    if runtime is not None and runtime.services:
        return runtime.services
    return _installed["services"]


def current() -> NodeRuntime | None:
    """The runtime of the node running in this context, or None outside a node call."""
    return _current.get()


def set_current(runtime: NodeRuntime | None) -> object:
    """Make `runtime` current; returns a token for `reset_current`."""
    return _current.set(runtime)


def reset_current(token: object) -> None:
    _current.reset(token)  # type: ignore[arg-type]
