"""What custom node packages offer the editor besides nodes (spec §1.3 "custom nodes"):

- GET /workflow_templates -> `{package: [workflow names]}` from each loaded package's
  `example_workflows/` folder (ComfyUI also looks in `example/`, `examples/`, `workflow/`,
  `workflows/`); packages without any are left out. The files are served at
  /workflow_templates/{package}/{file} (and under /api, where ComfyUI serves them).
- GET /i18n -> `{locale: {...}}`: every package's `locales/<locale>/main.json`, with
  `nodeDefs.json`, `commands.json` and `settings.json` of the same folder under those keys, merged
  across packages in load order (a later package adds keys, and wins on a clash). `{}` when no
  package has translations.

Only packages that loaded count: a broken package's templates would name nodes that do not exist.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from aiohttp import web

from core.paths import contained
from server.app import CATALOG
from server.http import NotFound, safe_headers

log = logging.getLogger(__name__)

TEMPLATE_FOLDERS = ("example_workflows", "example", "examples", "workflow", "workflows")
LOCALE_PARTS = {"nodeDefs.json": "nodeDefs", "commands.json": "commands", "settings.json": "settings"}


def package_folders(packages: Iterable[Any]) -> dict[str, Path]:
    """Loaded package name -> its folder (single-file packages have none)."""
    found = {}
    for report in packages:
        path = getattr(report, "path", None)
        if getattr(report, "ok", True) and path is not None and Path(path).is_dir():
            found[report.name] = Path(path)
    return found


def template_folder(package: Path) -> Path | None:
    for name in TEMPLATE_FOLDERS:
        if (package / name).is_dir():
            return package / name
    return None


def workflow_templates(packages: Iterable[Any]) -> dict[str, list[str]]:
    templates = {}
    for name, folder in package_folders(packages).items():
        examples = template_folder(folder)
        if examples is not None:
            names = sorted(p.stem for p in examples.glob("*.json") if p.is_file())
            if names:
                templates[name] = names
    return templates


def merge_into(target: dict[str, Any], source: dict[str, Any]) -> None:
    """Deep merge with an explicit stack (no recursion); source wins on non-dict clashes."""
    stack = [(target, source)]
    while stack:
        into, items = stack.pop()
        for key, value in items.items():
            if isinstance(value, dict) and isinstance(into.get(key), dict):
                stack.append((into[key], value))
            elif isinstance(value, dict):
                into[key] = {}
                stack.append((into[key], value))
            else:
                into[key] = value


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        log.warning("translations file %s is unreadable: %s", path, exc)
        return None
    return data if isinstance(data, dict) else None


def translations(packages: Iterable[Any]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for folder in package_folders(packages).values():
        locales = folder / "locales"
        if not locales.is_dir():
            continue
        for locale in sorted(p for p in locales.iterdir() if p.is_dir()):
            entry: dict[str, Any] = {}
            main = _read_json(locale / "main.json") if (locale / "main.json").is_file() else None
            if main:
                merge_into(entry, main)
            for file_name, key in LOCALE_PARTS.items():
                part = _read_json(locale / file_name) if (locale / file_name).is_file() else None
                if part:
                    merge_into(entry, {key: part})
            if entry:
                merge_into(merged.setdefault(locale.name, {}), entry)
    return merged


async def get_workflow_templates(request: web.Request) -> web.Response:
    catalog = request.app[CATALOG]
    await catalog.get()
    return web.json_response(await asyncio.to_thread(workflow_templates, catalog.packages))


async def get_workflow_template_file(request: web.Request) -> web.StreamResponse:
    catalog = request.app[CATALOG]
    await catalog.get()
    pack, relative = request.match_info["pack"], request.match_info["file"]
    folder = package_folders(catalog.packages).get(pack)
    examples = template_folder(folder) if folder is not None else None
    target = contained(examples, relative) if examples is not None and "\x00" not in relative else None
    if target is None or not target.is_file():
        raise NotFound(f"no workflow template {relative!r} in package {pack!r}")
    return web.FileResponse(target, headers=safe_headers(target, target.name))


async def get_i18n(request: web.Request) -> web.Response:
    catalog = request.app[CATALOG]
    await catalog.get()
    return web.json_response(await asyncio.to_thread(translations, catalog.packages))


__all__ = [
    "get_i18n",
    "get_workflow_template_file",
    "get_workflow_templates",
    "merge_into",
    "translations",
    "workflow_templates",
]
