"""GET /api/traces/{id}, GET /api/traces (list) and GET /api/traces/compare."""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from accounts.tests.helpers import app_queries
from traces.tests.factories import TraceFactory, make_payload

ZERO = "00000000-0000-0000-0000-000000000000"


@pytest.mark.django_db
def test_detail_returns_the_stored_payload(client: Client) -> None:
    trace = TraceFactory.create(
        meta={"k": [1, 2]},
        steps=["a", "b"],
        created_at=datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC),
    )
    response = client.get(f"/api/traces/{trace.id}")
    assert response.status_code == 200
    assert response.json() == {
        "id": str(trace.id),
        "created_at": "2026-01-02T03:04:05.678000Z",
        "trace_version": "1.0",
        "payload": trace.payload,
        # Additive: who created it (null: a factory's trace has no creator).
        "created_by": None,
    }
    assert set(response.json()["payload"]) == {
        "trace_version",
        "prompt",
        "final_answer",
        "steps",
        "meta",
    }


@pytest.mark.django_db
def test_detail_unknown_id_is_404(client: Client) -> None:
    response = client.get(f"/api/traces/{ZERO}")
    assert response.status_code == 404
    assert response.json() == {"detail": f"Trace {ZERO} not found"}


@pytest.mark.django_db
def test_detail_malformed_uuid_is_422(client: Client) -> None:
    response = client.get("/api/traces/not-a-uuid")
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["path", "trace_id"]


def _at(minutes: int) -> datetime:
    return datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=minutes)


@pytest.mark.django_db
def test_list_is_newest_first_with_id_tie_breaker_and_pages(client: Client) -> None:
    older = TraceFactory.create(created_at=_at(0))
    same_time = [TraceFactory.create(created_at=_at(5)) for _ in range(3)]
    newest = TraceFactory.create(created_at=_at(10))
    expected = [newest.id, *sorted((t.id for t in same_time), reverse=True), older.id]

    seen: list[str] = []
    offset: int | None = 0
    pages = []
    while offset is not None:
        body = client.get(f"/api/traces?limit=2&offset={offset}").json()
        pages.append(body["pagination"])
        seen += [item["id"] for item in body["data"]]
        offset = body["pagination"]["next_offset"]
    assert seen == [str(i) for i in expected]
    assert pages == [
        {"limit": 2, "offset": 0, "next_offset": 2},
        {"limit": 2, "offset": 2, "next_offset": 4},
        {"limit": 2, "offset": 4, "next_offset": None},
    ]


@pytest.mark.django_db
def test_list_items_have_no_payload_and_the_query_reads_none(client: Client) -> None:
    TraceFactory.create_batch(3)
    with CaptureQueriesContext(connection) as queries:
        body = client.get("/api/traces").json()
    assert body["pagination"] == {"limit": 20, "offset": 0, "next_offset": None}
    assert all(set(item) == {"id", "created_at", "trace_version"} for item in body["data"])
    (query,) = app_queries(queries.captured_queries)
    assert "payload" not in query["sql"]
    assert "ORDER BY" in query["sql"]


@pytest.mark.django_db
def test_empty_list(client: Client) -> None:
    assert client.get("/api/traces").json() == {
        "data": [],
        "pagination": {"limit": 20, "offset": 0, "next_offset": None},
    }


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("query", "detail"),
    [
        ("limit=0", "limit must be between 1 and 100"),
        ("limit=101", "limit must be between 1 and 100"),
        ("offset=-1", "offset must be non-negative"),
    ],
)
def test_list_range_errors_are_422_strings(client: Client, query: str, detail: str) -> None:
    response = client.get(f"/api/traces?{query}")
    assert response.status_code == 422
    assert response.json() == {"detail": detail}


@pytest.mark.django_db
def test_list_non_integer_is_422_list(client: Client) -> None:
    response = client.get("/api/traces?limit=ten")
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["query", "limit"]


