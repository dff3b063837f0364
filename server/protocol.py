"""The websocket wire format (spec §2): JSON messages, binary preview frames, and how executor events
become messages. Mirrored by web/protocol.js once the editor lands.

Everything here is pure (no aiohttp, no sockets): `PromptMessages` turns the events of one prompt
into `Outgoing` JSON messages and `Preview` images, each marked with ComfyUI's targeting rule, and
the hub (server/ws.py) decides which sockets get them. No torch: a preview image is whatever the
node handed over -- a PIL image, encoded bytes, or ComfyUI's `(format, image, max_size)` tuple.
"""

from __future__ import annotations

import io
import json
import logging
import struct
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from execution.events import (
    Event,
    ExecutionBlocked,
    ExecutionInterrupted,
    NodeExecuting,
    NodeFinished,
    NodePreview,
    NodeProgress,
)

log = logging.getLogger(__name__)

# Binary frame event ids (the first big-endian uint32 of every binary frame).
PREVIEW_IMAGE = 1
UNENCODED_PREVIEW_IMAGE = 2  # ComfyUI-internal; never on the wire
TEXT = 3
PREVIEW_IMAGE_WITH_METADATA = 4

IMAGE_FORMAT_IDS = {"JPEG": 1, "PNG": 2}
IMAGE_MIME = {"JPEG": "image/jpeg", "PNG": "image/png"}
JPEG_QUALITY = 95

PROGRESS_STATE_LIMIT = 500
"""Most node entries one `progress_state` message carries. ComfyUI sends every non-pending node each
time, which is quadratic in graph size (a 10,000-node chain would send ~10^8 entries); past this
limit running nodes are always kept and only the most recently finished ones fill the rest."""

# Events that ComfyUI broadcasts to every socket when the prompt has no client_id (rule (b)); all
# the others reach only the prompt's own client and are dropped without one (rule (c)).
_BROADCAST_IF_NO_CLIENT = (NodeProgress, NodeFinished, NodePreview, ExecutionBlocked, ExecutionInterrupted)


@dataclass(frozen=True)
class Outgoing:
    """One JSON message and its targeting rule."""

    type: str
    data: dict[str, Any]
    broadcast_if_no_client: bool = False

    def text(self) -> str:
        return json_message(self.type, self.data)


@dataclass(frozen=True)
class Preview:
    """An encoded preview image; the hub picks frame type 4 or 1 per socket."""

    image: bytes
    format: str  # "JPEG" | "PNG"
    metadata: dict[str, Any]
    broadcast_if_no_client: bool = True

    def frame(self, with_metadata: bool) -> bytes:
        if with_metadata:
            return preview_frame_with_metadata(self.image, self.format, self.metadata)
        return preview_frame(self.image, self.format)


def json_message(message_type: str, data: Any) -> str:
    # default=str: a node's ui dict may hold values JSON cannot carry (a Path, a numpy scalar); the
    # client gets their text rather than the whole message failing.
    return json.dumps({"type": message_type, "data": data}, default=str)


def preview_frame(image: bytes, image_format: str) -> bytes:
    """Type 1: event id, image format id, image bytes (legacy clients read `frame[8:]`)."""
    return struct.pack(">II", PREVIEW_IMAGE, IMAGE_FORMAT_IDS[image_format]) + image


def preview_frame_with_metadata(image: bytes, image_format: str, metadata: dict[str, Any]) -> bytes:
    """Type 4: event id, metadata length, metadata JSON (with image_type), image bytes."""
    meta = json.dumps({**metadata, "image_type": IMAGE_MIME[image_format]}).encode("utf-8")
    return struct.pack(">II", PREVIEW_IMAGE_WITH_METADATA, len(meta)) + meta + image


def text_frame(node_id: str, text: str) -> bytes:
    """Type 3: text shown under a node."""
    node = node_id.encode("utf-8")
    return struct.pack(">II", TEXT, len(node)) + node + text.encode("utf-8")


def parse_frame(frame: bytes) -> tuple[int, dict[str, Any], bytes]:
    """(event id, metadata, payload) of a binary frame: the inverse of the builders above."""
    if len(frame) < 8:
        raise ValueError(f"binary frame of {len(frame)} bytes is shorter than its 8-byte header")
    event, second = struct.unpack(">II", frame[:8])
    if event == PREVIEW_IMAGE:
        formats = {v: k for k, v in IMAGE_FORMAT_IDS.items()}
        return event, {"image_type": IMAGE_MIME.get(formats.get(second, ""), "unknown")}, frame[8:]
    if event in (PREVIEW_IMAGE_WITH_METADATA, TEXT):
        head = frame[8 : 8 + second]
        if len(head) != second:
            raise ValueError(f"binary frame {event}: header says {second} bytes, only {len(head)} present")
        meta = json.loads(head) if event == PREVIEW_IMAGE_WITH_METADATA else {"node_id": head.decode("utf-8")}
        return event, meta, frame[8 + second :]
    raise ValueError(f"unknown binary frame event id {event}")


def _sniff(data: bytes) -> str | None:
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if data.startswith(b"\xff\xd8"):
        return "JPEG"
    return None


