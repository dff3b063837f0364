"""HTTP handlers (spec §1): parse the request, call the store / catalog / worker, answer JSON.

Thin on purpose: the queue and history logic is execution.queue.JobStore, validation is
execution.validate, node descriptions come from the registry. Errors become JSON 4xx answers in
`error_middleware`: a bad body is a 400 that says what was wrong, never a 500.
"""

from __future__ import annotations

import asyncio
import io
import logging
import math
import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

from aiohttp import hdrs, web

from core.paths import contained
from execution.queue import JobStore
from execution.store import MAX_QUEUE_NUMBER, DuplicatePromptError, InvalidQueryError, QueueError
from execution.validate import validate_prompt_async
from server.app import CATALOG, HUB, LOOM_VERSION, SETTINGS, STORE, WORKER, ServiceUnavailable
from server.extensions import dispatch
from server.http import (  # noqa: F401 - error_middleware and BadRequest are re-exported (older import path)
    NO_CACHE,
    BadRequest,
    error_middleware,
    error_object,
    id_list,
    json_dumps,
    query_int,
    read_json,
    read_object,
    redact_value,
    safe_headers,
)
from server.limits import LIMIT_ERROR, LimitViolation, body_too_large, check_prompt
from server.ws import exec_info

log = logging.getLogger(__name__)

VIEW_TYPES_HINT = "output, input or temp"


# ---------------------------------------------------------------------- prompt and queue


def _prompt_error(message: str, kind: str = "invalid_request") -> BadRequest:
    # POST /prompt errors always carry node_errors, as ComfyUI's do.
    return BadRequest(message, kind, node_errors={})


def _submission(body: Mapping[str, Any]) -> dict[str, Any]:
    """The JobStore.submit keyword arguments of a POST /prompt body (except prompt/outputs)."""
    extra = body.get("extra_data", {})
    if extra is None:
        extra = {}
    if not isinstance(extra, dict):
        raise _prompt_error(f"'extra_data' must be a JSON object, got {type(extra).__name__}")
    client_id = body.get("client_id")
    if client_id is not None and not isinstance(client_id, str):
        raise _prompt_error(f"'client_id' must be a string, got {client_id!r}")
    prompt_id = body.get("prompt_id")
    if prompt_id is not None and (not isinstance(prompt_id, str) or not prompt_id):
        raise _prompt_error(f"'prompt_id' must be a non-empty string, got {prompt_id!r}")
    number = body.get("number")
    if number is not None and (isinstance(number, bool) or not isinstance(number, (int, float, str))):
        raise _prompt_error(f"'number' must be a number, got {number!r}")
    if number is not None and not _number_in_range(number):  # the store keeps it as an SQLite number
        raise _prompt_error(
            f"'number' must be a number between {-MAX_QUEUE_NUMBER} and {MAX_QUEUE_NUMBER}, got {number!r:.100}"
        )
    return {
        "prompt_id": prompt_id,
        "number": number,
        "front": bool(body.get("front", False)),
        "extra_data": {**extra, "create_time": int(time.time() * 1000)},
        "client_id": client_id,
    }


def _number_in_range(number: int | float | str) -> bool:
    try:
        value = float(number)
    except (ValueError, OverflowError):
        return False
    return math.isfinite(value) and abs(value) <= MAX_QUEUE_NUMBER


async def get_prompt(request: web.Request) -> web.Response:
    store: JobStore = request.app[STORE]
    return web.json_response({"exec_info": exec_info(store.remaining(), store.paused)})


def _check_limits(violation: LimitViolation | None) -> None:
    if violation is not None:
        raise BadRequest(violation.message, LIMIT_ERROR, violation.status, node_errors=violation.node_errors)


async def post_prompt(request: web.Request) -> web.Response:
    """Check the server's limits, validate and queue a prompt (spec §1.2)."""
    limits = request.app[SETTINGS].limits
    if request.content_length is not None:  # refused before reading; a chunked body is measured below
        _check_limits(body_too_large(limits, request.content_length))
    try:
        body = await read_object(request)
    except BadRequest as exc:
        raise _prompt_error(str(exc), exc.kind) from None
    _check_limits(body_too_large(limits, len(await request.read())))
    if body.get("prompt") is None:
        raise _prompt_error("No prompt provided", "no_prompt")
    _check_limits(check_prompt(limits, body["prompt"]))
    targets = body.get("partial_execution_targets")
    if targets is not None and (not isinstance(targets, list) or not all(isinstance(t, str) for t in targets)):
        raise _prompt_error(f"'partial_execution_targets' must be a list of node id strings, got {targets!r}")
    submission = _submission(body)
    registry = await request.app[CATALOG].get()
    validation = await validate_prompt_async(body["prompt"], registry, targets)
    if not validation.ok:
        roots = request.app[SETTINGS].private_roots
        body = {"error": validation.error, "node_errors": validation.node_errors}
        return web.json_response(redact_value(body, roots), status=400, dumps=json_dumps)
    try:
        item = request.app[STORE].submit(validation.prompt, outputs_to_execute=validation.outputs, **submission)
    except (DuplicatePromptError, QueueError) as exc:
        raise _prompt_error(str(exc)) from None
    request.app[HUB].broadcast_status()
    node_errors = redact_value(validation.node_errors, request.app[SETTINGS].private_roots)
    return web.json_response({"prompt_id": item.prompt_id, "number": item.number, "node_errors": node_errors})


