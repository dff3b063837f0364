"""NodeRegistry: class_type -> NodeDefinition, the mapping the validator and the executor take.

Everything registers through it: Loom's built-in nodes (source "builtin") and every custom
package (source = the package name). Name clashes follow ComfyUI: a built-in node always wins
over a package's node of the same name (the package's one is skipped with a warning), and a
later package overwrites an earlier one (with a warning). Unlike ComfyUI, packages load in sorted
order, so who wins a clash does not depend on the file system.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from core.errors import EngineError
from core.spec import NodeDefinition
from nodes.api import DeclarativeNode
from nodes.compat import NodeContractError, V1Node

log = logging.getLogger(__name__)

BUILTIN = "builtin"
"""The source of Loom's own nodes."""


@dataclass
class AddReport:
    """What one registration call did, node by node."""

    added: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    """Not registered because a built-in node has the same name."""
    failed: dict[str, str] = field(default_factory=dict)
    """Node name -> why it could not be registered (it breaks the node contract)."""

    def merge(self, other: AddReport) -> None:
        self.added.extend(other.added)
        self.skipped.extend(other.skipped)
        self.failed.update(other.failed)


def _describe(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, NodeContractError) else f"{type(exc).__name__}: {exc}"


class NodeRegistry(Mapping[str, NodeDefinition]):
    """All node types this Loom instance can run, keyed by class_type."""

    def __init__(self) -> None:
        self._definitions: dict[str, NodeDefinition] = {}
        self._sources: dict[str, str] = {}
        self._display_names: dict[str, str] = {}

    # Mapping protocol: this is what the executor and validator receive.
    def __getitem__(self, class_type: str) -> NodeDefinition:
        return self._definitions[class_type]

    def __iter__(self) -> Iterator[str]:
        return iter(self._definitions)

    def __len__(self) -> int:
        return len(self._definitions)

    @property
    def sources(self) -> Mapping[str, str]:
        """class_type -> "builtin" or the name of the package that registered it."""
        return MappingProxyType(self._sources)

    @property
    def display_names(self) -> Mapping[str, str]:
        """class_type -> the name shown in the editor."""
        return MappingProxyType(self._display_names)

    def add(self, definition: NodeDefinition, source: str = BUILTIN, display_name: str | None = None) -> bool:
        """Register one definition; False when a clash rule skipped it."""
        class_type = definition.class_type
        if not self._may_register(class_type, source):
            return False
        self._definitions[class_type] = definition
        self._sources[class_type] = source
        self._display_names[class_type] = display_name or _spec_display_name(definition) or class_type
        return True

    def _may_register(self, class_type: str, source: str) -> bool:
        previous = self._sources.get(class_type)
        if previous is None:
            return True
        if previous == BUILTIN and source == BUILTIN:
            raise EngineError(f"built-in node '{class_type}' is registered twice; node ids must be unique")
        if previous == BUILTIN:
            log.warning(
                "custom node package '%s' defines '%s', which is a built-in node: the built-in wins and the "
                "package's node is skipped",
                source,
                class_type,
            )
            return False
        if source == BUILTIN:
            log.warning("built-in node '%s' replaces the one from package '%s'", class_type, previous)
        elif source == previous:
            log.warning("package '%s' defines '%s' twice; the later definition wins", source, class_type)
        else:
            log.warning(
                "node '%s' from package '%s' replaces the one from package '%s' (the later package wins)",
                class_type,
                source,
                previous,
            )
        return True

    def add_v1_mappings(
        self,
        mappings: Mapping[str, type],
        display_names: Mapping[str, str] | None = None,
        python_module: str | None = None,
        source: str = BUILTIN,
    ) -> AddReport:
        """Register a package's NODE_CLASS_MAPPINGS (+ NODE_DISPLAY_NAME_MAPPINGS). A class that
        breaks the contract fails alone: it is reported in `failed`, the others register."""
        if not isinstance(mappings, Mapping):
            raise NodeContractError(f"NODE_CLASS_MAPPINGS must be a dict, got {type(mappings).__name__}")
        names = display_names if isinstance(display_names, Mapping) else {}
        report = AddReport()
        for class_type, cls in mappings.items():
            try:
                if not isinstance(class_type, str) or not class_type:
                    raise NodeContractError(f"NODE_CLASS_MAPPINGS key {class_type!r} is not a node name string")
                definition = V1Node(cls, class_type, names.get(class_type), python_module)
            except Exception as exc:  # one broken class must not take its package down
                self._record_failure(report, str(class_type), source, exc)
                continue
            self._record(report, definition, source, names.get(class_type))
        return report

    def add_declarative(
        self, classes: Iterable[type], source: str = BUILTIN, python_module: str | None = None
    ) -> AddReport:
        """Register declarative node classes (a package's `NODES` list)."""
        if isinstance(classes, (str, bytes, Mapping)) or not isinstance(classes, Iterable):
            raise NodeContractError(f"NODES must be a list of node classes, got {type(classes).__name__}")
        report = AddReport()
        for cls in classes:
            try:
                definition = DeclarativeNode(cls, python_module=python_module)
            except Exception as exc:
                self._record_failure(report, _class_label(cls), source, exc)
                continue
            self._record(report, definition, source, None)
        return report

    def _record(self, report: AddReport, definition: NodeDefinition, source: str, display_name: str | None) -> None:
        if self.add(definition, source, display_name):
            report.added.append(definition.class_type)
        else:
            report.skipped.append(definition.class_type)

    @staticmethod
    def _record_failure(report: AddReport, name: str, source: str, exc: Exception) -> None:
        if isinstance(exc, NodeContractError):
            log.error("node '%s' from %s is skipped: %s", name, source, exc)
        else:
            log.error("node '%s' from %s is skipped: it failed to compile", name, source, exc_info=exc)
        report.failed[name] = _describe(exc)

    def object_info(self) -> dict[str, Any]:
        """GET /object_info: every node's entry. A node whose spec cannot be built (its
        INPUT_TYPES raises, say) is logged and left out, as ComfyUI does."""
        info: dict[str, Any] = {}
        for class_type in self._definitions:
            entry = self._object_info_entry(class_type)
            if entry is not None:
                info[class_type] = entry
        return info

    def object_info_one(self, class_type: str) -> dict[str, Any]:
        """GET /object_info/{class}: `{class_type: entry}`, or `{}` for an unknown node."""
        entry = self._object_info_entry(class_type) if class_type in self._definitions else None
        return {class_type: entry} if entry is not None else {}

    def _object_info_entry(self, class_type: str) -> dict[str, Any] | None:
        try:
            return self._definitions[class_type].spec().object_info()
        except Exception:
            log.exception(
                "node '%s' (from %s) is left out of /object_info: building its spec failed",
                class_type,
                self._sources.get(class_type),
            )
            return None

    def __repr__(self) -> str:
        return f"NodeRegistry({len(self)} nodes)"


def _spec_display_name(definition: NodeDefinition) -> str | None:
    try:
        return definition.spec().display_name
    except Exception:  # reported by object_info(); a display name is not worth failing for
        return None


def _class_label(cls: Any) -> str:
    spec = getattr(cls, "spec", None)
    class_type = getattr(spec, "id", None)
    if isinstance(class_type, str) and class_type:
        return class_type
    return getattr(cls, "__name__", repr(cls))
