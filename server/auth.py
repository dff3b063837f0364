"""Token authentication: required whenever Loom can be reached from beyond this machine.

A server listening on a non-loopback address (or answering to extra Host names behind a reverse
proxy, `--allowed-hosts`) demands a token on every request, websocket included. `--auth-token`
(or $LOOM_AUTH_TOKEN) sets it; otherwise `serve()` generates one and logs the URL to open.

Clients present it as:
- `Authorization: Bearer <token>` (scripts, API clients);
- `?token=<token>` in the URL (the page, a websocket from a browser, which cannot set headers);
- the `loom_token` cookie, which Loom sets (HttpOnly, SameSite=Strict) when a URL carried a valid
  token, so the page's own requests and websocket work without repeating it. Opening `/?token=...`
  redirects to `/` so the token does not stay in the address bar or the browser history.

Tokens are compared in constant time and never logged or echoed.
"""

from __future__ import annotations

import hmac
import html
import secrets

from aiohttp import hdrs, web

TOKEN_COOKIE = "loom_token"
TOKEN_QUERY = "token"
REALM = 'Bearer realm="loom"'


def generate_token() -> str:
    return secrets.token_urlsafe(24)


def presented(request: web.Request) -> tuple[str | None, str]:
    """(token, where it came from: header | query | cookie | none)."""
    header = request.headers.get(hdrs.AUTHORIZATION, "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip(), "header"
    if TOKEN_QUERY in request.query:
        return request.query[TOKEN_QUERY], "query"
    cookie = request.cookies.get(TOKEN_COOKIE)
    if cookie:
        return cookie, "cookie"
    return None, "none"


def matches(expected: str, given: str | None) -> bool:
    return given is not None and hmac.compare_digest(expected.encode("utf-8"), given.encode("utf-8"))


def unauthorized(request: web.Request, wrong: bool) -> web.Response:
    what = "the token given is wrong" if wrong else "no token was given"
    message = (
        f"{request.method} {request.path} needs this server's access token ({what}). Send the header "
        "'Authorization: Bearer <token>', or open the page as /?token=<token>. The token is the --auth-token "
        "value, or the one Loom printed at start."
    )
    if request.method == "GET" and "text/html" in request.headers.get(hdrs.ACCEPT, ""):
        # A person opening the page in a browser gets a readable page, not a JSON error.
        return web.Response(
            text=_PAGE.format(message=html.escape(message)),
            status=401,
            content_type="text/html",
            headers={hdrs.WWW_AUTHENTICATE: REALM, "Cache-Control": "no-store"},
        )
    body = {"error": {"type": "unauthorized", "message": message, "details": "", "extra_info": {}}}
    return web.json_response(body, status=401, headers={hdrs.WWW_AUTHENTICATE: REALM})


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Loom: access token needed</title>
<style>body{{font:15px/1.5 system-ui,sans-serif;background:#1b1d22;color:#ddd;max-width:40rem;margin:3rem auto;padding:0 1rem}}
code{{background:#2a2d34;padding:0 .3rem;border-radius:3px}}</style></head>
<body><h1>This Loom server needs its access token</h1><p>{message}</p>
<p>Open this page as <code>/?token=&lt;token&gt;</code>; the browser then keeps it in a cookie.</p></body></html>
"""


def set_cookie(response: web.StreamResponse, token: str, secure: bool) -> None:
    # SameSite=Strict: another site's page can never make the browser send it (CSRF); HttpOnly:
    # scripts, including an extension's, cannot read it.
    response.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="Strict", secure=secure, path="/")


def page_redirect(request: web.Request, token: str) -> web.Response:
    """`GET /?token=...` -> 303 to the same URL without the token, setting the cookie."""
    query = {key: value for key, value in request.query.items() if key != TOKEN_QUERY}
    location = str(request.rel_url.with_query(query))
    response = web.Response(status=303, headers={hdrs.LOCATION: location, "Cache-Control": "no-store"})
    set_cookie(response, token, request.secure)
    return response


__all__ = [
    "TOKEN_COOKIE",
    "TOKEN_QUERY",
    "generate_token",
    "matches",
    "page_redirect",
    "presented",
    "set_cookie",
    "unauthorized",
]
