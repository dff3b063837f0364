"""POST /upload/image and /upload/mask: images only (sniffed), input/temp only, server-side names,
ComfyUI's "name (1).png" collisions, the size cap, and mask compositing."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient
from PIL import Image, PngImagePlugin

from core.config import Config
from server.uploads import clean_name

pytestmark = pytest.mark.asyncio


def png(color: tuple[int, ...] = (255, 0, 0), size: tuple[int, int] = (8, 6), mode: str = "RGB", **text: str) -> bytes:
    info = PngImagePlugin.PngInfo()
    for key, value in text.items():
        info.add_text(key, value)
    out = io.BytesIO()
    Image.new(mode, size, color).save(out, format="PNG", pnginfo=info)
    return out.getvalue()


def jpeg() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (4, 4), (0, 0, 255)).save(out, format="JPEG")
    return out.getvalue()


def form(data: bytes, filename: str = "cat.png", **fields: str) -> aiohttp.FormData:
    body = aiohttp.FormData()
    body.add_field("image", data, filename=filename, content_type="image/png")
    for key, value in fields.items():
        body.add_field(key, value)
    return body


async def upload(
    client: TestClient, data: bytes, filename: str = "cat.png", path: str = "/upload/image", **fields: str
):
    response = await client.post(path, data=form(data, filename, **fields))
    return response.status, await response.json()


async def test_upload_then_view_round_trip(idle_client: TestClient, tmp_path: Path) -> None:
    image = png()
    status, body = await upload(idle_client, image)
    assert (status, body) == (200, {"name": "cat.png", "subfolder": "", "type": "input"})
    assert (tmp_path / "input" / "cat.png").read_bytes() == image
    view = await idle_client.get("/view", params={"filename": "cat.png", "type": "input"})
    assert view.status == 200 and await view.read() == image
    assert view.headers["Content-Type"] == "image/png"


async def test_collisions_get_numbered_unless_same_bytes_or_overwrite(idle_client: TestClient, tmp_path: Path) -> None:
    first, second, third = png((1, 2, 3)), png((4, 5, 6)), png((7, 8, 9))
    assert (await upload(idle_client, first))[1]["name"] == "cat.png"
    assert (await upload(idle_client, second))[1]["name"] == "cat (1).png"
    assert (await upload(idle_client, third))[1]["name"] == "cat (2).png"
    # The same bytes again reuse the existing file instead of making "cat (3).png".
    assert (await upload(idle_client, second))[1]["name"] == "cat (1).png"
    assert sorted(p.name for p in (tmp_path / "input").iterdir()) == ["cat (1).png", "cat (2).png", "cat.png"]
    assert (await upload(idle_client, third, overwrite="true"))[1]["name"] == "cat.png"
    assert (tmp_path / "input" / "cat.png").read_bytes() == third


async def test_subfolder_temp_and_refused_destinations(idle_client: TestClient, tmp_path: Path) -> None:
    status, body = await upload(idle_client, png(), subfolder="pets/small", type="temp")
    assert (status, body) == (200, {"name": "cat.png", "subfolder": "pets/small", "type": "temp"})
    assert (tmp_path / "temp" / "pets" / "small" / "cat.png").is_file()
    status, body = await upload(idle_client, png(), type="output")
    assert status == 400 and "input or temp" in body["error"]["message"]
    for subfolder in ("../escape", "/etc", "a/../../b"):
        status, body = await upload(idle_client, png(), subfolder=subfolder)
        assert status == 400, subfolder
        assert str(tmp_path) not in json.dumps(body)
    assert not (tmp_path / "escape").exists()


@pytest.mark.parametrize(
    ("data", "filename"),
    [
        (b"<!doctype html><script>alert(1)</script>", "page.png"),
        (b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>', "icon.svg"),
        (b"alert(document.cookie)", "x.js"),
        (png()[:40], "truncated.png"),
        (b"", "empty.png"),
    ],
)
async def test_only_real_images_are_accepted(
    idle_client: TestClient, tmp_path: Path, data: bytes, filename: str
) -> None:
    status, body = await upload(idle_client, data, filename)
    assert status == 400
    assert "image" in body["error"]["message"]
    assert not (tmp_path / "input").exists() or not any((tmp_path / "input").iterdir())


async def test_names_are_sanitised_server_side(idle_client: TestClient, tmp_path: Path) -> None:
    status, body = await upload(idle_client, png(), "../../evil.html")
    assert status == 200 and body["name"] == "evil.html.png"
    status, body = await upload(idle_client, jpeg(), "C:\\Users\\me\\.hidden photo.JPG")
    assert body["name"] == "hidden photo.jpg"
    assert sorted(p.name for p in (tmp_path / "input").iterdir()) == ["evil.html.png", "hidden photo.jpg"]


async def test_clean_name_rules() -> None:  # async only to share the module mark
    assert clean_name("a/b/c.png", "PNG") == "c.png"
    assert clean_name("..", "PNG") == "image.png"
    assert clean_name("we<i>rd:na|me?.webp", "WEBP") == "weirdname.webp"
    assert clean_name("tab\tand\x00nul.png", "PNG") == "tabandnul.png"
    assert clean_name("CON.png", "PNG") == "_CON.png"
    assert clean_name("x" * 500 + ".png", "PNG") == "x" * 180 + ".png"
    assert clean_name("photo.jpeg", "PNG") == "photo.jpeg"  # an image extension is kept even if the format differs


async def test_upload_needs_a_file_field(idle_client: TestClient) -> None:
    body = aiohttp.FormData()
    body.add_field("type", "input")
    response = await idle_client.post("/upload/image", data=body)
    assert response.status == 400
    assert "'image'" in (await response.json())["error"]["message"]
    status, answer = await upload(idle_client, png(), filename=" ")
    assert status == 400 and "empty file name" in answer["error"]["message"]


async def test_size_cap(start, tmp_path: Path) -> None:
    client = await start(run_worker=False, config=Config(base_dir=tmp_path, max_upload_size_mb=0.01))
    big = png(size=(300, 300), mode="RGB", color=(1, 2, 3)) + b"\0" * 20_000
    status, body = await upload(client, big)
    assert status == 413
    assert "limit" in body["error"]["message"]


async def _original(client: TestClient) -> dict[str, Any]:
    status, body = await upload(client, png((10, 20, 30), size=(8, 6), mode="RGB", parameters="steps: 20"), "photo.png")
    assert status == 200
    return {"filename": body["name"], "subfolder": body["subfolder"], "type": body["type"]}


async def test_mask_replaces_alpha_and_keeps_text_chunks(idle_client: TestClient, tmp_path: Path) -> None:
    ref = await _original(idle_client)
    mask = png((0, 0, 0, 77), size=(4, 3), mode="RGBA")  # smaller: resized to the original
    status, body = await upload(idle_client, mask, "clipspace-mask.png", "/upload/mask", original_ref=json.dumps(ref))
    assert (status, body) == (200, {"name": "clipspace-mask.png", "subfolder": "", "type": "input"})
    with Image.open(tmp_path / "input" / "clipspace-mask.png") as saved:
        assert saved.mode == "RGBA" and saved.size == (8, 6)
        assert saved.text["parameters"] == "steps: 20"
        assert saved.getpixel((0, 0)) == (10, 20, 30, 77)


async def test_mask_with_a_bad_original_ref_is_refused(idle_client: TestClient, tmp_path: Path) -> None:
    await _original(idle_client)
    cases = {
        "": "original_ref",
        "{not json": "not valid JSON",
        json.dumps({"filename": "missing.png"}): "does not exist",
        json.dumps({"filename": "../../../etc/passwd"}): "outside",
        json.dumps({"filename": "photo.png", "type": "models"}): "type",
    }
    for ref, expected in cases.items():
        status, body = await upload(
            idle_client, png(mode="RGBA", color=(0, 0, 0, 0)), "m.png", "/upload/mask", original_ref=ref
        )
        assert status == 400, ref
        assert expected in body["error"]["message"], (ref, body)
        assert str(tmp_path) not in json.dumps(body)
