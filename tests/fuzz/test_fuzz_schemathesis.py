"""schemathesis against the server's own OpenAPI document (server/openapi.py): for every API
operation it generates requests from the schemas (bodies, multipart forms, path and query
parameters) and sends them to a Loom app on a loopback port. No answer may be a 5xx, and a 4xx
from an API route carries a JSON error. The /api mirror (the same handlers), the websocket and the
static catch-all routes are left out.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import settings
from schemathesis.checks import not_a_server_error

from server.openapi import build_document
from tests.fuzz.fuzz_support import REQUEST_TIMEOUT, LoopServer, count, fuzz_settings

OPERATIONS = 40
"""About how many operations remain after the exclusions (the budget is shared among them)."""

schema = (
    schemathesis.openapi.from_dict(build_document())
    .exclude(path_regex=r"^/api/(?!jobs)")
    .exclude(path_regex=r"^/api/api/")
    .exclude(tag=["static", "websocket"])
)


@pytest.fixture(scope="module")
def api_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoopServer]:
    server = LoopServer(tmp_path_factory.mktemp("schemathesis"), run_worker=False)
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="module")
def session() -> Iterator[requests.Session]:
    with requests.Session() as http:
        yield http


def json_error(ctx: Any, response: Any, case: Any) -> bool | None:
    """A 4xx of an API route is a JSON object with an `error` (an object with a message, or the
    jobs API's message string); aiohttp's own 404/405 for unmatched paths are plain text."""
    if not 400 <= response.status_code < 500 or "json" not in response.headers.get("Content-Type", ""):
        return None
    error = response.json().get("error")
    ok = isinstance(error, str) and error or isinstance(error, dict) and error.get("message")
    assert ok, f"{case.method} {case.path}: 4xx without an error message: {response.text[:300]}"
    return None


_base = fuzz_settings(0.12 / OPERATIONS, minimum=5)


@schema.parametrize()
@settings(_base, max_examples=_base.max_examples)
def test_api_matches_its_description(case: Any, api_server: LoopServer, session: requests.Session) -> None:
    count("schemathesis")
    response = case.call(base_url=api_server.url, session=session, timeout=REQUEST_TIMEOUT)
    case.validate_response(response, checks=[not_a_server_error], additional_checks=[json_error])
