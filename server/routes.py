"""The route table (spec §1.1). Every API route is served at `/x` and at `/api/x` (spec §1.4); the
page, the static files and the extension files are served once.

ComfyUI declares the jobs routes as `/api/jobs`, so they also exist at `/api/api/jobs`; kept.
"""

from __future__ import annotations

from aiohttp import web

from server import handlers as h

API_ROUTES: tuple[tuple[str, str, h.Handler], ...] = (
    ("GET", "/ws", h.websocket),
    ("GET", "/prompt", h.get_prompt),
    ("POST", "/prompt", h.post_prompt),
    ("GET", "/queue", h.get_queue),
    ("POST", "/queue", h.post_queue),
    ("POST", "/interrupt", h.post_interrupt),
    ("POST", "/free", h.post_free),
    ("GET", "/history", h.get_history),
    ("GET", "/history/{prompt_id}", h.get_history_item),
    ("POST", "/history", h.post_history),
    ("GET", "/api/jobs", h.get_jobs),
    ("GET", "/api/jobs/{job_id}", h.get_job),
    ("GET", "/object_info", h.get_object_info),
    ("GET", "/object_info/{node_class}", h.get_object_info_one),
    ("GET", "/system_stats", h.get_system_stats),
    ("GET", "/features", h.get_features),
    ("GET", "/embeddings", h.get_embeddings),
    ("GET", "/models", h.get_models),
    ("GET", "/models/{folder}", h.get_models_folder),
    ("GET", "/view", h.view),
    ("GET", "/extensions", h.get_extensions),
)

# Not mirrored under /api. The catch-all for web/ files comes last so it never shadows an API route.
STATIC_ROUTES: tuple[tuple[str, str, h.Handler], ...] = (
    ("GET", "/", h.index),
    ("GET", "/extensions/{pack}/{path:.+}", h.extension_file),
    ("GET", "/{path:.+}", h.web_file),
)


def setup_routes(app: web.Application) -> None:
    for method, path, handler in API_ROUTES:
        app.router.add_route(method, path, handler)
        app.router.add_route(method, "/api" + path, handler)
    for method, path, handler in STATIC_ROUTES:
        app.router.add_route(method, path, handler)


__all__ = ["API_ROUTES", "STATIC_ROUTES", "setup_routes"]
