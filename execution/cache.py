"""Cache keys and cache policies (spec §4.4, DESIGN §4).

The key of a node is a digest of what determines its result: class, node version, constant inputs,
its IS_CHANGED value, its id only when the node asks for it, and -- for each linked input -- the
KEY of the producer plus the output slot. Keys are built in topological order from the producers'
keys (never by recursion), so node ids never matter: a renumbered graph keeps its cache, and any
upstream change reaches every downstream key.

A key that must never match (IS_CHANGED returned NaN, the node is not cacheable, a constant that
cannot be hashed, a producer in a cycle) is "unique": it starts with `~`, the executor neither
stores nor looks it up, and everything downstream is unique too.

Policies implement the `Cache` protocol: ClassicCache (keep only what the latest prompt uses,
ComfyUI's default), LRUCache(n), RamCache(gb) and NullCache. Entries stored for expanded
(ephemeral) nodes carry the key of their top-level node as `owner` and live and die with it.

Stdlib only.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
from collections import OrderedDict
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from core.config import CachePolicy
from core.graph_builder import is_link
from core.spec import NodeSpec
from core.sysmem import available_ram_bytes

log = logging.getLogger(__name__)

UNIQUE_PREFIX = "~"
_unique_ids = itertools.count()
_MAX_CONSTANT_DEPTH = 64


def unique_key() -> str:
    """A key that matches nothing, ever."""
    return f"{UNIQUE_PREFIX}{next(_unique_ids)}"


def is_unique(key: str) -> bool:
    return key.startswith(UNIQUE_PREFIX)


def canonical(value: Any, depth: int = 0) -> str | None:
    """A stable text form of a constant, or None when it cannot take part in a key.

    Only plain data qualifies (ComfyUI turns anything else into an unhashable marker): str, int,
    float (not NaN), bool, None, bytes, and lists/tuples/dicts/sets of those. Types are strict so
    that 1, 1.0, True and "1" never collide.
    """
    kind = type(value)
    if kind is str or kind is int or kind is bool or value is None or kind is bytes:
        return repr(value)
    if kind is float:
        return None if value != value else repr(value)
    if depth >= _MAX_CONSTANT_DEPTH:
        return None
    if kind is list or kind is tuple:
        parts = [canonical(item, depth + 1) for item in value]
        if None in parts:
            return None
        return ("[" if kind is list else "(") + ",".join(parts) + ("]" if kind is list else ")")  # type: ignore[arg-type]
    if kind is dict:
        items = []
        for name, item in value.items():
            name_text, item_text = canonical(name, depth + 1), canonical(item, depth + 1)
            if name_text is None or item_text is None:
                return None
            items.append(f"{name_text}:{item_text}")
        return "{" + ",".join(sorted(items)) + "}"
    if kind is set or kind is frozenset:
        parts = [canonical(item, depth + 1) for item in value]
        if None in parts:
            return None
        return "<" + ",".join(sorted(parts)) + ">"  # type: ignore[arg-type]
    return None


def node_key(
    class_type: str,
    spec: NodeSpec,
    node_id: str,
    inputs: Mapping[str, Any],
    producer_key: Callable[[str], str | None],
    fingerprint: Any = None,
    has_fingerprint: bool = False,
) -> str:
    """The key of one node, given its producers' keys (`producer_key(id)` -> key or None)."""
    if not spec.cacheable:
        return unique_key()
    fingerprint_text = ""
    if has_fingerprint:
        fingerprint_text = canonical(fingerprint)
        if fingerprint_text is None:  # NaN, or an object we cannot compare: always re-run
            return unique_key()
    items: list[tuple[Any, ...]] = []
    for name in sorted(inputs):
        value = inputs[name]
        if is_link(value):
            source = producer_key(value[0])
            if source is None or is_unique(source):
                return unique_key()
            items.append((name, "L", source, int(value[1])))
        else:
            text = canonical(value)
            if text is None:
                return unique_key()
            items.append((name, "C", text))
    identity = node_id if spec.needs_node_id else ""
    signature = repr((class_type, spec.version, identity, fingerprint_text, tuple(items)))
    return hashlib.blake2b(signature.encode(), digest_size=16).hexdigest()


