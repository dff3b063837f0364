"""ComfyUI's `PromptServer.instance` for custom node packages: routes and websocket messages.

Packages written for ComfyUI do::

    from server import PromptServer

    @PromptServer.instance.routes.get("/my_pack/status")
    async def status(request): ...

    PromptServer.instance.send_sync("my_pack.progress", {"done": 3}, sid)

Loom's `server` package offers the same names (server/__init__.py loads this module on first use).
Packages are imported after the app has started (on the node-loading thread), when aiohttp no
longer accepts routes, so routes added to `PromptServer.instance.routes` are not registered in the
app's router: a catch-all route at the end of the table dispatches to them. They therefore pass
through the same middlewares as every other route -- Host and Origin checks, the token, body
rules (any content type, with same-origin proof from browsers) and JSON errors -- and are reachable
under `/api` too. A built-in route of the same path wins. What is not supported: adding routes or
sub-applications to `PromptServer.instance.app` directly (the router is frozen by then; such a
package fails to load, with the reason in its report).
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

from aiohttp import web
from aiohttp.web_urldispatcher import UrlDispatcher

from server.protocol import Outgoing
from server.security import accepts_any_body

log = logging.getLogger(__name__)


class PromptServer:
    """The subset of ComfyUI's PromptServer that custom node packages use."""

    instance: ClassVar[PromptServer | None] = None

    def __init__(self, app: web.Application, publisher: Any) -> None:
        self.app = app
        self.routes = web.RouteTableDef()
        self.publisher = publisher
        self._router: UrlDispatcher | None = None
        self._router_size = -1
        PromptServer.instance = self

    @property
    def client_id(self) -> str | None:
        """The client_id of the prompt running now (packs use it to target their messages)."""
        running = getattr(self.publisher, "running", None)
        return running[1] if running else None

    @property
    def last_node_id(self) -> str | None:
        return getattr(self.publisher, "last_node", None)

    def send_sync(self, event: str, data: Any, sid: str | None = None) -> None:
        """A JSON message `{type: event, data}` to one client (`sid`) or to everyone; any thread."""
        self.publisher.send(Outgoing(event, data, True), sid)

    async def send_json(self, event: str, data: Any, sid: str | None = None) -> None:
        self.send_sync(event, data, sid)

    def _dispatcher(self) -> UrlDispatcher:
        # Rebuilt when packages added routes since the last request (they load on another thread).
        if self._router is None or self._router_size != len(self.routes):
            router = UrlDispatcher()
            for route in list(self.routes):
                if isinstance(route, web.RouteDef):
                    route.register(router)
            self._router, self._router_size = router, len(self.routes)
        return self._router

    async def resolve(self, request: web.Request) -> Any:
        """The match of a package route for this request (also with `/api` removed), or None."""
        router = self._dispatcher()
        paths = [request.rel_url]
        if request.path.startswith("/api/"):
            paths.append(request.rel_url.with_path(request.path[4:]))
        for url in paths:
            match = await router.resolve(request.clone(rel_url=url))
            if match.http_exception is None:
                return match
        return None


def add_prompt_server(app: web.Application, publisher: Any) -> PromptServer:
    server = PromptServer(app, publisher)
    app[PROMPT_SERVER] = server
    return server


PROMPT_SERVER = web.AppKey("loom_prompt_server", PromptServer)


@accepts_any_body
async def package_route(request: web.Request) -> web.StreamResponse:
    """The catch-all: a package route if one matches, else 404 (or the web file, for GET, by the
    caller: server.handlers.web_file tries this first)."""
    response = await dispatch(request)
    if response is None:
        raise web.HTTPNotFound(text=f"no route {request.method} {request.path}")
    return response


async def dispatch(request: web.Request) -> web.StreamResponse | None:
    server = request.app.get(PROMPT_SERVER)
    if server is None or not len(server.routes):
        return None
    match = await server.resolve(request)
    if match is None:
        return None
    match.add_app(request.app)
    match.freeze()
    # A copy carrying the package route's match (`match_info` is cached on the original request);
    # setting _match_info is what aiohttp's own dispatch does before calling a handler.
    routed = request.clone()
    routed._match_info = match
    return await match.handler(routed)


__all__ = ["PROMPT_SERVER", "PromptServer", "add_prompt_server", "dispatch", "package_route"]
