"""Loading custom node packages from custom_nodes/ folders (ComfyUI spec §3.5).

Every entry of each folder that is a package (a folder with __init__.py) or a single *.py file is
imported in isolation, in sorted order, under its own module name (`loom_custom_nodes.<name>`),
so relative imports inside a package work and two packages never share module state. A package
that fails to import -- any exception, SystemExit included -- is logged with its traceback,
reported and skipped; the others still load. A node class that breaks the contract fails alone.

A package exports ComfyUI's NODE_CLASS_MAPPINGS (+ NODE_DISPLAY_NAME_MAPPINGS, WEB_DIRECTORY)
and/or Loom's `NODES = [declarative classes]`.
"""

from __future__ import annotations

import importlib.util
import logging
import re
import sys
import time
import tomllib
import traceback
import types
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nodes.compat import NodeContractError
from nodes.registry import AddReport, NodeRegistry

log = logging.getLogger(__name__)

MODULE_ROOT = "loom_custom_nodes"
"""Parent module name under which packages are imported."""

PRESTARTUP_SCRIPT = "prestartup_script.py"


@dataclass
class PackageReport:
    """The outcome of loading one package (shown at startup, served to the editor)."""

    name: str
    path: Path
    ok: bool = False
    error: str | None = None
    """The traceback (import failures) or the reason the package was not usable."""
    seconds: float = 0.0
    nodes: list[str] = field(default_factory=list)
    """class_types this package registered."""
    web_directory: Path | None = None
    """Absolute path of the folder served at /extensions/<name>/, if the package has one."""
    node_errors: dict[str, str] = field(default_factory=dict)
    """Nodes of this package that break the contract: name -> reason (the rest still load)."""
    skipped: list[str] = field(default_factory=list)
    """Nodes not registered because a built-in node has the same name."""
    module_name: str = ""


@dataclass
class PrestartupReport:
    name: str
    path: Path
    ok: bool
    error: str | None
    seconds: float


def discover_packages(
    dirs: Sequence[Path], *, disabled: bool = False, whitelist: Collection[str] = ()
) -> list[tuple[str, Path]]:
    """(name, path) of every loadable entry of `dirs`, folder by folder, each folder sorted.

    `disabled` skips every package except those named in `whitelist` (ComfyUI's
    --disable-all-custom-nodes + --whitelist-custom-nodes); the whitelist means nothing alone.
    """
    found: list[tuple[str, Path]] = []
    for folder in dirs:
        folder = Path(folder)
        if not folder.is_dir():
            log.debug("custom node folder %s does not exist; nothing to load from it", folder)
            continue
        for entry in sorted(folder.iterdir(), key=lambda path: path.name):
            name = _package_name(entry)
            if name is None:
                continue
            if disabled and entry.name not in whitelist and name not in whitelist:
                log.info("skipping custom node package %s: custom nodes are disabled and it is not whitelisted", name)
                continue
            found.append((name, entry))
    return found


def _package_name(entry: Path) -> str | None:
    """The package name of a folder entry, or None when it is not a package to load."""
    if entry.name.startswith((".", "_")) or entry.name.endswith(".disabled"):
        return None
    if entry.is_dir():
        if (entry / "__init__.py").is_file():
            return entry.name
        log.debug("skipping %s: a folder without __init__.py is not a package", entry)
        return None
    if entry.is_file() and entry.suffix == ".py":
        return entry.stem
    return None


def run_prestartup_scripts(
    dirs: Sequence[Path], *, disabled: bool = False, whitelist: Collection[str] = ()
) -> list[PrestartupReport]:
    """Run each package's prestartup_script.py (before any package is imported); errors are
    logged and reported, never raised."""
    reports = []
    for name, path in discover_packages(dirs, disabled=disabled, whitelist=whitelist):
        script = path / PRESTARTUP_SCRIPT
        if not path.is_dir() or not script.is_file():
            continue
        started = time.perf_counter()
        error = None
        try:
            spec = importlib.util.spec_from_file_location(f"loom_prestartup.{_sanitise(name)}", script)
            if spec is None or spec.loader is None:
                raise ImportError(f"cannot load {script}")
            spec.loader.exec_module(importlib.util.module_from_spec(spec))
        except (Exception, SystemExit):
            error = traceback.format_exc()
            log.error("prestartup script of custom node package %s failed:\n%s", name, error)
        reports.append(PrestartupReport(name, path, error is None, error, time.perf_counter() - started))
    if reports:
        _log_times(
            "Prestartup times for custom nodes:", [(r.seconds, r.ok, r.path) for r in reports], "PRESTARTUP FAILED"
        )
    return reports


def load_custom_nodes(
    registry: NodeRegistry,
    dirs: Sequence[Path],
    *,
    disabled: bool = False,
    whitelist: Collection[str] = (),
    run_prestartup: bool = True,
) -> list[PackageReport]:
    """Import every package of `dirs` into `registry`; one report per package, in load order.

    `run_prestartup=False` when the caller already ran run_prestartup_scripts() (main.py does,
    before importing torch)."""
    if run_prestartup:
        run_prestartup_scripts(dirs, disabled=disabled, whitelist=whitelist)
    reports: list[PackageReport] = []
    used_module_names: set[str] = set()
    for name, path in discover_packages(dirs, disabled=disabled, whitelist=whitelist):
        module_name = _unique_module_name(name, used_module_names)
        reports.append(load_package(registry, name, path, module_name))
    if reports:
        _log_times("Import times for custom nodes:", [(r.seconds, r.ok, r.path) for r in reports], "IMPORT FAILED")
    return reports


