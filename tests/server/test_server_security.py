"""Security middleware (DESIGN §6): Host allowlist, cross-origin refusals, JSON-only state changes,
the body size cap, and ComfyUI's CORS mode."""

from __future__ import annotations

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from core.config import Config
from tests.server.helpers import output_prompt

pytestmark = pytest.mark.asyncio


def _origin(client: TestClient) -> str:
    return f"http://127.0.0.1:{client.port}"


async def test_dns_rebinding_host_is_refused(idle_client: TestClient) -> None:
    response = await idle_client.get("/object_info", headers={"Host": f"evil.example:{idle_client.port}"})
    body = await response.json()
    assert response.status == 403
    assert body["error"]["type"] == "forbidden_host"
    assert "evil.example" in body["error"]["message"] and "DNS-rebinding" in body["error"]["message"]
    for host in (f"localhost:{idle_client.port}", f"[::1]:{idle_client.port}", "127.0.0.1"):
        assert (await idle_client.get("/prompt", headers={"Host": host})).status == 200, host


async def test_host_is_not_restricted_beyond_loopback(start) -> None:
    client = await start(run_worker=False, config=Config(listen="0.0.0.0"))
    assert (await client.get("/prompt", headers={"Host": "my-gpu-box.lan:8188"})).status == 200


async def test_foreign_origin_cannot_change_state(idle_client: TestClient) -> None:
    body = {"prompt": output_prompt()}
    refused = await idle_client.post("/prompt", json=body, headers={"Origin": "https://evil.example"})
    assert refused.status == 403
    assert (await refused.json())["error"]["type"] == "cross_origin"
    for origin in ("null", f"http://localhost:{idle_client.port}", f"http://127.0.0.1:{idle_client.port + 1}"):
        response = await idle_client.post("/interrupt", headers={"Origin": origin})
        assert response.status == 403, origin
    ok = await idle_client.post("/prompt", json=body, headers={"Origin": _origin(idle_client)})
    assert ok.status == 200
    assert (await idle_client.get("/prompt")).status == 200  # scripts send no Origin
    # On loopback even reads are refused to foreign pages (as ComfyUI does).
    assert (await idle_client.get("/queue", headers={"Origin": "https://evil.example"})).status == 403


async def test_beyond_loopback_foreign_origin_may_read_but_not_write(start) -> None:
    client = await start(run_worker=False, config=Config(listen="0.0.0.0"))
    assert (await client.get("/queue", headers={"Origin": "https://other.example"})).status == 200
    assert (await client.post("/interrupt", headers={"Origin": "https://other.example"})).status == 403


async def test_sec_fetch_site_cross_site_is_refused(idle_client: TestClient) -> None:
    response = await idle_client.post("/interrupt", headers={"Sec-Fetch-Site": "cross-site"})
    assert response.status == 403
    assert (await response.json())["error"]["type"] == "cross_site"
    assert (await idle_client.post("/interrupt", headers={"Sec-Fetch-Site": "same-origin"})).status == 200


async def test_foreign_origin_websocket_is_refused(idle_client: TestClient) -> None:
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await idle_client.ws_connect("/ws", headers={"Origin": "https://evil.example"})
    assert refused.value.status == 403
    ws = await idle_client.ws_connect("/ws", headers={"Origin": _origin(idle_client)})
    assert (await ws.receive_json(timeout=5))["type"] == "status"
    await ws.close()


async def test_state_changes_take_json_only(idle_client: TestClient) -> None:
    import json

    data = json.dumps({"prompt": output_prompt()})
    for content_type in ("text/plain", "multipart/form-data; boundary=x", "application/xml"):
        response = await idle_client.post("/prompt", data=data, headers={"Content-Type": content_type})
        body = await response.json()
        assert response.status == 415, content_type
        assert body["error"]["type"] == "unsupported_media_type" and "application/json" in body["error"]["message"]
    # A browser-made form post is refused even from our own origin; a script's is accepted.
    browser = {"Content-Type": "application/x-www-form-urlencoded", "Sec-Fetch-Mode": "navigate"}
    assert (await idle_client.post("/prompt", data=data, headers=browser)).status == 415
    script = {"Content-Type": "application/x-www-form-urlencoded"}
    assert (await idle_client.post("/prompt", data=data, headers=script)).status == 200
    charset = {"Content-Type": "application/json; charset=utf-8"}
    assert (await idle_client.post("/prompt", data=data, headers=charset)).status == 200


async def test_body_size_cap(start) -> None:
    client = await start(run_worker=False, config=Config(max_upload_size_mb=0.001))  # 1048 bytes
    big = {"prompt": output_prompt(), "extra_data": {"pad": "x" * 2000}}
    response = await client.post("/prompt", json=big)
    assert response.status == 413
    assert (await response.json())["error"]["type"] == "request_too_large"
    assert (await client.post("/prompt", json={"prompt": output_prompt()})).status == 200
    features = await (await client.get("/features")).json()
    assert features["max_upload_size"] == int(0.001 * 1024 * 1024)


async def test_cors_mode(start) -> None:
    client = await start(run_worker=False, config=Config(enable_cors_header="*"))
    foreign = {"Origin": "https://elsewhere.example"}
    response = await client.post("/prompt", json={"prompt": output_prompt()}, headers=foreign)
    assert response.status == 200
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    preflight = await client.options("/prompt", headers={**foreign, "Access-Control-Request-Method": "POST"})
    assert preflight.status == 200
    assert "POST" in preflight.headers["Access-Control-Allow-Methods"]
    assert preflight.headers["Access-Control-Allow-Headers"] == "Content-Type, Authorization"
    error = await client.post("/prompt", json={}, headers=foreign)
    assert error.status == 400 and error.headers["Access-Control-Allow-Origin"] == "*"
    # The DNS-rebinding guard stays on in CORS mode.
    assert (await client.get("/prompt", headers={"Host": "evil.example"})).status == 403


async def test_cors_mode_with_a_named_origin(start) -> None:
    client = await start(run_worker=False, config=Config(enable_cors_header="https://app.example"))
    response = await client.get("/queue", headers={"Origin": "https://app.example"})
    assert response.headers["Access-Control-Allow-Origin"] == "https://app.example"
