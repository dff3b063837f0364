"""server/protocol.py: binary frame layouts (spec §2), preview encoding, event -> message translation
with ComfyUI's targeting marks and the aggregated progress_state."""

from __future__ import annotations

import io
import json
import struct

import pytest
from PIL import Image

from execution.events import (
    ExecutionBlocked,
    ExecutionCached,
    ExecutionInterrupted,
    ExecutionStart,
    NodeExecuted,
    NodeExecuting,
    NodeFinished,
    NodePreview,
    NodeProgress,
)
from server import protocol
from server.protocol import Outgoing, Preview, PromptMessages, encode_preview, parse_frame


def _png(size: tuple[int, int] = (4, 4)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (1, 2, 3)).save(out, format="PNG")
    return out.getvalue()


def test_legacy_frame_layout() -> None:
    frame = protocol.preview_frame(b"\xff\xd8jpeg", "JPEG")
    assert frame[:8] == struct.pack(">II", 1, 1) and frame[8:] == b"\xff\xd8jpeg"
    assert protocol.preview_frame(b"png", "PNG")[4:8] == struct.pack(">I", 2)


def test_metadata_frame_layout() -> None:
    frame = protocol.preview_frame_with_metadata(b"IMG", "PNG", {"node_id": "5", "prompt_id": "p"})
    event, length = struct.unpack(">II", frame[:8])
    assert event == 4
    meta = json.loads(frame[8 : 8 + length])
    assert meta == {"node_id": "5", "prompt_id": "p", "image_type": "image/png"}
    assert frame[8 + length :] == b"IMG"
    assert parse_frame(frame) == (4, meta, b"IMG")


def test_text_frame_round_trip() -> None:
    frame = protocol.text_frame("12", "héllo")
    assert parse_frame(frame) == (3, {"node_id": "12"}, "héllo".encode())


def test_parse_frame_rejects_garbage() -> None:
    for frame in (b"\x00\x00", struct.pack(">II", 9, 0), struct.pack(">II", 4, 50) + b"{}"):
        with pytest.raises(ValueError):
            parse_frame(frame)


def test_encode_preview_kinds() -> None:
    png = _png()
    assert encode_preview(png) == ("PNG", png)  # already encoded: passed through
    assert encode_preview(b"not an image") is None
    assert encode_preview("a string") is None
    kind, data = encode_preview(Image.new("RGBA", (1000, 500), (9, 9, 9, 0)), max_size=100)
    assert kind == "JPEG"
    with Image.open(io.BytesIO(data)) as image:
        assert image.size == (100, 50)  # scaled to fit, aspect kept
    kind, data = encode_preview(("PNG", Image.new("RGB", (30, 30)), 10))
    assert kind == "PNG" and data.startswith(b"\x89PNG")
    with Image.open(io.BytesIO(data)) as image:
        assert image.size == (10, 10)


def test_encode_preview_leaves_the_node_image_alone() -> None:
    image = Image.new("RGB", (64, 64))
    encode_preview(image, max_size=8)
    assert image.size == (64, 64)


def test_targeting_marks() -> None:
    messages = PromptMessages("p")
    [start] = messages.translate(ExecutionStart("p", timestamp=1))
    assert start == Outgoing("execution_start", {"prompt_id": "p", "timestamp": 1}, False)
    [cached] = messages.translate(ExecutionCached("p", ("1",), timestamp=2))
    assert not cached.broadcast_if_no_client
    [executed] = messages.translate(NodeExecuted("p", "3", "3", {"images": []}))
    assert executed.type == "executed" and not executed.broadcast_if_no_client
    for event in (ExecutionBlocked("p", "4", "X", "nope"), ExecutionInterrupted("p", "4", "X")):
        [message] = messages.translate(event)
        assert message.broadcast_if_no_client, event


def test_progress_state_aggregates_nodes() -> None:
    messages = PromptMessages("p")
    state, executing = messages.translate(NodeExecuting("p", "1", "1"))
    assert executing.type == "executing" and state.type == "progress_state"
    assert state.data["nodes"]["1"]["state"] == "running"
    progress, state = messages.translate(NodeProgress("p", "1", 2, 4, "1"))
    assert progress.data == {"value": 2, "max": 4, "prompt_id": "p", "node": "1"}
    assert progress.broadcast_if_no_client and state.broadcast_if_no_client
    assert state.data["nodes"]["1"]["value"] == 2 and state.data["nodes"]["1"]["max"] == 4
    [state] = messages.translate(NodeFinished("p", "2", cached=True))
    assert set(state.data["nodes"]) == {"1", "2"}
    assert state.data["nodes"]["2"]["state"] == "finished" and state.data["nodes"]["1"]["state"] == "running"


def test_progress_state_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(protocol, "PROGRESS_STATE_LIMIT", 3)
    messages = PromptMessages("p")
    for node in ("a", "b", "c", "d"):
        messages.translate(NodeFinished("p", node))
    messages.translate(NodeExecuting("p", "e", "e"))
    [state] = messages.translate(NodeFinished("p", "f"))
    # Running ones always stay; the most recently finished fill the rest.
    assert list(state.data["nodes"]) == ["d", "f", "e"]


def test_previews_are_encoded_only_when_wanted() -> None:
    messages = PromptMessages("p", preview_size=16)
    event = NodePreview("p", "7", Image.new("RGB", (64, 64)), "7", None, "7")
    assert messages.translate(event, want_previews=False) == []
    [preview] = messages.translate(event)
    assert isinstance(preview, Preview) and preview.format == "JPEG"
    assert preview.metadata == {
        "node_id": "7",
        "prompt_id": "p",
        "display_node_id": "7",
        "parent_node_id": None,
        "real_node_id": "7",
    }
    assert messages.translate(NodePreview("p", "7", object())) == []  # unknown kinds are skipped
