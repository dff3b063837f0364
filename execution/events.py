"""What the executor reports while it runs a prompt: one callback interface, one event per moment.

Every consumer -- the websocket hub, the CLI progress bar, history, tests -- is an `EventSink`: a
callable taking one event. Events are frozen dataclasses whose field names follow ComfyUI's
websocket messages (spec §2), and `to_message()` gives the `(type, data)` pair ComfyUI would send,
so the server maps them 1:1. Node ids: `node_id` is the id of the node that ran (an expanded,
"ephemeral" node has an id like `5.0.0.3`), `display_node_id` the node the UI should highlight,
`parent_node_id` the node that expanded it and `real_node_id` its top-level ancestor in the prompt.

Stdlib only.
"""

from __future__ import annotations

import logging
import time
import traceback as tb
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

log = logging.getLogger(__name__)


def _now_ms() -> int:
    return int(time.time() * 1000)


class Event:
    """Base of every event: `to_message()` is ComfyUI's websocket message for it."""

    prompt_id: str

    def to_message(self) -> tuple[str, dict[str, Any]]:
        raise NotImplementedError


@dataclass(frozen=True)
class ExecutionStart(Event):
    prompt_id: str
    timestamp: int = field(default_factory=_now_ms)

    def to_message(self) -> tuple[str, dict[str, Any]]:
        return "execution_start", {"prompt_id": self.prompt_id, "timestamp": self.timestamp}


@dataclass(frozen=True)
class ExecutionCached(Event):
    """Ids of every prompt node whose output was already cached (sent once, before any node runs)."""

    prompt_id: str
    nodes: tuple[str, ...]
    timestamp: int = field(default_factory=_now_ms)

    def to_message(self) -> tuple[str, dict[str, Any]]:
        return "execution_cached", {"nodes": list(self.nodes), "prompt_id": self.prompt_id, "timestamp": self.timestamp}


@dataclass(frozen=True)
class NodeExecuting(Event):
    """A node is about to run (again after each lazy re-entry). Never sent for cached nodes."""

    prompt_id: str
    node_id: str
    display_node_id: str
    parent_node_id: str | None = None
    real_node_id: str | None = None

    def to_message(self) -> tuple[str, dict[str, Any]]:
        return "executing", {"node": self.node_id, "display_node": self.display_node_id, "prompt_id": self.prompt_id}


@dataclass(frozen=True)
class NodeProgress(Event):
    prompt_id: str
    node_id: str
    value: float
    max: float | None
    display_node_id: str | None = None
    parent_node_id: str | None = None
    real_node_id: str | None = None

    def to_message(self) -> tuple[str, dict[str, Any]]:
        return "progress", {"value": self.value, "max": self.max, "prompt_id": self.prompt_id, "node": self.node_id}


@dataclass(frozen=True)
class NodePreview(Event):
    """A preview image reported with progress. `image` is whatever the node passed (opaque here);
    the server encodes it into a binary frame with this metadata."""

    prompt_id: str
    node_id: str
    image: Any
    display_node_id: str | None = None
    parent_node_id: str | None = None
    real_node_id: str | None = None

    def metadata(self) -> dict[str, Any]:
        return {
            "node_id": self.node_id,
            "prompt_id": self.prompt_id,
            "display_node_id": self.display_node_id,
            "parent_node_id": self.parent_node_id,
            "real_node_id": self.real_node_id,
        }

    def to_message(self) -> tuple[str, dict[str, Any]]:
        # Not a JSON message in ComfyUI but a binary frame (PREVIEW_IMAGE_WITH_METADATA).
        return "preview_image", {"image": self.image, "metadata": self.metadata()}


@dataclass(frozen=True)
class NodeExecuted(Event):
    """A node produced a `ui` dict; also sent for cached output nodes (with their cached ui)."""

    prompt_id: str
    node_id: str
    display_node_id: str
    output: dict[str, Any]

    def to_message(self) -> tuple[str, dict[str, Any]]:
        return "executed", {
            "node": self.node_id,
            "display_node": self.display_node_id,
            "output": self.output,
            "prompt_id": self.prompt_id,
        }


@dataclass(frozen=True)
class NodeFinished(Event):
    """A node's result is available (ran, or `cached`): ComfyUI's progress_state "finished"."""

    prompt_id: str
    node_id: str
    cached: bool = False
    display_node_id: str | None = None
    parent_node_id: str | None = None
    real_node_id: str | None = None

    def to_message(self) -> tuple[str, dict[str, Any]]:
        # ComfyUI sends the state of every non-pending node at once; the server aggregates these
        # per prompt, so one event carries just this node's entry.
        state = {
            "value": 1,
            "max": 1,
            "state": "finished",
            "node_id": self.node_id,
            "prompt_id": self.prompt_id,
            "display_node_id": self.display_node_id or self.node_id,
            "parent_node_id": self.parent_node_id,
            "real_node_id": self.real_node_id or self.node_id,
        }
        return "progress_state", {"prompt_id": self.prompt_id, "nodes": {self.node_id: state}}


@dataclass(frozen=True)
class ExecutionBlocked(Event):
    """A node received an ExecutionBlocker carrying a message: a soft error, the run continues."""

    prompt_id: str
    node_id: str
    node_type: str
    message: str
    executed: tuple[str, ...] = ()

    def to_message(self) -> tuple[str, dict[str, Any]]:
        return "execution_error", {
            "prompt_id": self.prompt_id,
            "node_id": self.node_id,
            "node_type": self.node_type,
            "executed": list(self.executed),
            "exception_message": f"Execution Blocked: {self.message}",
            "exception_type": "ExecutionBlocked",
            "traceback": [],
            "current_inputs": [],
            "current_outputs": [],
        }


