"""The OpenAPI 3 description of every HTTP route (served at GET /openapi.json).

Written by hand, as data: the document is what clients and fuzzers (schemathesis) rely on, so it is
not derived from the route table -- tests/server/test_server_openapi.py compares the two both ways,
and a route added without a description here fails that test.

Layout follows server/routes.py: every operation of `API_OPERATIONS` is served at its path and again
under `/api` (spec §1.4); `/internal/...` and the static routes are served once. The catch-all
`/{path}` serves web files on GET and custom packages' routes (PromptServer.instance.routes) on
every method, which OpenAPI can only list as the usual methods.

Request schemas are strict enough to fuzz against (types, enums, bounds), and no stricter than the
handlers: a value the server accepts is valid here.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from server.app import LOOM_VERSION

OPENAPI_VERSION = "3.0.3"
JSON = "application/json"
Operation = dict[str, Any]

# ---------------------------------------------------------------------- schemas

ID = {"type": "string", "minLength": 1}
ID_LIST = {"type": "array", "items": {"type": "string"}}
LINK = {
    "type": "array",
    "description": "[source node id, output index]: a link to another node's output",
    "minItems": 2,
    "maxItems": 2,
    "items": {"oneOf": [{"type": "string"}, {"type": "integer", "minimum": 0}]},
}

SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["type", "message"],
        "properties": {
            "type": {"type": "string"},
            "message": {"type": "string"},
            "details": {"type": "string"},
            "extra_info": {"type": "object"},
        },
    },
    "ErrorResponse": {
        "type": "object",
        "required": ["error"],
        "properties": {"error": {"$ref": "#/components/schemas/Error"}},
    },
    "NodeErrors": {
        "type": "object",
        "description": "node id -> {errors: [Error with extra_info.input_name], dependent_outputs, class_type}",
        "additionalProperties": {
            "type": "object",
            "required": ["errors", "class_type"],
            "properties": {
                "errors": {"type": "array", "items": {"$ref": "#/components/schemas/Error"}},
                "dependent_outputs": {"type": "array", "items": {"type": "string"}},
                "class_type": {"type": "string", "nullable": True},
            },
        },
    },
    "PromptError": {
        "type": "object",
        "required": ["error", "node_errors"],
        "properties": {
            "error": {"$ref": "#/components/schemas/Error"},
            "node_errors": {"$ref": "#/components/schemas/NodeErrors"},
        },
    },
    "InputValue": {
        "description": "A constant (number, string, boolean, {'__value__': list}) or a link",
        "oneOf": [
            LINK,
            {"type": "string"},
            {"type": "number"},
            {"type": "boolean"},
            {"type": "object", "properties": {"__value__": {"type": "array", "items": {}}}},
        ],
    },
    "Node": {
        "type": "object",
        "required": ["class_type", "inputs"],
        "properties": {
            "class_type": {"type": "string", "description": "a key of GET /object_info"},
            "inputs": {"type": "object", "additionalProperties": {"$ref": "#/components/schemas/InputValue"}},
            "_meta": {"type": "object", "properties": {"title": {"type": "string"}}},
        },
    },
    "Prompt": {
        "type": "object",
        "description": "An API-format prompt: node id -> node",
        "additionalProperties": {"$ref": "#/components/schemas/Node"},
    },
    "PromptRequest": {
        "type": "object",
        "required": ["prompt"],
        "properties": {
            "prompt": {"$ref": "#/components/schemas/Prompt"},
            "client_id": {"type": "string", "description": "the websocket clientId that gets this prompt's events"},
            "prompt_id": ID,
            "number": {"type": "number", "description": "queue position: lower runs first"},
            "front": {"type": "boolean", "description": "queue before every pending prompt"},
            "extra_data": {"type": "object", "description": "extra_pnginfo, auth tokens for API nodes ..."},
            "partial_execution_targets": {"type": "array", "items": {"type": "string"}},
        },
    },
    "PromptAccepted": {
        "type": "object",
        "required": ["prompt_id", "number", "node_errors"],
        "properties": {
            "prompt_id": {"type": "string"},
            "number": {"type": "number"},
            "node_errors": {"$ref": "#/components/schemas/NodeErrors"},
        },
    },
    "QueueRequest": {
        "type": "object",
        "properties": {
            "clear": {"type": "boolean", "description": "drop every pending prompt"},
            "delete": {**ID_LIST, "description": "pending prompt ids to cancel"},
            "pause": {"type": "boolean"},
            "resume": {"type": "boolean"},
        },
    },
    "HistoryRequest": {
        "type": "object",
        "properties": {"clear": {"type": "boolean"}, "delete": ID_LIST},
    },
    "InterruptRequest": {
        "type": "object",
        "properties": {"prompt_id": {"type": "string", "description": "interrupt only if this prompt runs"}},
    },
    "FreeRequest": {
        "type": "object",
        "properties": {"unload_models": {"type": "boolean"}, "free_memory": {"type": "boolean"}},
    },
    "MoveRequest": {
        "type": "object",
        "description": "exactly one of index, before, after",
        "minProperties": 1,
        "maxProperties": 1,
        "properties": {"index": {"type": "integer"}, "before": ID, "after": ID},
    },
    "UploadForm": {
        "type": "object",
        "required": ["image"],
        "properties": {
            "image": {"type": "string", "format": "binary", "description": "PNG, JPEG, WebP, GIF, BMP or TIFF"},
            "type": {"type": "string", "enum": ["input", "temp"]},
            "subfolder": {"type": "string"},
            "overwrite": {"type": "string", "enum": ["true", "false", "1", "0"]},
        },
    },
    "MaskUploadForm": {
        "type": "object",
        "required": ["image", "original_ref"],
        "properties": {
            "image": {"type": "string", "format": "binary"},
            "original_ref": {"type": "string", "description": "JSON {filename, subfolder, type} of the image"},
            "type": {"type": "string", "enum": ["input", "temp"]},
            "subfolder": {"type": "string"},
            "overwrite": {"type": "string", "enum": ["true", "false", "1", "0"]},
        },
    },
    "UploadResult": {
        "type": "object",
        "required": ["name", "subfolder", "type"],
        "properties": {"name": {"type": "string"}, "subfolder": {"type": "string"}, "type": {"type": "string"}},
    },
    "UserRequest": {"type": "object", "required": ["username"], "properties": {"username": {"type": "string"}}},
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


# ---------------------------------------------------------------------- operation builders


def _param(where: str, name: str, schema: Mapping[str, Any], description: str, required: bool = False) -> dict:
    return {
        "name": name,
        "in": where,
        "required": required or where == "path",
        "description": description,
        "schema": dict(schema),
    }


def path(name: str, description: str) -> dict:
    return _param("path", name, {"type": "string", "minLength": 1}, description, True)


def query(name: str, schema: Mapping[str, Any], description: str, required: bool = False) -> dict:
    return _param("query", name, schema, description, required)


BOOL_QUERY = {"type": "string", "enum": ["true", "false", "1", "0"]}
ERRORS = {
    "400": {"description": "bad request", "content": {JSON: {"schema": _ref("ErrorResponse")}}},
    "403": {"description": "refused (origin, host, path outside its folder)"},
    "404": {"description": "not found"},
}


def op(
    summary: str,
    tag: str,
    *,
    params: tuple[dict, ...] = (),
    body: Mapping[str, Any] | None = None,
    ok: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Operation:
    """One operation: JSON 200 answer (schema `ok`, or any), the shared error answers."""
    content = {JSON: {"schema": dict(ok) if ok is not None else {}}}
    operation: Operation = {
        "summary": summary,
        "tags": [tag],
        "parameters": list(params),
        "responses": {"200": {"description": "success", "content": content}, **ERRORS},
    }
    if body is not None:
        operation["requestBody"] = dict(body)
    operation.update(extra or {})
    return operation


def json_body(schema: Mapping[str, Any], required: bool = True) -> dict:
    return {"required": required, "content": {JSON: {"schema": dict(schema)}}}


def raw_body() -> dict:
    return {
        "required": False,
        "description": "stored as sent (any content type; browsers must prove same-origin)",
        "content": {
            JSON: {"schema": {}},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    }


def multipart(schema: str) -> dict:
    return {"required": True, "content": {"multipart/form-data": {"schema": _ref(schema)}}}


def file_answer(summary: str, tag: str, params: tuple[dict, ...]) -> Operation:
    operation = op(summary, tag, params=params)
    operation["responses"]["200"] = {
        "description": "the file (active types such as HTML or SVG are sent as application/octet-stream)",
        "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}},
    }
    return operation


def empty_ok(operation: Operation) -> Operation:
    operation["responses"]["200"] = {"description": "done (empty body)"}
    return operation


# ---------------------------------------------------------------------- operations

PROMPT_ID = path("prompt_id", "a prompt id")
JOB_ID = path("job_id", "a prompt id")
USER_FILE = path("file", "a path relative to the user folder; subfolders written with %2F")
VIEW_PARAMS = (
    query("filename", {"type": "string"}, "file name; 'name [input]' picks the folder", required=True),
    query("type", {"type": "string", "enum": ["output", "input", "temp"]}, "the folder (default output)"),
    query("subfolder", {"type": "string"}, "a folder inside it"),
    query("preview", {"type": "string", "pattern": "^(webp|jpeg)(;[0-9]{1,3})?$"}, "re-encode: webp;90, jpeg;80"),
    query("channel", {"type": "string", "enum": ["rgba", "rgb", "a"]}, "channels to keep"),
)
HISTORY_PAGE = (
    query("max_items", {"type": "integer", "minimum": 0}, "at most this many, newest first"),
    query("offset", {"type": "integer", "minimum": 0}, "skip this many"),
)
JOB_QUERY = (
    query("status", {"type": "string"}, "comma-separated statuses: pending, in_progress, completed, failed ..."),
    query("workflow_id", {"type": "string"}, "jobs of one workflow"),
    query("sort_by", {"type": "string", "enum": ["created_at", "execution_duration"]}, "sort key"),
    query("sort_order", {"type": "string", "enum": ["asc", "desc"]}, "sort order"),
    query("limit", {"type": "integer", "minimum": 1}, "page size"),
    query("offset", {"type": "integer", "minimum": 0}, "page start"),
)
USERDATA_LIST = (
    query("dir", {"type": "string", "minLength": 1}, "a folder in the user data", required=True),
    query("recurse", BOOL_QUERY, "include subfolders"),
    query("full_info", BOOL_QUERY, "size and times per file"),
    query("split", BOOL_QUERY, "path parts as lists"),
)
OVERWRITE = query("overwrite", BOOL_QUERY, "replace an existing file (default true)")
FULL_INFO = query("full_info", BOOL_QUERY, "answer with size and times")

API_OPERATIONS: dict[tuple[str, str], Operation] = {
    ("GET", "/ws"): op(
        "The event websocket (upgrade); the first message is `status` with this client's sid",
        "websocket",
        params=(query("clientId", {"type": "string"}, "reuse a client id (receive your prompts' events)"),),
        extra={"responses": {"101": {"description": "switching protocols"}, **ERRORS}},
    ),
    ("GET", "/prompt"): op("Queue size: {exec_info: {queue_remaining}}", "queue"),
    ("POST", "/prompt"): op(
        "Validate and queue a prompt",
        "queue",
        body=json_body(_ref("PromptRequest")),
        ok=_ref("PromptAccepted"),
        extra={
            "responses": {
                "200": {"description": "queued", "content": {JSON: {"schema": _ref("PromptAccepted")}}},
                "400": {"description": "invalid prompt", "content": {JSON: {"schema": _ref("PromptError")}}},
                "413": {"description": "over --max-prompt-size", "content": {JSON: {"schema": _ref("PromptError")}}},
                "403": ERRORS["403"],
                "415": {"description": "not sent as application/json"},
            }
        },
    ),
    ("GET", "/queue"): op("Running and pending prompts (ComfyUI's tuples)", "queue"),
    ("POST", "/queue"): empty_ok(op("Clear, delete, pause or resume", "queue", body=json_body(_ref("QueueRequest")))),
    ("POST", "/queue/{prompt_id}/move"): op(
        "Reorder a pending prompt", "queue", params=(PROMPT_ID,), body=json_body(_ref("MoveRequest"))
    ),
    ("POST", "/interrupt"): empty_ok(
        op("Interrupt the running prompt", "queue", body=json_body(_ref("InterruptRequest"), required=False))
    ),
    ("POST", "/free"): empty_ok(op("Unload models, free memory", "system", body=json_body(_ref("FreeRequest")))),
    ("GET", "/history"): op("Finished prompts, newest first", "history", params=HISTORY_PAGE),
    ("GET", "/history/{prompt_id}"): op("One finished prompt ({} if unknown)", "history", params=(PROMPT_ID,)),
    ("POST", "/history"): empty_ok(op("Clear or delete history", "history", body=json_body(_ref("HistoryRequest")))),
    ("GET", "/api/jobs"): op("Jobs of every state, paged", "jobs", params=JOB_QUERY),
    ("GET", "/api/jobs/{job_id}"): op("One job", "jobs", params=(JOB_ID,)),
    ("POST", "/api/jobs/{job_id}/requeue"): op("Queue a finished job again", "jobs", params=(JOB_ID,)),
    ("POST", "/api/jobs/{job_id}/cancel"): op("Cancel (pending) or interrupt (running)", "jobs", params=(JOB_ID,)),
    ("GET", "/object_info"): op("Every node class's description", "nodes"),
    ("GET", "/object_info/{node_class}"): op(
        "One node class ({} if unknown)", "nodes", params=(path("node_class", "a class_type"),)
    ),
    ("GET", "/system_stats"): op("Versions, RAM, devices", "system"),
    ("GET", "/features"): op("Server feature flags", "system"),
    ("GET", "/embeddings"): op("Embedding names", "models"),
    ("GET", "/models"): op("Model folder kinds", "models"),
    ("GET", "/models/{folder}"): op("Files of one model kind", "models", params=(path("folder", "a model kind"),)),
    ("GET", "/view"): file_answer("A file of output/, input/ or temp/", "files", VIEW_PARAMS),
    ("GET", "/view_metadata/{folder}"): op(
        "The __metadata__ of a safetensors model file",
        "models",
        params=(path("folder", "a model kind"), query("filename", {"type": "string"}, "x.safetensors", True)),
    ),
    ("POST", "/upload/image"): op(
        "Upload an image to input/ or temp/", "files", body=multipart("UploadForm"), ok=_ref("UploadResult")
    ),
    ("POST", "/upload/mask"): op(
        "Upload a mask onto an uploaded image", "files", body=multipart("MaskUploadForm"), ok=_ref("UploadResult")
    ),
    ("GET", "/extensions"): op("Editor extension script URLs", "editor"),
    ("GET", "/users"): op("Users (multi-user) or the storage kind", "users"),
    ("POST", "/users"): op("Create a user (multi-user mode)", "users", body=json_body(_ref("UserRequest"))),
    ("GET", "/userdata"): op("Files of a user data folder", "userdata", params=USERDATA_LIST),
    ("GET", "/v2/userdata"): op(
        "Entries of a user data folder",
        "userdata",
        params=(query("path", {"type": "string"}, "a folder in the user data (default: its root)"),),
    ),
    ("GET", "/userdata/{file}"): file_answer("A user data file", "userdata", (USER_FILE,)),
    ("POST", "/userdata/{file}"): op(
        "Store a user data file", "userdata", params=(USER_FILE, OVERWRITE, FULL_INFO), body=raw_body()
    ),
    ("DELETE", "/userdata/{file}"): op(
        "Delete a user data file",
        "userdata",
        params=(USER_FILE,),
        extra={"responses": {"204": {"description": "deleted"}, **ERRORS}},
    ),
    ("POST", "/userdata/{file}/move/{dest}"): op(
        "Move or rename a user data file",
        "userdata",
        params=(USER_FILE, path("dest", "the new relative path"), OVERWRITE, FULL_INFO),
    ),
    ("GET", "/settings"): op("The user's editor settings", "settings"),
    ("POST", "/settings"): empty_ok(
        op("Merge settings", "settings", body=json_body({"type": "object", "additionalProperties": {}}))
    ),
    ("GET", "/settings/{id}"): op("One setting (null if unset)", "settings", params=(path("id", "a setting id"),)),
    ("POST", "/settings/{id}"): empty_ok(
        op("Set one setting", "settings", params=(path("id", "a setting id"),), body=json_body({}, required=False))
    ),
    ("GET", "/workflow_templates"): op("Packages' example workflows", "editor"),
    ("GET", "/workflow_templates/{pack}/{file}"): file_answer(
        "One example workflow", "editor", (path("pack", "a package name"), path("file", "a workflow file"))
    ),
    ("GET", "/i18n"): op("Packages' translations", "editor"),
    ("GET", "/openapi.json"): op("This document", "system"),
}

INTERNAL_OPERATIONS: dict[tuple[str, str], Operation] = {
    ("GET", "/internal/folder_paths"): op("Model search folders (machine paths)", "internal"),
    ("GET", "/internal/files/{type}"): op(
        "File names in input/, output/ or temp/, newest first",
        "internal",
        params=({**path("type", "the folder"), "schema": {"type": "string", "enum": ["input", "output", "temp"]}},),
    ),
}

PACKAGE_ROUTE = "custom packages' routes (PromptServer.instance.routes), else 404"
STATIC_OPERATIONS: dict[tuple[str, str], Operation] = {
    ("GET", "/"): file_answer("The editor page", "static", ()),
    ("GET", "/extensions/{pack}/{path}"): file_answer(
        "A package's web file", "static", (path("pack", "a package"), path("path", "a file"))
    ),
    ("GET", "/{path}"): file_answer(f"A file of web/, else {PACKAGE_ROUTE}", "static", (path("path", "any"),)),
    **{
        (method, "/{path}"): op(PACKAGE_ROUTE, "static", params=(path("path", "any"),), body=raw_body())
        for method in ("POST", "PUT", "PATCH", "DELETE")
    },
}

CATCH_ALL_METHODS = ("POST", "PUT", "PATCH", "DELETE")
"""What the table's `*` route on `/{path}` is described as."""


