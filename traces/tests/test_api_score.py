"""POST /api/traces/{id}/score: the baseline formula, a stored Score row."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.test import Client

from traces.models import Score
from traces.tests.factories import TraceFactory

ZERO = "00000000-0000-0000-0000-000000000000"


def score(client: Client, trace_id: Any, body: Any = "{}") -> Any:
    data = body if isinstance(body, str | bytes) else json.dumps(body)
    return client.generic(
        "POST", f"/api/traces/{trace_id}/score", data, content_type="application/json"
    )


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("steps", "expected", "step_score", "length_score", "avg"),
    [
        (["x" * 10], 6.0, 5.0, 1.0, 10.0),
        (["x"], 5.1, 5.0, 0.1, 1.0),
        (["x" * 500] * 10, 100.0, 50.0, 50.0, 500.0),
        (["x" * 2000] * 30, 100.0, 50.0, 50.0, 2000.0),
        (["x" * 168, "x" * 168, "x" * 169], 31.83, 15.0, 16.83, 168.33),
    ],
)
def test_baseline_reference_values(
    client: Client,
    steps: list[str],
    expected: float,
    step_score: float,
    length_score: float,
    avg: float,
) -> None:
    trace = TraceFactory.create(steps=steps)
    response = score(client, trace.id)
    assert response.status_code == 201
    body = response.json()
    assert body["trace_id"] == str(trace.id)
    assert body["score"] == expected
    details = body["details"]
    assert details["step_count"] == len(steps)
    assert details["total_chars"] == sum(map(len, steps))
    assert details["avg_step_length"] == avg
    assert details["step_score"] == step_score
    assert details["length_score"] == length_score
    assert details["criteria"] == "baseline"
    assert details["scored_at"].endswith("Z")
    row = Score.objects.get(trace=trace)
    assert (row.criteria, row.score, row.details) == ("baseline", expected, details)


@pytest.mark.django_db
def test_every_call_adds_a_row(client: Client) -> None:
    trace = TraceFactory.create()
    score(client, trace.id, {"criteria": "baseline"})
    score(client, trace.id)
    assert Score.objects.filter(trace=trace).count() == 2


@pytest.mark.django_db
def test_unknown_trace_is_404(client: Client) -> None:
    response = score(client, ZERO)
    assert response.status_code == 404
    assert response.json() == {"detail": f"Trace {ZERO} not found"}
    assert not Score.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ("", ["body"]),
        ("{oops", ["body"]),
        ({"criteria": "llm"}, ["body", "criteria"]),
        ("[]", ["body"]),
    ],
)
def test_bad_bodies_are_422(client: Client, body: Any, loc: list[str]) -> None:
    trace = TraceFactory.create()
    response = score(client, trace.id, body)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == loc
    assert not Score.objects.exists()


@pytest.mark.django_db
def test_malformed_uuid_is_422(client: Client) -> None:
    assert score(client, "nope").status_code == 422
