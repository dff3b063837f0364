"""Users, per-user files and settings (spec §1.3): listing, %2F subfolders, overwrite and 409, move,
containment, --multi-user, and the body rules for editors that post JSON as text/plain."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient

from core.config import Config

pytestmark = pytest.mark.asyncio


async def save(client: TestClient, name: str, data: bytes | str, **query: str) -> tuple[int, object]:
    response = await client.post(f"/userdata/{name}", data=data, params=query)
    return response.status, await response.json()


async def test_save_read_list_and_delete(idle_client: TestClient, tmp_path: Path) -> None:
    workflow = json.dumps({"nodes": [], "links": []})
    status, body = await save(idle_client, "workflows%2Fa.json", workflow)
    assert (status, body) == (200, "workflows/a.json")
    assert (tmp_path / "user" / "default" / "workflows" / "a.json").read_text() == workflow
    await save(idle_client, "workflows%2Fdeep%2Fb.json", "{}")
    await save(idle_client, "workflows%2Fnotes.txt", "hello")

    read = await idle_client.get("/userdata/workflows%2Fa.json")
    assert read.status == 200 and await read.text() == workflow
    assert read.headers["X-Content-Type-Options"] == "nosniff"
    text = await idle_client.get("/userdata/workflows%2Fnotes.txt")
    assert text.headers["Content-Type"] == "application/octet-stream"  # never text/html or text/plain

    listing = await (await idle_client.get("/userdata", params={"dir": "workflows"})).json()
    assert listing == ["a.json", "notes.txt"]
    recursive = await (await idle_client.get("/userdata", params={"dir": "workflows", "recurse": "true"})).json()
    assert recursive == ["a.json", "deep/b.json", "notes.txt"]
    split = await (
        await idle_client.get("/userdata", params={"dir": "workflows", "recurse": "true", "split": "true"})
    ).json()
    assert split[1] == ["deep/b.json", "deep", "b.json"]
    full = await (await idle_client.get("/userdata", params={"dir": "workflows", "full_info": "true"})).json()
    assert full[0]["path"] == "a.json" and full[0]["size"] == len(workflow) and full[0]["modified"] > 0

    deleted = await idle_client.delete("/userdata/workflows%2Fa.json")
    assert deleted.status == 204
    assert (await idle_client.get("/userdata/workflows%2Fa.json")).status == 404
    assert (await idle_client.delete("/userdata/workflows%2Fa.json")).status == 404


async def test_listing_errors(idle_client: TestClient) -> None:
    missing_dir = await idle_client.get("/userdata")
    assert missing_dir.status == 400 and "dir" in (await missing_dir.json())["error"]["message"]
    assert (await idle_client.get("/userdata", params={"dir": "nope"})).status == 404


async def test_overwrite_false_gives_409_and_full_info(idle_client: TestClient) -> None:
    assert (await save(idle_client, "x.json", "1"))[0] == 200
    status, body = await save(idle_client, "x.json", "2", overwrite="false")
    assert status == 409 and "already exists" in body["error"]["message"]
    assert await (await idle_client.get("/userdata/x.json")).text() == "1"
    status, info = await save(idle_client, "x.json", "22", overwrite="true", full_info="true")
    assert status == 200 and info["path"] == "x.json" and info["size"] == 2


async def test_move(idle_client: TestClient, tmp_path: Path) -> None:
    await save(idle_client, "a.json", "A")
    await save(idle_client, "b.json", "B")
    refused = await idle_client.post("/userdata/a.json/move/b.json", params={"overwrite": "false"})
    assert refused.status == 409
    moved = await idle_client.post("/userdata/a.json/move/archive%2Fa2.json")
    assert moved.status == 200 and await moved.json() == "archive/a2.json"
    assert (tmp_path / "user" / "default" / "archive" / "a2.json").read_text() == "A"
    assert (await idle_client.post("/userdata/a.json/move/c.json")).status == 404
    replaced = await idle_client.post("/userdata/b.json/move/archive%2Fa2.json", params={"full_info": "true"})
    assert (await replaced.json())["path"] == "archive/a2.json"
    assert (tmp_path / "user" / "default" / "archive" / "a2.json").read_text() == "B"


async def test_paths_stay_in_the_user_folder(idle_client: TestClient, tmp_path: Path) -> None:
    (tmp_path / "user").mkdir(exist_ok=True)
    (tmp_path / "user" / "secret.txt").write_text("other users' and the server's files")
    (tmp_path / "user" / "default").mkdir()
    (tmp_path / "user" / "default" / "link").symlink_to(tmp_path / "user")
    for name in ("..%2Fsecret.txt", "..%2F..%2Fuser%2Fsecret.txt", "link%2Fsecret.txt", "%2Fetc%2Fpasswd"):
        response = await idle_client.get(f"/userdata/{name}")
        assert response.status in (403, 404), name
        assert "other users" not in await response.text()
        assert str(tmp_path) not in await response.text()
    assert (await idle_client.post("/userdata/..%2Fplanted.json", data="x")).status == 403
    assert not (tmp_path / "user" / "planted.json").exists()
    assert (await idle_client.post("/userdata/a.json/move/..%2F..%2Fout.json")).status in (403, 404)
    assert (await idle_client.get("/userdata", params={"dir": ".."})).status == 403
    assert (await idle_client.get("/v2/userdata", params={"path": "../.."})).status == 403


async def test_v2_listing(idle_client: TestClient) -> None:
    await save(idle_client, "workflows%2Fa.json", "{}")
    await save(idle_client, "top.json", "[]")
    root = await (await idle_client.get("/v2/userdata")).json()
    assert [(e["name"], e["type"], e["path"]) for e in root] == [
        ("top.json", "file", "top.json"),
        ("workflows", "directory", "workflows"),
    ]
    assert root[0]["size"] == 2 and "size" not in root[1]
    inner = await (await idle_client.get("/v2/userdata", params={"path": "workflows"})).json()
    assert [(e["name"], e["path"]) for e in inner] == [("a.json", "workflows/a.json")]
    assert (await idle_client.get("/v2/userdata", params={"path": "nope"})).status == 404
    assert (await idle_client.get("/v2/userdata", params={"path": "top.json"})).status == 400


async def test_settings(idle_client: TestClient, tmp_path: Path) -> None:
    assert await (await idle_client.get("/settings")).json() == {}
    assert await (await idle_client.get("/settings/Comfy.Theme")).json() is None
    assert (await idle_client.post("/settings", json={"Comfy.Theme": "dark", "Comfy.Scale": 2})).status == 200
    # The editor posts a single value as text (fetch's default text/plain), from its own page.
    same_origin = {"Origin": f"http://127.0.0.1:{idle_client.port}", "Content-Type": "text/plain;charset=UTF-8"}
    response = await idle_client.post("/settings/Comfy.Scale", data="3", headers=same_origin)
    assert response.status == 200
    assert await (await idle_client.get("/settings")).json() == {"Comfy.Theme": "dark", "Comfy.Scale": 3}
    assert await (await idle_client.get("/api/settings/Comfy.Theme")).json() == "dark"
    stored = json.loads((tmp_path / "user" / "default" / "comfy.settings.json").read_text())
    assert stored == {"Comfy.Theme": "dark", "Comfy.Scale": 3}
    bad = await idle_client.post("/settings", json=[1, 2])
    assert bad.status == 400


async def test_text_bodies_need_same_origin_proof_from_browsers(idle_client: TestClient) -> None:
    form = {"Content-Type": "text/plain", "Sec-Fetch-Mode": "no-cors", "Sec-Fetch-Site": "same-site"}
    assert (await idle_client.post("/userdata/x.json", data="{}", headers=form)).status == 403
    script = {"Content-Type": "text/plain"}  # no browser headers at all: a script
    assert (await idle_client.post("/userdata/x.json", data="{}", headers=script)).status == 200
    cross = {"Origin": "https://evil.example", "Content-Type": "text/plain"}
    assert (await idle_client.post("/userdata/x.json", data="{}", headers=cross)).status == 403


async def test_single_user_mode(idle_client: TestClient) -> None:
    assert await (await idle_client.get("/users")).json() == {"storage": "server", "migrated": False}
    await save(idle_client, "x.json", "{}")
    assert await (await idle_client.get("/users")).json() == {"storage": "server", "migrated": True}


async def test_multi_user_mode(start, tmp_path: Path) -> None:
    client = await start(run_worker=False, config=Config(base_dir=tmp_path, engine={"multi_user": True}))
    assert await (await client.get("/users")).json() == {"storage": "server", "users": {}}
    created = await client.post("/users", json={"username": "Ada L."})
    ada = await created.json()
    assert created.status == 200 and ada.startswith("Ada-L_")
    duplicate = await client.post("/users", json={"username": "Ada L."})
    assert duplicate.status == 400
    assert (await client.post("/users", json={})).status == 400
    bob = await (await client.post("/users", json={"username": "bob"})).json()
    assert await (await client.get("/users")).json() == {"storage": "server", "users": {ada: "Ada L.", bob: "bob"}}

    await client.post("/userdata/mine.json", data="ada's", headers={"comfy-user": ada})
    assert (tmp_path / "user" / ada / "mine.json").read_text() == "ada's"
    assert (await client.get("/userdata/mine.json", headers={"comfy-user": bob})).status == 404
    for user in ("stranger", "__system", "../default"):
        response = await client.get("/settings", headers={"comfy-user": user})
        assert response.status == 403, user
    # No header: the `default` user, which multi-user mode does not have until created.
    assert (await client.get("/settings")).status == 403