async def get_queue(request: web.Request) -> web.Response:
    running, pending = request.app[STORE].queue()
    return web.json_response(
        {
            "queue_running": [item.as_comfy_tuple() for item in running],
            "queue_pending": [item.as_comfy_tuple() for item in pending],
        },
        dumps=json_dumps,
    )


async def post_queue(request: web.Request) -> web.Response:
    """ComfyUI's `{"clear": true}` / `{"delete": [ids]}`, and Loom's `{"pause": true}` /
    `{"resume": true}` (the worker finishes its running prompt, then starts no other until resumed)."""
    body = await read_object(request)
    store: JobStore = request.app[STORE]
    if body.get("pause") and body.get("resume"):
        raise BadRequest("'pause' and 'resume' cannot both be true")
    if body.get("clear"):
        store.clear_pending()
    if "delete" in body:
        store.cancel(id_list(body, "delete"))
    if body.get("pause"):
        store.set_paused(True)
    if body.get("resume"):
        store.set_paused(False)
    request.app[HUB].broadcast_status()
    return web.Response(status=200)


async def post_interrupt(request: web.Request) -> web.Response:
    # A missing or unreadable body means "interrupt whatever runs" (ComfyUI's behaviour).
    try:
        body = await read_json(request, empty={})
    except BadRequest:
        body = {}
    prompt_id = body.get("prompt_id") if isinstance(body, dict) else None
    request.app[WORKER].interrupt(prompt_id if isinstance(prompt_id, str) else None)
    return web.Response(status=200)


async def post_free(request: web.Request) -> web.Response:
    body = await read_object(request)
    request.app[WORKER].free(unload_models=bool(body.get("unload_models")), free_memory=bool(body.get("free_memory")))
    return web.Response(status=200)


# ---------------------------------------------------------------------- history and jobs


async def get_history(request: web.Request) -> web.Response:
    history = request.app[STORE].history(query_int(request, "max_items"), query_int(request, "offset"))
    return web.json_response(history, dumps=json_dumps)


async def get_history_item(request: web.Request) -> web.Response:
    return web.json_response(request.app[STORE].history_item(request.match_info["prompt_id"]), dumps=json_dumps)


async def post_history(request: web.Request) -> web.Response:
    body = await read_object(request)
    store: JobStore = request.app[STORE]
    if body.get("clear"):
        store.clear_history()
    if "delete" in body:
        store.delete_history(id_list(body, "delete"))
    return web.Response(status=200)


async def get_jobs(request: web.Request) -> web.Response:
    """GET /api/jobs; bad parameters answer 400 {"error": "<message>"} (ComfyUI's shape)."""
    query = request.query
    try:
        limit, offset = query_int(request, "limit"), query_int(request, "offset")
        jobs = request.app[STORE].jobs(
            status=query.get("status") or None,
            workflow_id=query.get("workflow_id") or None,
            sort_by=query.get("sort_by", "created_at"),
            sort_order=query.get("sort_order", "desc"),
            limit=limit,
            offset=max(0, offset or 0),
        )
    except (BadRequest, InvalidQueryError) as exc:
        return web.json_response({"error": str(exc)}, status=400)
    return web.json_response(jobs, dumps=json_dumps)


async def get_job(request: web.Request) -> web.Response:
    job = request.app[STORE].job(request.match_info["job_id"])
    if job is None:
        return web.json_response({"error": "Job not found"}, status=404)
    return web.json_response(job, dumps=json_dumps)


# ---------------------------------------------------------------------- nodes and models


def _object_info(registry: Mapping[str, Any], class_type: str | None = None) -> dict[str, Any]:
    if class_type is not None:
        if hasattr(registry, "object_info_one"):
            return registry.object_info_one(class_type)
        definition = registry.get(class_type)
        return {class_type: definition.spec().object_info()} if definition is not None else {}
    if hasattr(registry, "object_info"):
        return registry.object_info()
    return {name: definition.spec().object_info() for name, definition in registry.items()}


