"""End to end against real `main.py` processes on loopback ports: a ComfyUI-style client (urllib +
an aiohttp websocket) runs a workflow and downloads its image; the default txt2img workflow runs
on the --demo-model checkpoint; the queue survives `kill -9`; a token guards a server that listens
beyond loopback; a start without checkpoints says where to put one."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from PIL import Image

from nodes.builtin import BUILTIN_MODULES
from tests.server.live_server import LiveServer, follow, write_test_pack

pytestmark = [pytest.mark.slow, pytest.mark.asyncio]


def live_prompt(value: int, seconds: float = 0.2, prefix: str = "live") -> dict[str, Any]:
    return {
        "1": {"class_type": "LiveConst", "inputs": {"value": value}},
        "2": {"class_type": "LiveSlow", "inputs": {"value": ["1", 0], "seconds": seconds}},
        "3": {"class_type": "LiveSavePNG", "inputs": {"value": ["2", 0], "prefix": prefix}},
    }


@pytest.fixture
def pack(tmp_path: Path) -> Path:
    return write_test_pack(tmp_path / "packs")


async def test_comfy_style_client_end_to_end(tmp_path: Path, pack: Path) -> None:
    with LiveServer(tmp_path / "loom", "--custom-nodes-dir", str(pack)).start() as server:
        server.wait_ready("/")
        # No checkpoint: the log says where to put one and names --demo-model; so does the page.
        status, checkpoints = server.request("GET", "/models/checkpoints")
        assert (status, checkpoints) == (200, [])
        assert "no checkpoint found" in server.log() and "--demo-model" in server.log()
        assert b"--demo-model" in server.request("GET", "/")[1]

        async with aiohttp.ClientSession() as session, session.ws_connect(server.ws_url("me")) as ws:
            first = await ws.receive_json(timeout=10)
            assert first["type"] == "status" and first["data"]["sid"] == "me"
            prompt_id = server.queue_prompt(live_prompt(24), client_id="me")
            messages = await follow(ws, prompt_id)
        kinds = [m["type"] for m in messages]
        assert kinds.index("execution_start") < kinds.index("execution_success") < len(kinds) - 1
        progress = [m["data"] for m in messages if m["type"] == "progress"]
        assert progress[-1] == {"value": 20, "max": 20, "prompt_id": prompt_id, "node": "2"}
        executed = next(m["data"] for m in messages if m["type"] == "executed")
        assert executed["node"] == "3" and executed["output"]["images"][0]["filename"] == "live_00024.png"

        outputs = server.history(prompt_id)["outputs"]
        image_ref = outputs["3"]["images"][0]
        data = server.view(image_ref["filename"], image_ref["subfolder"], image_ref["type"])
        with Image.open(io.BytesIO(data)) as image:
            assert image.size == (24, 24) and image.getpixel((0, 0)) == (24, 0, 0)
        assert server.stop() == 0
    assert "server stopped" in server.log()


@pytest.mark.skipif("nodes.sampling" not in BUILTIN_MODULES, reason="the engine nodes are not built in yet")
async def test_default_txt2img_on_the_demo_model(tmp_path: Path) -> None:
    with LiveServer(tmp_path / "loom", "--demo-model").start() as server:
        server.wait_ready("/object_info/KSampler", timeout=180)
        status, checkpoints = server.request("GET", "/models/checkpoints")
        assert checkpoints == ["loom_demo_tiny.safetensors"]
        # ComfyUI's default workflow, smaller and shorter so that it runs in seconds on a CPU.
        prompt = {
            "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "loom_demo_tiny.safetensors"}},
            "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
            "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a glass bottle landscape", "clip": ["4", 1]}},
            "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "text, watermark", "clip": ["4", 1]}},
            "3": {
                "class_type": "KSampler",
                "inputs": {
                    "seed": 156680208700286,
                    "steps": 3,
                    "cfg": 8.0,
                    "sampler_name": "euler",
                    "scheduler": "normal",
                    "denoise": 1.0,
                    "model": ["4", 0],
                    "positive": ["6", 0],
                    "negative": ["7", 0],
                    "latent_image": ["5", 0],
                },
            },  # fmt: skip
            "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
            "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "ComfyUI", "images": ["8", 0]}},
        }
        async with aiohttp.ClientSession() as session, session.ws_connect(server.ws_url("demo")) as ws:
            await ws.receive_json(timeout=10)
            prompt_id = server.queue_prompt(prompt, client_id="demo")
            messages = await follow(ws, prompt_id, timeout=300)
        kinds = [m["type"] for m in messages]
        assert "execution_success" in kinds, messages[-3:]
        steps = [m["data"]["value"] for m in messages if m["type"] == "progress" and m["data"]["node"] == "3"]
        assert steps[-1] == 3
        image_ref = server.history(prompt_id)["outputs"]["9"]["images"][0]
        with Image.open(io.BytesIO(server.view(image_ref["filename"], image_ref["subfolder"]))) as image:
            assert image.size == (64, 64)
            assert "prompt" in image.text  # the workflow travels in the PNG


async def test_queue_survives_kill_9(tmp_path: Path, pack: Path) -> None:
    server = LiveServer(tmp_path / "loom", "--custom-nodes-dir", str(pack))
    try:
        server.start().wait_ready("/object_info/LiveSlow")
        running = server.queue_prompt(live_prompt(1, seconds=4.0), prompt_id="running")
        pending = [server.queue_prompt(live_prompt(v, prefix="p"), prompt_id=f"p{v}") for v in (2, 3)]
        for _ in range(200):
            _, queue = server.request("GET", "/queue")
            if [item[1] for item in queue["queue_running"]] == [running]:
                break
        assert [item[1] for item in queue["queue_pending"]] == pending
        server.kill9()

        server.start().wait_ready("/")
        assert "marked interrupted: running" in server.log()
        for prompt_id in pending:
            assert server.wait_history(prompt_id)["status"]["status_str"] == "success"
        crashed = server.history(running)
        assert crashed["status"]["status_str"] == "error" and not crashed["status"]["completed"]
        interrupted = dict(crashed["status"]["messages"])["execution_interrupted"]
        assert "restart or crash" in interrupted["reason"]
        status, job = server.request("GET", f"/api/jobs/{running}")
        assert job["status"] == "failed"

        status, answer = server.request("POST", f"/api/jobs/{running}/requeue")
        assert status == 200 and answer["status"] == "pending"
        assert server.wait_history(running)["status"]["status_str"] == "success"
        assert (tmp_path / "loom" / "output" / "live_00001.png").is_file()
    finally:
        server.stop()


async def test_token_is_required_beyond_loopback(tmp_path: Path) -> None:
    with LiveServer(tmp_path / "loom", "--listen", "0.0.0.0").start() as server:
        # Nothing answers without the token, so the log is the only sign of readiness.
        token = server.wait_log(r"/\?token=([A-Za-z0-9_-]+)").group(1)
        server.wait_ready("/prompt", expect=401)
        status, body = server.request("GET", "/prompt")
        assert status == 401 and body["error"]["type"] == "unauthorized"
        server.token = token
        assert server.request("GET", "/prompt")[0] == 200
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(server.ws_url("t")) as ws:
                assert (await ws.receive_json(timeout=10))["type"] == "status"
            with pytest.raises(aiohttp.WSServerHandshakeError):
                await session.ws_connect(f"ws://127.0.0.1:{server.port}/ws")
