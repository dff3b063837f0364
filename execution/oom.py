"""Out-of-memory errors raised by a node: recognise them, free the models, explain what to do.

ComfyUI answers an OOM by unloading every model and adding a hint to the error; Loom does the
same from the executor so that the server, `main.py run` and tests all behave alike. Stdlib only:
torch's `OutOfMemoryError` (also `torch.cuda.OutOfMemoryError`) is recognised by its class name,
MPS/HIP allocators that raise a plain RuntimeError by their message, a host allocation failure by
Python's MemoryError.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

log = logging.getLogger(__name__)

OOM_HINT = (
    "Loom ran out of memory and unloaded every model to free it; the next prompt loads them again. "
    "If this workflow ran before, check for a large batch_size or image size; otherwise try a smaller "
    "size, fewer models in one prompt, or start Loom with --lowvram (or --novram)."
)


def is_out_of_memory(exc: BaseException) -> bool:
    """True for torch's OutOfMemoryError (any device), an allocator RuntimeError saying
    "out of memory", and MemoryError."""
    if isinstance(exc, MemoryError):
        return True
    if any(cls.__name__ == "OutOfMemoryError" for cls in type(exc).__mro__):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def out_of_memory_message(exc: BaseException) -> str:
    """The error text a client sees: "out of memory" first, the original detail, then the hint."""
    detail = str(exc).strip() or type(exc).__name__
    return f"out of memory: {detail}\n\n{OOM_HINT}"


def free_models(services: Mapping[str, Any]) -> None:
    """Unload every model of the "models" service (LazyModels.unload_all or ModelManager.free);
    never raises: this runs while an error is being reported."""
    models = services.get("models")
    if models is None:
        return
    try:
        unload = getattr(models, "unload_all", None)
        if callable(unload):
            unload()
        elif callable(getattr(models, "free", None)):
            models.free(unload_models=True)
        log.warning("out of memory: unloaded all models")
    except Exception:
        log.exception("out of memory: unloading the models failed as well")


__all__ = ["OOM_HINT", "free_models", "is_out_of_memory", "out_of_memory_message"]