async def get_object_info(request: web.Request) -> web.Response:
    registry = await request.app[CATALOG].get()
    # On a thread: specs may list model folders, and the loop must keep serving meanwhile.
    return web.json_response(await asyncio.to_thread(_object_info, registry), dumps=json_dumps)


async def get_object_info_one(request: web.Request) -> web.Response:
    registry = await request.app[CATALOG].get()
    info = await asyncio.to_thread(_object_info, registry, request.match_info["node_class"])
    return web.json_response(info, dumps=json_dumps)


def _model_paths(request: web.Request) -> Any:
    paths = request.app[SETTINGS].paths
    if paths is None:
        raise ServiceUnavailable("no model folders are configured for this server")
    return paths


async def get_models(request: web.Request) -> web.Response:
    return web.json_response(_model_paths(request).kinds())


async def get_models_folder(request: web.Request) -> web.Response:
    return web.json_response(await asyncio.to_thread(_model_paths(request).list, request.match_info["folder"]))


async def get_embeddings(request: web.Request) -> web.Response:
    names = await asyncio.to_thread(_model_paths(request).list, "embeddings")
    return web.json_response([os.path.splitext(name)[0] for name in names])


async def get_features(request: web.Request) -> web.Response:
    return web.json_response(dict(request.app[SETTINGS].features))


def _memory() -> tuple[int, int]:
    """(total, available) bytes of RAM, from /proc/meminfo where there is one."""
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            fields = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in meminfo if line.strip()}
        return fields.get("MemTotal", 0), fields.get("MemAvailable", fields.get("MemFree", 0))
    except (OSError, ValueError, IndexError):
        try:
            page = os.sysconf("SC_PAGE_SIZE")
            return os.sysconf("SC_PHYS_PAGES") * page, os.sysconf("SC_AVPHYS_PAGES") * page
        except (ValueError, OSError, AttributeError):
            return 0, 0


def _devices(torch: Any, ram: tuple[int, int]) -> list[dict[str, Any]]:
    """Devices as torch sees them -- only if the engine already imported torch (never imported here)."""
    cpu = {"name": "cpu", "type": "cpu", "index": None, "vram_total": ram[0], "vram_free": ram[1]}
    try:
        if not torch.cuda.is_available():
            return [{**cpu, "torch_vram_total": ram[0], "torch_vram_free": ram[1]}]
        devices = []
        for index in range(torch.cuda.device_count()):
            free, total = torch.cuda.mem_get_info(index)
            reserved = torch.cuda.memory_reserved(index)
            devices.append(
                {
                    "name": f"cuda:{index} {torch.cuda.get_device_name(index)}",
                    "type": "cuda",
                    "index": index,
                    "vram_total": total,
                    "vram_free": free,
                    "torch_vram_total": reserved,
                    "torch_vram_free": reserved - torch.cuda.memory_allocated(index),
                }
            )
        return devices
    except Exception:  # a half-initialised driver must not break a status page
        log.debug("device query failed", exc_info=True)
        return []


async def get_system_stats(request: web.Request) -> web.Response:
    ram = _memory()
    torch = sys.modules.get("torch")
    system = {
        "os": os.name,
        "ram_total": ram[0],
        "ram_free": ram[1],
        "comfyui_version": LOOM_VERSION,
        "loom_version": LOOM_VERSION,
        "python_version": sys.version,
        "pytorch_version": getattr(torch, "__version__", None),
        "embedded_python": False,
        "argv": sys.argv,
    }
    devices = _devices(torch, ram) if torch is not None else []
    return web.json_response({"system": system, "devices": devices})


# ---------------------------------------------------------------------- files


def _view_target(request: web.Request) -> Path:
    """The file GET /view names, after ComfyUI's checks: 400 bad name, 403 escape, 404 missing."""
    query = request.query
    filename, kind = query.get("filename", ""), query.get("type") or "output"
    for suffix in (" [output]", " [input]", " [temp]"):  # annotated names carry their folder
        if filename.endswith(suffix):
            filename, kind = filename[: -len(suffix)], suffix[2:-1]
    subfolder = query.get("subfolder", "")
    if not filename or filename.startswith("/") or ".." in filename or "\x00" in filename + subfolder:
        raise BadRequest(f"invalid filename {filename!r}: it must be relative and may not contain '..'")
    root = request.app[SETTINGS].folders.get(kind)
    if root is None:
        raise BadRequest(f"unknown type {kind!r}; use {VIEW_TYPES_HINT}")
    real_root = os.path.realpath(root)
    folder = os.path.realpath(os.path.join(real_root, subfolder))
    if os.path.commonpath([real_root, folder]) != real_root:
        raise BadRequest(f"subfolder {subfolder!r} is outside the {kind} folder", "forbidden", status=403)
    # Only the base name counts (ComfyUI's rule); realpath again in case it is a link leading out.
    target = Path(os.path.realpath(os.path.join(folder, os.path.basename(filename.replace("\\", "/")))))
    if os.path.commonpath([real_root, target]) != real_root:
        raise BadRequest(f"{filename!r} resolves outside the {kind} folder", "forbidden", status=403)
    if not target.is_file():
        raise BadRequest(f"no file {filename!r} in the {kind} folder (subfolder {subfolder!r})", "not_found", 404)
    return target


