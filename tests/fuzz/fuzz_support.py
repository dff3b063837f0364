"""Shared machinery of the fuzz tests: a Loom app served on a loopback port from a background event
loop (so synchronous hypothesis tests can drive it, with a timeout on every request), example
budgets, hypothesis settings and the per-fuzzer case counters the suite prints at the end.

Budgets: `LOOM_FUZZ_EXAMPLES` (default 12,000) is the total number of cases across the fuzzers;
each fuzzer takes its share (`share`). `LOOM_FUZZ_EXAMPLES=2000` gives a quick run, 100000 a long
one. Runs are derandomized (the same cases every run, so CI is reproducible) unless
`LOOM_FUZZ_RANDOM=1`; hypothesis keeps no example database.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import ClientTimeout
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, settings

from server.app import WORKER, create_app
from tests.server.helpers import make_services

DEFAULT_TOTAL = 12_000
REQUEST_TIMEOUT = 20.0
"""Seconds one request may take before the fuzzer calls it a hang."""

COUNTS: Counter[str] = Counter()
"""Cases run per fuzzer in this session (printed by tests/fuzz/conftest.py)."""


def total_budget() -> int:
    raw = os.environ.get("LOOM_FUZZ_EXAMPLES", "")
    return max(1, int(raw)) if raw.strip().isdigit() else DEFAULT_TOTAL


def share(fraction: float, minimum: int = 10) -> int:
    """This fuzzer's number of examples: `fraction` of the total budget."""
    return max(minimum, int(total_budget() * fraction))


def fuzz_settings(fraction: float, minimum: int = 10) -> settings:
    return settings(
        max_examples=share(fraction, minimum),
        database=None,
        deadline=None,
        derandomize=os.environ.get("LOOM_FUZZ_RANDOM") != "1",
        suppress_health_check=list(HealthCheck),
        print_blob=True,
    )


def count(fuzzer: str) -> None:
    COUNTS[fuzzer] += 1


@dataclass
class Answer:
    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def describe(self) -> str:
        return f"{self.status} {self.body[:500]!r}"


class LoopServer:
    """A Loom app on 127.0.0.1, its event loop on a thread of its own."""

    def __init__(self, tmp_path: Path, **overrides: Any) -> None:
        self.tmp_path = tmp_path
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="fuzz-loop", daemon=True)
        self._thread.start()
        self.app = create_app(make_services(tmp_path, **overrides))
        self.client: TestClient = self.call(self._start)

    async def _start(self) -> TestClient:
        client = TestClient(TestServer(self.app, host="127.0.0.1"), timeout=ClientTimeout(total=REQUEST_TIMEOUT))
        await client.start_server()
        return client

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.client.port}"

    def call(self, factory: Callable[[], Awaitable[Any]], timeout: float = REQUEST_TIMEOUT + 5) -> Any:
        future = asyncio.run_coroutine_threadsafe(factory(), self.loop)
        try:
            return future.result(timeout)
        except TimeoutError:
            future.cancel()
            raise AssertionError(f"the server did not answer within {timeout} s (a hang)") from None

    def request(self, method: str, path: str, **kwargs: Any) -> Answer:
        async def go() -> Answer:
            async with self.client.request(method, path, **kwargs) as response:
                return Answer(response.status, dict(response.headers), await response.read())

        return self.call(go)

    def raw(self, method: str, target: str, headers: Mapping[str, str] | None = None, body: bytes = b"") -> Answer:
        """One HTTP/1.1 request with the target sent byte for byte (no client-side URL normalising:
        `..`, `%2e%2e`, backslashes and NUL escapes reach the server as written)."""
        return self.call(lambda: raw_http(self.client.port, method, target, headers, body))

    def start_worker(self) -> None:
        self.app[WORKER].start()

    def close(self) -> None:
        try:
            self.call(self.client.close, timeout=60)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
            self.loop.close()


async def raw_http(
    port: int, method: str, target: str, headers: Mapping[str, str] | None = None, body: bytes = b""
) -> Answer:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        head = {"Host": f"127.0.0.1:{port}", "Connection": "close", "Content-Length": str(len(body)), **(headers or {})}
        lines = [*(f"{k}: {v}" for k, v in head.items()), "", ""]
        request_line = f"{method} {target} HTTP/1.1\r\n".encode("utf-8", "surrogateescape")
        writer.write(request_line + "\r\n".join(lines).encode("latin-1") + body)
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), REQUEST_TIMEOUT)
    finally:
        writer.close()
    header_blob, _, payload = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = header_blob.decode("latin-1").split("\r\n")
    parsed = dict(line.split(": ", 1) for line in header_lines if ": " in line)
    if parsed.get("Transfer-Encoding", "").lower() == "chunked":
        payload = _unchunk(payload)
    return Answer(int(status_line.split()[1]), parsed, payload)


def _unchunk(data: bytes) -> bytes:
    out, rest = b"", data
    while rest:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line.split(b";")[0] or b"0", 16)
        if size == 0:
            break
        out, rest = out + rest[:size], rest[size + 2 :]
    return out


def assert_json_error(answer: Answer, where: str) -> dict[str, Any]:
    """A 4xx whose body is ComfyUI's error object with a message; never a 5xx."""
    assert answer.status < 500, f"{where}: server error {answer.describe()}"
    assert 400 <= answer.status < 500, f"{where}: expected a refusal, got {answer.describe()}"
    assert answer.headers.get("Content-Type", "").startswith("application/json"), f"{where}: {answer.describe()}"
    body = answer.json()
    error = body.get("error")
    assert isinstance(error, dict), f"{where}: no error object in {answer.describe()}"
    assert isinstance(error.get("type"), str) and error["type"], answer.describe()
    assert isinstance(error.get("message"), str) and error["message"].strip(), answer.describe()
    assert error["type"] != "server_error", answer.describe()
    return body


__all__ = [
    "COUNTS",
    "Answer",
    "LoopServer",
    "assert_json_error",
    "count",
    "fuzz_settings",
    "raw_http",
    "share",
    "total_budget",
]
