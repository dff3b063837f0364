"""A real Loom server in a subprocess (`main.py`) and a small ComfyUI-style client for it.

Used by the end-to-end tests (tests/server/test_server_live.py) and by bench/server.py. The client
is what ComfyUI's own API examples do: urllib for POST /prompt, /history and /view, a websocket
(aiohttp's client here) for progress, `executing {node: null}` for "done".
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
MAIN = ROOT / "main.py"

TEST_PACK = '''
"""Test nodes for live-server tests: plain Python, no torch."""

import time

from PIL import Image

from nodes.api import current


class LiveConst:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {"default": 0, "min": 0, "max": 1000000})}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "run"
    CATEGORY = "live"

    def run(self, value):
        return (value,)


class LiveAdd:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"a": ("INT", {"default": 0}), "b": ("INT", {"default": 1})}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "run"
    CATEGORY = "live"

    def run(self, a, b):
        return (a + b,)


class LiveSink:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {})}}

    RETURN_TYPES = ()
    FUNCTION = "run"
    OUTPUT_NODE = True
    CATEGORY = "live"

    def run(self, value):
        return {"ui": {"value": [value]}}


class LiveSlow:
    """Sleeps `seconds` in 20 steps, reporting progress and honouring interrupts."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {"default": 0}), "seconds": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 600.0})}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "run"
    CATEGORY = "live"

    def run(self, value, seconds):
        runtime = current()
        for step in range(20):
            time.sleep(seconds / 20)
            runtime.progress(step + 1, 20)
            runtime.check_interrupted()
        return (value,)


class LiveSavePNG:
    """Writes a value x value PNG whose red channel is the value, into the output folder."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {}), "prefix": ("STRING", {"default": "live"})}}

    RETURN_TYPES = ()
    FUNCTION = "run"
    OUTPUT_NODE = True
    CATEGORY = "live"

    def run(self, value, prefix):
        folder = current().service("output_dir")
        folder.mkdir(parents=True, exist_ok=True)
        name = f"{prefix}_{value:05d}.png"
        Image.new("RGB", (value, value), (value % 256, 0, 0)).save(folder / name)
        return {"ui": {"images": [{"filename": name, "subfolder": "", "type": "output"}]}}


NODE_CLASS_MAPPINGS = {
    "LiveConst": LiveConst,
    "LiveAdd": LiveAdd,
    "LiveSink": LiveSink,
    "LiveSlow": LiveSlow,
    "LiveSavePNG": LiveSavePNG,
}
'''


def write_test_pack(folder: Path, name: str = "live_pack") -> Path:
    """A custom node folder holding the test pack; pass it with --custom-nodes-dir."""
    pack = folder / name
    pack.mkdir(parents=True, exist_ok=True)
    (pack / "__init__.py").write_text(TEST_PACK)
    return folder


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class LiveServer:
    """`python main.py` on a free loopback port, logging to `<base>/server-<n>.log`."""

    def __init__(self, base: Path, *args: str, port: int | None = None, token: str | None = None) -> None:
        self.base = Path(base)
        self.args = list(args)
        self.port = port or free_port()
        self.token = token
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path: Path | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> LiveServer:
        self.starts += 1
        self.base.mkdir(parents=True, exist_ok=True)
        self.log_path = self.base / f"server-{self.starts}.log"
        command = [sys.executable, str(MAIN), "--base-directory", str(self.base), "--port", str(self.port), *self.args]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)
        return self

    def wait_ready(self, path: str = "/", timeout: float = 90.0, expect: int = 200) -> float:
        """Seconds from now until `path` answers `expect` (raises if the process died or time ran out)."""
        started = time.perf_counter()
        deadline = started + timeout
        while time.perf_counter() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"main.py exited with {self.process.returncode}:\n{self.log()}")
            try:
                status, _ = self.request("GET", path, timeout=5)
                if status == expect:
                    return time.perf_counter() - started
            except OSError:
                pass
            time.sleep(0.02)
        raise AssertionError(f"{path} not ready within {timeout} s:\n{self.log()}")

    def wait_log(self, pattern: str, timeout: float = 60.0) -> re.Match[str]:
        """The first match of a regular expression in the server's log, waiting for it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = re.search(pattern, self.log())
            if found:
                return found
            time.sleep(0.05)
        raise AssertionError(f"{pattern!r} not in the log within {timeout} s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path and self.log_path.exists() else ""

    def kill9(self) -> None:
        """SIGKILL, as a crash or an OOM kill would: no shutdown code runs."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def stop(self, timeout: float = 30.0) -> int | None:
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill9()
            return None

    def __enter__(self) -> LiveServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ the ComfyUI-style client

    def headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        return {**headers, **(extra or {})}

    def request(self, method: str, path: str, body: Any = None, timeout: float = 30.0) -> tuple[int, Any]:
        """(status, parsed JSON or raw bytes) of one request; HTTP errors are returned, not raised."""
        data = None if body is None else json.dumps(body).encode("utf-8")
        headers = self.headers({"Content-Type": "application/json"} if data is not None else None)
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as response:
                status, raw, kind = response.status, response.read(), response.headers.get_content_type()
        except urllib.error.HTTPError as exc:
            status, raw, kind = exc.code, exc.read(), exc.headers.get_content_type()
        if kind == "application/json" and raw:
            return status, json.loads(raw)
        return status, raw

    def queue_prompt(self, prompt: dict[str, Any], client_id: str | None = None, **body: Any) -> str:
        status, answer = self.request("POST", "/prompt", {"prompt": prompt, "client_id": client_id, **body})
        assert status == 200, answer
        return answer["prompt_id"]

    def history(self, prompt_id: str) -> dict[str, Any]:
        status, answer = self.request("GET", f"/history/{prompt_id}")
        assert status == 200, answer
        return answer.get(prompt_id, {})

    def wait_history(self, prompt_id: str, timeout: float = 60.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            item = self.history(prompt_id)
            if item:
                return item
            time.sleep(0.05)
        raise AssertionError(f"prompt {prompt_id} did not finish within {timeout} s:\n{self.log()[-3000:]}")

    def view(self, filename: str, subfolder: str = "", kind: str = "output") -> bytes:
        query = urllib.parse.urlencode({"filename": filename, "subfolder": subfolder, "type": kind})
        status, data = self.request("GET", f"/view?{query}")
        assert status == 200, data
        return data

    def ws_url(self, client_id: str) -> str:
        query = {"clientId": client_id, **({"token": self.token} if self.token else {})}
        return f"ws://127.0.0.1:{self.port}/ws?{urllib.parse.urlencode(query)}"


async def follow(ws: Any, prompt_id: str, timeout: float = 120.0) -> list[dict[str, Any]]:
    """JSON messages of one prompt from an aiohttp websocket, through its `executing {node: null}`."""
    messages = []
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"prompt {prompt_id} not done over the websocket: {[m['type'] for m in messages]}")
        msg = await ws.receive(timeout=left)
        if msg.type.name == "BINARY":
            continue
        if msg.type.name != "TEXT":
            raise AssertionError(f"websocket ended ({msg.type.name}); got {[m['type'] for m in messages]}")
        message = json.loads(msg.data)
        messages.append(message)
        data = message.get("data", {})
        if message["type"] == "executing" and data.get("node") is None and data.get("prompt_id") == prompt_id:
            return messages


__all__ = ["LiveServer", "follow", "free_port", "write_test_pack"]