def _quality(text: str) -> int:
    """?preview=webp;Q: Q in 1..100; anything else (Unicode digits, 5,000 digits, 999) clamped or 90."""
    if not (text.isascii() and text.isdigit() and len(text) <= 3):
        return 90
    return min(100, max(1, int(text)))


def _image_variant(path: Path, channel: str | None, preview: str | None) -> tuple[bytes, str] | None:
    """(bytes, content type) for ?preview=webp;Q|jpeg;Q or ?channel=rgb|a; None if not an image."""
    from PIL import Image, UnidentifiedImageError  # deferred: only these variants need Pillow

    try:
        with Image.open(path) as image:
            image.load()
            out = io.BytesIO()
            if preview:
                kind, _, quality = preview.partition(";")
                kind = "webp" if kind.lower() == "webp" else "jpeg"
                image.convert("RGB").save(out, format=kind.upper(), quality=_quality(quality))
                return out.getvalue(), f"image/{kind}"
            if channel == "rgb":
                image.convert("RGB").save(out, format="PNG")
            else:  # "a": the alpha channel alone, in an otherwise black RGBA image
                rgba = image.convert("RGBA")
                alpha_only = Image.new("RGBA", rgba.size)
                alpha_only.putalpha(rgba.getchannel("A"))
                alpha_only.save(out, format="PNG")
            return out.getvalue(), "image/png"
    except (UnidentifiedImageError, OSError):
        return None


async def view(request: web.Request) -> web.StreamResponse:
    target = _view_target(request)
    headers = safe_headers(target, target.name)
    channel = request.query.get("channel", "rgba").lower()
    preview = request.query.get("preview")
    if preview or channel in ("rgb", "a"):
        variant = await asyncio.to_thread(_image_variant, target, channel, preview)
        if variant is not None:
            headers[hdrs.CONTENT_TYPE] = variant[1]
            return web.Response(body=variant[0], headers=headers)
    return web.FileResponse(target, headers=headers)


async def get_extensions(request: web.Request) -> web.Response:
    """URLs of the editor extension scripts: web/extensions/**.js and every package's WEB_DIRECTORY."""
    catalog = request.app[CATALOG]
    await catalog.get()
    urls = []
    core = request.app[SETTINGS].web_root / "extensions"
    if core.is_dir():
        urls += [f"/extensions/{p.relative_to(core).as_posix()}" for p in sorted(core.rglob("*.js"))]
    for name, folder in catalog.web_directories().items():
        if folder.is_dir():
            urls += [
                f"/extensions/{quote(name)}/{p.relative_to(folder).as_posix()}" for p in sorted(folder.rglob("*.js"))
            ]
    return web.json_response(urls)


def _static(folder: Path, relative: str) -> web.FileResponse:
    target = contained(folder, relative) if relative and "\x00" not in relative else None
    if target is None or not target.is_file():
        raise web.HTTPNotFound(text=f"no file {relative!r}")
    return web.FileResponse(target, headers={"X-Content-Type-Options": "nosniff", **NO_CACHE})


async def extension_file(request: web.Request) -> web.StreamResponse:
    pack, relative = request.match_info["pack"], request.match_info["path"]
    catalog = request.app[CATALOG]
    await catalog.get()
    folder = catalog.web_directories().get(pack)
    if folder is None:
        return _static(request.app[SETTINGS].web_root / "extensions", f"{pack}/{relative}")
    return _static(folder, relative)


async def index(request: web.Request) -> web.StreamResponse:
    return _static(request.app[SETTINGS].web_root, "index.html")


async def web_file(request: web.Request) -> web.StreamResponse:
    """A file of web/, else a GET route a custom package added (server.extensions)."""
    try:
        return _static(request.app[SETTINGS].web_root, request.match_info["path"])
    except web.HTTPNotFound:
        response = await dispatch(request)
        if response is None:
            raise
        return response


async def websocket(request: web.Request) -> web.StreamResponse:
    return await request.app[HUB].handle(request)
