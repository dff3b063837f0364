"""What every handler shares: the JSON error shape, the error middleware, body and query parsing,
safe headers for served files, and redaction of server paths from what clients are told.

Errors become JSON answers in `error_middleware`: a bad request is a 4xx that says what was wrong,
never a 500. Messages are redacted before they leave: a folder of this machine (the Loom folder,
models, user data, home) is replaced by a placeholder such as `<models>`, and an unexpected failure
answers only "internal error, see the server log" with a reference the log line carries too --
exception texts can hold paths or secrets.
"""

from __future__ import annotations

import json
import logging
import mimetypes
import os
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

from aiohttp import hdrs, web

from core.errors import EngineError, ModelError
from execution.store import InvalidQueryError, QueueError, UnknownPromptError
from server.app import SETTINGS, ServiceUnavailable
from server.security import Handler

log = logging.getLogger(__name__)

NO_CACHE = {"Cache-Control": "no-cache, no-store, must-revalidate", "Pragma": "no-cache", "Expires": "0"}
# Served files a browser would run or style if it trusted our type: sent as opaque bytes instead.
ACTIVE_TYPES = ("text/", "application/javascript", "application/ecmascript", "application/xhtml", "image/svg")
ACTIVE_SUFFIXES = (".html", ".htm", ".js", ".mjs", ".css", ".svg", ".xml", ".xhtml")
TRUE_WORDS = frozenset({"1", "true", "yes", "on"})


class BadRequest(EngineError):
    """A request the client got wrong: answered with `status` and ComfyUI's error object."""

    def __init__(self, message: str, kind: str = "invalid_request", status: int = 400, **extra: Any) -> None:
        super().__init__(message)
        self.kind = kind
        self.status = status
        self.extra = extra


class Conflict(BadRequest):
    """The request is fine but the state does not allow it (HTTP 409)."""

    def __init__(self, message: str, kind: str = "conflict") -> None:
        super().__init__(message, kind, status=409)


class NotFound(BadRequest):
    def __init__(self, message: str) -> None:
        super().__init__(message, "not_found", status=404)


def error_object(kind: str, message: str, details: str = "", extra_info: Mapping[str, Any] | None = None) -> dict:
    return {"type": kind, "message": message, "details": details, "extra_info": dict(extra_info or {})}


# ---------------------------------------------------------------------- redaction


def private_roots(folders: Iterable[tuple[str, Path | str | None]]) -> tuple[tuple[str, str], ...]:
    """(path prefix, placeholder) pairs, longest first, for `redact`; both the given and the real
    (symlink-resolved) spelling of each folder."""
    pairs: dict[str, str] = {}
    for placeholder, folder in folders:
        if not folder:
            continue
        for spelling in (os.path.abspath(folder), os.path.realpath(folder)):
            if len(spelling) > 1:  # never the filesystem root
                pairs.setdefault(spelling, placeholder)
    return tuple(sorted(pairs.items(), key=lambda pair: -len(pair[0])))


def redact(text: str, roots: Iterable[tuple[str, str]]) -> str:
    for prefix, placeholder in roots:
        if prefix in text:
            text = text.replace(prefix, placeholder)
    return text


def redact_value(value: Any, roots: tuple[tuple[str, str], ...]) -> Any:
    """`redact` over every string of a JSON value (node_errors); iterative, any depth."""
    if isinstance(value, str):
        return redact(value, roots)
    if not isinstance(value, (dict, list)):
        return value
    out: Any = {} if isinstance(value, dict) else []
    stack = [(value, out)]
    while stack:
        source, target = stack.pop()
        items = source.items() if isinstance(source, dict) else enumerate(source)
        for key, item in items:
            if isinstance(item, (dict, list)):
                copy: Any = {} if isinstance(item, dict) else []
                stack.append((item, copy))
                item = copy
            elif isinstance(item, str):
                item = redact(item, roots)
            if isinstance(target, dict):
                target[key] = item
            else:
                target.append(item)
    return out


def _roots(request: web.Request) -> tuple[tuple[str, str], ...]:
    settings = request.app.get(SETTINGS)
    return settings.private_roots if settings is not None else ()


