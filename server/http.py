"""What every handler shares: the JSON error shape, the error middleware, body and query parsing,
safe headers for served files, and redaction of server paths from what clients are told.

Errors become JSON answers in `error_middleware`: a bad request is a 4xx that says what was wrong,
never a 500. Messages are redacted before they leave: a folder of this machine (the Loom folder,
models, user data, home) is replaced by a placeholder such as `<models>`, and an unexpected failure
answers only "internal error, see the server log" with a reference the log line carries too --
exception texts can hold paths or secrets.
"""

from __future__ import annotations

import errno
import json
import logging
import math
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
CLIENT_PATH_ERRNOS = frozenset({errno.ENAMETOOLONG, errno.EILSEQ})
"""OSErrors caused by a name the request gave: answered 400, not 500."""
PATH_CONFLICT_ERRNOS = frozenset({errno.EEXIST, errno.ENOTDIR, errno.EISDIR})
"""OSErrors of a requested path that collides with existing files or folders: answered 409."""
MAX_JSON_DEPTH = 256
"""Deepest nesting accepted in a JSON body (prompts and saved workflows nest a few dozen levels)."""


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
    except OSError as exc:
        # A name the client chose that the filesystem cannot take (255 bytes per name, 4096 per path),
        # or one that collides with what is there (a file where the path needs a folder).
        if exc.errno in CLIENT_PATH_ERRNOS:
            return error_response(
                request, 400, "invalid_path", f"a file name in this request is unusable: {exc.strerror}"
            )
        if exc.errno in PATH_CONFLICT_ERRNOS:
            return error_response(
                request,
                409,
                "conflict",
                f"a path in this request collides with an existing file or folder: {exc.strerror}",
            )
        return _internal_error(request)
    except Exception:
        return _internal_error(request)


def _internal_error(request: web.Request) -> web.Response:
    reference = uuid.uuid4().hex[:12]
    log.exception("%s %s failed (reference %s)", request.method, request.path, reference)
    return error_response(
        request, 500, "server_error", f"internal error; the server log has the details (reference {reference})"
    )


# ---------------------------------------------------------------------- parsing helpers


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise BadRequest(
            f"request body holds the number {text}, which is out of range for a JSON number", "invalid_json"
        )
    return value


def _no_constant(name: str) -> Any:
    # Python's json accepts NaN and Infinity; JSON does not, and a stored NaN would make every later
    # GET of it (the queue, the history, settings) unreadable to browsers' JSON.parse.
    raise BadRequest(f"request body is not valid JSON: {name} is not a JSON value", "invalid_json")


def parse_json(raw: bytes | str) -> Any:
    """Strict JSON: no NaN/Infinity, finite numbers, at most MAX_JSON_DEPTH levels, no lone UTF-16
    surrogates. BadRequest (400, `invalid_json`) saying what and where otherwise."""
    try:
        value = json.loads(raw, parse_constant=_no_constant, parse_float=_finite_float)
    except UnicodeDecodeError as exc:
        raise BadRequest(f"request body is not UTF-8 text: {exc.reason} at byte {exc.start}", "invalid_json") from None
    except json.JSONDecodeError as exc:
        raise BadRequest(
            f"request body is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}", "invalid_json"
        ) from None
    except RecursionError:
        raise BadRequest(f"request body is nested more than {MAX_JSON_DEPTH} levels deep", "invalid_json") from None
    except ValueError as exc:  # an integer of more than 4300 digits (sys.int_info.str_digits_check_threshold)
        raise BadRequest(f"request body holds a number Loom cannot read: {exc}", "invalid_json") from None
    check_json_value(value)
    return value


def check_json_value(value: Any) -> None:
    """Depth and text checks of parsed JSON (explicit stack: any depth is walked without recursion)."""
    stack: list[tuple[Any, str, int]] = [(value, "", 0)]
    while stack:
        item, where, depth = stack.pop()
        if isinstance(item, str):
            _check_text(item, where)
            continue
        if not isinstance(item, (dict, list)):
            continue
        if depth >= MAX_JSON_DEPTH:
            raise BadRequest(
                f"request body is nested more than {MAX_JSON_DEPTH} levels deep (at {where})", "invalid_json"
            )
        if isinstance(item, dict):
            for key, child in item.items():
                _check_text(key, f"{where}.{key}" if where else key)
                stack.append((child, f"{where}.{key}" if where else key, depth + 1))
        else:
            stack.extend((child, f"{where}[{index}]", depth + 1) for index, child in enumerate(item))


def _check_text(text: str, where: str) -> None:
    if text.isascii():
        return
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        shown = where.encode("utf-8", "backslashreplace").decode("ascii", "replace")[:200] or "the top level"
        raise BadRequest(
            f"request body holds text that is not valid Unicode (a lone UTF-16 surrogate) at {shown}", "invalid_json"
        ) from None


async def read_json(request: web.Request, *, empty: Any = None) -> Any:
    """The JSON body, `empty` if there is none; BadRequest (400) if it is not strict JSON (parse_json)."""
    raw = await request.read()
    if not raw.strip():
        return empty
    return parse_json(raw)


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
        number = int(value)
    except ValueError:
        raise BadRequest(f"query parameter '{name}' must be an integer, got {value[:100]!r}") from None
    if not -(2**63) <= number < 2**63:  # what SQLite (the store) can take
        raise BadRequest(f"query parameter '{name}' is out of range: {value[:100]}")
    return number


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
    "check_json_value",
    "parse_json",
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
