"""Security middlewares, on by default (DESIGN.md §6).

- Host allowlist while bound to loopback: a page on evil.example whose name was re-pointed at
  127.0.0.1 (DNS rebinding) reaches us with `Host: evil.example` and is refused.
- Cross-site requests: a foreign `Origin` (or `Sec-Fetch-Site: cross-site`) on a state change or a
  websocket is refused, so a web page cannot queue prompts or read the event stream (CSRF, CSWSH).
  Same-origin pages and scripts (which send no Origin) pass. `--enable-cors-header [ORIGIN]`
  switches this off for CORS headers instead, as ComfyUI does.
- JSON-only state changes: `application/x-www-form-urlencoded`, `multipart/form-data` and
  `text/plain` are the content types a browser may send cross-site without a preflight, so
  browsers must say `application/json`. Scripts keep working: Python's urllib (used by ComfyUI's
  own examples and test-suite) sends a JSON body labelled urlencoded, which is accepted when the
  request carries none of the headers every modern browser adds (Origin, Sec-Fetch-*).
- A request size cap (`--max-upload-size`), answered 413 before the body is read.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from aiohttp import hdrs, web
from yarl import URL

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
JSON_TYPES = frozenset({"application/json"})
SCRIPT_FALLBACK_TYPES = frozenset({"", "application/x-www-form-urlencoded"})
BROWSER_HEADERS = ("Origin", "Sec-Fetch-Site", "Sec-Fetch-Mode", "Sec-Fetch-Dest")
CORS_METHODS = "POST, GET, DELETE, PUT, OPTIONS, PATCH"
CORS_HEADERS = "Content-Type, Authorization"
BODY_KIND_ATTR = "loom_body"


def accepts_multipart(handler: Handler) -> Handler:
    """Mark a handler whose body is multipart/form-data (uploads): exempt from the JSON-only rule."""
    setattr(handler, BODY_KIND_ATTR, "multipart")
    return handler


def is_loopback_host(host: str) -> bool:
    host = host.strip("[]").rstrip(".").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class SecurityPolicy:
    loopback_only: bool = True
    """Every listening address is loopback: enforce the Host allowlist."""
    cors_origin: str | None = None
    """--enable-cors-header value: answer with CORS headers instead of refusing foreign origins."""
    max_body_bytes: int = 100 * 1024 * 1024

    @classmethod
    def for_listen(cls, listen: str | Iterable[str], cors_origin: str | None, max_upload_mb: float) -> SecurityPolicy:
        hosts = listen.split(",") if isinstance(listen, str) else list(listen)
        hosts = [h.strip() for h in hosts if h.strip()]
        return cls(
            loopback_only=bool(hosts) and all(is_loopback_host(h) for h in hosts),
            cors_origin=cors_origin,
            max_body_bytes=int(max_upload_mb * 1024 * 1024),
        )


def refuse(status: int, kind: str, message: str) -> web.Response:
    log.warning("refused request (%d %s): %s", status, kind, message)
    body = {"error": {"type": kind, "message": message, "details": "", "extra_info": {}}}
    return web.json_response(body, status=status)


def _split_host(host: str) -> tuple[str, int | None]:
    """('name', port or None) of a Host header value, IPv6 brackets kept off."""
    if host.startswith("["):
        name, _, rest = host[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif host.count(":") == 1:
        name, _, port = host.partition(":")
    else:
        name, port = host, ""
    return name.rstrip(".").lower(), int(port) if port.isdigit() else None


def _same_origin(origin: str, host: str, scheme: str) -> bool:
    try:
        url = URL(origin)
    except ValueError:
        return False
    if origin == "null" or not url.host:
        return False
    name, port = _split_host(host)
    default_port = 443 if scheme == "https" else 80
    return url.host.rstrip(".").lower() == name and url.port == (port or default_port)


def _is_websocket(request: web.Request) -> bool:
    return request.headers.get(hdrs.UPGRADE, "").lower() == "websocket"


def _from_browser(request: web.Request) -> bool:
    return any(name in request.headers for name in BROWSER_HEADERS)


def _check_host(policy: SecurityPolicy, request: web.Request) -> web.Response | None:
    host = request.headers.get(hdrs.HOST)
    if not policy.loopback_only or host is None:
        return None
    name, _ = _split_host(host)
    if is_loopback_host(name):
        return None
    return refuse(
        403,
        "forbidden_host",
        f"Host '{host}' is not allowed: Loom listens on loopback only and answers to localhost, 127.0.0.1 "
        "and [::1] (any other name may be a DNS-rebinding attack). To reach it under another name, start "
        "it with --listen on that interface.",
    )


def _check_origin(policy: SecurityPolicy, request: web.Request) -> web.Response | None:
    if policy.cors_origin is not None:
        return None
    sensitive = request.method in STATE_CHANGING or _is_websocket(request)
    origin = request.headers.get(hdrs.ORIGIN)
    host = request.headers.get(hdrs.HOST, "")
    # ComfyUI refuses any foreign Origin while on loopback; beyond loopback only state changes.
    if origin is not None and (sensitive or policy.loopback_only) and not _same_origin(origin, host, request.scheme):
        return refuse(
            403,
            "cross_origin",
            f"{request.method} {request.path} from Origin '{origin}' refused: it does not match Host '{host}'. "
            "Pages from other sites may not control Loom; start it with --enable-cors-header ORIGIN to allow one.",
        )
    if sensitive and request.headers.get("Sec-Fetch-Site", "").lower() == "cross-site":
        return refuse(
            403,
            "cross_site",
            f"{request.method} {request.path} refused: the browser marked it cross-site (Sec-Fetch-Site).",
        )
    return None


def _check_body(policy: SecurityPolicy, request: web.Request) -> web.Response | None:
    length = request.content_length
    if length is not None and length > policy.max_body_bytes:
        return refuse(
            413,
            "request_too_large",
            f"request body of {length} bytes exceeds the limit of {policy.max_body_bytes} bytes "
            "(--max-upload-size, in MB)",
        )
    if request.method not in STATE_CHANGING or not request.body_exists:
        return None
    route_handler = getattr(request.match_info, "handler", None)
    if getattr(route_handler, BODY_KIND_ATTR, "json") == "multipart":
        return None
    raw = request.headers.get(hdrs.CONTENT_TYPE, "")
    mime = raw.split(";", 1)[0].strip().lower()
    if mime in JSON_TYPES or mime.endswith("+json"):
        return None
    if mime in SCRIPT_FALLBACK_TYPES and not _from_browser(request):
        return None
    return refuse(
        415,
        "unsupported_media_type",
        f"{request.method} {request.path} takes a JSON body sent as Content-Type: application/json; "
        f"got {raw or 'no Content-Type'!r}",
    )


def _add_cors(policy: SecurityPolicy, response: web.StreamResponse) -> None:
    assert policy.cors_origin is not None
    response.headers[hdrs.ACCESS_CONTROL_ALLOW_ORIGIN] = policy.cors_origin
    response.headers[hdrs.ACCESS_CONTROL_ALLOW_METHODS] = CORS_METHODS
    response.headers[hdrs.ACCESS_CONTROL_ALLOW_HEADERS] = CORS_HEADERS
    response.headers[hdrs.ACCESS_CONTROL_ALLOW_CREDENTIALS] = "true"


def security_middleware(policy: SecurityPolicy) -> Any:
    """One middleware applying the policy, in order: Host, Origin (or CORS), body size and type."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        refused = _check_host(policy, request)
        if refused is None and policy.cors_origin is not None and request.method == "OPTIONS":
            refused = web.Response(status=200)  # CORS preflight
        # Explicit `is None` chain: a Response is a (empty, hence falsy) mapping.
        if refused is None:
            refused = _check_origin(policy, request)
        if refused is None:
            refused = _check_body(policy, request)
        if refused is not None:
            if policy.cors_origin is not None:
                _add_cors(policy, refused)
            return refused
        if policy.cors_origin is None:
            return await handler(request)
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            _add_cors(policy, exc)
            raise
        if not response.prepared:  # websockets and streamed files have sent their headers already
            _add_cors(policy, response)
        return response

    return middleware


__all__ = [
    "SecurityPolicy",
    "accepts_multipart",
    "is_loopback_host",
    "refuse",
    "security_middleware",
]
