"""Small read-only routes: safetensors metadata and ComfyUI's /internal helpers (spec §1.1, §1.3).

- GET /view_metadata/{folder}?filename=x.safetensors -> the file header's `__metadata__` (`{}` when
  it has none); 404 for an unknown folder kind, a missing file, a name that leaves its folder or a
  file that is not safetensors.
- GET /internal/folder_paths -> `{kind: [folders]}`: the model search folders. This route exists to
  tell an editor where models live, so it is the one answer that carries this machine's paths (a
  token guards it whenever Loom is reachable from elsewhere).
- GET /internal/files/{input|output|temp} -> the file names directly in that folder, newest first.

/internal routes are not mirrored under /api (ComfyUI mounts them as a sub-application).
"""

from __future__ import annotations

import asyncio
import json
import os
import struct
from pathlib import Path
from typing import Any

from aiohttp import web

from core.errors import ModelError
from server.app import SETTINGS, ServiceUnavailable
from server.http import BadRequest, NotFound

MAX_HEADER_BYTES = 16 * 1024 * 1024
"""Largest safetensors header read (real checkpoints have 0.1-1 MB)."""


def safetensors_header(path: Path, max_bytes: int = MAX_HEADER_BYTES) -> dict[str, Any] | None:
    """The JSON header of a safetensors file; None when the file is not one (or its header is
    implausibly large)."""
    try:
        with open(path, "rb") as handle:
            prefix = handle.read(8)
            if len(prefix) != 8:
                return None
            (length,) = struct.unpack("<Q", prefix)
            if length < 2 or length > max_bytes:
                return None
            raw = handle.read(length)
    except OSError:
        return None
    if len(raw) != length:
        return None
    try:
        header = json.loads(raw)
    except ValueError:
        return None
    return header if isinstance(header, dict) else None


def _model_file(request: web.Request, folder: str, filename: str) -> Path:
    paths = request.app[SETTINGS].paths
    if paths is None:
        raise ServiceUnavailable("no model folders are configured for this server")
    try:
        return paths.resolve(folder, filename)
    except ModelError:
        # resolve()'s message lists the folders it searched; clients get the names only.
        raise NotFound(f"no file {filename!r} in model folder {folder!r}") from None


async def view_metadata(request: web.Request) -> web.Response:
    folder, filename = request.match_info["folder"], request.query.get("filename", "")
    if not filename.endswith(".safetensors"):
        raise NotFound(f"{filename!r} is not a .safetensors file (only those carry metadata)")
    path = _model_file(request, folder, filename)
    header = await asyncio.to_thread(safetensors_header, path)
    if header is None:
        raise NotFound(f"{filename!r} has no readable safetensors header")
    metadata = header.get("__metadata__", {})
    return web.json_response(metadata if isinstance(metadata, dict) else {})


async def get_folder_paths(request: web.Request) -> web.Response:
    paths = request.app[SETTINGS].paths
    if paths is None:
        return web.json_response({})
    return web.json_response({kind: [str(folder) for folder in paths.folders(kind)] for kind in paths.kinds()})


def newest_first(folder: Path) -> list[str]:
    try:
        entries = [entry for entry in os.scandir(folder) if entry.is_file() and not entry.name.startswith(".")]
    except FileNotFoundError:
        return []
    entries.sort(key=lambda entry: (-entry.stat().st_mtime, entry.name))
    return [entry.name for entry in entries]


async def get_files(request: web.Request) -> web.Response:
    kind = request.match_info["type"]
    folder = request.app[SETTINGS].folders.get(kind)
    if folder is None:
        raise BadRequest(f"unknown folder type {kind!r}; use input, output or temp")
    return web.json_response(await asyncio.to_thread(newest_first, Path(folder)))


__all__ = ["get_files", "get_folder_paths", "newest_first", "safetensors_header", "view_metadata"]
