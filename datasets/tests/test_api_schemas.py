"""Every datasets endpoint answers with a body its declared (OpenAPI) schema accepts."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from datasets.tests.factories import dataset_with_traces
from tunix_registry.tests.openapi_check import assert_fits, schema_errors

pytestmark = pytest.mark.django_db


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
    assert_fits(openapi, "/api/datasets/build", "post", build)
    listed = client.get("/api/datasets?limit=1")
    assert len(listed.json()["data"]) == 1
    assert listed.json()["data"][0]["created_at"].endswith("Z")
    assert_fits(openapi, "/api/datasets", "get", listed)
    manifest = client.get("/api/datasets/demo-v1")
    assert manifest.json()["created_at"].endswith("Z")
    assert_fits(openapi, "/api/datasets/{dataset_key}", "get", manifest)


def test_error_bodies_fit_their_schemas(client: Client, openapi: dict[str, Any]) -> None:
    dataset_with_traces(count=1)
    again = client.post(
        "/api/datasets/build",
        {"dataset_name": "demo", "dataset_version": "v1"},
        content_type="application/json",
    )
    assert again.status_code == 409
    assert_fits(openapi, "/api/datasets/build", "post", again)
    for path, url in [
        ("/api/datasets/{dataset_key}", "/api/datasets/nope-v1"),
        ("/api/datasets/{dataset_key}", "/api/datasets/.."),
        ("/api/datasets/{dataset_key}/export.jsonl", "/api/datasets/nope-v1/export.jsonl"),
        ("/api/datasets/{dataset_key}/export.jsonl", "/api/datasets/d-v1/export.jsonl?format=x"),
    ]:
        response = client.get(url)
        assert response.status_code in (404, 422), url
        assert_fits(openapi, path, "get", response)


def test_the_checker_refuses_a_body_that_does_not_fit(openapi: dict[str, Any]) -> None:
    schema = {"$ref": "#/components/schemas/DatasetBuildOut"}
    components = openapi["components"]["schemas"]
    good = {"dataset_key": "a-v1", "build_id": "x", "trace_count": 1, "manifest_path": "p"}
    assert schema_errors(good, schema, components, "body") == []
    assert schema_errors({**good, "trace_count": "1"}, schema, components, "body")
    assert schema_errors({**good, "extra": 1}, schema, components, "body")
    assert schema_errors(
        {k: v for k, v in good.items() if k != "manifest_path"}, schema, components, "b"
    )
