"""Token authentication (header, ?token=, cookie; HTTP and websocket), when a token is required,
`Origin: null`, and running behind a reverse proxy (--allowed-hosts, TLS-terminated origins)."""

from __future__ import annotations

import logging
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient

from core.config import Config
from server.app import secure_config
from server.auth import TOKEN_COOKIE
from server.security import token_required
from tests.server.helpers import output_prompt

TOKEN = "s3cret-token-for-tests"
BEARER = {"Authorization": f"Bearer {TOKEN}"}


@pytest_asyncio.fixture
async def guarded(start, tmp_path: Path) -> TestClient:
    return await start(run_worker=False, config=Config(base_dir=tmp_path, listen="0.0.0.0", auth_token=TOKEN))


@pytest.mark.asyncio
async def test_every_route_needs_the_token(guarded: TestClient) -> None:
    for method, path in (("GET", "/"), ("GET", "/object_info"), ("GET", "/api/queue"), ("POST", "/interrupt")):
        response = await guarded.request(method, path)
        body = await response.json()
        assert response.status == 401, path
        assert body["error"]["type"] == "unauthorized" and "Authorization: Bearer" in body["error"]["message"]
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert TOKEN not in await response.text()
    wrong = await guarded.get("/queue", headers={"Authorization": "Bearer nope"})
    assert wrong.status == 401 and "wrong" in (await wrong.json())["error"]["message"]
    assert (await guarded.get("/queue", headers=BEARER)).status == 200
    assert (await guarded.get("/queue", params={"token": TOKEN})).status == 200
    posted = await guarded.post("/prompt", json={"prompt": output_prompt()}, headers=BEARER)
    assert posted.status == 200


@pytest.mark.asyncio
async def test_a_browser_without_the_token_gets_a_readable_page(guarded: TestClient) -> None:
    response = await guarded.get("/", headers={"Accept": "text/html,application/xhtml+xml"})
    text = await response.text()
    assert response.status == 401 and response.content_type == "text/html"
    assert "needs its access token" in text and "/?token=" in text and TOKEN not in text
    assert (await guarded.get("/object_info", headers={"Accept": "text/html"})).status == 401


@pytest.mark.asyncio
async def test_page_token_becomes_a_cookie(guarded: TestClient) -> None:
    response = await guarded.get("/", params={"token": TOKEN, "x": "1"}, allow_redirects=False)
    assert response.status == 303
    assert response.headers["Location"] == "/?x=1"  # the token leaves the address bar
    cookie = response.cookies[TOKEN_COOKIE]
    assert cookie.value == TOKEN and cookie["httponly"] and cookie["samesite"] == "Strict"
    # The TestClient's session keeps the cookie, as a browser would.
    page = await guarded.get("/")
    assert page.status == 200 and "<title>Loom</title>" in await page.text()
    assert (await guarded.get("/object_info")).status == 200


@pytest.mark.asyncio
async def test_websocket_needs_the_token(guarded: TestClient) -> None:
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await guarded.ws_connect("/ws?clientId=a")
    assert refused.value.status == 401
    ws = await guarded.ws_connect(f"/ws?clientId=a&token={TOKEN}")
    assert (await ws.receive_json(timeout=5))["type"] == "status"
    await ws.close()
    ws = await guarded.ws_connect("/ws?clientId=b", headers=BEARER)
    assert (await ws.receive_json(timeout=5))["data"]["sid"] == "b"
    await ws.close()


@pytest.mark.asyncio
async def test_origin_null_is_refused_even_for_reads(guarded: TestClient) -> None:
    response = await guarded.get("/queue", headers={**BEARER, "Origin": "null"})
    assert response.status == 403 and "Origin: null" in (await response.json())["error"]["message"]
    assert (await guarded.get("/queue", headers={**BEARER, "Origin": "https://elsewhere.example"})).status == 200


def test_when_a_token_is_required() -> None:
    assert not token_required(["127.0.0.1"])
    assert not token_required(["localhost", "::1"], ["127.0.0.1"])
    assert token_required(["0.0.0.0", "::"])
    assert token_required(["192.168.1.20"])
    assert token_required(["127.0.0.1"], ["loom.example.com"])  # a proxy makes it reachable


def test_secure_config_generates_and_logs_a_token(caplog: pytest.LogCaptureFixture) -> None:
    assert secure_config(Config()).auth_token is None
    given = Config(listen="0.0.0.0", auth_token="mine")
    assert secure_config(given) is given
    with caplog.at_level(logging.WARNING, logger="server.app"):
        made = secure_config(Config(listen="0.0.0.0", port=9999))
    assert made.auth_token and len(made.auth_token) >= 24
    assert f"/?token={made.auth_token}" in caplog.text and ":9999" in caplog.text
    other = secure_config(Config(listen="0.0.0.0"))
    assert other.auth_token != made.auth_token
    proxied = secure_config(Config(allowed_hosts=("loom.example.com",)))
    assert proxied.auth_token


@pytest.mark.asyncio
async def test_behind_a_reverse_proxy(start, tmp_path: Path) -> None:
    config = Config(base_dir=tmp_path, allowed_hosts=("loom.example.com",), auth_token=TOKEN)
    client = await start(run_worker=False, config=config)
    proxied = {**BEARER, "Host": "loom.example.com"}
    assert (await client.get("/prompt", headers=proxied)).status == 200
    assert (await client.get("/prompt", headers={**BEARER, "Host": "evil.example"})).status == 403
    # TLS ends at the proxy: the page's origin is https on 443, the proxied Host carries no port.
    page_origin = {**proxied, "Origin": "https://loom.example.com"}
    assert (await client.post("/prompt", json={"prompt": output_prompt()}, headers=page_origin)).status == 200
    other_port = {**proxied, "Origin": "https://loom.example.com:8443"}
    assert (await client.post("/interrupt", headers=other_port)).status == 403
    assert (await client.post("/interrupt", headers={**proxied, "Origin": "https://evil.example"})).status == 403
