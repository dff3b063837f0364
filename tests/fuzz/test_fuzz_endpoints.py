"""Fuzzing the other endpoints a little: /view parameters, upload names and fields, user data paths,
queue/history/interrupt/free/settings bodies, job queries and the websocket's first message.

Each answer must be a 2xx or a 4xx with a JSON error (a few routes answer aiohttp's plain 404/405
for paths that match nothing); never a 500, never a hang. Files: nothing outside the served folders
is ever read (a secret planted next to them never shows up) or written (the tree outside the
input/temp/user folders is unchanged by the fuzzing).
"""

from __future__ import annotations

import io
import json
import random
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from tests.fuzz.fuzz_support import Answer, LoopServer, assert_json_error, count, fuzz_settings

SECRET = "top-secret-do-not-serve"
TRAVERSAL = [
    "..",
    "../",
    "..\\",
    "/etc/passwd",
    "\\windows",
    "%2e%2e",
    "%252e%252e",
    "..%2f",
    "..%5c",
    "%00",
    "\x00",
    "C:\\x",
    "secret.txt",
    "link_out",
    "sub",
    "img.png",
    "~",
    "//",
    ".",
    "🎨",
    "a" * 300,
]
path_text = st.one_of(
    st.lists(st.sampled_from(TRAVERSAL), min_size=1, max_size=4).map("/".join),
    st.text(max_size=20),
)
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=10)),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


def png_bytes(size: int = 2) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (size, size), (1, 2, 3)).save(out, format="PNG")
    return out.getvalue()


PNG = png_bytes()


