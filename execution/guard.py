"""Consumers can never mutate a cached value in place (DESIGN §4).

A node's result may be cached and read by many consumers, in this prompt and later ones; one
consumer that edits its input in place would silently corrupt all the others (a classic ComfyUI
custom-node bug). Two cheap defences, applied to every linked value handed to a node:

- containers (dict, list, tuple) are given as fresh shallow copies, recursively -- adding a key to
  a LATENT dict or appending to a CONDITIONING list touches only the copy; tensors are never
  copied;
- objects with a `_version` counter (torch tensors: it increments on every in-place write) have
  it recorded before the call and compared after; a change means the node wrote into a shared
  tensor, and the executor evicts the producer's cache entry and fails the node with a clear
  message.

Scalars and strings skip the walk, so trivial graphs pay almost nothing. Stdlib only.
"""

from __future__ import annotations

from typing import Any

_ATOMIC = frozenset({int, float, str, bool, bytes, complex, type(None)})
_MAX_DEPTH = 32
"""Deeper nesting is passed through as-is: real values (CONDITIONING is list > list > dict) are
far shallower, and this bounds the recursion."""


def _version_of(value: Any) -> int | None:
    try:
        version = getattr(value, "_version", None)
    except RuntimeError:
        # torch inference-mode tensors have no version counter and raise when asked.
        return None
    return version if isinstance(version, int) else None


class InputGuard:
    """Protects the inputs of one node call and reports in-place writes afterwards."""

    __slots__ = ("_watched",)

    def __init__(self) -> None:
        self._watched: list[tuple[str, str | None, Any, int]] = []

    def protect(self, value: Any, input_name: str, producer: str | None = None) -> Any:
        """The value to hand to the node: containers copied, versioned objects watched."""
        if type(value) in _ATOMIC:
            return value
        return self._protect(value, input_name, producer, 0)

    def _protect(self, value: Any, input_name: str, producer: str | None, depth: int) -> Any:
        kind = type(value)
        if kind in _ATOMIC or depth > _MAX_DEPTH:
            return value
        if kind is dict:
            return {key: self._protect(item, input_name, producer, depth + 1) for key, item in value.items()}
        if kind is list:
            return [self._protect(item, input_name, producer, depth + 1) for item in value]
        if kind is tuple:
            return tuple(self._protect(item, input_name, producer, depth + 1) for item in value)
        version = _version_of(value)
        if version is not None:
            self._watched.append((input_name, producer, value, version))
        return value

    @property
    def watching(self) -> bool:
        return bool(self._watched)

    def violations(self) -> list[tuple[str, str | None]]:
        """(input name, producer node id) of every watched object written in place since protect()."""
        found: list[tuple[str, str | None]] = []
        for input_name, producer, value, version in self._watched:
            now = _version_of(value)
            if now is not None and now != version and (input_name, producer) not in found:
                found.append((input_name, producer))
        return found


def mutation_message(input_name: str) -> str:
    """The detail of the NodeError (which prefixes "node <id> (<class>): ")."""
    return (
        f"modified its input '{input_name}' in place; cached values are shared -- copy it first, "
        f"e.g. {input_name}.clone()"
    )


__all__ = ["InputGuard", "mutation_message"]
