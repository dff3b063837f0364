"""Job objects for GET /api/jobs and /api/jobs/{id} (spec §1.1), derived from queue/history records.

Pure functions over plain dicts: JobStore calls `summarize_finish` once when a prompt finishes and
stores the result in columns, so listing, filtering and sorting jobs is an indexed SQL query. Reads
turn a stored row back into ComfyUI's job shape with `queue_job` / `history_job`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from execution.store import InvalidQueryError

PENDING, IN_PROGRESS, COMPLETED, FAILED = "pending", "in_progress", "completed", "failed"
JOB_STATUSES = (PENDING, IN_PROGRESS, COMPLETED, FAILED)
SORT_FIELDS = ("created_at", "execution_duration")
SORT_ORDERS = ("asc", "desc")

# Store status -> job status. An interrupted prompt has status_str "error" in history (spec §4.6),
# so it lists as failed, exactly as ComfyUI derives it from status_str.
JOB_STATUS_OF = {
    "pending": PENDING,
    "running": IN_PROGRESS,
    "success": COMPLETED,
    "error": FAILED,
    "interrupted": FAILED,
}
STORE_STATUSES_OF = {
    PENDING: ("pending",),
    IN_PROGRESS: ("running",),
    COMPLETED: ("success",),
    FAILED: ("error", "interrupted"),
}

# The frontend's rule for what it can show as a thumbnail (spec §1.1 preview_output).
PREVIEWABLE_MEDIA = frozenset({"images", "video", "audio"})
THREE_D_EXTENSIONS = (".obj", ".fbx", ".gltf", ".glb")
END_EVENTS = ("execution_success", "execution_error", "execution_interrupted")


@dataclass(frozen=True)
class FinishSummary:
    """What /api/jobs needs from a finished prompt, computed once at finish time."""

    exec_start_ms: int | None
    exec_end_ms: int | None
    execution_error: dict | None
    outputs_count: int
    preview_output: dict | None


def workflow_id_of(extra_data: Mapping[str, Any]) -> str | None:
    """extra_data.extra_pnginfo.workflow.id, tolerating any of the levels being absent or not a dict."""
    pnginfo = extra_data.get("extra_pnginfo")
    workflow = pnginfo.get("workflow") if isinstance(pnginfo, Mapping) else None
    wid = workflow.get("id") if isinstance(workflow, Mapping) else None
    return None if wid is None else str(wid)


def _is_previewable(media: str, item: Mapping[str, Any]) -> bool:
    if media in PREVIEWABLE_MEDIA:
        return True
    fmt = item.get("format")
    if isinstance(fmt, str) and fmt.startswith(("video/", "audio/")):
        return True
    name = item.get("filename")
    return isinstance(name, str) and name.lower().endswith(THREE_D_EXTENSIONS)


def outputs_summary(outputs: Mapping[str, Any]) -> tuple[int, dict | None]:
    """(number of output items, preview item) over `outputs[node][media] = [item, ...]`.

    The key `animated` is a flag, not media. The preview prefers an item saved with type "output"
    over a temp preview; it is enriched with the producing node's id and the media kind.
    """
    count = 0
    first_output: dict | None = None
    first_any: dict | None = None
    for node_id, node_outputs in outputs.items():
        if not isinstance(node_outputs, Mapping):
            continue
        for media, items in node_outputs.items():
            if media == "animated" or not isinstance(items, list):
                continue
            for item in items:
                if not isinstance(item, Mapping):
                    continue
                count += 1
                if first_output is not None or not _is_previewable(media, item):
                    continue
                enriched = {**item, "nodeId": node_id, "mediaType": media}
                if item.get("type") == "output":
                    first_output = enriched
                elif first_any is None:
                    first_any = enriched
    return count, first_output or first_any


def message_times(messages: Iterable[Any]) -> tuple[int | None, int | None, dict | None]:
    """(execution_start timestamp, end timestamp, execution_error data) from history status messages."""
    start = end = None
    error = None
    for entry in messages:
        if not isinstance(entry, (list, tuple)) or len(entry) < 2 or not isinstance(entry[1], Mapping):
            continue
        event, data = entry[0], entry[1]
        if event == "execution_start":
            start = data.get("timestamp")
        elif event in END_EVENTS:
            end = data.get("timestamp")
            if event == "execution_error":
                error = dict(data)
    return start, end, error


def summarize_finish(
    outputs: Mapping[str, Any], messages: Iterable[Any], started_ms: int | None, finished_ms: int
) -> FinishSummary:
    """Job summary of a finished prompt. Message timestamps win (ComfyUI reads only those); Loom falls
    back to its own claim/finish times so execution_duration sorting works for any worker."""
    count, preview = outputs_summary(outputs)
    start, end, error = message_times(messages)
    return FinishSummary(
        exec_start_ms=start if isinstance(start, (int, float)) else started_ms,
        exec_end_ms=end if isinstance(end, (int, float)) else finished_ms,
        execution_error=error,
        outputs_count=count,
        preview_output=preview,
    )


def parse_status_filter(status: str | Iterable[str] | None) -> tuple[str, ...]:
    """Job statuses to include: a comma-separated string (as in the query) or an iterable; None = all."""
    if status is None:
        return JOB_STATUSES
    parts = status.split(",") if isinstance(status, str) else list(status)
    wanted = [p.strip().lower() for p in parts if p.strip()]
    if not wanted:
        return JOB_STATUSES
    bad = [s for s in wanted if s not in JOB_STATUSES]
    if bad:
        raise InvalidQueryError(f"Invalid status value(s): {', '.join(bad)}. Valid values: {', '.join(JOB_STATUSES)}")
    return tuple(dict.fromkeys(wanted))


def check_paging(sort_by: str, sort_order: str, limit: int | None, offset: int) -> int:
    """Validate jobs() parameters the way the HTTP API does; returns the offset (negative -> 0)."""
    if sort_by not in SORT_FIELDS:
        raise InvalidQueryError("sort_by must be 'created_at' or 'execution_duration'")
    if sort_order not in SORT_ORDERS:
        raise InvalidQueryError("sort_order must be 'asc' or 'desc'")
    if limit is not None and limit <= 0:
        raise InvalidQueryError("limit must be a positive integer")
    return max(0, offset)


def _pruned(job: dict[str, Any]) -> dict[str, Any]:
    # ComfyUI drops None-valued keys from job objects; clients test for presence.
    return {k: v for k, v in job.items() if v is not None}


def queue_job(
    prompt_id: str, status: str, number: float, create_time: int | None, workflow_id: str | None
) -> dict[str, Any]:
    """Job object of a pending or running prompt (no outputs yet, so outputs_count is 0)."""
    return _pruned(
        {
            "id": prompt_id,
            "status": JOB_STATUS_OF[status],
            "priority": number,
            "create_time": create_time,
            "outputs_count": 0,
            "workflow_id": workflow_id,
        }
    )


def history_job(
    prompt_id: str,
    status: str,
    number: float,
    create_time: int | None,
    workflow_id: str | None,
    summary: FinishSummary,
) -> dict[str, Any]:
    """Job object of a finished prompt (success, error or interrupted)."""
    return _pruned(
        {
            "id": prompt_id,
            "status": JOB_STATUS_OF[status],
            "priority": number,
            "create_time": create_time,
            "execution_start_time": summary.exec_start_ms,
            "execution_end_time": summary.exec_end_ms,
            "execution_error": summary.execution_error,
            "outputs_count": summary.outputs_count,
            "preview_output": summary.preview_output,
            "workflow_id": workflow_id,
        }
    )