@pytest.fixture(scope="module")
def files_server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A server whose folders hold a few files, a secret beside them and links leading out."""
    root = tmp_path_factory.mktemp("files")
    for kind in ("output", "input", "temp"):
        (root / kind / "sub").mkdir(parents=True)
        (root / kind / "img.png").write_bytes(PNG)
        (root / kind / "link_out").symlink_to(root / "secret.txt")
    (root / "secret.txt").write_text(SECRET)
    (root / "user" / "default").mkdir(parents=True)
    (root / "user" / "default" / "link_out").symlink_to(root / "secret.txt")
    server = LoopServer(root, run_worker=False)
    before = outside_snapshot(root)
    try:
        yield server
    finally:
        server.close()
    after = outside_snapshot(root)
    assert after == before, f"fuzzing wrote outside the served folders: {sorted(set(after) ^ set(before))[:20]}"
    assert (root / "secret.txt").read_text() == SECRET


def outside_snapshot(root: Path) -> dict[str, int]:
    """Files under root that no request may create or change: all but input/, temp/, user/ contents."""
    allowed = ("input", "temp", "user")
    snapshot = {}
    for path in root.rglob("*"):
        relative = path.relative_to(root)
        if relative.parts[0] in allowed and len(relative.parts) > 1:
            continue
        if path.is_file() and not path.is_symlink() and "loom.db" not in path.name:
            snapshot[relative.as_posix()] = path.stat().st_size
    return snapshot


def check(answer: Answer, where: str) -> None:
    assert answer.status < 500, f"{where}: {answer.describe()}"
    assert SECRET.encode() not in answer.body, f"{where}: served the secret"
    if answer.status >= 400 and answer.headers.get("Content-Type", "").startswith("application/json"):
        error = answer.json()["error"]
        if "/api/jobs" in where and isinstance(error, str):  # ComfyUI's jobs API answers {"error": "<message>"}
            assert error.strip(), answer.describe()
        else:
            assert_json_error(answer, where)


@fuzz_settings(0.04)
@given(
    filename=path_text,
    subfolder=st.one_of(st.just(""), path_text),
    kind=st.sampled_from(["output", "input", "temp", "", "models", "../output", "user"]),
    preview=st.one_of(
        st.none(), st.sampled_from(["webp;50", "jpeg;x", "png", ";", "webp;999999", "jpeg;²", "webp;1e3"])
    ),
    channel=st.one_of(st.none(), st.sampled_from(["rgb", "a", "rgba", "x"])),
    encode=st.booleans(),
)
def test_fuzz_view_parameters(files_server: LoopServer, filename, subfolder, kind, preview, channel, encode) -> None:
    count("endpoints: /view")
    params = {"filename": filename, "subfolder": subfolder, "type": kind, "preview": preview, "channel": channel}
    given_params = {k: v for k, v in params.items() if v is not None}
    if encode:  # raw query, characters as written (%2e stays %2e for the server to decode once)
        target = "/view?" + "&".join(f"{k}={quote(v, safe='%/')}" for k, v in given_params.items())
        answer = files_server.raw("GET", target)
    else:
        answer = files_server.request("GET", "/view", params=given_params)
    check(answer, f"/view {given_params}")
    if answer.status == 200:
        assert answer.body in (PNG,) or answer.headers["Content-Type"] in ("image/webp", "image/jpeg", "image/png")


def upload_form(name: str, data: bytes, fields: dict[str, str]) -> aiohttp.FormData:
    form = aiohttp.FormData()
    form.add_field("image", data, filename=name, content_type="image/png")
    for key, value in fields.items():
        form.add_field(key, value)
    return form


@fuzz_settings(0.03)
@given(
    # aiohttp's client refuses control characters in a part's file name (the probes send NUL raw).
    name=st.one_of(path_text, st.sampled_from(["x.png", "x.html", "x.svg", "con.png", ".htaccess", "a\\b.png"])).map(
        lambda n: "".join(c for c in n if c.isprintable())
    ),
    subfolder=st.one_of(st.none(), path_text),
    kind=st.one_of(st.none(), st.sampled_from(["input", "temp", "output", "../input", ""])),
    overwrite=st.one_of(st.none(), st.sampled_from(["true", "1", "no", ""])),
    data=st.one_of(st.just(PNG), st.binary(max_size=64), st.sampled_from([b"<svg onload=alert(1)>", b"<html>"])),
    mask=st.booleans(),
    ref=st.one_of(st.none(), json_values.map(json.dumps), path_text.map(lambda p: json.dumps({"filename": p}))),
)
def test_fuzz_uploads(files_server: LoopServer, name, subfolder, kind, overwrite, data, mask, ref) -> None:
    count("endpoints: uploads")
    fields = {"subfolder": subfolder, "type": kind, "overwrite": overwrite, "original_ref": ref}
    form = upload_form(name, data, {k: v for k, v in fields.items() if v is not None})
    answer = files_server.request("POST", "/upload/mask" if mask else "/upload/image", data=form)
    check(answer, f"upload {name!r} {fields}")
    if answer.status == 200:
        saved = answer.json()
        root = (files_server.tmp_path / saved["type"]).resolve()
        target = (root / saved["subfolder"] / saved["name"]).resolve()
        assert target.is_relative_to(root) and target.is_file(), saved
        assert target.suffix in (".png", ".jpg", ".jpeg", ".gif", ".bmp", ".tif", ".tiff", ".webp", ".jfif"), saved


@fuzz_settings(0.04)
@given(seed=st.integers(min_value=0, max_value=2**32), first=path_text, second=path_text, body=json_values)
def test_fuzz_userdata_paths(files_server: LoopServer, seed: int, first: str, second: str, body: Any) -> None:
    count("endpoints: userdata")
    rnd = random.Random(seed)
    encoded = quote(first, safe="") if rnd.random() < 0.7 else first.replace("\x00", "%00")
    dest = quote(second, safe="")
    choice = rnd.randrange(6)
    if choice == 0:
        answer = files_server.raw("GET", f"/userdata/{encoded}")
    elif choice == 1:
        data = json.dumps(body).encode()
        answer = files_server.raw("POST", f"/userdata/{encoded}?overwrite={rnd.choice(['true', 'false'])}", body=data)
    elif choice == 2:
        answer = files_server.raw("DELETE", f"/userdata/{encoded}")
    elif choice == 3:
        answer = files_server.raw("POST", f"/userdata/{encoded}/move/{dest}")
    elif choice == 4:
        answer = files_server.request("GET", "/userdata", params={"dir": first, "recurse": "true", "split": "1"})
    else:
        answer = files_server.request("GET", "/v2/userdata", params={"path": first})
    check(answer, f"userdata #{choice} {first!r} {second!r}")


BODY_ROUTES = [
    ("POST", "/queue"),
    ("POST", "/history"),
    ("POST", "/interrupt"),
    ("POST", "/free"),
    ("POST", "/queue/abc/move"),
    ("POST", "/settings"),
    ("POST", "/settings/Comfy.Some.Setting"),
    ("POST", "/users"),
    ("POST", "/api/jobs/abc/requeue"),
    ("POST", "/api/jobs/abc/cancel"),
]
QUERY_ROUTES = [
    "/history",
    "/api/jobs",
    "/history/x",
    "/api/jobs/x",
    "/object_info/x",
    "/models/x",
    "/internal/files/x",
]


@fuzz_settings(0.06)
@given(
    route=st.sampled_from(BODY_ROUTES),
    body=st.one_of(
        json_values,
        st.fixed_dictionaries(
            {},
            optional={
                "clear": json_values,
                "delete": st.one_of(st.lists(st.text(max_size=5)), json_values),
                "pause": json_values,
                "resume": json_values,
                "index": st.one_of(st.integers(), json_values),
                "before": json_values,
                "after": json_values,
                "prompt_id": json_values,
                "unload_models": json_values,
                "free_memory": json_values,
                "username": json_values,
            },
        ),
    ),
)
def test_fuzz_json_bodies(files_server: LoopServer, route: tuple[str, str], body: Any) -> None:
    count("endpoints: json bodies")
    method, path = route
    answer = files_server.request(method, path, data=json.dumps(body), headers={"Content-Type": "application/json"})
    check(answer, f"{method} {path} {body!r}")
    if answer.status >= 400:
        assert_json_error(answer, f"{method} {path}")


@fuzz_settings(0.03)
@given(
    path=st.sampled_from(QUERY_ROUTES),
    params=st.dictionaries(
        st.sampled_from(["max_items", "offset", "limit", "status", "sort_by", "sort_order", "workflow_id", "x"]),
        st.one_of(
            st.text(max_size=10),
            st.integers(min_value=-(10**30), max_value=10**30).map(str),
            st.sampled_from(["9" * 30, "-" + "9" * 5000, "²", "0x10", " 1 "]),
        ),
        max_size=4,
    ),
)
def test_fuzz_queries(files_server: LoopServer, path: str, params: dict[str, str]) -> None:
    count("endpoints: queries")
    check(files_server.request("GET", path, params=params), f"GET {path} {params}")


@fuzz_settings(0.01)
@given(message=st.one_of(json_values.map(json.dumps), st.text(max_size=50), st.just("[" * 100_000)))
def test_fuzz_websocket_first_message(files_server: LoopServer, message: str) -> None:
    """Whatever the client sends first, the socket stays open and the server keeps serving."""
    count("endpoints: websocket")

    async def go() -> None:
        async with files_server.client.ws_connect("/ws?clientId=fuzz") as ws:
            assert (await ws.receive_json(timeout=10))["type"] == "status"
            await ws.send_str(message)
            # The socket is still served: a status change reaches it.
            await files_server.client.post("/queue", json={"clear": True})
            assert (await ws.receive_json(timeout=10))["type"] == "status"

    files_server.call(go)
    assert files_server.request("GET", "/prompt").status == 200


def test_strict_json_bodies_name_what_is_wrong(files_server: LoopServer) -> None:
    """Fixes found by fuzzing: NaN/Infinity, numbers out of range, nesting past the limit and lone
    surrogates were 500s (or stored, breaking every later GET for browsers); now each is a 400."""
    cases = {
        b'{"clear": NaN}': "NaN",
        b'{"clear": -Infinity}': "-Infinity",
        b'{"clear": 1e999}': "out of range",
        b'{"clear": ' + b"9" * 5000 + b"}": "4300 digits",
        b'{"x": ' + b"[" * 5000 + b"]" * 5000 + b"}": "nested more than",
        b'{"delete": ["\\ud800"]}': "delete[0]",
    }
    for body, expected in cases.items():
        count("endpoints: fixed")
        for path in ("/queue", "/settings", "/prompt"):
            answer = files_server.raw("POST", path, {"Content-Type": "application/json"}, body)
            error = assert_json_error(answer, f"{path} {body[:30]!r}")["error"]
            assert error["type"] == "invalid_json" and expected in error["message"], (path, error)
    settings = files_server.request("GET", "/settings")
    assert settings.status == 200 and b"NaN" not in settings.body


HEADER_VALUES = st.one_of(
    st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=30),
    st.sampled_from(
        [
            "null",
            "http://evil.example",
            "http://localhost:" + "1" * 5000,
            "localhost:²",
            "[::1",
            "[",
            "http://[::1]:99999",
            "file://",
            "cross-site",
            "Bearer ",
            "multipart/form-data",
            "text/plain",
            "application/json; charset=x",
        ]
    ),
)


@fuzz_settings(0.04)
@given(
    route=st.sampled_from([("GET", "/prompt"), ("POST", "/interrupt"), ("POST", "/prompt"), ("GET", "/ws")]),
    headers=st.dictionaries(
        st.sampled_from(
            ["Host", "Origin", "Sec-Fetch-Site", "Sec-Fetch-Mode", "Content-Type", "Authorization", "Cookie"]
        ),
        HEADER_VALUES,
        max_size=4,
    ),
)
def test_fuzz_security_headers(files_server: LoopServer, route: tuple[str, str], headers: dict[str, str]) -> None:
    """The security middleware sees every request first: odd Host, Origin, Sec-Fetch-*, Content-Type
    and token headers are refused (403/415/4xx) or served, never a 500."""
    count("endpoints: headers")
    method, path = route
    body = json.dumps({"prompt": {}}).encode() if method == "POST" else b""
    answer = files_server.raw(method, path, headers, body)
    check(answer, f"{method} {path} {headers}")
    if answer.status >= 400 and answer.headers.get("Content-Type", "").startswith("application/json"):
        assert_json_error(answer, f"{method} {path}")


def test_found_by_fuzzing_are_400s(files_server: LoopServer) -> None:
    """Each of these was a 500 before the fix named."""
    long = "a" * 300
    cases = [
        ("GET", f"/view?filename={long}", b"", {}, "invalid_path"),  # http.error_middleware: ENAMETOOLONG
        ("GET", f"/userdata/{long}", b"", {}, "invalid_path"),
        ("POST", f"/userdata/{long}%2Fx", b"{}", {}, "invalid_path"),
        ("GET", "/history?max_items=" + "9" * 30, b"", {}, "invalid_request"),  # http.query_int: SQLite range
        ("GET", "/api/jobs?limit=" + "9" * 30, b"", {}, None),
        ("POST", "/upload/image", b"--x\r\n", {"Content-Type": "multipart/form-data"}, "invalid_request"),
        (
            "POST",
            "/upload/image",
            b"--x\r\nbad header\r\n\r\n",
            {"Content-Type": "multipart/form-data; boundary=x"},
            "invalid_request",
        ),
    ]
    for method, target, body, headers, kind in cases:
        count("endpoints: fixed")
        answer = files_server.raw(method, target, headers, body)
        assert 400 <= answer.status < 500, (target, answer.describe())
        error = answer.json()["error"]
        if kind is not None:
            assert error["type"] == kind and error["message"], (target, error)
    files_server.raw("POST", "/userdata/afile.json", {"Content-Type": "application/json"}, b"{}")
    for method in ("POST", "GET"):  # http.error_middleware: a file where the path needs a folder
        count("endpoints: fixed")
        nested = files_server.raw(method, "/userdata/afile.json%2Fx.json", {"Content-Type": "application/json"}, b"{}")
        assert nested.status in (404, 409) and nested.json()["error"]["message"], nested.describe()
    for preview in ("jpeg;²", "webp;" + "9" * 5000):  # handlers._quality
        count("endpoints: fixed")
        assert files_server.request("GET", "/view", params={"filename": "img.png", "preview": preview}).status == 200
    for host in ("localhost:" + "1" * 5000, "localhost:²"):  # security._split_host
        count("endpoints: fixed")
        assert files_server.raw("GET", "/prompt", {"Host": host}).status == 200


def test_upload_answer_names_the_folder_written(files_server: LoopServer) -> None:
    """Found by fuzzing: subfolder 'a\\b' was saved as input/a/b but answered as 'a\\b', which /view
    could not find."""
    count("endpoints: fixed")
    form = upload_form("pic.png", PNG, {"subfolder": "norm\\deep/./x"})
    saved = files_server.request("POST", "/upload/image", data=form).json()
    assert saved["subfolder"] == "norm/deep/x"
    params = {"filename": saved["name"], "subfolder": saved["subfolder"], "type": "input"}
    assert files_server.request("GET", "/view", params=params).body == PNG
