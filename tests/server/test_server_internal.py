"""Read-only helper routes: /view_metadata, /internal/folder_paths, /internal/files, and what custom
packages offer besides nodes (/workflow_templates, /i18n)."""

from __future__ import annotations

import json
import os
import struct
import time
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient

from core.paths import ModelPaths
from nodes.loader import PackageReport

pytestmark = pytest.mark.asyncio


def safetensors(path: Path, metadata: dict[str, str] | None) -> None:
    header: dict = {"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}
    if metadata is not None:
        header["__metadata__"] = metadata
    raw = json.dumps(header).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0\0\0\0")


async def test_view_metadata(start, tmp_path: Path) -> None:
    models = tmp_path / "models"
    safetensors(models / "loras" / "style.safetensors", {"ss_network_dim": "16", "modelspec.title": "Style"})
    safetensors(models / "loras" / "sub" / "plain.safetensors", None)
    (models / "loras" / "junk.safetensors").write_bytes(b"\xff" * 64)
    (models / "loras" / "old.ckpt").write_bytes(b"pickle")
    client = await start(run_worker=False, paths=ModelPaths(models))
    response = await client.get("/view_metadata/loras", params={"filename": "style.safetensors"})
    assert response.status == 200
    assert await response.json() == {"ss_network_dim": "16", "modelspec.title": "Style"}
    assert (
        await (await client.get("/api/view_metadata/loras", params={"filename": "sub/plain.safetensors"})).json() == {}
    )
    for folder, filename in (
        ("loras", "junk.safetensors"),
        ("loras", "old.ckpt"),
        ("loras", "missing.safetensors"),
        ("nope", "style.safetensors"),
        ("loras", "../loras/../../models/loras/style.safetensors/../x.safetensors"),
    ):
        response = await client.get(f"/view_metadata/{folder}", params={"filename": filename})
        assert response.status == 404, (folder, filename)
        assert str(tmp_path) not in await response.text()


async def test_internal_folder_paths_and_files(start, tmp_path: Path) -> None:
    client = await start(run_worker=False, paths=ModelPaths(tmp_path / "models"))
    folders = await (await client.get("/internal/folder_paths")).json()
    assert folders["checkpoints"] == [str(tmp_path / "models" / "checkpoints")]
    assert folders["text_encoders"] == [str(tmp_path / "models" / "text_encoders"), str(tmp_path / "models" / "clip")]
    assert (await client.get("/api/internal/folder_paths")).status != 200  # not mirrored under /api

    out = tmp_path / "output"
    (out / "sub").mkdir(parents=True)
    now = time.time()
    for age, name in ((30, "old.png"), (10, "mid.png"), (0, "new.png")):
        (out / name).write_bytes(b"x")
        os.utime(out / name, (now - age, now - age))
    (out / ".hidden").write_bytes(b"x")
    assert await (await client.get("/internal/files/output")).json() == ["new.png", "mid.png", "old.png"]
    assert await (await client.get("/internal/files/input")).json() == []
    bad = await client.get("/internal/files/models")
    assert bad.status == 400 and "input, output or temp" in (await bad.json())["error"]["message"]


def make_pack(root: Path, name: str, templates: dict[str, str], locales: dict[str, dict[str, dict]]) -> PackageReport:
    folder = root / name
    (folder / "example_workflows").mkdir(parents=True)
    for template, text in templates.items():
        (folder / "example_workflows" / f"{template}.json").write_text(text)
    for locale, files in locales.items():
        (folder / "locales" / locale).mkdir(parents=True)
        for file_name, content in files.items():
            (folder / "locales" / locale / file_name).write_text(json.dumps(content))
    return PackageReport(name=name, path=folder, ok=True)


async def test_workflow_templates_and_i18n(start, tmp_path: Path) -> None:
    packs = tmp_path / "custom_nodes"
    first = make_pack(
        packs,
        "pack_a",
        {"upscale": '{"nodes": []}', "basic": "{}"},
        {
            "en": {
                "main.json": {"title": "A", "shared": {"x": 1}},
                "nodeDefs.json": {"NodeA": {"display_name": "Node A"}},
            }
        },
    )
    second = make_pack(
        packs,
        "pack_b",
        {},
        {
            "en": {"main.json": {"shared": {"y": 2}}, "settings.json": {"B.On": {"name": "B on"}}},
            "fr": {"main.json": {"title": "B fr"}},
        },
    )
    broken = make_pack(packs, "pack_c", {"never": "{}"}, {"en": {"main.json": {"title": "C"}}})
    broken.ok = False
    client = await start(run_worker=False, packages=[first, second, broken])
    assert await (await client.get("/workflow_templates")).json() == {"pack_a": ["basic", "upscale"]}
    template = await client.get("/api/workflow_templates/pack_a/upscale.json")
    assert template.status == 200 and await template.json() == {"nodes": []}
    assert (await client.get("/workflow_templates/pack_a/..%2F..%2Fpack_a%2Flocales")).status == 404
    assert (await client.get("/workflow_templates/pack_c/never.json")).status == 404
    assert await (await client.get("/i18n")).json() == {
        "en": {
            "title": "A",
            "shared": {"x": 1, "y": 2},
            "nodeDefs": {"NodeA": {"display_name": "Node A"}},
            "settings": {"B.On": {"name": "B on"}},
        },
        "fr": {"title": "B fr"},
    }


async def test_no_packages_no_templates(idle_client: TestClient) -> None:
    assert await (await idle_client.get("/workflow_templates")).json() == {}
    assert await (await idle_client.get("/i18n")).json() == {}
