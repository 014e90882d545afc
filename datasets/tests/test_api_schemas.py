"""Every datasets endpoint answers with a body its declared (OpenAPI) schema accepts."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from datasets.tests.factories import dataset_with_traces

pytestmark = pytest.mark.django_db

_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "null": (type(None),),
}


def _errors(value: Any, schema: dict[str, Any], components: dict[str, Any], at: str) -> list[str]:
    """What in `value` the JSON schema `schema` refuses (the subset the API's schemas use)."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[1]
        return _errors(value, components[name], components, at)
    for key in ("anyOf", "oneOf"):
        if key in schema:
            options = [_errors(value, option, components, at) for option in schema[key]]
            return [] if any(not found for found in options) else [f"{at}: no {key} option fits"]
    found: list[str] = []
    kind = schema.get("type")
    if kind is not None:
        allowed = _TYPES[kind]
        if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):
            return [f"{at}: {value!r} is not {kind}"]
    if isinstance(value, dict) and "properties" in schema:
        properties = schema["properties"]
        found += [
            f"{at}.{name}: missing" for name in schema.get("required", []) if name not in value
        ]
        if schema.get("additionalProperties") is False or kind == "object":
            found += [f"{at}.{name}: not declared" for name in value if name not in properties]
        for name, item in value.items():
            if name in properties:
                found += _errors(item, properties[name], components, f"{at}.{name}")
    if isinstance(value, list) and "items" in schema:
        for n, item in enumerate(value):
            found += _errors(item, schema["items"], components, f"{at}[{n}]")
    return found


@pytest.fixture
def openapi(client: Client) -> dict[str, Any]:
    return client.get("/api/openapi.json").json()


def _assert_fits(openapi: dict[str, Any], path: str, method: str, response: Any) -> None:
    declared = openapi["paths"][path][method]["responses"][str(response.status_code)]
    schema = declared["content"]["application/json"]["schema"]
    body = response.json()
    assert _errors(body, schema, openapi["components"]["schemas"], "body") == [], body


def test_build_list_and_manifest_bodies_fit_their_schemas(
    client: Client, openapi: dict[str, Any]
) -> None:
    dataset_with_traces(count=2, meta={"source": "exp"}, session_id="s")
    build = client.post(
        "/api/datasets/build",
        {"dataset_name": "b", "dataset_version": "v1", "filters": {"source": "exp"}},
        content_type="application/json",
    )
    assert build.status_code == 201
    _assert_fits(openapi, "/api/datasets/build", "post", build)
    listed = client.get("/api/datasets?limit=1")
    assert len(listed.json()["data"]) == 1
    assert listed.json()["data"][0]["created_at"].endswith("Z")
    _assert_fits(openapi, "/api/datasets", "get", listed)
    manifest = client.get("/api/datasets/demo-v1")
    assert manifest.json()["created_at"].endswith("Z")
    _assert_fits(openapi, "/api/datasets/{dataset_key}", "get", manifest)


def test_error_bodies_fit_their_schemas(client: Client, openapi: dict[str, Any]) -> None:
    dataset_with_traces(count=1)
    again = client.post(
        "/api/datasets/build",
        {"dataset_name": "demo", "dataset_version": "v1"},
        content_type="application/json",
    )
    assert again.status_code == 409
    _assert_fits(openapi, "/api/datasets/build", "post", again)
    for path, url in [
        ("/api/datasets/{dataset_key}", "/api/datasets/nope-v1"),
        ("/api/datasets/{dataset_key}", "/api/datasets/.."),
        ("/api/datasets/{dataset_key}/export.jsonl", "/api/datasets/nope-v1/export.jsonl"),
        ("/api/datasets/{dataset_key}/export.jsonl", "/api/datasets/d-v1/export.jsonl?format=x"),
    ]:
        response = client.get(url)
        assert response.status_code in (404, 422), url
        _assert_fits(openapi, path, "get", response)


def test_the_checker_refuses_a_body_that_does_not_fit(openapi: dict[str, Any]) -> None:
    schema = {"$ref": "#/components/schemas/DatasetBuildOut"}
    components = openapi["components"]["schemas"]
    good = {"dataset_key": "a-v1", "build_id": "x", "trace_count": 1, "manifest_path": "p"}
    assert _errors(good, schema, components, "body") == []
    assert _errors({**good, "trace_count": "1"}, schema, components, "body")
    assert _errors({**good, "extra": 1}, schema, components, "body")
    assert _errors({k: v for k, v in good.items() if k != "manifest_path"}, schema, components, "b")
