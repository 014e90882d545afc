"""POST /api/traces/batch: all or nothing, 1..1000 traces, byte limit."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from accounts.tests.helpers import app_queries
from traces.models import Trace
from traces.tests.factories import make_payload

URL = "/api/traces/batch"


def post(client: Client, body: Any, **extra: Any) -> Any:
    data = body if isinstance(body, bytes | str) else json.dumps(body)
    return client.generic("POST", URL, data, content_type="application/json", **extra)


@pytest.mark.django_db
def test_batch_creates_every_trace_in_input_order_with_one_insert(client: Client) -> None:
    payloads = [make_payload(prompt=f"q{n}") for n in range(25)]
    with CaptureQueriesContext(connection) as queries:
        response = post(client, payloads)
    assert response.status_code == 201
    body = response.json()
    assert body["created_count"] == 25
    ids = [t["id"] for t in body["traces"]]
    stored = {str(t.id): t for t in Trace.objects.all()}
    assert [stored[i].payload["prompt"] for i in ids] == [f"q{n}" for n in range(25)]
    for item in body["traces"]:
        assert item["created_at"] == stored[item["id"]].created_at.isoformat().replace(
            "+00:00", "Z"
        )
    sqls = [q["sql"] for q in app_queries(queries.captured_queries)]
    # Authentication's queries are counted apart. One statement for the batch
    # (SQLite: a multi-row INSERT; PostgreSQL: a COPY, which Django's query log
    # does not see); nothing is re-read.
    inserts = [s for s in sqls if "INSERT" in s]
    assert len(inserts) == (0 if connection.vendor == "postgresql" else 1)
    assert not [s for s in sqls if s.startswith("SELECT")]


@pytest.mark.django_db
def test_empty_batch_is_400(client: Client) -> None:
    response = post(client, [])
    assert response.status_code == 400
    assert response.json() == {"detail": "Batch must contain at least one trace"}


@pytest.mark.django_db
def test_batch_of_1001_is_400_and_inserts_nothing(client: Client) -> None:
    response = post(client, [make_payload()] * 1001)
    assert response.status_code == 400
    assert response.json() == {"detail": "Batch size (1001) exceeds maximum (1000)"}
    assert not Trace.objects.exists()


@pytest.mark.django_db
def test_batch_of_1000_is_accepted(client: Client) -> None:
    response = post(client, [make_payload()] * 1000)
    assert response.status_code == 201
    assert Trace.objects.count() == 1000


@pytest.mark.django_db
def test_one_invalid_element_rejects_the_whole_batch_with_its_index(client: Client) -> None:
    bad = make_payload()
    bad["steps"] = []
    response = post(client, [make_payload(), make_payload(), bad])
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", 2, "steps"]
    assert not Trace.objects.exists()


@pytest.mark.django_db
def test_schema_errors_come_before_size_checks(client: Client) -> None:
    response = post(client, [{"prompt": "no"}] * 1001)
    assert response.status_code == 422


@pytest.mark.django_db
def test_batch_body_over_the_byte_limit_is_413(client: Client, settings: Any) -> None:
    settings.TRACE_BATCH_MAX_BYTES = 4096
    response = post(client, [make_payload(prompt="x" * 1000)] * 5)
    assert response.status_code == 413
    assert response.json() == {"detail": "Payload size exceeds maximum of 4096 bytes"}
    assert not Trace.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("body", "loc"),
    [(b"[{", ["body"]), (b"", ["body"]), (json.dumps(make_payload()), ["body"])],
)
def test_malformed_or_non_array_body_is_422(client: Client, body: Any, loc: list[Any]) -> None:
    response = post(client, body)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == loc


@pytest.mark.django_db
@pytest.mark.parametrize("size", [1, 8, 9])
def test_small_and_large_batches_store_the_same_payloads(client: Client, size: int) -> None:
    # Either side of the size where PostgreSQL switches from INSERT to COPY.
    payloads = [make_payload(prompt=f"p{n}", meta={"n": n, "s": "é\\\t'\""}) for n in range(size)]
    body = post(client, payloads).json()
    stored = {str(t.id): t.payload for t in Trace.objects.all()}
    assert [stored[t["id"]] for t in body["traces"]] == payloads


def test_generated_ids_are_distinct_version_4_uuids() -> None:
    from traces.services import _uuid4_many

    ids = _uuid4_many(500)
    assert len(set(ids)) == 500
    assert {(i.version, i.variant) for i in ids} == {(4, "specified in RFC 4122")}
