"""The route table (spec §1.1, §1.3). Every API route is served at `/x` and at `/api/x` (spec §1.4);
the /internal routes, the page, the static files and the extension files are served once.

ComfyUI declares the jobs routes as `/api/jobs`, so they also exist at `/api/api/jobs`; kept.
Loom's own queue routes (move, requeue, cancel) are described in server/queue_control.py.
"""

from __future__ import annotations

from aiohttp import web

from server import extensions, internal, openapi, packages, queue_control, settings, uploads, userdata
from server import handlers as h

API_ROUTES: tuple[tuple[str, str, h.Handler], ...] = (
    ("GET", "/ws", h.websocket),
    ("GET", "/prompt", h.get_prompt),
    ("POST", "/prompt", h.post_prompt),
    ("GET", "/queue", h.get_queue),
    ("POST", "/queue", h.post_queue),
    ("POST", "/queue/{prompt_id}/move", queue_control.post_queue_move),
    ("POST", "/interrupt", h.post_interrupt),
    ("POST", "/free", h.post_free),
    ("GET", "/history", h.get_history),
    ("GET", "/history/{prompt_id}", h.get_history_item),
    ("POST", "/history", h.post_history),
    ("GET", "/api/jobs", h.get_jobs),
    ("GET", "/api/jobs/{job_id}", h.get_job),
    ("POST", "/api/jobs/{job_id}/requeue", queue_control.post_job_requeue),
    ("POST", "/api/jobs/{job_id}/cancel", queue_control.post_job_cancel),
    ("GET", "/object_info", h.get_object_info),
    ("GET", "/object_info/{node_class}", h.get_object_info_one),
    ("GET", "/system_stats", h.get_system_stats),
    ("GET", "/features", h.get_features),
    ("GET", "/embeddings", h.get_embeddings),
    ("GET", "/models", h.get_models),
    ("GET", "/models/{folder}", h.get_models_folder),
    ("GET", "/view", h.view),
    ("GET", "/view_metadata/{folder}", internal.view_metadata),
    ("POST", "/upload/image", uploads.upload_image),
    ("POST", "/upload/mask", uploads.upload_mask),
    ("GET", "/extensions", h.get_extensions),
    ("GET", "/users", userdata.get_users),
    ("POST", "/users", userdata.post_users),
    ("GET", "/userdata", userdata.list_userdata),
    ("GET", "/v2/userdata", userdata.list_userdata_v2),
    ("GET", "/userdata/{file}", userdata.get_userdata),
    ("POST", "/userdata/{file}", userdata.post_userdata),
    ("DELETE", "/userdata/{file}", userdata.delete_userdata),
    ("POST", "/userdata/{file}/move/{dest}", userdata.move_userdata),
    ("GET", "/settings", settings.get_settings),
    ("POST", "/settings", settings.post_settings),
    ("GET", "/settings/{id}", settings.get_setting),
    ("POST", "/settings/{id}", settings.post_setting),
    ("GET", "/workflow_templates", packages.get_workflow_templates),
    ("GET", "/workflow_templates/{pack}/{file}", packages.get_workflow_template_file),
    ("GET", "/i18n", packages.get_i18n),
    ("GET", "/openapi.json", openapi.get_openapi),  # the description of every route (server/openapi.py)
)

# ComfyUI's internal sub-application: served once, at /internal/... only.
INTERNAL_ROUTES: tuple[tuple[str, str, h.Handler], ...] = (
    ("GET", "/internal/folder_paths", internal.get_folder_paths),
    ("GET", "/internal/files/{type}", internal.get_files),
)

# Not mirrored under /api. The catch-all for web/ files comes last so it never shadows an API route.
STATIC_ROUTES: tuple[tuple[str, str, h.Handler], ...] = (
    ("GET", "/", h.index),
    ("GET", "/extensions/{pack}/{path:.+}", h.extension_file),
    ("GET", "/{path:.+}", h.web_file),
    ("*", "/{path:.+}", extensions.package_route),  # other methods: custom packages' routes
)


def setup_routes(app: web.Application) -> None:
    for method, path, handler in API_ROUTES:
        app.router.add_route(method, path, handler)
        app.router.add_route(method, "/api" + path, handler)
    for method, path, handler in INTERNAL_ROUTES:
        app.router.add_route(method, path, handler)
    for method, path, handler in STATIC_ROUTES:
        app.router.add_route(method, path, handler)


__all__ = ["API_ROUTES", "INTERNAL_ROUTES", "STATIC_ROUTES", "setup_routes"]