def encode_preview(image: Any, max_size: int = 512) -> tuple[str, bytes] | None:
    """(format, encoded bytes) for a preview image, or None when it is of a kind we cannot encode.

    Accepts encoded PNG/JPEG bytes as they are, a PIL image (JPEG, scaled to fit `max_size`), an
    array-like PIL can read (HxWxC uint8), or ComfyUI's `(format, image, max_size)` tuple.
    """
    image_format = "JPEG"
    if isinstance(image, tuple) and len(image) == 3 and isinstance(image[0], str):
        image_format, image, max_size = image[0].upper(), image[1], int(image[2] or max_size)
    if isinstance(image, (bytes, bytearray, memoryview)):
        data = bytes(image)
        found = _sniff(data)
        if found is None:
            log.debug("preview bytes are neither PNG nor JPEG; not sent")
        return (found, data) if found else None
    from PIL import Image  # deferred: only previews need Pillow, and importing the server stays cheap

    if not isinstance(image, Image.Image):
        if not hasattr(image, "__array_interface__"):
            log.debug("cannot encode a preview of type %s; not sent", type(image).__name__)
            return None
        image = Image.fromarray(image)
    image = image.copy()  # thumbnail() works in place and the node may still use its image
    if max_size > 0:
        image.thumbnail((max_size, max_size), Image.Resampling.BILINEAR)
    out = io.BytesIO()
    if image_format == "PNG":
        image.save(out, format="PNG")
    else:
        image_format = "JPEG"
        image.convert("RGB").save(out, format="JPEG", quality=JPEG_QUALITY)
    return image_format, out.getvalue()


class PromptMessages:
    """Turns the events of one prompt into websocket messages, keeping ComfyUI's aggregated
    `progress_state` (the state of every started node, sent whole on each change)."""

    def __init__(self, prompt_id: str, preview_size: int = 512) -> None:
        self.prompt_id = prompt_id
        self.preview_size = preview_size
        self._states: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._running: dict[str, None] = {}  # ids whose state is "running", in insertion order

    def translate(self, event: Event, *, want_previews: bool = True) -> list[Outgoing | Preview]:
        """The messages for one event, in send order. Previews are encoded only if wanted (someone
        is connected to see them): encoding costs time on the worker thread."""
        broadcast = isinstance(event, _BROADCAST_IF_NO_CLIENT)
        if isinstance(event, NodePreview):
            if not want_previews:
                return []
            try:
                encoded = encode_preview(event.image, self.preview_size)
            except Exception:  # a broken preview must never fail the prompt
                log.warning("preview of node %s could not be encoded", event.node_id, exc_info=True)
                return []
            if encoded is None:
                return []
            return [Preview(encoded[1], encoded[0], event.metadata())]
        message_type, data = event.to_message()
        if isinstance(event, NodeFinished):
            self._update(event, "finished", 1, 1)
            return [self._progress_state()]
        out: list[Outgoing | Preview] = []
        if isinstance(event, NodeExecuting):
            self._update(event, "running", 0, 1)
            out.append(self._progress_state())
        elif isinstance(event, NodeProgress):
            self._update(event, "running", event.value, event.max if event.max is not None else 1)
            out.append(Outgoing(message_type, data, broadcast))
            out.append(self._progress_state())
            return out
        out.append(Outgoing(message_type, data, broadcast))
        return out

    def _update(self, event: Any, state: str, value: float, maximum: float) -> None:
        node_id = event.node_id
        self._states[node_id] = {
            "value": value,
            "max": maximum,
            "state": state,
            "node_id": node_id,
            "prompt_id": self.prompt_id,
            "display_node_id": event.display_node_id or node_id,
            "parent_node_id": event.parent_node_id,
            "real_node_id": event.real_node_id or node_id,
        }
        self._states.move_to_end(node_id)
        if state == "running":
            self._running[node_id] = None
        else:
            self._running.pop(node_id, None)

    def _progress_state(self) -> Outgoing:
        states = self._states
        if len(states) > PROGRESS_STATE_LIMIT:
            # O(limit), not O(nodes): this runs for every event of the prompt (a cached re-run of a
            # 2,000-node graph makes 2,000 of them).
            room = max(0, PROGRESS_STATE_LIMIT - len(self._running))
            finished: list[str] = []
            for node_id in reversed(states):  # most recently changed first
                if len(finished) >= room:
                    break
                if node_id not in self._running:
                    finished.append(node_id)
            nodes = {node_id: states[node_id] for node_id in reversed(finished)}
            nodes.update((node_id, states[node_id]) for node_id in self._running)
        else:
            nodes = dict(states)
        return Outgoing("progress_state", {"prompt_id": self.prompt_id, "nodes": nodes}, True)


__all__ = [
    "IMAGE_FORMAT_IDS",
    "PREVIEW_IMAGE",
    "PREVIEW_IMAGE_WITH_METADATA",
    "PROGRESS_STATE_LIMIT",
    "TEXT",
    "Outgoing",
    "Preview",
    "PromptMessages",
    "encode_preview",
    "json_message",
    "parse_frame",
    "preview_frame",
    "preview_frame_with_metadata",
    "text_frame",
]
