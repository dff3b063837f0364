"""The worker thread: claims prompts from the JobStore, runs them, records history, never dies.

One thread per device. The prompt was validated when it was POSTed, so the worker only runs it:
`Executor.execute` (which drives its own asyncio loop, hence a thread of its own), with the events
forwarded to the websocket hub as they happen. The executor's final `executing {node: null}` is held
back until the history entry is written, so a client that sees it can fetch /history at once.

Any failure around one prompt (the executor raising, a sink failing, the store refusing a write) is
logged and recorded as that prompt's error; the loop goes on with the next one.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from core.errors import EngineError
from execution.events import Event, ExecutionError, ExecutionFinished, ExecutionStart
from execution.interrupt import InterruptFlag
from execution.queue import JobStore, QueueItem
from server.protocol import Outgoing, Preview, PromptMessages

log = logging.getLogger(__name__)


class Publisher(Protocol):
    """Where the worker sends websocket traffic (server.ws.ThreadsafePublisher)."""

    @property
    def has_clients(self) -> bool: ...

    def send(self, message: Outgoing | Preview, client_id: str | None) -> None: ...

    def status_changed(self) -> None: ...

    def prompt_started(self, prompt_id: str, client_id: str | None) -> None: ...

    def prompt_finished(self, prompt_id: str) -> None: ...


class Runner(Protocol):
    """What runs one prompt: execution.executor.Executor."""

    cache: Any

    def execute(
        self,
        prompt: Mapping[str, Any],
        prompt_id: str,
        outputs: list[str],
        *,
        extra_data: Mapping[str, Any] | None = None,
        events: Callable[[Event], None] | None = None,
        interrupt: InterruptFlag | None = None,
    ) -> Any: ...


@dataclass
class FreeRequest:
    """POST /free flags, applied between prompts (ComfyUI applies them after the current job)."""

    unload_models: bool = False
    free_memory: bool = False


class Worker:
    """Runs queued prompts on one thread. `start()` / `stop()`; thread-safe `interrupt()` and `free()`.

    `make_runner` is called once, on the worker thread, before the first prompt: building the
    executor may wait for the node registry to finish loading (which may import torch), and the
    HTTP server is already answering by then.
    """

    def __init__(
        self,
        store: JobStore,
        make_runner: Callable[[], Runner],
        publisher: Publisher,
        *,
        interrupt: InterruptFlag | None = None,
        worker_id: str = "0",
        preview_size: int = 512,
        unload_models: Callable[[], None] | None = None,
        poll_seconds: float = 0.1,
    ) -> None:
        self.store = store
        self.make_runner = make_runner
        self.publisher = publisher
        self.interrupt_flag = interrupt if interrupt is not None else InterruptFlag()
        self.worker_id = worker_id
        self.preview_size = preview_size
        self.unload_models = unload_models
        self.poll_seconds = poll_seconds
        self.runner: Runner | None = None
        self.current: str | None = None
        self.completed = 0
        self._free = FreeRequest()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ control (any thread)

    def start(self) -> None:
        if self._thread is not None:
            raise EngineError(f"worker {self.worker_id} is already started")
        # daemon: a node stuck in native code must not keep the process alive after shutdown; its
        # prompt stays `running` in the store and is recovered as interrupted on the next start.
        self._thread = threading.Thread(target=self._main, name=f"loom-worker-{self.worker_id}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> bool:
        """Interrupt the running prompt (recorded as interrupted), then join. False if the thread did
        not end within `timeout` seconds."""
        self._stopping.set()
        with self._lock:
            running = self.current
        if running is not None:
            log.info("stopping: interrupting prompt %s", running)
            self.interrupt_flag.request(running)
        if self._thread is None:
            return True
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.error("worker %s did not stop within %.0f s (prompt %s); leaving it", self.worker_id, timeout, running)
            return False
        return True

    def interrupt(self, prompt_id: str | None = None) -> bool:
        """POST /interrupt: stop whatever runs (None), or `prompt_id` only if it is the one running.
        Returns whether a running prompt was asked to stop."""
        with self._lock:
            running = self.current
            if prompt_id is None:
                # Aimed at the running prompt by id: the executor's begin() drops global requests
                # made before it started, and this one may arrive just before that.
                self.interrupt_flag.request(running)
                return running is not None
            if prompt_id != running:
                log.info("interrupt for prompt %s ignored: it is not running (running: %s)", prompt_id, running)
                return False
            self.interrupt_flag.request(prompt_id)
            return True

    def free(self, *, unload_models: bool = False, free_memory: bool = False) -> None:
        """POST /free: remember the flags; the worker applies them when no prompt is running."""
        with self._lock:
            self._free.unload_models |= unload_models
            self._free.free_memory |= free_memory

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # ------------------------------------------------------------------ the thread

    def _main(self) -> None:
        log.info("worker %s started", self.worker_id)
        while not self._stopping.is_set():
            try:
                self._step()
            except Exception:  # the loop must survive anything; back off so a broken store cannot spin
                log.exception("worker %s: unexpected failure; continuing", self.worker_id)
                self._stopping.wait(1.0)
        log.info("worker %s stopped after %d prompts", self.worker_id, self.completed)

    def _step(self) -> None:
        has_work = self.store.wait_for_work(self.poll_seconds)
        self._apply_free()  # between prompts, and before the next one starts
        if not has_work or self._stopping.is_set():
            return
        if self.runner is None and not self._make_runner():
            return
        # Claim under the lock: interrupt() then sees either no prompt (a request that came before
        # the prompt started, dropped when it starts, as in ComfyUI) or this one.
        with self._lock:
            item = self.store.claim(self.worker_id)
            if item is None:
                return
            self.current = item.prompt_id
        try:
            self._run(item)
        finally:
            with self._lock:
                self.current = None
            self.completed += 1

    def _make_runner(self) -> bool:
        try:
            self.runner = self.make_runner()
        except Exception:
            # Typically the node registry failed to load: prompts stay pending (nothing is lost)
            # and POST /prompt answers 503 meanwhile. Retry slowly rather than spin.
            log.exception("worker %s cannot start executing prompts; retrying in 5 s", self.worker_id)
            self._stopping.wait(5.0)
            return False
        return True

    def _run(self, item: QueueItem) -> None:
        client_id = item.client_id or item.extra_data.get("client_id")
        prompt_id = item.prompt_id
        self.publisher.prompt_started(prompt_id, client_id)
        self.publisher.status_changed()
        forward = _Forwarder(prompt_id, client_id, self.publisher, self.preview_size)
        started = time.perf_counter()
        status, outputs, messages, meta = self._execute(item, forward)
        log.info("prompt %s: %s in %.2f s", prompt_id, status, time.perf_counter() - started)
        try:
            self.store.finish(prompt_id, status=status, outputs=outputs, messages=messages, meta=meta)
        except Exception:
            log.exception("prompt %s: could not record its result in history", prompt_id)
        self.publisher.prompt_finished(prompt_id)
        self.publisher.status_changed()
        # Last, as ComfyUI: `executing {node: null}` means "done, and history is written".
        forward.finished(ExecutionFinished(prompt_id, status))

    def _execute(self, item: QueueItem, forward: _Forwarder) -> tuple[str, dict, list, dict]:
        """Run one prompt; (status, outputs, history messages, meta). Never raises."""
        assert self.runner is not None
        extra_data = {**item.extra_data, **item.sensitive}  # tokens reach the nodes, never the disk
        try:
            result = self.runner.execute(
                item.prompt,
                item.prompt_id,
                list(item.outputs_to_execute),
                extra_data=extra_data,
                events=forward,
                interrupt=self.interrupt_flag,
            )
        except Exception as exc:
            log.exception("prompt %s: the executor failed", item.prompt_id)
            return "error", {}, forward.crash_messages(exc), {}
        messages = [list(message) for message in getattr(result, "messages", [])]
        return result.status, dict(result.outputs), messages, dict(getattr(result, "meta", {}) or {})

    def _apply_free(self) -> None:
        with self._lock:
            request, self._free = self._free, FreeRequest()
        if request.free_memory and self.runner is not None:
            log.info("freeing memory: clearing the output cache")
            self.runner.cache.clear()
            objects = getattr(self.runner, "objects", None)
            if objects is not None:
                objects.clear()
        if request.unload_models or request.free_memory:
            if self.unload_models is not None:
                self.unload_models()
            elif request.unload_models:
                log.info("unload_models requested; no model manager is loaded, nothing to unload")


class _Forwarder:
    """The executor's event sink for one prompt: events -> websocket messages, in order.

    Runs on the executor's thread. Holds back ExecutionFinished (the worker sends it after history
    is written) and remembers what it saw so an executor crash still yields a coherent history."""

    def __init__(self, prompt_id: str, client_id: str | None, publisher: Publisher, preview_size: int) -> None:
        self.prompt_id = prompt_id
        self.client_id = client_id
        self.publisher = publisher
        self.messages = PromptMessages(prompt_id, preview_size)
        self.start: ExecutionStart | None = None
        self.last_node: str | None = None

    def __call__(self, event: Event) -> None:
        if isinstance(event, ExecutionFinished):
            return
        if isinstance(event, ExecutionStart):
            self.start = event
        node = getattr(event, "node_id", None)
        if node is not None:
            self.last_node = node
        self._send(event)

    def _send(self, event: Event) -> None:
        for message in self.messages.translate(event, want_previews=self.publisher.has_clients):
            self.publisher.send(message, self.client_id)

    def finished(self, event: ExecutionFinished) -> None:
        self._send(event)

    def crash_messages(self, exc: BaseException) -> list[list[Any]]:
        """History messages (and an execution_error to the client) for an executor that raised."""
        start = self.start or ExecutionStart(self.prompt_id)
        if self.start is None:
            self._send(start)
        kind = type(exc)
        error = ExecutionError(
            self.prompt_id,
            node_id=self.last_node or "",
            node_type="",
            executed=(),
            exception_message=f"Loom failed while running this prompt: {exc}",
            exception_type=f"{kind.__module__}.{kind.__qualname__}",
            traceback=tuple(traceback.format_tb(exc.__traceback__)),
        )
        self._send(error)
        return [list(start.to_message()), list(error.to_message())]


__all__ = ["FreeRequest", "Publisher", "Runner", "Worker"]
