"""Traces API bodies against their declared schemas, and HTTP caching of trace reads."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from accounts.tests.helpers import app_queries
from traces.models import Trace
from traces.tests.factories import TraceFactory, make_payload
from tunix_registry.tests.openapi_check import assert_fits

pytestmark = pytest.mark.django_db


def test_every_trace_endpoint_answers_what_its_schema_declares(
    client: Client, openapi: dict[str, Any]
) -> None:
    created = client.post("/api/traces", make_payload(), content_type="application/json")
    assert created.status_code == 201
    assert_fits(openapi, "/api/traces", "post", created)
    batch = client.post(
        "/api/traces/batch", [make_payload(), make_payload()], content_type="application/json"
    )
    assert batch.status_code == 201
    assert_fits(openapi, "/api/traces/batch", "post", batch)
    assert_fits(openapi, "/api/traces", "get", client.get("/api/traces"))
    trace_id = created.json()["id"]
    detail = client.get(f"/api/traces/{trace_id}")
    assert_fits(openapi, "/api/traces/{trace_id}", "get", detail)
    other = batch.json()["traces"][0]["id"]
    compare = client.get(f"/api/traces/compare?base={trace_id}&other={other}")
    assert_fits(openapi, "/api/traces/compare", "get", compare)
    score = client.post(
        f"/api/traces/{trace_id}/score", {"criteria": "baseline"}, content_type="application/json"
    )
    assert score.status_code == 201
    assert_fits(openapi, "/api/traces/{trace_id}/score", "post", score)
    missing = client.get("/api/traces/00000000-0000-0000-0000-000000000000")
    assert_fits(openapi, "/api/traces/{trace_id}", "get", missing)


def test_a_trace_carries_an_identity_etag_and_a_long_lifetime(client: Client) -> None:
    trace = TraceFactory.create()
    response = client.get(f"/api/traces/{trace.id}")
    assert response.status_code == 200
    assert str(trace.id) in response.headers["ETag"]
    assert "immutable" in response.headers["Cache-Control"]
    assert "max-age=31536000" in response.headers["Cache-Control"]


def test_a_conditional_trace_read_is_304_after_one_existence_check(client: Client) -> None:
    trace = TraceFactory.create()
    etag = client.get(f"/api/traces/{trace.id}").headers["ETag"]
    with CaptureQueriesContext(connection) as queries:
        again = client.get(f"/api/traces/{trace.id}", HTTP_IF_NONE_MATCH=etag)
    assert again.status_code == 304
    assert again.content == b""
    assert again.headers["ETag"] == etag
    # The endpoint's own cost; authentication's queries (session, user) are counted apart.
    own = app_queries(queries.captured_queries)
    assert len(own) <= 1
    assert all("payload" not in q["sql"] for q in own)


def test_a_deleted_trace_is_404_even_with_its_old_etag(client: Client) -> None:
    trace = TraceFactory.create()
    etag = client.get(f"/api/traces/{trace.id}").headers["ETag"]
    Trace.objects.filter(pk=trace.pk).delete()
    response = client.get(f"/api/traces/{trace.id}", HTTP_IF_NONE_MATCH=etag)
    assert response.status_code == 404
    assert response.json() == {"detail": f"Trace {trace.id} not found"}


def test_another_traces_etag_does_not_match(client: Client) -> None:
    first, second = TraceFactory.create_batch(2)
    etag = client.get(f"/api/traces/{first.id}").headers["ETag"]
    response = client.get(f"/api/traces/{second.id}", HTTP_IF_NONE_MATCH=etag)
    assert response.status_code == 200
    assert response.json()["id"] == str(second.id)


def test_the_list_revalidates_and_its_etag_changes_when_a_trace_is_added(client: Client) -> None:
    TraceFactory.create()
    first = client.get("/api/traces")
    assert first.headers["Cache-Control"] == "no-cache"
    etag = first.headers["ETag"]
    assert client.get("/api/traces", HTTP_IF_NONE_MATCH=etag).status_code == 304
    TraceFactory.create()
    changed = client.get("/api/traces", HTTP_IF_NONE_MATCH=etag)
    assert changed.status_code == 200
    assert changed.headers["ETag"] != etag
    assert len(changed.json()["data"]) == 2