def compute_keys(
    nodes: Mapping[str, Mapping[str, Any]],
    spec_of: Callable[[str], NodeSpec],
    fingerprints: Mapping[str, Any],
    known: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Keys for every node of `nodes` (a prompt, or the nodes one expansion added).

    `spec_of(class_type)` gives each node's spec; `fingerprints[node_id]` holds the IS_CHANGED value
    of every node whose spec has one; links to nodes outside `nodes` use `known` keys. Kahn's
    algorithm, so a 10,000-node chain needs no recursion; nodes on a cycle get unique keys (the
    executor reports the cycle when it gets there).
    """
    known = known or {}
    waiting: dict[str, int] = {}
    consumers: dict[str, list[str]] = {}
    for node_id, node in nodes.items():
        producers = {value[0] for value in node.get("inputs", {}).values() if is_link(value) and value[0] in nodes}
        waiting[node_id] = len(producers)
        for producer in producers:
            consumers.setdefault(producer, []).append(node_id)
    keys: dict[str, str] = {}

    def producer_key(producer: str) -> str | None:
        return keys.get(producer) if producer in nodes else known.get(producer)

    ready = [node_id for node_id, count in waiting.items() if count == 0]
    while ready:
        node_id = ready.pop()
        node = nodes[node_id]
        class_type = node["class_type"]
        keys[node_id] = node_key(
            class_type,
            spec_of(class_type),
            node_id,
            node.get("inputs", {}),
            producer_key,
            fingerprints.get(node_id),
            node_id in fingerprints,
        )
        for consumer in consumers.get(node_id, ()):
            waiting[consumer] -= 1
            if waiting[consumer] == 0:
                ready.append(consumer)
    # In the nodes' own order (execution_cached lists nodes in prompt order); cycles: unique.
    return {node_id: keys.get(node_id) or unique_key() for node_id in nodes}


# --- policies -----------------------------------------------------------------------------------


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    stores: int = 0
    evictions: int = 0
    entries: int = 0


class Cache(Protocol):
    """Where node results live between prompts. Values are opaque to the cache."""

    keep_objects: bool
    """Whether node instances are kept between prompts too (False only for NullCache)."""

    def get(self, key: str) -> Any | None: ...

    def put(self, key: str, value: Any, node_id: str, owner: str | None = None) -> None:
        """Store `value`. `owner`: key of the top-level node an expanded node belongs to."""
        ...

    def discard(self, key: str) -> None: ...

    def begin_prompt(self, keys_in_use: Collection[str]) -> None:
        """A prompt starts; `keys_in_use` are the keys of all its nodes."""
        ...

    def end_prompt(self) -> None: ...

    def clear(self) -> None: ...

    def stats(self) -> CacheStats: ...

    def __len__(self) -> int: ...

    def __contains__(self, key: object) -> bool: ...


class _Entry:
    __slots__ = ("generation", "nbytes", "node_id", "owner", "value")

    def __init__(self, value: Any, node_id: str, owner: str | None, generation: int) -> None:
        self.value = value
        self.node_id = node_id
        self.owner = owner
        self.generation = generation
        self.nbytes = 0


class _EntryCache:
    """Shared bookkeeping: entries, owner -> children index, statistics."""

    keep_objects = True

    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = self._new_store()
        self._children: dict[str, set[str]] = {}
        self._stats = CacheStats()
        self.generation = 0

    def _new_store(self) -> dict[str, _Entry]:
        return {}

    def _touch(self, key: str, entry: _Entry) -> None:
        entry.generation = self.generation

    def get(self, key: str) -> Any | None:
        entry = self._entries.get(key)
        if entry is None:
            self._stats.misses += 1
            return None
        self._stats.hits += 1
        self._touch(key, entry)
        return entry.value

    def put(self, key: str, value: Any, node_id: str, owner: str | None = None) -> None:
        old = self._entries.get(key)
        if old is not None and old.owner is not None and old.owner != owner:
            self._children.get(old.owner, set()).discard(key)
        if old is not None and old.owner is None:
            owner = None  # a top-level node stored it too: it no longer dies with an owner
        entry = _Entry(value, node_id, owner, self.generation)
        self._entries[key] = entry
        self._touch(key, entry)
        if owner is not None:
            self._children.setdefault(owner, set()).add(key)
        self._stats.stores += 1
        self._stored(key, entry)

    def _stored(self, key: str, entry: _Entry) -> None:
        return None

    def discard(self, key: str) -> None:
        """Remove `key` and every entry it owns."""
        stack = [key]
        while stack:
            current = stack.pop()
            entry = self._entries.pop(current, None)
            if entry is not None:
                self._stats.evictions += 1
                if entry.owner is not None:
                    self._children.get(entry.owner, set()).discard(current)
            stack.extend(self._children.pop(current, ()))

    def _drop_unused(self, keys_in_use: Collection[str]) -> None:
        unused = [
            key
            for key, entry in self._entries.items()
            if key not in keys_in_use and (entry.owner is None or entry.owner not in keys_in_use)
        ]
        for key in unused:
            self.discard(key)
        for owner in [owner for owner, children in self._children.items() if not children]:
            del self._children[owner]

    def begin_prompt(self, keys_in_use: Collection[str]) -> None:
        self.generation += 1

    def end_prompt(self) -> None:
        return None

    def clear(self) -> None:
        self._entries.clear()
        self._children.clear()

    def stats(self) -> CacheStats:
        return CacheStats(
            self._stats.hits, self._stats.misses, self._stats.stores, self._stats.evictions, len(self._entries)
        )

    def keys(self) -> list[str]:
        return list(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self._entries)} entries)"


class ClassicCache(_EntryCache):
    """ComfyUI's default: when a prompt starts, forget everything it does not use."""

    def begin_prompt(self, keys_in_use: Collection[str]) -> None:
        super().begin_prompt(keys_in_use)
        self._drop_unused(keys_in_use)


class LRUCache(_EntryCache):
    """At most `max_entries` results across prompts; the least recently used go first."""

    def __init__(self, max_entries: int) -> None:
        if max_entries < 1:
            raise ValueError(f"LRUCache needs at least 1 entry, got {max_entries} (use ClassicCache for --cache-lru 0)")
        self.max_entries = max_entries
        super().__init__()

    def _new_store(self) -> dict[str, _Entry]:
        return OrderedDict()

    def _touch(self, key: str, entry: _Entry) -> None:
        entry.generation = self.generation
        self._entries.move_to_end(key)  # type: ignore[attr-defined]

    def begin_prompt(self, keys_in_use: Collection[str]) -> None:
        # What the new prompt uses counts as just used (ComfyUI marks its generation).
        super().begin_prompt(keys_in_use)
        for key in keys_in_use:
            entry = self._entries.get(key)
            if entry is not None:
                self._touch(key, entry)

    def _stored(self, key: str, entry: _Entry) -> None:
        while len(self._entries) > self.max_entries:
            oldest = next(iter(self._entries))
            if oldest == key:  # never evict what was just stored (its owner cascade aside)
                break
            self.discard(oldest)


def estimate_bytes(value: Any) -> int:
    """Bytes of CPU memory a value holds, by duck typing (no torch import): `.nbytes` (numpy,
    torch) or `element_size() * nelement()`, summed through dicts, lists and tuples. Tensors on
    another device hold no system RAM and count 0."""
    total = 0
    seen: set[int] = set()
    stack = [value]
    while stack:
        item = stack.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
        elif isinstance(item, (str, bytes)):
            total += len(item)
        elif not isinstance(item, (int, float, bool, type(None))):
            device_type = getattr(getattr(item, "device", None), "type", "cpu")
            if device_type != "cpu":
                continue
            nbytes = getattr(item, "nbytes", None)
            if isinstance(nbytes, int):
                total += nbytes
            elif callable(getattr(item, "element_size", None)) and callable(getattr(item, "nelement", None)):
                try:
                    total += int(item.element_size()) * int(item.nelement())
                except Exception:  # a lookalike that is not a tensor after all
                    log.debug("could not size %r", type(item))
    return total


class RamCache(_EntryCache):
    """No count limit; under RAM pressure (available RAM below `min_free_gb`) evict the entries
    with the highest `1.3 ** age_in_prompts * bytes` until 1.1 x that much is free again."""

    def __init__(self, min_free_gb: float = 4.0, available: Callable[[], float | None] | None = None) -> None:
        super().__init__()
        self.min_free = min_free_gb * 1024**3
        self._available = available or available_ram_bytes

    def begin_prompt(self, keys_in_use: Collection[str]) -> None:
        super().begin_prompt(keys_in_use)
        for key in keys_in_use:
            entry = self._entries.get(key)
            if entry is not None:
                entry.generation = self.generation

    def _stored(self, key: str, entry: _Entry) -> None:
        entry.nbytes = estimate_bytes(entry.value)
        free = self._available()
        if free is None or free >= self.min_free:
            return
        target = 1.1 * self.min_free
        by_score = sorted(
            self._entries.items(),
            key=lambda item: 1.3 ** (self.generation - item[1].generation) * (item[1].nbytes + 1),
            reverse=True,
        )
        for victim, _ in by_score:
            if victim in self._entries:
                self.discard(victim)
                free = self._available()
                if free is None or free > target:
                    break
        log.debug("RAM cache: evicted down to %d entries (%.1f GB free)", len(self._entries), (free or 0) / 1024**3)


class NullCache:
    """--cache-none: nothing is kept, node instances are created anew for every prompt."""

    keep_objects = False

    def __init__(self) -> None:
        self._misses = 0

    def get(self, key: str) -> Any | None:
        self._misses += 1
        return None

    def put(self, key: str, value: Any, node_id: str, owner: str | None = None) -> None:
        return None

    def discard(self, key: str) -> None:
        return None

    def begin_prompt(self, keys_in_use: Collection[str]) -> None:
        return None

    def end_prompt(self) -> None:
        return None

    def clear(self) -> None:
        return None

    def stats(self) -> CacheStats:
        return CacheStats(misses=self._misses)

    def __len__(self) -> int:
        return 0

    def __contains__(self, key: object) -> bool:
        return False


def make_cache(lru: int | None = None, ram_gb: float | None = None, none: bool = False) -> Cache:
    """The policy for ComfyUI's flags: --cache-none, --cache-ram [GB], --cache-lru N (0 = classic)."""
    if none:
        return NullCache()
    if ram_gb is not None:
        return RamCache(ram_gb)
    if lru:
        return LRUCache(lru)
    return ClassicCache()


def cache_for_policy(policy: CachePolicy) -> Cache:
    """The cache a Config's `--cache-*` flags ask for (core.config.CachePolicy)."""
    return make_cache(
        lru=policy.lru_size if policy.kind == "lru" else None,
        ram_gb=policy.ram_gb if policy.kind == "ram" else None,
        none=policy.kind == "none",
    )


class ObjectCache:
    """Node instances, one per (node id, class type): V1 nodes may keep state on `self`.

    Instances of nodes the current prompt no longer has are dropped at the start of each prompt;
    an expanded node's instance lives as long as its top-level node (`owner`).
    """

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self._objects: dict[tuple[str, str], tuple[Any, str]] = {}

    def get(self, node_id: str, class_type: str, factory: Callable[[], Any], owner: str | None = None) -> Any:
        if not self.enabled:
            return factory()
        found = self._objects.get((node_id, class_type))
        if found is None:
            found = (factory(), owner or node_id)
            self._objects[(node_id, class_type)] = found
        return found[0]

    def begin_prompt(self, node_ids: Iterable[str]) -> None:
        keep = set(node_ids)
        for ident in [ident for ident, (_, owner) in self._objects.items() if owner not in keep]:
            del self._objects[ident]

    def clear(self) -> None:
        self._objects.clear()

    def __len__(self) -> int:
        return len(self._objects)


__all__ = [
    "UNIQUE_PREFIX",
    "Cache",
    "CacheStats",
    "ClassicCache",
    "LRUCache",
    "NullCache",
    "ObjectCache",
    "RamCache",
    "available_ram_bytes",
    "canonical",
    "compute_keys",
    "estimate_bytes",
    "is_unique",
    "make_cache",
    "node_key",
    "unique_key",
]
