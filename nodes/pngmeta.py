"""PNG text metadata: what SaveImage embeds (spec §8) and how Loom reads it back.

ComfyUI stores the API prompt under the key `prompt` and each `extra_pnginfo` entry (the editor
sends `workflow`) under its own key, every value as `json.dumps(...)`, in `tEXt` chunks (the JSON is
ASCII-escaped, so Latin-1 `tEXt` always suffices). Other tools write `iTXt` or `zTXt`; the reader
accepts all three.

Stdlib only: `main.py run image.png` and the server read metadata without importing Pillow.
"""

from __future__ import annotations

import json
import logging
import struct
import zlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TEXT_CHUNKS = (b"tEXt", b"zTXt", b"iTXt")
MAX_KEY_BYTES = 79
"""The PNG spec's limit on a text chunk keyword."""


def metadata_texts(prompt: Any = None, extra_pnginfo: Mapping[str, Any] | None = None) -> dict[str, str]:
    """The text chunks a save node writes, in ComfyUI's order: `prompt`, then one per extra key."""
    texts: dict[str, str] = {}
    if prompt is not None:
        texts["prompt"] = json.dumps(prompt)
    for key, value in (extra_pnginfo or {}).items():
        texts[str(key)] = json.dumps(value)
    return texts


def text_chunk(key: str, text: str) -> bytes:
    """One encoded `tEXt` chunk, or `iTXt` (UTF-8) when the text is not Latin-1."""
    keyword = key.encode("latin-1")
    if not 1 <= len(keyword) <= MAX_KEY_BYTES or b"\x00" in keyword:
        raise ValueError(f"PNG text key {key!r} must be 1 to {MAX_KEY_BYTES} Latin-1 characters without NUL")
    try:
        kind, data = b"tEXt", keyword + b"\x00" + text.encode("latin-1")
    except UnicodeEncodeError:
        # iTXt: keyword, no compression, empty language tag and translated keyword, UTF-8 text.
        kind, data = b"iTXt", keyword + b"\x00\x00\x00\x00\x00" + text.encode("utf-8")
    return _chunk(kind, data)


def add_png_text(png: bytes, texts: Mapping[str, str]) -> bytes:
    """`png` with text chunks for `texts` inserted right after IHDR (the image data is untouched)."""
    if not png.startswith(PNG_SIGNATURE):
        raise ValueError("not a PNG file (bad signature)")
    first = _first_chunk_end(png)
    extra = b"".join(text_chunk(key, text) for key, text in texts.items())
    return png[:first] + extra + png[first:]


def read_png_text(source: str | Path | bytes) -> dict[str, str]:
    """Every text chunk of a PNG file (or its bytes) as {key: text}; a later duplicate key wins.

    Raises ValueError for data that is not a PNG; a damaged chunk ends the scan (what was read
    before it is returned), since a file that decodes should still yield its metadata."""
    data = source if isinstance(source, bytes) else Path(source).read_bytes()
    if not data.startswith(PNG_SIGNATURE):
        raise ValueError(f"{_describe(source)} is not a PNG file")
    texts: dict[str, str] = {}
    for kind, body in _chunks(data, _describe(source)):
        if kind in TEXT_CHUNKS:
            decoded = _decode_text(kind, body)
            if decoded is not None:
                texts[decoded[0]] = decoded[1]
    return texts


def read_png_metadata(source: str | Path | bytes) -> dict[str, dict[str, Any] | None]:
    """{"prompt": API prompt dict | None, "workflow": UI workflow dict | None} embedded in a PNG.

    A value that is missing, not JSON or not a JSON object is None."""
    texts = read_png_text(source)
    return {key: _json_object(texts.get(key), key, source) for key in ("prompt", "workflow")}


# --- chunk parsing ------------------------------------------------------------------------------------


def _chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def _first_chunk_end(png: bytes) -> int:
    """Offset just past the first chunk (IHDR, which must come first)."""
    if len(png) < len(PNG_SIGNATURE) + 8:
        raise ValueError("PNG data is truncated before its IHDR chunk")
    (length,) = struct.unpack(">I", png[8:12])
    if png[12:16] != b"IHDR":
        raise ValueError("PNG data does not start with an IHDR chunk")
    return 8 + 12 + length


def _chunks(data: bytes, where: str) -> Iterator[tuple[bytes, bytes]]:
    offset = len(PNG_SIGNATURE)
    while offset + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[offset : offset + 8])
        end = offset + 8 + length + 4
        if end > len(data):
            log.warning("%s: PNG chunk %r is truncated; metadata after it is ignored", where, kind)
            return
        yield kind, data[offset + 8 : offset + 8 + length]
        if kind == b"IEND":
            return
        offset = end


def _decode_text(kind: bytes, body: bytes) -> tuple[str, str] | None:
    key, sep, rest = body.partition(b"\x00")
    if not sep:
        return None
    try:
        if kind == b"tEXt":
            return key.decode("latin-1"), rest.decode("latin-1")
        if kind == b"zTXt":  # one compression-method byte (0 = zlib), then the compressed text
            return key.decode("latin-1"), zlib.decompress(rest[1:]).decode("latin-1")
        compressed, rest = rest[0], rest[2:]  # iTXt: flag, method, language\0, translated key\0, text
        _language, _, rest = rest.partition(b"\x00")
        _translated, _, text = rest.partition(b"\x00")
        if compressed:
            text = zlib.decompress(text)
        return key.decode("latin-1"), text.decode("utf-8")
    except (zlib.error, UnicodeDecodeError, IndexError):
        log.warning("skipping an undecodable PNG %s chunk with key %r", kind.decode(), key[:MAX_KEY_BYTES])
        return None


def _json_object(text: str | None, key: str, source: Any) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        log.warning("%s: the PNG '%s' text is not valid JSON (%s)", _describe(source), key, exc.msg)
        return None
    return value if isinstance(value, dict) else None


def _describe(source: Any) -> str:
    return "PNG data" if isinstance(source, bytes) else str(source)


__all__ = [
    "PNG_SIGNATURE",
    "add_png_text",
    "metadata_texts",
    "read_png_metadata",
    "read_png_text",
    "text_chunk",
]