def _operation_id(method: str, route: str) -> str:
    words = [part.strip("{}").replace(".", "_") for part in route.split("/") if part]
    return method.lower() + "_" + ("_".join(words) or "root")


def build_document() -> dict[str, Any]:
    """The whole OpenAPI document (a fresh copy each call)."""
    paths: dict[str, dict[str, Any]] = {}

    def add(method: str, route: str, operation: Operation) -> None:
        entry = copy.deepcopy(operation)
        entry["operationId"] = _operation_id(method, route)
        paths.setdefault(route, {})[method.lower()] = entry

    for (method, route), operation in API_OPERATIONS.items():
        add(method, route, operation)
        add(method, "/api" + route, operation)
    for table in (INTERNAL_OPERATIONS, STATIC_OPERATIONS):
        for (method, route), operation in table.items():
            add(method, route, operation)
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "Loom",
            "version": LOOM_VERSION,
            "description": "ComfyUI-compatible HTTP API. Every API route is also served under /api. When Loom "
            "listens beyond loopback every request needs the access token (Bearer header, ?token= or cookie).",
        },
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {
            "schemas": copy.deepcopy(SCHEMAS),
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "query_token": {"type": "apiKey", "in": "query", "name": "token"},
                "cookie_token": {"type": "apiKey", "in": "cookie", "name": "loom_token"},
            },
        },
        "security": [{}, {"bearer": []}, {"query_token": []}, {"cookie_token": []}],
    }


_DOCUMENT: dict[str, Any] | None = None


async def get_openapi(request: web.Request) -> web.Response:
    global _DOCUMENT
    if _DOCUMENT is None:
        _DOCUMENT = build_document()
    return web.json_response(_DOCUMENT)


__all__ = [
    "API_OPERATIONS",
    "CATCH_ALL_METHODS",
    "INTERNAL_OPERATIONS",
    "STATIC_OPERATIONS",
    "build_document",
    "get_openapi",
]