@dataclass(frozen=True)
class ExecutionError(Event):
    """The first failure of a prompt; the prompt stops. `node_id` is the real (top-level) node."""

    prompt_id: str
    node_id: str
    node_type: str
    executed: tuple[str, ...]
    exception_message: str
    exception_type: str
    traceback: tuple[str, ...] = ()
    current_inputs: dict[str, list[Any]] = field(default_factory=dict)
    current_outputs: tuple[str, ...] = ()
    timestamp: int = field(default_factory=_now_ms)

    @classmethod
    def from_exception(
        cls,
        prompt_id: str,
        node_id: str,
        node_type: str,
        executed: Sequence[str],
        exc: BaseException,
        inputs: Mapping[str, Sequence[Any]],
        outputs: Sequence[str],
        exception_type: str | None = None,
    ) -> ExecutionError:
        """The event for `exc`, raised by node `node_id` given these (list-mapped) inputs."""
        return cls(
            prompt_id,
            node_id,
            node_type,
            tuple(executed),
            str(exc),
            exception_type or exception_type_name(exc),
            tuple(tb.format_tb(exc.__traceback__)),
            {name: [format_input_value(value) for value in values] for name, values in inputs.items()},
            tuple(outputs),
        )

    def to_message(self) -> tuple[str, dict[str, Any]]:
        return "execution_error", {
            "prompt_id": self.prompt_id,
            "node_id": self.node_id,
            "node_type": self.node_type,
            "executed": list(self.executed),
            "exception_message": self.exception_message,
            "exception_type": self.exception_type,
            "traceback": list(self.traceback),
            "current_inputs": self.current_inputs,
            "current_outputs": list(self.current_outputs),
            "timestamp": self.timestamp,
        }


@dataclass(frozen=True)
class ExecutionInterrupted(Event):
    prompt_id: str
    node_id: str
    node_type: str
    executed: tuple[str, ...] = ()
    timestamp: int = field(default_factory=_now_ms)

    def to_message(self) -> tuple[str, dict[str, Any]]:
        return "execution_interrupted", {
            "prompt_id": self.prompt_id,
            "node_id": self.node_id,
            "node_type": self.node_type,
            "executed": list(self.executed),
            "timestamp": self.timestamp,
        }


@dataclass(frozen=True)
class ExecutionSuccess(Event):
    prompt_id: str
    timestamp: int = field(default_factory=_now_ms)

    def to_message(self) -> tuple[str, dict[str, Any]]:
        return "execution_success", {"prompt_id": self.prompt_id, "timestamp": self.timestamp}


@dataclass(frozen=True)
class ExecutionFinished(Event):
    """The prompt is over, whatever the outcome: ComfyUI's `executing {node: null}`.

    `status` is "success", "error" or "interrupted".
    """

    prompt_id: str
    status: str

    def to_message(self) -> tuple[str, dict[str, Any]]:
        return "executing", {"node": None, "prompt_id": self.prompt_id}


def exception_type_name(exc: BaseException) -> str:
    """Fully-qualified class name, builtins bare: "ValueError", "core.errors.NodeError"."""
    kind = type(exc)
    module = kind.__module__
    return kind.__qualname__ if module in (None, "builtins") else f"{module}.{kind.__qualname__}"


def format_input_value(value: Any) -> Any:
    """How current_inputs shows a value: scalars as they are, anything else as str()."""
    if value is None or isinstance(value, (int, float, bool, str)):
        return value
    return str(value)


class EventSink(Protocol):
    """Anything that receives events. Called on the executor's thread; keep it quick."""

    def __call__(self, event: Event) -> None: ...


class RecordingSink:
    """Keeps every event (tests, history). `of_type(NodeExecuting)` filters; `messages()` gives
    the ComfyUI messages in order."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def __call__(self, event: Event) -> None:
        self.events.append(event)

    def of_type(self, *kinds: type[Event]) -> list[Any]:
        return [event for event in self.events if isinstance(event, kinds)]

    def messages(self) -> list[tuple[str, dict[str, Any]]]:
        return [event.to_message() for event in self.events]

    def clear(self) -> None:
        self.events.clear()


class FanOutSink:
    """Sends each event to several sinks; one failing sink is logged and never stops the others
    (nor the prompt)."""

    def __init__(self, sinks: Iterable[EventSink | Callable[[Event], None]] = ()) -> None:
        self.sinks: list[Callable[[Event], None]] = list(sinks)

    def add(self, sink: EventSink | Callable[[Event], None]) -> None:
        self.sinks.append(sink)

    def remove(self, sink: EventSink | Callable[[Event], None]) -> None:
        self.sinks.remove(sink)

    def __call__(self, event: Event) -> None:
        for sink in list(self.sinks):
            try:
                sink(event)
            except Exception:
                log.exception("event sink %r failed on %s", sink, type(event).__name__)


__all__ = [
    "Event",
    "EventSink",
    "ExecutionBlocked",
    "ExecutionCached",
    "ExecutionError",
    "ExecutionFinished",
    "ExecutionInterrupted",
    "ExecutionStart",
    "ExecutionSuccess",
    "FanOutSink",
    "NodeExecuted",
    "NodeExecuting",
    "NodeFinished",
    "NodePreview",
    "NodeProgress",
    "RecordingSink",
    "exception_type_name",
    "format_input_value",
]
