"""The websocket hub (spec §2): one entry per connected client, targeting, ordered delivery.

Runs on the aiohttp event loop. The worker thread talks to it only through `ThreadsafePublisher`,
which hops onto the loop with `call_soon_threadsafe`, so every message reaches the hub in the order
the worker produced it. Each client has its own outbound queue and writer task: a slow browser
delays only itself, and the handler task stays free to read the client's messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web

from server.protocol import Outgoing, Preview, json_message

log = logging.getLogger(__name__)

CLIENT_QUEUE_LIMIT = 2048
"""Messages waiting for one client. A client this far behind is disconnected (it reconnects and
gets a fresh `status`) rather than letting its backlog grow without bound; previews are simply
dropped for it once its queue is half full."""


@dataclass(frozen=True)
class StateSlot:
    """A place in a client's queue for the latest snapshot of one prompt's `progress_state`."""

    prompt_id: str


@dataclass(eq=False)
class Client:
    sid: str
    ws: web.WebSocketResponse
    queue: asyncio.Queue[str | bytes | StateSlot | None] = field(
        default_factory=lambda: asyncio.Queue(CLIENT_QUEUE_LIMIT)
    )
    features: dict[str, Any] = field(default_factory=dict)
    writer: asyncio.Task[None] | None = None
    states: dict[str, Outgoing] = field(default_factory=dict)
    """Unsent progress_state per prompt: each message is a full snapshot, so a newer one replaces an
    older one still waiting, and a client that falls behind gets the latest state instead of a
    backlog (a 2,000-node graph makes 4,000 of them). Serialised only when sent."""

    @property
    def wants_metadata(self) -> bool:
        return bool(self.features.get("supports_preview_metadata"))


class WebSocketHub:
    """Connected clients by session id, and ComfyUI's rules for who receives what."""

    def __init__(
        self,
        queue_remaining: Callable[[], int],
        server_features: Mapping[str, Any],
        *,
        paused: Callable[[], bool] | None = None,
    ) -> None:
        self._queue_remaining = queue_remaining
        self._paused = paused
        self.server_features = dict(server_features)
        self.clients: dict[str, Client] = {}
        self.loop: asyncio.AbstractEventLoop | None = None
        # The prompt running now: (prompt_id, client_id, last executing node), for reconnects.
        self._running: tuple[str, str | None, str | None] | None = None
        self._closing = False

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop

    # ------------------------------------------------------------------ connections

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        """GET /ws?clientId=: register, send `status` (+ `executing` if this client owns the running
        prompt), answer a first `feature_flags` message, ignore anything else."""
        ws = web.WebSocketResponse(heartbeat=30.0)
        await ws.prepare(request)
        if self._closing:
            await ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutting down")
            return ws
        sid = request.query.get("clientId") or uuid.uuid4().hex
        client = self._register(sid, ws)
        try:
            await self._read(client)
        finally:
            self._unregister(client)
        return ws

    def _register(self, sid: str, ws: web.WebSocketResponse) -> Client:
        old = self.clients.pop(sid, None)
        if old is not None:
            # Same clientId again: ComfyUI drops the older socket from its table; we also close it so
            # it does not linger half-alive.
            log.debug("websocket client %s reconnected; closing its older socket", sid)
            self._enqueue(old, None)
        client = Client(sid, ws)
        self.clients[sid] = client
        client.writer = asyncio.get_running_loop().create_task(self._write(client), name=f"ws-writer-{sid}")
        self._enqueue(client, json_message("status", {"status": self._status(), "sid": sid}))
        if self._running is not None and self._running[1] == sid:
            prompt_id, _, node = self._running
            self._enqueue(
                client, json_message("executing", {"node": node, "display_node": node, "prompt_id": prompt_id})
            )
        log.debug("websocket client %s connected (%d clients)", sid, len(self.clients))
        return client

    def _unregister(self, client: Client) -> None:
        if self.clients.get(client.sid) is client:
            del self.clients[client.sid]
        if client.writer is not None and not client.writer.done():
            client.writer.cancel()
        log.debug("websocket client %s disconnected", client.sid)

    async def _read(self, client: Client) -> None:
        first = True
        async for msg in client.ws:
            if msg.type == WSMsgType.TEXT:
                if first:
                    self._handshake(client, msg.data)
                first = False
            elif msg.type == WSMsgType.ERROR:
                log.debug("websocket client %s: %s", client.sid, client.ws.exception())

    def _handshake(self, client: Client, text: str) -> None:
        """Only the first text message may announce feature flags (ComfyUI's rule)."""
        try:
            message = json.loads(text)
        except (ValueError, RecursionError):  # RecursionError: a deeply nested message
            return
        if isinstance(message, dict) and message.get("type") == "feature_flags":
            data = message.get("data")
            client.features = dict(data) if isinstance(data, dict) else {}
            self._enqueue(client, json_message("feature_flags", self.server_features))

    async def _write(self, client: Client) -> None:
        ws = client.ws
        try:
            while True:
                item = await client.queue.get()
                if item is None:
                    await ws.close(code=WSCloseCode.GOING_AWAY, message=b"replaced by a newer connection")
                    return
                if isinstance(item, StateSlot):
                    state = client.states.pop(item.prompt_id, None)
                    if state is not None:
                        await ws.send_str(state.text())
                elif isinstance(item, bytes):
                    await ws.send_bytes(item)
                else:
                    await ws.send_str(item)
        except (ConnectionError, RuntimeError) as exc:  # the peer went away mid-send
            log.debug("websocket client %s: send failed: %s", client.sid, exc)

    def _enqueue_state(self, client: Client, message: Outgoing) -> None:
        prompt_id = str(message.data.get("prompt_id"))
        waiting = prompt_id in client.states
        client.states[prompt_id] = message
        if not waiting:
            self._enqueue(client, StateSlot(prompt_id))

    def _enqueue(self, client: Client, item: str | bytes | StateSlot | None, *, droppable: bool = False) -> None:
        queue = client.queue
        if droppable and queue.qsize() >= CLIENT_QUEUE_LIMIT // 2:
            return
        try:
            queue.put_nowait(item)
        except asyncio.QueueFull:
            log.warning("websocket client %s is %d messages behind; disconnecting it", client.sid, queue.qsize())
            if self.clients.get(client.sid) is client:
                del self.clients[client.sid]
            if client.writer is not None:
                client.writer.cancel()
            asyncio.get_running_loop().create_task(client.ws.close(code=WSCloseCode.TRY_AGAIN_LATER))

    async def close_all(self) -> None:
        """Server shutdown: close every socket with GOING_AWAY (1001) so clients know to reconnect."""
        self._closing = True
        clients = list(self.clients.values())
        self.clients.clear()
        for client in clients:
            if client.writer is not None:
                client.writer.cancel()
            with contextlib.suppress(Exception):
                await client.ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutting down")

    # ------------------------------------------------------------------ sending

    def _status(self) -> dict[str, Any]:
        try:
            remaining = self._queue_remaining()
            paused = self._paused is not None and self._paused()
        except Exception:  # the store is closed during shutdown
            log.debug("queue size unavailable", exc_info=True)
            remaining, paused = 0, False
        return {"exec_info": exec_info(remaining, paused)}

    def status_snapshot(self) -> dict[str, Any]:
        """The `status` payload now (thread-safe: the store is)."""
        return self._status()

    def broadcast_status(self, status: dict[str, Any] | None = None) -> None:
        """`status` to every socket: sent on every queue change. `status` is the snapshot taken when
        the change happened (the worker's); None = now."""
        if self.clients:
            text = json_message("status", {"status": status if status is not None else self._status()})
            for client in list(self.clients.values()):
                self._enqueue(client, text)

    def send(self, message: Outgoing | Preview, client_id: str | None) -> None:
        """Deliver one prompt message following ComfyUI's targeting: to the prompt's client if it
        has one (nobody if that client is not connected); without a client, to everyone for
        broadcast-style messages and to nobody for the rest."""
        if isinstance(message, Outgoing):
            self._track(message)
        if client_id is not None:
            target = self.clients.get(client_id)
            targets = [target] if target is not None else []
        elif message.broadcast_if_no_client:
            targets = list(self.clients.values())
        else:
            return
        if isinstance(message, Preview):
            frames: dict[bool, bytes] = {}
            for client in targets:
                wants = client.wants_metadata
                if wants not in frames:
                    frames[wants] = message.frame(wants)
                self._enqueue(client, frames[wants], droppable=True)
            return
        if targets and message.type == "progress_state" and isinstance(message.data, dict):
            for client in targets:
                self._enqueue_state(client, message)
        elif targets:
            text = message.text()
            for client in targets:
                self._enqueue(client, text)

    def _track(self, message: Outgoing) -> None:
        # data is a dict for Loom's messages; a package's send_sync may send anything.
        if message.type == "executing" and self._running is not None and isinstance(message.data, dict):
            prompt_id, client_id, _ = self._running
            if message.data.get("prompt_id") == prompt_id:
                self._running = (prompt_id, client_id, message.data.get("node"))

    def prompt_started(self, prompt_id: str, client_id: str | None) -> None:
        """The worker picked up a prompt: remember whose it is (for `executing` on reconnect)."""
        self._running_client = client_id
        self._running = (prompt_id, client_id, None)

    def prompt_finished(self, prompt_id: str) -> None:
        if self._running is not None and self._running[0] == prompt_id:
            self._running = None

    @property
    def client_count(self) -> int:
        return len(self.clients)


