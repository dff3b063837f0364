"""Attack probes, one test each, all in one place (issue 7, DESIGN.md §6).

Where realism matters -- Host and Origin headers, browsers' cross-site requests, websockets, the
token, custom packages' routes, prompts that name files -- the probes talk to a real server
(`python main.py` in a subprocess, tests/server/live_server.py) over raw HTTP, so nothing is
normalised by a client library on the way. The rest use the in-process app (tests/fuzz/fuzz_support.py).
Every server listens on 127.0.0.1 only; "beyond loopback" is simulated with --allowed-hosts, which
makes Loom demand a token exactly as a non-loopback --listen does.

A secret file sits next to the served folders, and symlinks to it are planted in input/, output/
and the user folder: no probe may ever get its bytes back, nor write outside the folders.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
from PIL import Image

from core.config import Config
from tests.fuzz.fuzz_support import Answer, LoopServer, raw_http
from tests.server.live_server import LiveServer, write_test_pack

SECRET = "attack-probe-secret-4711"
TOKEN = "probe-token-0123456789"
PUBLIC_NAME = "loom.test"

PACK = """
from aiohttp import web

from server import PromptServer

routes = PromptServer.instance.routes


@routes.get("/probe_pack/read")
async def read(request):
    return web.json_response({"read": True})


@routes.post("/probe_pack/write")
async def write(request):
    return web.json_response({"wrote": await request.text()})