def error_response(request: web.Request, status: int, kind: str, message: str, **extra: Any) -> web.Response:
    roots = _roots(request)
    body = {"error": error_object(kind, redact(message, roots)), **redact_value(extra, roots)}
    return web.json_response(body, status=status)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """EngineError -> JSON 4xx/503, anything unexpected -> JSON 500 (logged with its traceback)."""
    try:
        return await handler(request)
    except web.HTTPRequestEntityTooLarge as exc:
        return error_response(request, 413, "request_too_large", f"request body too large: {exc.text}")
    except web.HTTPException:
        raise
    except BadRequest as exc:
        return error_response(request, exc.status, exc.kind, str(exc), **exc.extra)
    except ServiceUnavailable as exc:
        return error_response(request, 503, "service_unavailable", str(exc))
    except (UnknownPromptError, ModelError) as exc:
        return error_response(request, 404, "not_found", str(exc))
    except (InvalidQueryError, QueueError) as exc:
        return error_response(request, 400, "invalid_request", str(exc))
    except EngineError as exc:
        return error_response(request, 400, type(exc).__name__, str(exc))
    except Exception:
        reference = uuid.uuid4().hex[:12]
        log.exception("%s %s failed (reference %s)", request.method, request.path, reference)
        return error_response(
            request, 500, "server_error", f"internal error; the server log has the details (reference {reference})"
        )


# ---------------------------------------------------------------------- parsing helpers


async def read_json(request: web.Request, *, empty: Any = None) -> Any:
    """The JSON body, `empty` if there is none; BadRequest (400) if it does not parse."""
    raw = await request.read()
    if not raw.strip():
        return empty
    try:
        return json.loads(raw)
    except UnicodeDecodeError as exc:
        raise BadRequest(f"request body is not UTF-8 text: {exc.reason} at byte {exc.start}", "invalid_json") from None
    except json.JSONDecodeError as exc:
        raise BadRequest(
            f"request body is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}", "invalid_json"
        ) from None


async def read_object(request: web.Request) -> dict[str, Any]:
    body = await read_json(request, empty={})
    if not isinstance(body, dict):
        raise BadRequest(f"request body must be a JSON object, got {type(body).__name__}")
    return body


def query_int(request: web.Request, name: str) -> int | None:
    value = request.query.get(name)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise BadRequest(f"query parameter '{name}' must be an integer, got {value!r}") from None


def query_bool(request: web.Request, name: str, default: bool = False) -> bool:
    value = request.query.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in TRUE_WORDS


def id_list(body: Mapping[str, Any], key: str) -> list[str]:
    ids = body.get(key, [])
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise BadRequest(f"'{key}' must be a list of prompt id strings, got {ids!r}")
    return ids


# ---------------------------------------------------------------------- served files


def safe_headers(path: Path, download_name: str) -> dict[str, str]:
    """Content type that cannot run in the browser, nosniff, and the file name for downloads."""
    guessed = mimetypes.guess_type(download_name)[0] or "application/octet-stream"
    if guessed.startswith(ACTIVE_TYPES) or path.suffix.lower() in ACTIVE_SUFFIXES:
        guessed = "application/octet-stream"
    ascii_name = download_name.encode("ascii", "replace").decode("ascii").replace("\\", "_").replace('"', "_")
    return {
        hdrs.CONTENT_TYPE: guessed,
        hdrs.CONTENT_DISPOSITION: f"filename=\"{ascii_name}\"; filename*=UTF-8''{quote(download_name)}",
        "X-Content-Type-Options": "nosniff",
    }


def json_dumps(value: Any) -> str:
    return json.dumps(value, default=str)


__all__ = [
    "ACTIVE_SUFFIXES",
    "ACTIVE_TYPES",
    "NO_CACHE",
    "BadRequest",
    "Conflict",
    "NotFound",
    "error_middleware",
    "error_object",
    "error_response",
    "id_list",
    "json_dumps",
    "private_roots",
    "query_bool",
    "query_int",
    "read_json",
    "read_object",
    "redact",
    "redact_value",
    "safe_headers",
]
