"""GET /openapi.json (server/openapi.py): the document describes exactly the app's routes, both ways,
is a loadable OpenAPI 3 document, and its request schemas accept what the server accepts."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest
import schemathesis
from aiohttp import web
from aiohttp.test_utils import TestClient

from server.app import create_app
from server.openapi import CATCH_ALL_METHODS, build_document
from tests.server.helpers import make_services, output_prompt

HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


def app_routes(app: web.Application) -> set[tuple[str, str]]:
    """(METHOD, path template) of every route the app's router serves; `*` as the methods it stands for."""
    found = set()
    for route in app.router.routes():
        methods = CATCH_ALL_METHODS if route.method == "*" else (route.method,)
        for method in methods:
            found.add((method, route.resource.canonical))
    return found


def documented(document: dict[str, Any]) -> set[tuple[str, str]]:
    return {
        (method.upper(), path) for path, item in document["paths"].items() for method in item if method in HTTP_METHODS
    }


def differences(app: web.Application, document: dict[str, Any]) -> tuple[set, set]:
    """(routes without a description, descriptions without a route)."""
    served, described = app_routes(app), documented(document)
    return served - described, described - served


def test_document_matches_the_route_table_both_ways(tmp_path: Path) -> None:
    app = create_app(make_services(tmp_path, run_worker=False))
    undescribed, stale = differences(app, build_document())
    assert not undescribed, f"routes missing from server/openapi.py: {sorted(undescribed)}"
    assert not stale, f"server/openapi.py describes routes the app does not serve: {sorted(stale)}"
    # The mirror rule: every API route is described at /x and /api/x.
    paths = build_document()["paths"]
    assert "/prompt" in paths and "/api/prompt" in paths and "/internal/files/{type}" in paths
    assert "/api/internal/files/{type}" not in paths


def test_a_route_without_a_description_is_caught(tmp_path: Path) -> None:
    app = create_app(make_services(tmp_path, run_worker=False))

    async def handler(request: web.Request) -> web.Response:
        return web.Response()

    app.router.add_route("GET", "/brand_new/{thing}", handler)
    document = build_document()
    del document["paths"]["/free"]
    undescribed, stale = differences(app, document)
    assert undescribed == {("GET", "/brand_new/{thing}"), ("POST", "/free")}
    assert not stale
    document["paths"]["/nowhere"] = {"get": {"responses": {}}}
    assert differences(app, document)[1] == {("GET", "/nowhere")}


def test_document_is_well_formed() -> None:
    document = build_document()
    assert document["openapi"].startswith("3.")
    ids = []
    for path, item in document["paths"].items():
        template = set(re.findall(r"{([^}]+)}", path))
        for method, operation in item.items():
            declared = {p["name"] for p in operation["parameters"] if p["in"] == "path"}
            assert declared == template, f"{method} {path}: path parameters {declared} != {template}"
            assert all(p["required"] for p in operation["parameters"] if p["in"] == "path")
            assert operation["responses"], f"{method} {path} has no responses"
            assert operation["summary"]
            ids.append(operation["operationId"])
    assert len(ids) == len(set(ids)), "operationIds must be unique"
    # schemathesis resolves every $ref and parameter of every operation.
    schema = schemathesis.openapi.from_dict(document)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == len(ids)


def _validator(name: str) -> Any:
    components = build_document()["components"]
    return jsonschema_rs.validator_for({"$ref": f"#/components/schemas/{name}", "components": components})


def test_request_schemas_accept_real_requests_and_refuse_wrong_types() -> None:
    prompt = _validator("PromptRequest")
    assert prompt.is_valid({"prompt": output_prompt(), "client_id": "c", "extra_data": {"x": 1}, "front": True})
    for wrong in ({}, {"prompt": []}, {"prompt": {"1": {"inputs": {}}}}, {"prompt": {}, "front": "yes"}):
        assert not prompt.is_valid(wrong), wrong
    move = _validator("MoveRequest")
    assert move.is_valid({"index": 0}) and move.is_valid({"before": "abc"})
    assert not move.is_valid({}) and not move.is_valid({"index": 1, "before": "x"})
    assert _validator("QueueRequest").is_valid({"delete": ["a"], "clear": False})
    assert not _validator("QueueRequest").is_valid({"delete": "a"})


@pytest.mark.asyncio
async def test_served_at_openapi_json(start) -> None:
    client: TestClient = await start(run_worker=False)
    for url in ("/openapi.json", "/api/openapi.json"):
        response = await client.get(url)
        assert response.status == 200, url
        assert response.content_type == "application/json"
        served = await response.json()
        assert documented(served) == documented(build_document())
        assert served["paths"]["/prompt"]["post"]["requestBody"]["content"]["application/json"]