def load_package(registry: NodeRegistry, name: str, path: Path, module_name: str | None = None) -> PackageReport:
    """Import one package and register its nodes; never raises (failures are in the report)."""
    report = PackageReport(name=name, path=path.resolve(), module_name=module_name or _qualified(_sanitise(name)))
    started = time.perf_counter()
    try:
        module = _import(report.module_name, path)
        report.web_directory = _web_directory(module, path)
        _register(registry, module, report)
    except (Exception, SystemExit):
        report.ok = False
        report.error = traceback.format_exc()
        log.error("cannot import custom node package %s (%s); it is skipped:\n%s", name, path, report.error)
    report.seconds = time.perf_counter() - started
    return report


def _sanitise(name: str) -> str:
    cleaned = re.sub(r"\W", "_", name, flags=re.ASCII)
    return cleaned if cleaned and not cleaned[0].isdigit() else f"_{cleaned}"


def _qualified(sanitised: str) -> str:
    return f"{MODULE_ROOT}.{sanitised}"


def _unique_module_name(name: str, used: set[str]) -> str:
    base = _sanitise(name)
    candidate, counter = base, 1
    while candidate in used:  # the same package name in two custom node folders
        counter += 1
        candidate = f"{base}_{counter}"
    used.add(candidate)
    return _qualified(candidate)


def _forget(module_name: str) -> None:
    """Drop a module and its submodules from sys.modules (a failed or repeated import)."""
    for loaded in [key for key in sys.modules if key == module_name or key.startswith(module_name + ".")]:
        del sys.modules[loaded]


def _import(module_name: str, path: Path) -> types.ModuleType:
    if MODULE_ROOT not in sys.modules:
        root = types.ModuleType(MODULE_ROOT, "Parent of the custom node packages Loom imported.")
        root.__path__ = []  # a package, so `loom_custom_nodes.<name>.<sub>` names resolve
        sys.modules[MODULE_ROOT] = root
    # A second load in the same process (tests, a reload) must not see the previous import's
    # submodules: relative imports would silently return the old ones.
    _forget(module_name)
    if path.is_dir():
        spec = importlib.util.spec_from_file_location(
            module_name, path / "__init__.py", submodule_search_locations=[str(path)]
        )
    else:
        spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot create an import spec for {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        _forget(module_name)
        raise
    return module


def _web_directory(module: types.ModuleType, path: Path) -> Path | None:
    base = path if path.is_dir() else path.parent
    declared = getattr(module, "WEB_DIRECTORY", None)
    if declared is None and path.is_dir():
        declared = _pyproject_web(path / "pyproject.toml")
    if declared is None:
        return None
    web = (base / str(declared)).resolve()
    if not web.is_dir():
        log.warning("custom node package %s: WEB_DIRECTORY %s is not a folder; no web extension served", path, web)
        return None
    return web


def _pyproject_web(pyproject: Path) -> str | None:
    """`[tool.comfy] web = "..."` in the package's pyproject.toml (ComfyUI's alternative)."""
    if not pyproject.is_file():
        return None
    try:
        data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        log.warning("cannot read %s: %s", pyproject, exc)
        return None
    web = data.get("tool", {}).get("comfy", {}).get("web")
    return web if isinstance(web, str) else None


def _register(registry: NodeRegistry, module: types.ModuleType, report: PackageReport) -> None:
    mappings: Any = getattr(module, "NODE_CLASS_MAPPINGS", None)
    declarative: Any = getattr(module, "NODES", None)
    if mappings is None and declarative is None:
        hint = (
            " (ComfyUI V3 comfy_entrypoint() packages are not supported yet)"
            if hasattr(module, "comfy_entrypoint")
            else ""
        )
        report.ok = False
        report.error = f"the package exports neither NODE_CLASS_MAPPINGS nor NODES{hint}"
        log.warning("custom node package %s is skipped: %s", report.name, report.error)
        return
    # Check both exports before registering either, so a failure never leaves half a package.
    if mappings is not None and not isinstance(mappings, Mapping):
        raise NodeContractError(f"NODE_CLASS_MAPPINGS must be a dict, got {type(mappings).__name__}")
    if declarative is not None and (
        isinstance(declarative, (str, bytes, Mapping)) or not isinstance(declarative, Iterable)
    ):
        raise NodeContractError(f"NODES must be a list of node classes, got {type(declarative).__name__}")
    python_module = f"custom_nodes.{report.name}"
    added = AddReport()
    if mappings is not None:
        display_names = getattr(module, "NODE_DISPLAY_NAME_MAPPINGS", None)
        added.merge(registry.add_v1_mappings(mappings, display_names, python_module, source=report.name))
    if declarative is not None:
        added.merge(registry.add_declarative(declarative, source=report.name, python_module=python_module))
    report.ok = True
    report.nodes = added.added
    report.skipped = added.skipped
    report.node_errors = added.failed


def _log_times(title: str, rows: list[tuple[float, bool, Path]], failure: str) -> None:
    lines = [title]
    for seconds, ok, path in sorted(rows, key=lambda row: (row[0], str(row[2]))):
        mark = "" if ok else f" ({failure})"
        lines.append(f"{seconds:6.1f} seconds{mark}: {path}")
    log.info("\n".join(lines))


__all__ = [
    "PackageReport",
    "PrestartupReport",
    "discover_packages",
    "load_custom_nodes",
    "load_package",
    "run_prestartup_scripts",
]