def exec_info(remaining: int, paused: bool) -> dict[str, Any]:
    """ComfyUI's exec_info; Loom adds `paused: true` while the queue is paused (absent otherwise, so
    the usual message stays exactly ComfyUI's)."""
    info: dict[str, Any] = {"queue_remaining": remaining}
    if paused:
        info["paused"] = True
    return info


class ThreadsafePublisher:
    """The hub as seen from the worker thread: every call is queued onto the hub's loop, in order.
    Calls after the loop has stopped are dropped (the server is shutting down)."""

    def __init__(self, hub: WebSocketHub) -> None:
        self.hub = hub
        # The prompt being run, as the worker thread knows it right now (the hub learns it a hop
        # later): what custom nodes read as PromptServer.instance.client_id / last_node_id.
        self.running: tuple[str, str | None] | None = None
        self.last_node: str | None = None

    def _call(self, fn: Callable[..., None], *args: Any) -> None:
        loop = self.hub.loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # loop closed between the check and the call
            loop.call_soon_threadsafe(fn, *args)

    @property
    def has_clients(self) -> bool:
        # Read across threads without a lock: a stale answer only costs or saves one preview encode.
        return self.hub.client_count > 0

    def send(self, message: Outgoing | Preview, client_id: str | None) -> None:
        if isinstance(message, Outgoing) and message.type == "executing" and isinstance(message.data, dict):
            self.last_node = message.data.get("node")
        self._call(self.hub.send, message, client_id)

    def status_changed(self) -> None:
        # Counted here, on the worker thread, when the change happens: counted later on the loop,
        # a "prompt started" status could already read 0 if the prompt finished meanwhile, and
        # arrive before that prompt's progress messages.
        self._call(self.hub.broadcast_status, self.hub.status_snapshot())

    def prompt_started(self, prompt_id: str, client_id: str | None) -> None:
        self.running, self.last_node = (prompt_id, client_id), None
        self._call(self.hub.prompt_started, prompt_id, client_id)

    def prompt_finished(self, prompt_id: str) -> None:
        if self.running is not None and self.running[0] == prompt_id:
            self.running = None
        self._call(self.hub.prompt_finished, prompt_id)


__all__ = ["CLIENT_QUEUE_LIMIT", "Client", "ThreadsafePublisher", "WebSocketHub", "exec_info"]