NODE_CLASS_MAPPINGS = {}
"""

# Spellings of "the file one level up" for a parameter that names a file.
TRAVERSALS = (
    "../secret.txt",
    "../../secret.txt",
    "..\\secret.txt",
    "..%2fsecret.txt",
    "%2e%2e%2fsecret.txt",
    "%252e%252e%252fsecret.txt",
    "....//secret.txt",
    "/etc/passwd",
    "C:\\Windows\\win.ini",
    "secret.txt%00.png",
    "link_out.png",
)


def png(size: int = 4) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (size, size), (9, 8, 7)).save(out, format="PNG")
    return out.getvalue()


def plant(base: Path) -> None:
    """The secret beside the folders, links to it (and to the folder holding it) inside them."""
    (base / "secret.txt").write_text(SECRET)
    for folder in ("input", "output", "temp", "user/default"):
        (base / folder).mkdir(parents=True, exist_ok=True)
        (base / folder / "link_out.png").symlink_to(base / "secret.txt")
        (base / folder / "dir_out").symlink_to(base, target_is_directory=True)
    (base / "input" / "real.png").write_bytes(png())


def assert_refused(answer: Answer, statuses: tuple[int, ...] = (400, 403, 404), where: str = "") -> None:
    assert answer.status in statuses, f"{where}: expected one of {statuses}, got {answer.describe()}"
    assert SECRET.encode() not in answer.body, f"{where}: the secret came back"
    if answer.headers.get("Content-Type", "").startswith("application/json"):
        error = json.loads(answer.body)["error"]
        message = error if isinstance(error, str) else error["message"]
        assert message.strip(), where


def run(coro: Any) -> Any:
    return asyncio.run(coro)


# ---------------------------------------------------------------------- servers


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A real server on loopback with the builtin nodes, the live test pack and a pack adding routes."""
    base = tmp_path_factory.mktemp("live")
    packs = write_test_pack(base / "packs")
    (packs / "probe_pack").mkdir()
    (packs / "probe_pack" / "__init__.py").write_text(PACK)
    plant(base)
    server = LiveServer(base, "--listen", "127.0.0.1", "--custom-nodes-dir", str(packs), "--max-upload-size", "1")
    server.start()
    try:
        server.wait_ready("/")
        server.wait_ready("/object_info/LoadImage", timeout=180)  # the node registry has loaded
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A real server reachable "beyond loopback" (a public name): every request needs the token."""
    base = tmp_path_factory.mktemp("guarded")
    packs = base / "packs"
    (packs / "probe_pack").mkdir(parents=True)
    (packs / "probe_pack" / "__init__.py").write_text(PACK)
    args = ("--listen", "127.0.0.1", "--allowed-hosts", PUBLIC_NAME, "--auth-token", TOKEN)
    server = LiveServer(base, *args, "--custom-nodes-dir", str(packs), token=TOKEN)
    server.start()
    try:
        server.wait_ready("/", timeout=120)
        server.wait_ready("/probe_pack/read", timeout=180)
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoopServer]:
    """The in-process app with small limits: 1 MB bodies, 64 kB prompts, 50 nodes."""
    base = tmp_path_factory.mktemp("inproc")
    plant(base)
    config = Config(base_dir=base, max_upload_size_mb=1.0, max_prompt_size_mb=0.0625, max_nodes=50)
    server = LoopServer(base, config=config, run_worker=False, user_dir=base / "user")
    try:
        yield server
    finally:
        server.close()


def raw(server: LiveServer, method: str, target: str, headers: dict | None = None, body: bytes = b"") -> Answer:
    sent = {**({"Authorization": f"Bearer {server.token}"} if server.token else {}), **(headers or {})}
    return run(raw_http(server.port, method, target, sent, body))


def post_json(server: LiveServer, path: str, value: Any, headers: dict | None = None) -> Answer:
    body = json.dumps(value).encode()
    return raw(server, "POST", path, {"Content-Type": "application/json", **(headers or {})}, body)


def good_prompt(value: int = 3) -> dict[str, Any]:
    return {
        "1": {"class_type": "LiveConst", "inputs": {"value": value}},
        "2": {"class_type": "LiveSink", "inputs": {"value": ["1", 0]}},
    }


def queued(server: LiveServer) -> int:
    return json.loads(raw(server, "GET", "/prompt").body)["exec_info"]["queue_remaining"]


# ---------------------------------------------------------------------- cross-site requests (CSRF)


def test_cross_site_post_with_a_foreign_origin_is_refused(live: LiveServer) -> None:
    before = queued(live)
    for path in ("/prompt", "/api/prompt"):
        answer = post_json(live, path, {"prompt": good_prompt()}, {"Origin": "https://evil.example"})
        assert_refused(answer, (403,), path)
        assert json.loads(answer.body)["error"]["type"] == "cross_origin"
    same = post_json(live, "/prompt", {"prompt": good_prompt()}, {"Origin": live.url})
    assert same.status == 200, same.describe()
    assert queued(live) <= before + 1


def test_origin_null_is_refused(live: LiveServer) -> None:
    for method, path in (("POST", "/prompt"), ("POST", "/interrupt"), ("GET", "/queue")):
        answer = raw(live, method, path, {"Origin": "null", "Content-Type": "application/json"}, b"{}")
        assert_refused(answer, (403,), f"{method} {path}")


def test_no_origin_but_sec_fetch_site_cross_site_is_refused(live: LiveServer) -> None:
    headers = {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "no-cors"}
    for path in ("/prompt", "/interrupt", "/queue", "/userdata/x.json", "/settings"):
        answer = post_json(live, path, {"prompt": good_prompt()}, headers)
        assert_refused(answer, (403,), path)


def test_form_encoded_post_from_a_browser_is_refused(live: LiveServer) -> None:
    body = json.dumps({"prompt": good_prompt()}).encode()
    form = {
        "Content-Type": "application/x-www-form-urlencoded",
        "Sec-Fetch-Site": "same-site",
        "Sec-Fetch-Mode": "navigate",
    }
    for path in ("/prompt", "/queue", "/history", "/free"):
        assert_refused(raw(live, "POST", path, form, body), (403, 415), path)
    multipart = {"Content-Type": "multipart/form-data; boundary=x", "Sec-Fetch-Site": "same-site"}
    assert_refused(raw(live, "POST", "/prompt", multipart, b"--x--\r\n"), (403, 415), "multipart")


def test_text_plain_post_is_refused(live: LiveServer) -> None:
    body = json.dumps({"prompt": good_prompt()}).encode()
    for headers in ({"Content-Type": "text/plain"}, {"Content-Type": "text/plain", "Sec-Fetch-Site": "same-site"}):
        for path in ("/prompt", "/interrupt", "/queue"):
            assert_refused(raw(live, "POST", path, headers, body), (403, 415), f"{path} {headers}")
    # Stored-as-is routes take text/plain only with same-origin proof from a browser.
    text = {"Content-Type": "text/plain", "Sec-Fetch-Site": "same-site", "Sec-Fetch-Mode": "cors"}
    assert_refused(raw(live, "POST", "/userdata/csrf.json", text, b"{}"), (403,), "userdata")
    assert_refused(raw(live, "POST", "/settings", text, b"{}"), (403,), "settings")


def test_dns_rebinding_host_is_refused(live: LiveServer) -> None:
    for host in (
        "evil.example",
        f"evil.example:{live.port}",
        "127.0.0.1.evil.example",
        "localhost.evil.example",
        "0x7f.1",
    ):
        for method, path in (("GET", "/queue"), ("GET", "/"), ("GET", "/view?filename=real.png&type=input")):
            answer = raw(live, method, path, {"Host": host})
            assert_refused(answer, (403,), f"{host} {path}")
    assert raw(live, "GET", "/queue", {"Host": f"localhost:{live.port}"}).status == 200


def test_websocket_from_a_foreign_origin_is_refused(live: LiveServer) -> None:
    async def attempt(origin: str) -> int:
        async with aiohttp.ClientSession() as session:
            try:
                async with session.ws_connect(live.ws_url("probe"), headers={"Origin": origin}) as ws:
                    first = await ws.receive_json(timeout=10)
                    assert first["type"] == "status"
                    return 101
            except aiohttp.WSServerHandshakeError as exc:
                return exc.status

    for origin in ("https://evil.example", "null", f"http://127.0.0.1:{live.port + 1}"):
        assert run(attempt(origin)) == 403, origin
    assert run(attempt(live.url)) == 101


# ---------------------------------------------------------------------- path traversal, file parameter by file parameter


def test_view_filename_traversal(live: LiveServer) -> None:
    for name in TRAVERSALS:
        for kind in ("output", "input", "temp"):
            assert_refused(raw(live, "GET", f"/view?filename={quote(name, safe='%')}&type={kind}"), where=name)
            assert_refused(raw(live, "GET", f"/view?filename={name}&type={kind}"), where=f"unquoted {name}")
    assert_refused(raw(live, "GET", "/view?filename=secret.txt%00&type=input"), where="NUL")
    assert_refused(raw(live, "GET", "/view?filename=real.png%00.png&type=input"), where="NUL")


def test_view_subfolder_traversal(live: LiveServer) -> None:
    for subfolder in ("..", "../..", "..\\..", "/", "/etc", "%2e%2e", "dir_out", "dir_out/..", "x%00"):
        target = f"/view?filename=secret.txt&type=input&subfolder={quote(subfolder, safe='%')}"
        assert_refused(raw(live, "GET", target), where=subfolder)


def test_view_type_traversal(live: LiveServer) -> None:
    for kind in ("../input", "..", "models", "/", "input/..", "user", "%2e%2e"):
        assert_refused(raw(live, "GET", f"/view?filename=secret.txt&type={quote(kind, safe='%')}"), where=kind)
    assert_refused(raw(live, "GET", "/view?filename=secret.txt%20[..]"), where="annotation")


def test_upload_filename_traversal(live: LiveServer, tmp_path: Path) -> None:
    base = live.base
    for name in (*TRAVERSALS, "../../escape.png", "/tmp/escape.png", "..\\..\\escape.png", "a\x00b.png"):
        boundary = "probe"
        disposition = f'form-data; name="image"; filename="{name}"'.encode("utf-8", "replace")
        body = b"--probe\r\nContent-Disposition: " + disposition + b"\r\nContent-Type: image/png\r\n\r\n"
        body += png() + b"\r\n--probe--\r\n"
        answer = raw(live, "POST", "/upload/image", {"Content-Type": f"multipart/form-data; boundary={boundary}"}, body)
        assert answer.status in (200, 400), answer.describe()
        if answer.status == 200:
            saved = json.loads(answer.body)
            assert "/" not in saved["name"] and "\\" not in saved["name"] and saved["subfolder"] == ""
            assert (base / "input" / saved["name"]).is_file()
    assert not (base / "escape.png").exists() and not Path("/tmp/escape.png").exists()
    assert (base / "secret.txt").read_text() == SECRET


def test_upload_subfolder_traversal(live: LiveServer) -> None:
    for subfolder in ("..", "../../x", "/tmp", "..\\x", "dir_out", "dir_out/x", "x/../../..", "a\x00b"):
        form = aiohttp.FormData()
        form.add_field("image", png(), filename="s.png", content_type="image/png")
        form.add_field("subfolder", subfolder)
        form.add_field("overwrite", "true")
        payload = form()
        body = run(_form_bytes(payload))
        answer = raw(live, "POST", "/upload/image", {"Content-Type": payload.content_type}, body)
        assert_refused(answer, (400,), subfolder)
    assert not (live.base / "s.png").exists() and not Path("/tmp/s.png").exists()


async def _form_bytes(payload: Any) -> bytes:
    chunks: list[bytes] = []

    class Sink:
        async def write(self, data: bytes) -> None:
            chunks.append(bytes(data))

    await payload.write(Sink())
    return b"".join(chunks)


def test_mask_original_ref_traversal(app: LoopServer) -> None:
    for ref in ("../secret.txt", "link_out.png", "dir_out/secret.txt", "/etc/passwd", "x\x00"):
        for kind in ("input", "output", "../x"):
            form = aiohttp.FormData()
            form.add_field("image", png(), filename="m.png", content_type="image/png")
            form.add_field("original_ref", json.dumps({"filename": ref, "type": kind, "subfolder": ""}))
            assert_refused(app.request("POST", "/upload/mask", data=form), (400,), f"{ref} {kind}")


def test_userdata_path_traversal(live: LiveServer) -> None:
    spellings = ("..%2fsecret.txt", "..%2f..%2fsecret.txt", "%2e%2e%2fsecret.txt", "..%5csecret.txt", "%2fetc%2fpasswd")
    spellings += ("link_out.png", "dir_out%2fsecret.txt", "x%00")
    for name in spellings:
        assert_refused(raw(live, "GET", f"/userdata/{name}"), where=f"GET {name}")
        assert_refused(raw(live, "DELETE", f"/userdata/{name}"), where=f"DELETE {name}")
        written = raw(live, "POST", f"/userdata/{name}", {"Content-Type": "application/json"}, b'"pwned"')
        assert_refused(written, (400, 403, 404), f"POST {name}")
        assert_refused(raw(live, "POST", f"/userdata/ok.json/move/{name}"), where=f"move to {name}")
        assert_refused(raw(live, "GET", f"/userdata?dir={name}"), where=f"list {name}")
        assert_refused(raw(live, "GET", f"/v2/userdata?path={name}"), where=f"v2 {name}")
    # Decoded once: a double-encoded name is a plain (odd) file name inside the user folder.
    literal = raw(live, "POST", "/userdata/%252e%252e%252fsecret.txt", {"Content-Type": "application/json"}, b'"x"')
    assert literal.status == 200 and (live.base / "user" / "default" / "%2e%2e%2fsecret.txt").is_file()
    assert (live.base / "secret.txt").read_text() == SECRET


def test_internal_files_traversal(live: LiveServer) -> None:
    for kind in ("..", "..%2f..", "%2e%2e", "models", "user", "input%2f..%2f.."):
        answer = raw(live, "GET", f"/internal/files/{kind}")
        assert_refused(answer, (400, 404), kind)
    listing = json.loads(raw(live, "GET", "/internal/files/input").body)
    assert "secret.txt" not in listing


def test_static_and_package_file_traversal(live: LiveServer) -> None:
    targets = (
        "/%2e%2e/%2e%2e/secret.txt",
        "/..%2f..%2fsecret.txt",
        "/extensions/live_pack/..%2f..%2f..%2fsecret.txt",
        "/extensions/%2e%2e/%2e%2e/secret.txt",
        "/workflow_templates/live_pack/..%2f..%2fsecret.txt",
        "/view_metadata/checkpoints?filename=../../secret.safetensors",
        "/view_metadata/..?filename=secret.txt",
        "/models/..%2f..",
    )
    for target in targets:
        assert_refused(raw(live, "GET", target), (400, 403, 404), target)


def _prompt_error(live: LiveServer, prompt: dict[str, Any]) -> dict[str, Any]:
    answer = post_json(live, "/prompt", {"prompt": prompt})
    assert_refused(answer, (400,), json.dumps(prompt)[:200])
    return json.loads(answer.body)


def test_loadimage_input_traversal(live: LiveServer) -> None:
    for name in (*TRAVERSALS, "dir_out/secret.txt", "secret.txt [output]", "../secret.txt [temp]", "real.png\x00"):
        prompt = {
            "1": {"class_type": "LoadImage", "inputs": {"image": name}},
            "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}},
        }
        body = _prompt_error(live, prompt)
        errors = body["node_errors"]["1"]["errors"]
        assert errors and errors[0]["extra_info"]["input_name"] == "image", body
    ok = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "real.png"}},
        "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}},
    }
    assert post_json(live, "/prompt", {"prompt": ok}).status == 200


def test_model_names_in_prompts_cannot_leave_the_model_folders(live: LiveServer) -> None:
    names = (
        "../secret.txt",
        "../../secret.txt",
        "/etc/passwd",
        "..\\secret.txt",
        "x/../../secret.txt",
        "a\x00.safetensors",
    )
    loaders = (("CheckpointLoaderSimple", "ckpt_name", 2), ("VAELoader", "vae_name", 0))
    for class_type, input_name, vae_slot in loaders:
        for name in names:
            prompt = {
                "1": {"class_type": class_type, "inputs": {input_name: name}},
                "2": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
                "3": {"class_type": "VAEDecode", "inputs": {"samples": ["2", 0], "vae": ["1", vae_slot]}},
                "4": {"class_type": "PreviewImage", "inputs": {"images": ["3", 0]}},
            }
            body = _prompt_error(live, prompt)
            names_given = [e["extra_info"].get("input_name") for e in body["node_errors"]["1"]["errors"]]
            assert input_name in names_given, body


def test_symlinks_planted_in_input_and_output_are_not_followed_out(live: LiveServer) -> None:
    for kind in ("input", "output", "temp"):
        assert_refused(raw(live, "GET", f"/view?filename=link_out.png&type={kind}"), (403, 404), kind)
        assert_refused(raw(live, "GET", f"/view?filename=secret.txt&type={kind}&subfolder=dir_out"), (403, 404), kind)
    assert_refused(raw(live, "GET", "/userdata/link_out.png"), (403, 404), "userdata link")
    prompt = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "link_out.png"}},
        "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}},
    }
    _prompt_error(live, prompt)
    # Writing through a planted link is refused too: a save prefix and an upload subfolder.
    save = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "dir_out/escaped"}},
    }
    _assert_save_refused(live, save)


def _assert_save_refused(live: LiveServer, prompt: dict[str, Any]) -> None:
    answer = post_json(live, "/prompt", {"prompt": prompt})
    if answer.status == 200:  # refused when it runs: the history says why and nothing was written
        item = live.wait_history(json.loads(answer.body)["prompt_id"], timeout=120)
        assert item["status"]["status_str"] == "error", item["status"]
        assert "outside the output folder" in json.dumps(item["status"]["messages"])
    else:
        assert_refused(answer, (400,), "save")
    leaked = [p for p in live.base.rglob("escaped*") if "output" not in p.relative_to(live.base).parts[:1]]
    assert not leaked and not list(Path("/tmp").glob("escaped*_.png")), leaked


def test_filename_prefix_cannot_escape_output(live: LiveServer) -> None:
    for prefix in (
        "../escaped",
        "../../escaped",
        "/tmp/escaped",
        "..\\escaped",
        "sub/../../escaped",
        "%year%/../../escaped",
    ):
        prompt = {
            "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
            "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": prefix}},
        }
        if prefix.startswith("..\\"):  # a backslash is a plain character on POSIX: saved inside output/
            continue
        _assert_save_refused(live, prompt)


# ---------------------------------------------------------------------- uploads and sizes


def test_html_svg_and_js_uploads_are_refused(app: LoopServer) -> None:
    payloads = {
        "page.html": b"<html><script>alert(document.cookie)</script></html>",
        "pic.svg": b"<svg xmlns='http://www.w3.org/2000/svg' onload='alert(1)'/>",
        "app.js": b"fetch('/prompt', {method: 'POST'})",
        "fake.png": b"<script>alert(1)</script>",
        "polyglot.png": png()[:20] + b"<script>alert(1)</script>",
    }
    for name, data in payloads.items():
        for content_type in ("image/png", "text/html", "image/svg+xml"):
            form = aiohttp.FormData()
            form.add_field("image", data, filename=name, content_type=content_type)
            answer = app.request("POST", "/upload/image", data=form)
            assert_refused(answer, (400,), f"{name} {content_type}")
    assert not [p for p in (app.tmp_path / "input").rglob("*") if p.suffix in (".html", ".svg", ".js")]


def test_oversized_upload_is_refused(app: LoopServer) -> None:
    big = png(8) + b"\0" * (2 * 1024 * 1024)  # 2 MB over a 1 MB cap
    form = aiohttp.FormData()
    form.add_field("image", big, filename="big.png", content_type="image/png")
    answer = app.request("POST", "/upload/image", data=form)
    assert_refused(answer, (413,), "oversized upload")
    assert not list((app.tmp_path / "input").glob("big*"))

    # Chunked (no Content-Length): the cap holds while reading.
    async def chunks() -> Any:
        for _ in range(40):
            yield b"\0" * 65536

    stream = app.request(
        "POST", "/upload/image", data=chunks(), headers={"Content-Type": "multipart/form-data; boundary=x"}
    )
    assert_refused(stream, (400, 413), "chunked upload")


def test_requests_beyond_the_size_limits_are_refused(app: LoopServer) -> None:
    too_big = b'{"prompt": {}, "pad": "' + b"x" * (2 * 1024 * 1024) + b'"}'
    answer = app.raw("POST", "/prompt", {"Content-Type": "application/json"}, too_big)
    assert_refused(answer, (413,), "body cap")
    prompt_cap = {"prompt": {"1": {"class_type": "StubString", "inputs": {"value": "y" * 100_000}}}}
    assert_refused(app.request("POST", "/prompt", json=prompt_cap), (413,), "prompt cap")
    many = {str(i): {"class_type": "StubInt", "inputs": {"value": i}} for i in range(51)}
    answer = app.request("POST", "/prompt", json={"prompt": many})
    assert_refused(answer, (400,), "node cap")
    assert "--max-nodes" in answer.json()["error"]["message"]
    huge = {
        "1": {
            "class_type": "StubImage",
            "inputs": {"content": "WHITE", "width": 10**6, "height": 4, "batch_size": 10**6},
        }
    }
    answer = app.request("POST", "/prompt", json={"prompt": huge})
    assert_refused(answer, (400,), "value caps")
    assert {e["extra_info"]["input_name"] for e in answer.json()["node_errors"]["1"]["errors"]} >= {
        "width",
        "batch_size",
    }
    assert app.request("GET", "/prompt").status == 200


# ---------------------------------------------------------------------- token and custom packages


def test_missing_or_wrong_token_beyond_loopback_is_refused(guarded: LiveServer) -> None:
    anonymous = LiveServer(guarded.base, port=guarded.port)
    for method, path in (
        ("GET", "/"),
        ("GET", "/queue"),
        ("GET", "/object_info"),
        ("POST", "/prompt"),
        ("GET", "/view?filename=x"),
    ):
        for headers in (
            {},
            {"Authorization": "Bearer wrong"},
            {"Authorization": f"Basic {TOKEN}"},
            {"Cookie": "loom_token=wrong"},
        ):
            for host in (f"127.0.0.1:{guarded.port}", PUBLIC_NAME):
                answer = raw(
                    anonymous, method, path, {"Host": host, "Content-Type": "application/json", **headers}, b"{}"
                )
                assert_refused(answer, (401,), f"{method} {path} {headers} {host}")
                assert TOKEN not in answer.body.decode("utf-8", "replace")
    assert raw(anonymous, "GET", f"/queue?token={TOKEN[:-1]}").status == 401
    assert raw(guarded, "GET", "/queue", {"Host": PUBLIC_NAME}).status == 200

    async def ws(url: str) -> int:
        async with aiohttp.ClientSession() as session:
            try:
                async with session.ws_connect(url):
                    return 101
            except aiohttp.WSServerHandshakeError as exc:
                return exc.status

    assert run(ws(f"ws://127.0.0.1:{guarded.port}/ws")) == 401
    assert run(ws(f"ws://127.0.0.1:{guarded.port}/ws?token=wrong")) == 401
    assert run(ws(guarded.ws_url("ok"))) == 101


def test_custom_package_routes_get_the_same_checks(live: LiveServer, guarded: LiveServer) -> None:
    """A pack that adds routes through PromptServer.instance.routes is behind the middleware: Host,
    Origin, Sec-Fetch-Site, body rules and the token apply to its routes as to Loom's own."""
    assert json.loads(raw(live, "GET", "/probe_pack/read").body) == {"read": True}
    assert_refused(raw(live, "GET", "/probe_pack/read", {"Host": "evil.example"}), (403,), "host")
    assert_refused(raw(live, "GET", "/api/probe_pack/read", {"Host": "evil.example"}), (403,), "host /api")
    assert_refused(raw(live, "POST", "/probe_pack/write", {"Origin": "https://evil.example"}, b"x"), (403,), "origin")
    assert_refused(raw(live, "POST", "/probe_pack/write", {"Origin": "null"}, b"x"), (403,), "null origin")
    cross = {"Sec-Fetch-Site": "cross-site", "Content-Type": "text/plain"}
    assert_refused(raw(live, "POST", "/probe_pack/write", cross, b"x"), (403,), "cross-site")
    same_site_form = {"Sec-Fetch-Site": "same-site", "Content-Type": "application/x-www-form-urlencoded"}
    assert_refused(raw(live, "POST", "/probe_pack/write", same_site_form, b"x"), (403,), "form")
    anonymous = LiveServer(guarded.base, port=guarded.port)
    assert_refused(raw(anonymous, "GET", "/probe_pack/read"), (401,), "no token")
    assert_refused(
        raw(anonymous, "POST", "/probe_pack/write", {"Authorization": "Bearer no"}, b"x"), (401,), "bad token"
    )
    assert raw(guarded, "POST", "/probe_pack/write", {"Content-Type": "text/plain"}, b"x").status == 200
    assert os.path.exists(guarded.base / "packs" / "probe_pack" / "__init__.py")
