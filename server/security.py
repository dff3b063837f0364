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
- A token (server/auth.py) on every request when the server can be reached beyond loopback.
- `Origin: null` (sandboxed frames, file:// pages, some redirects) is refused on every request:
  no page of ours ever sends it.

Behind a reverse proxy: run Loom on loopback, pass `--allowed-hosts loom.example.com` (the public
name the proxy forwards in the Host header -- nginx: `proxy_set_header Host $host;`, plus the
`Upgrade`/`Connection` headers for /ws), and a token (generated if not given, since the proxy makes
Loom reachable from beyond this machine). A TLS-terminating proxy is fine: when the Host header
carries no port, an Origin on port 80 or 443 of that name counts as same-origin.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import hdrs, web
from yarl import URL

from server import auth

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
JSON_TYPES = frozenset({"application/json"})
SCRIPT_FALLBACK_TYPES = frozenset({"", "application/x-www-form-urlencoded"})
BROWSER_HEADERS = ("Origin", "Sec-Fetch-Site", "Sec-Fetch-Mode", "Sec-Fetch-Dest")
CORS_METHODS = "POST, GET, DELETE, PUT, OPTIONS, PATCH"
CORS_HEADERS = "Content-Type, Authorization"
BODY_KIND_ATTR = "loom_body"


def accepts_any_body(handler: Handler) -> Handler:
    """Mark a handler that stores the body as it is (user data, settings): any content type, because
    editors post JSON text without a Content-Type (fetch then says text/plain). A browser must still
    show that the request is same-origin -- a matching Origin (checked before) or
    `Sec-Fetch-Site: same-origin` -- so a cross-site form post cannot reach it."""
    setattr(handler, BODY_KIND_ATTR, "raw")
    return handler


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
    token: str | None = None
    """Every request must present it (server/auth.py); None = no authentication."""
    allowed_hosts: frozenset[str] = field(default_factory=frozenset)
    """Host names accepted besides loopback ones while loopback_only (a reverse proxy's name)."""

    @classmethod
    def for_listen(
        cls,
        listen: str | Iterable[str],
        cors_origin: str | None,
        max_upload_mb: float,
        *,
        token: str | None = None,
        allowed_hosts: Iterable[str] = (),
    ) -> SecurityPolicy:
        hosts = listen.split(",") if isinstance(listen, str) else list(listen)
        hosts = [h.strip() for h in hosts if h.strip()]
        return cls(
            loopback_only=bool(hosts) and all(is_loopback_host(h) for h in hosts),
            cors_origin=cors_origin,
            max_body_bytes=int(max_upload_mb * 1024 * 1024),
            token=token or None,
            allowed_hosts=frozenset(_split_host(h)[0] for h in allowed_hosts if h.strip()),
        )


def token_required(listen_hosts: Iterable[str], allowed_hosts: Iterable[str] = ()) -> bool:
    """True when clients other than this machine's can reach the server: a non-loopback listen
    address, or a non-loopback name it answers to (a reverse proxy forwarding to it)."""
    hosts = [host.strip() for host in listen_hosts if host.strip()]
    return any(not is_loopback_host(host) for host in hosts) or any(
        not is_loopback_host(name) for name in allowed_hosts if name.strip()
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
    # isascii/len: "²" is a digit to isdigit() and 5,000 digits make int() raise; ports have 1-5.
    valid = port.isascii() and port.isdigit() and len(port) <= 5
    return name.rstrip(".").lower(), int(port) if valid else None


def _same_origin(origin: str, host: str, scheme: str) -> bool:
    try:
        url = URL(origin)
    except ValueError:
        return False
    if origin == "null" or not url.host:
        return False
    name, port = _split_host(host)
    if url.host.rstrip(".").lower() != name:
        return False
    if port is None:
        # No port in Host: the default one of whichever scheme the browser used. A TLS-terminating
        # proxy talks plain HTTP to us, so the page's https origin (port 443) must still match.
        return url.port in (80, 443)
    return url.port == port


def _is_websocket(request: web.Request) -> bool:
    return request.headers.get(hdrs.UPGRADE, "").lower() == "websocket"


def _from_browser(request: web.Request) -> bool:
    return any(name in request.headers for name in BROWSER_HEADERS)


def _check_host(policy: SecurityPolicy, request: web.Request) -> web.Response | None:
    host = request.headers.get(hdrs.HOST)
    if not policy.loopback_only or host is None:
        return None
    name, _ = _split_host(host)
    if is_loopback_host(name) or name in policy.allowed_hosts:
        return None
    return refuse(
        403,
        "forbidden_host",
        f"Host '{host}' is not allowed: Loom listens on loopback only and answers to localhost, 127.0.0.1 "
        "and [::1] (any other name may be a DNS-rebinding attack). To reach it under another name, start "
        "it with --listen on that interface, or name it with --allowed-hosts (behind a reverse proxy).",
    )


def _check_origin(policy: SecurityPolicy, request: web.Request) -> web.Response | None:
    if policy.cors_origin is not None:
        return None
    sensitive = request.method in STATE_CHANGING or _is_websocket(request)
    origin = request.headers.get(hdrs.ORIGIN)
    host = request.headers.get(hdrs.HOST, "")
    if origin is not None and origin.strip().lower() == "null":
        return refuse(
            403,
            "cross_origin",
            f"{request.method} {request.path} with 'Origin: null' refused: it comes from a sandboxed frame, a "
            "local file or a redirect, never from Loom's own page.",
        )
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
    kind = getattr(route_handler, BODY_KIND_ATTR, "json")
    if kind == "multipart":
        return None
    if kind == "raw":
        site = request.headers.get("Sec-Fetch-Site", "").lower()
        if not _from_browser(request) or hdrs.ORIGIN in request.headers or site in ("same-origin", "none"):
            return None
        return refuse(
            403,
            "cross_site",
            f"{request.method} {request.path} refused: a browser request must carry a same-origin Origin or "
            "Sec-Fetch-Site header",
        )
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


def _check_token(policy: SecurityPolicy, request: web.Request) -> web.Response | None:
    if policy.token is None:
        return None
    given, _ = auth.presented(request)
    if auth.matches(policy.token, given):
        return None
    log.warning(
        "refused %s %s from %s: %s token", request.method, request.path, request.remote, "wrong" if given else "no"
    )
    return auth.unauthorized(request, wrong=given is not None)


def _token_came_by_url(policy: SecurityPolicy, request: web.Request) -> bool:
    return policy.token is not None and auth.presented(request)[1] == "query"


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
            refused = _check_token(policy, request)
        if refused is None:
            refused = _check_origin(policy, request)
        if refused is None:
            refused = _check_body(policy, request)
        if refused is not None:
            if policy.cors_origin is not None:
                _add_cors(policy, refused)
            return refused
        by_url = _token_came_by_url(policy, request)
        if by_url and request.method == "GET" and request.path == "/" and not _is_websocket(request):
            assert policy.token is not None
            return auth.page_redirect(request, policy.token)
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            if policy.cors_origin is not None:
                _add_cors(policy, exc)
            raise
        if not response.prepared:  # websockets and streamed files have sent their headers already
            if policy.cors_origin is not None:
                _add_cors(policy, response)
            if by_url:
                auth.set_cookie(response, auth.presented(request)[0] or "", request.secure)
        return response

    return middleware


__all__ = [
    "SecurityPolicy",
    "token_required",
    "accepts_any_body",
    "accepts_multipart",
    "is_loopback_host",
    "refuse",
    "security_middleware",
]
