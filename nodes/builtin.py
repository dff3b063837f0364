"""Loom's built-in nodes and the composition of the registry main.py uses.

Built-in nodes live in the modules listed in BUILTIN_MODULES; each exports `NODES` (declarative
classes) and/or `NODE_CLASS_MAPPINGS` (+ NODE_DISPLAY_NAME_MAPPINGS) exactly as a custom package
would. Adding a module of nodes means adding one line here. Modules are imported when the
registry is built, not when this module is imported (the torch-based ones are heavy).
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Collection, Sequence
from pathlib import Path

from core.errors import EngineError
from nodes.loader import PackageReport, load_custom_nodes
from nodes.registry import BUILTIN, AddReport, NodeRegistry

log = logging.getLogger(__name__)

BUILTIN_MODULES: tuple[str, ...] = (
    "nodes.basic",
    "nodes.strings",
    "nodes.image_io",
    "nodes.latent_io",
    "nodes.loaders",
    "nodes.conditioning",
    "nodes.sampling",
    "nodes.custom_sampling",
    "nodes.latent",
    "nodes.vae_nodes",
    "nodes.model_patches",
    "nodes.image_ops",
    "nodes.mask_ops",
    "nodes.controlnet",
    "nodes.upscale",
)
"""Modules of built-in nodes, in registration (and /object_info) order."""

BUILTIN_PYTHON_MODULE = "nodes"
"""What /object_info shows as python_module for built-ins (the editor treats it as core)."""


def builtin_registry(modules: Sequence[str] = BUILTIN_MODULES) -> NodeRegistry:
    """A registry holding every built-in node. A broken built-in is a Loom bug: it raises."""
    registry = NodeRegistry()
    for module_name in modules:
        module = importlib.import_module(module_name)
        report = AddReport()
        mappings = getattr(module, "NODE_CLASS_MAPPINGS", None)
        if mappings is not None:
            display_names = getattr(module, "NODE_DISPLAY_NAME_MAPPINGS", None)
            report.merge(registry.add_v1_mappings(mappings, display_names, BUILTIN_PYTHON_MODULE, source=BUILTIN))
        declarative = getattr(module, "NODES", None)
        if declarative is not None:
            report.merge(registry.add_declarative(declarative, source=BUILTIN, python_module=BUILTIN_PYTHON_MODULE))
        if report.failed:
            raise EngineError(f"built-in nodes of {module_name} are broken: {report.failed}")
        if mappings is None and declarative is None:
            raise EngineError(f"{module_name} is listed as a built-in node module but exports no nodes")
        log.debug("registered %d built-in nodes from %s", len(report.added), module_name)
    return registry


def build_registry(
    custom_dirs: Sequence[Path],
    *,
    disable_custom_nodes: bool = False,
    whitelist: Collection[str] = (),
    run_prestartup: bool = True,
) -> tuple[NodeRegistry, list[PackageReport]]:
    """The registry main.py hands to the executor and server: built-ins, then custom packages.

    `disable_custom_nodes` loads no package except those named in `whitelist`."""
    registry = builtin_registry()
    reports = load_custom_nodes(
        registry, custom_dirs, disabled=disable_custom_nodes, whitelist=whitelist, run_prestartup=run_prestartup
    )
    loaded = sum(1 for report in reports if report.ok)
    log.info(
        "%d nodes registered (%d custom node packages loaded, %d failed)", len(registry), loaded, len(reports) - loaded
    )
    return registry, reports


__all__ = ["BUILTIN_MODULES", "build_registry", "builtin_registry"]