@pytest.mark.django_db
def test_compare_returns_both_traces_with_baseline_scores_not_stored(client: Client) -> None:
    base = TraceFactory.create(steps=["x" * 10])
    other = TraceFactory.create(steps=["y" * 500] * 10)
    response = client.get(f"/api/traces/compare?base={base.id}&other={other.id}")
    assert response.status_code == 200
    body = response.json()
    assert body["base"]["id"] == str(base.id)
    assert body["base"]["score"] == 6.0
    assert body["other"]["score"] == 100.0
    assert body["other"]["payload"] == other.payload
    assert set(body["base"]) == {
        "id",
        "created_at",
        "score",
        "trace_version",
        "payload",
        "created_by",
    }
    assert not base.scores.exists()


@pytest.mark.django_db
def test_compare_same_id_twice_is_allowed(client: Client) -> None:
    trace = TraceFactory.create()
    body = client.get(f"/api/traces/compare?base={trace.id}&other={trace.id}").json()
    assert body["base"] == body["other"]


@pytest.mark.django_db
def test_compare_unknown_ids_are_404_base_first(client: Client) -> None:
    trace = TraceFactory.create()
    other_id = uuid.uuid4()
    response = client.get(f"/api/traces/compare?base={ZERO}&other={other_id}")
    assert response.status_code == 404
    assert response.json() == {"detail": f"Base trace {ZERO} not found"}
    response = client.get(f"/api/traces/compare?base={trace.id}&other={other_id}")
    assert response.status_code == 404
    assert response.json() == {"detail": f"Other trace {other_id} not found"}


@pytest.mark.django_db
@pytest.mark.parametrize("query", ["", "base=not-a-uuid&other=" + ZERO, "base=" + ZERO])
def test_compare_missing_or_malformed_ids_are_422(client: Client, query: str) -> None:
    response = client.get(f"/api/traces/compare?{query}")
    assert response.status_code == 422
    assert isinstance(response.json()["detail"], list)


@pytest.mark.django_db
def test_openapi_documents_the_trace_body(client: Client) -> None:
    spec: dict[str, Any] = client.get("/api/openapi.json").json()
    post = spec["paths"]["/api/traces"]["post"]
    schema = post["requestBody"]["content"]["application/json"]["schema"]
    assert set(schema["required"]) == {"trace_version", "prompt", "final_answer", "steps"}
    text = json.dumps(schema)
    assert "#/$defs/" not in text  # step schema inlined, not a dangling $defs ref
    refs = re.findall(r'"#/components/schemas/([^"]+)"', text)
    assert refs and all(ref in spec["components"]["schemas"] for ref in refs)  # meta's JsonValue
    assert "/api/traces/compare" in spec["paths"]


def test_make_payload_is_what_the_api_stores() -> None:
    assert make_payload()["meta"] is None


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("moment", "rendered"),
    [
        (datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC), "2026-03-04T05:06:07Z"),
        (datetime(2026, 3, 4, 5, 6, 7, 120, tzinfo=UTC), "2026-03-04T05:06:07.000120Z"),
        (datetime(2026, 3, 4, 5, 6, 7, 500000, tzinfo=UTC), "2026-03-04T05:06:07.500000Z"),
    ],
)
def test_list_and_detail_render_times_like_the_create_response(
    client: Client, moment: datetime, rendered: str
) -> None:
    trace = TraceFactory.create(created_at=moment)
    assert client.get("/api/traces").json()["data"][0]["created_at"] == rendered
    detail = client.get(f"/api/traces/{trace.id}").json()
    assert detail["created_at"] == rendered
    assert detail["id"] == str(trace.id)


@pytest.mark.postgres_only
@pytest.mark.django_db
def test_list_query_walks_the_created_at_index_without_a_sort() -> None:
    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL query plan")
    from traces.models import Trace

    TraceFactory.create_batch(3)
    with connection.cursor() as cursor:
        # A tiny table would be read sequentially; rule that out so the plan
        # shows whether the ORDER BY can use the index at all.
        cursor.execute("SET LOCAL enable_seqscan = off")
    page = Trace.objects.order_by("-created_at", "-id").values("id", "created_at", "trace_version")
    plan = page[0:21].explain()
    assert "Index Scan Backward using trace_created_at_id_idx" in plan
    assert "Sort" not in plan
