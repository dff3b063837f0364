"""Validate and run one prompt in a call: for scripts, the CLI and tests.

The server and the queue worker validate and execute separately (validation answers the HTTP
request; execution happens later on the worker); this is the short path when both happen at once.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from core.errors import ValidationError
from core.spec import NodeDefinition
from execution.cache import Cache
from execution.events import EventSink
from execution.executor import ExecutionResult, Executor
from execution.validate import validate_prompt_async


async def run_prompt_async(
    prompt: Mapping[str, Any],
    registry: Mapping[str, NodeDefinition],
    *,
    executor: Executor | None = None,
    cache: Cache | None = None,
    prompt_id: str | None = None,
    partial_execution_targets: Sequence[str] | None = None,
    extra_data: Mapping[str, Any] | None = None,
    events: EventSink | None = None,
) -> ExecutionResult:
    """Validate `prompt`, then execute its valid outputs. Raises core.errors.ValidationError (with
    the ValidationResult as `.result`) when nothing can run. Pass `executor` to keep its cache
    across calls; otherwise a new one is made with `cache` (default: classic)."""
    targets = list(partial_execution_targets) if partial_execution_targets is not None else None
    validation = await validate_prompt_async(prompt, registry, targets)
    if not validation.ok:
        error = validation.error or {}
        raise ValidationError(f"{error.get('message', 'invalid prompt')}: {error.get('details', '')}", validation)
    runner = executor if executor is not None else Executor(registry, cache)
    return await runner.execute_async(
        validation.prompt,
        prompt_id or uuid.uuid4().hex,
        validation.outputs,
        extra_data=extra_data,
        events=events,
    )


def run_prompt(
    prompt: Mapping[str, Any],
    registry: Mapping[str, NodeDefinition],
    **options: Any,
) -> ExecutionResult:
    """Synchronous `run_prompt_async` (not callable from inside a running event loop)."""
    import asyncio

    return asyncio.run(run_prompt_async(prompt, registry, **options))


__all__ = ["run_prompt", "run_prompt_async"]
