"""Editor settings (spec §1.3): one JSON object per user, `comfy.settings.json` in the user's folder.

GET /settings -> the object ({} when none was saved); GET /settings/{id} -> one value (null when
unset); POST /settings merges an object into it; POST /settings/{id} sets one value. Writes are
atomic and serialised, so two tabs saving at once never leave a torn file.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from pathlib import Path
from typing import Any

from aiohttp import web

from server.http import BadRequest, read_json
from server.security import accepts_any_body
from server.userdata import users_of, write_atomic

log = logging.getLogger(__name__)

SETTINGS_FILE = "comfy.settings.json"
_write_lock = threading.Lock()


def load_settings(folder: Path) -> dict[str, Any]:
    path = folder / SETTINGS_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        # A hand-edited file with a typo must not lock the user out of the editor.
        log.error("settings file %s is unreadable (%s); answering with no settings", path, exc)
        return {}
    return data if isinstance(data, dict) else {}


def update_settings(folder: Path, changes: dict[str, Any]) -> dict[str, Any]:
    with _write_lock:
        settings = {**load_settings(folder), **changes}
        write_atomic(folder / SETTINGS_FILE, json.dumps(settings, indent=4).encode("utf-8"))
    return settings


async def get_settings(request: web.Request) -> web.Response:
    folder = users_of(request).folder(request)
    return web.json_response(await asyncio.to_thread(load_settings, folder))


async def get_setting(request: web.Request) -> web.Response:
    folder = users_of(request).folder(request)
    settings = await asyncio.to_thread(load_settings, folder)
    return web.json_response(settings.get(request.match_info["id"]))


@accepts_any_body
async def post_settings(request: web.Request) -> web.Response:
    changes = await read_json(request, empty={})
    if not isinstance(changes, dict):
        raise BadRequest(f"POST /settings takes a JSON object of setting id -> value, got {type(changes).__name__}")
    folder = users_of(request).folder(request)
    await asyncio.to_thread(update_settings, folder, changes)
    return web.Response(status=200)


@accepts_any_body
async def post_setting(request: web.Request) -> web.Response:
    value = await read_json(request, empty=None)
    folder = users_of(request).folder(request)
    await asyncio.to_thread(update_settings, folder, {request.match_info["id"]: value})
    return web.Response(status=200)


__all__ = ["SETTINGS_FILE", "get_setting", "get_settings", "load_settings", "post_setting", "post_settings"]
