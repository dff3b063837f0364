"""Loom's queue controls beyond ComfyUI's API (ComfyUI has no equivalent routes):

- POST /queue/{prompt_id}/move with `{"index": N}` (0 = runs next, -1 = last; negative counts from
  the end) or `{"before": other_id}` / `{"after": other_id}`: reorder a pending prompt. Answers
  `{"prompt_id", "number", "index", "queue_pending": [ids in run order]}`. 404 unknown prompt, 409
  when it (or the anchor) is not pending.
- POST /queue `{"pause": true}` / `{"resume": true}` (server.handlers.post_queue): stop handing out
  prompts after the running one, or go on; `status.exec_info.paused` is true while paused.
- POST /api/jobs/{id}/requeue: put an interrupted, failed or cancelled prompt back in the queue
  under the same id and number. Answers `{"prompt_id", "number", "status": "pending"}`; 404
  unknown (or dropped by retention), 409 when it is pending, running or succeeded.
- POST /api/jobs/{id}/cancel: one call for either state -- a pending prompt is cancelled, a running
  one interrupted; other prompts are never touched. Answers `{"prompt_id", "cancelled",
  "interrupted"}`; 404 unknown, 409 already finished.

Every change broadcasts a `status` message, so editors refresh their queue view.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from execution.queue import JobStore
from execution.store import QueueError, UnknownPromptError
from server.app import HUB, STORE, WORKER
from server.http import BadRequest, Conflict, NotFound, read_object


def _where(body: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments of JobStore.move from a request body."""
    given = {key: body[key] for key in ("index", "before", "after") if body.get(key) is not None}
    if len(given) != 1:
        raise BadRequest('say where to move the prompt with exactly one of {"index": N}, {"before": id}, {"after": id}')
    ((key, value),) = given.items()
    if key == "index" and (isinstance(value, bool) or not isinstance(value, int)):
        raise BadRequest(f"'index' must be an integer (0 = next, -1 = last), got {value!r}")
    if key != "index" and (not isinstance(value, str) or not value):
        raise BadRequest(f"'{key}' must be the id of a pending prompt, got {value!r}")
    return given


async def post_queue_move(request: web.Request) -> web.Response:
    prompt_id = request.match_info["prompt_id"]
    where = _where(await read_object(request))
    try:
        item, order = request.app[STORE].move(prompt_id, **where)
    except UnknownPromptError as exc:
        raise NotFound(str(exc)) from None
    except QueueError as exc:
        raise Conflict(str(exc)) from None
    request.app[HUB].broadcast_status()
    return web.json_response(
        {"prompt_id": prompt_id, "number": item.number, "index": order.index(prompt_id), "queue_pending": order}
    )


async def post_job_requeue(request: web.Request) -> web.Response:
    job_id = request.match_info["job_id"]
    try:
        item = request.app[STORE].requeue(job_id)
    except UnknownPromptError as exc:
        raise NotFound(str(exc)) from None
    except QueueError as exc:
        raise Conflict(str(exc)) from None
    request.app[HUB].broadcast_status()
    return web.json_response({"prompt_id": item.prompt_id, "number": item.number, "status": "pending"})


async def post_job_cancel(request: web.Request) -> web.Response:
    job_id = request.match_info["job_id"]
    store: JobStore = request.app[STORE]
    cancelled = bool(store.cancel([job_id]))
    # Not pending any more (or never was): it may be running -- possibly claimed a moment ago.
    interrupted = not cancelled and request.app[WORKER].interrupt(job_id)
    if not (cancelled or interrupted):
        item = store.item(job_id)
        if item is None:
            raise NotFound(f"cannot cancel prompt {job_id}: no such prompt")
        raise Conflict(f"cannot cancel prompt {job_id}: it is {item.status} already")
    request.app[HUB].broadcast_status()
    return web.json_response({"prompt_id": job_id, "cancelled": cancelled, "interrupted": interrupted})


__all__ = ["post_job_cancel", "post_job_requeue", "post_queue_move"]
