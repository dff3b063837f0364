"""GET /view (spec §1.1): folder types, realpath containment (400/403/404), safe content types,
image variants; and the page, web files and /extensions static files."""

from __future__ import annotations

import io
import os
from pathlib import Path
from types import SimpleNamespace

import pytest
from aiohttp.test_utils import TestClient
from PIL import Image

pytestmark = pytest.mark.asyncio


@pytest.fixture
def files(tmp_path: Path) -> Path:
    output = tmp_path / "output"
    (output / "sub").mkdir(parents=True)
    (tmp_path / "input").mkdir()
    Image.new("RGBA", (4, 3), (10, 20, 30, 128)).save(output / "img.png")
    Image.new("RGB", (2, 2), (0, 0, 255)).save(output / "sub" / "blue.png")
    Image.new("RGB", (2, 2), (0, 255, 0)).save(tmp_path / "input" / "green.png")
    (output / "page.html").write_text("<script>alert(1)</script>")
    (output / "pic.svg").write_text("<svg xmlns='http://www.w3.org/2000/svg'><script>alert(1)</script></svg>")
    (tmp_path / "secret.txt").write_text("top secret")
    os.symlink(tmp_path / "secret.txt", output / "link.txt")
    return tmp_path


async def test_view_serves_files_with_safe_headers(idle_client: TestClient, files: Path) -> None:
    response = await idle_client.get("/view", params={"filename": "img.png"})
    assert response.status == 200
    assert response.headers["Content-Type"] == "image/png"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert 'filename="img.png"' in response.headers["Content-Disposition"]
    assert await response.read() == (files / "output" / "img.png").read_bytes()
    sub = await idle_client.get("/view", params={"filename": "blue.png", "subfolder": "sub", "type": "output"})
    assert await sub.read() == (files / "output" / "sub" / "blue.png").read_bytes()
    by_type = await idle_client.get("/view", params={"filename": "green.png", "type": "input"})
    annotated = await idle_client.get("/view", params={"filename": "green.png [input]"})
    assert by_type.status == annotated.status == 200
    assert await by_type.read() == await annotated.read() == (files / "input" / "green.png").read_bytes()


async def test_view_never_serves_active_content(idle_client: TestClient, files: Path) -> None:
    for name in ("page.html", "pic.svg"):
        response = await idle_client.get("/view", params={"filename": name})
        assert response.status == 200
        assert response.headers["Content-Type"] == "application/octet-stream", name
        assert response.headers["X-Content-Type-Options"] == "nosniff"


@pytest.mark.parametrize(
    ("params", "status"),
    [
        ({"filename": "../secret.txt"}, 400),
        ({"filename": "/etc/passwd"}, 400),
        ({"filename": ""}, 400),
        ({"filename": "img.png", "type": "models"}, 400),
        ({"filename": "secret.txt", "subfolder": ".."}, 403),
        ({"filename": "passwd", "subfolder": "/etc"}, 403),
        ({"filename": "secret.txt", "subfolder": "sub/../.."}, 403),
        ({"filename": "link.txt"}, 403),  # a symlink leading out of the folder
        ({"filename": "missing.png"}, 404),
        ({"filename": "blue.png"}, 404),  # exists only in a subfolder
    ],
)
async def test_view_containment(idle_client: TestClient, files: Path, params: dict, status: int) -> None:
    response = await idle_client.get("/view", params=params)
    assert response.status == status
    body = await response.json()
    assert body["error"]["message"]
    assert "top secret" not in await response.text()


async def test_view_image_variants(idle_client: TestClient, files: Path) -> None:
    rgb = await idle_client.get("/view", params={"filename": "img.png", "channel": "rgb"})
    with Image.open(io.BytesIO(await rgb.read())) as image:
        assert image.mode == "RGB" and image.getpixel((0, 0)) == (10, 20, 30)
    alpha = await idle_client.get("/view", params={"filename": "img.png", "channel": "a"})
    with Image.open(io.BytesIO(await alpha.read())) as image:
        assert image.mode == "RGBA" and image.getpixel((0, 0)) == (0, 0, 0, 128)
    preview = await idle_client.get("/view", params={"filename": "img.png", "preview": "webp;50"})
    assert preview.headers["Content-Type"] == "image/webp"
    with Image.open(io.BytesIO(await preview.read())) as image:
        assert image.format == "WEBP" and image.size == (4, 3)


async def test_index_page_and_web_files(idle_client: TestClient) -> None:
    response = await idle_client.get("/")
    text = await response.text()
    assert response.status == 200 and response.headers["Content-Type"] == "text/html"
    assert "no-cache" in response.headers["Cache-Control"]
    assert "<title>Loom</title>" in text and 'id="graph-canvas"' in text  # the editor
    assert "javascript" in (await idle_client.get("/app.js")).headers["Content-Type"]  # modules load
    assert (await idle_client.get("/index.html")).status == 200
    assert (await idle_client.get("/no-such-file.js")).status == 404
    assert (await idle_client.get("/%2E%2E/README.md")).status == 404


async def test_extensions_list_and_files(start, tmp_path: Path) -> None:
    web_dir = tmp_path / "pack_web"
    (web_dir / "sub").mkdir(parents=True)
    (web_dir / "a.js").write_text("export const a = 1;")
    (web_dir / "sub" / "b.js").write_text("export const b = 2;")
    (web_dir / "style.css").write_text("body {}")
    (tmp_path / "outside.js").write_text("secret")
    packages = [
        SimpleNamespace(name="my pack", web_directory=web_dir, ok=True),
        SimpleNamespace(name="broken", web_directory=web_dir, ok=False),
        SimpleNamespace(name="no_web", web_directory=None, ok=True),
    ]
    client = await start(run_worker=False, packages=packages)
    urls = await (await client.get("/extensions")).json()
    assert urls == ["/extensions/my%20pack/a.js", "/extensions/my%20pack/sub/b.js"]
    assert await (await client.get("/api/extensions")).json() == urls
    script = await client.get("/extensions/my%20pack/sub/b.js")
    assert script.status == 200 and await script.text() == "export const b = 2;"
    assert "javascript" in script.headers["Content-Type"]
    assert (await client.get("/extensions/my%20pack/%2E%2E/outside.js")).status == 404
    assert (await client.get("/extensions/broken/a.js")).status == 404
