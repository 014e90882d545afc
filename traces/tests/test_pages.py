"""The trace pages through Django's test client: list, detail, score, upload, compare."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from traces.models import Score, Trace
from traces.tests.factories import ScoreFactory, TraceFactory, make_payload

ZERO = "00000000-0000-0000-0000-000000000000"


@pytest.mark.django_db
def test_list_shows_newest_first_with_preview_and_latest_score_in_one_query(
    client: Client,
) -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    old = TraceFactory.create(prompt="Old question", created_at=start)
    new = TraceFactory.create(
        prompt="New <b>question</b> " + "x" * 300, created_at=start + timedelta(1)
    )
    ScoreFactory.create(trace=old, score=12.5, created_at=start + timedelta(2))
    ScoreFactory.create(trace=old, score=77.25, created_at=start + timedelta(3))
    with CaptureQueriesContext(connection) as queries:
        response = client.get("/traces/")
    assert response.status_code == 200
    html = response.content.decode()
    assert html.index(str(new.id)) < html.index(str(old.id))
    assert "New &lt;b&gt;question&lt;/b&gt;" in html
    assert "x" * 300 not in html
    assert "77.25" in html and "12.50" not in html
    trace_queries = [q for q in queries.captured_queries if "traces_trace" in q["sql"]]
    assert len(trace_queries) == 1


@pytest.mark.django_db
def test_list_pages_and_htmx_renders_only_the_table(client: Client) -> None:
    TraceFactory.create_batch(3)
    response = client.get("/traces/?limit=2")
    assert "offset=2" in response.content.decode()
    partial = client.get("/traces/?limit=2&offset=2", HTTP_HX_REQUEST="true")
    body = partial.content.decode()
    assert "<html" not in body
    assert body.count("<tr>") == 2  # header + the one remaining trace
    assert "offset=0" in body


@pytest.mark.django_db
def test_list_bad_query_falls_back_to_first_page(client: Client) -> None:
    TraceFactory.create()
    assert client.get("/traces/?limit=abc&offset=-4").status_code == 200


@pytest.mark.django_db
def test_empty_list_invites_an_upload(client: Client) -> None:
    assert "No traces yet" in client.get("/traces/").content.decode()


@pytest.mark.django_db
def test_detail_shows_prompt_numbered_steps_answer_and_escaped_meta(client: Client) -> None:
    trace = TraceFactory.create(
        prompt="<script>alert(1)</script>",
        steps=["first step", "second step"],
        final_answer="forty-two",
        meta={"note": "<i>hi</i>"},
    )
    html = client.get(f"/traces/{trace.id}/").content.decode()
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert html.index("first step") < html.index("second step")
    assert "forty-two" in html
    assert "&lt;i&gt;hi&lt;/i&gt;" in html
    assert "Not scored yet" in html


@pytest.mark.django_db
def test_detail_unknown_trace_is_404(client: Client) -> None:
    assert client.get(f"/traces/{ZERO}/").status_code == 404


@pytest.mark.django_db
def test_score_with_htmx_swaps_in_the_breakdown(client: Client) -> None:
    trace = TraceFactory.create(steps=["x" * 10])
    response = client.post(f"/traces/{trace.id}/score/", HTTP_HX_REQUEST="true")
    assert response.status_code == 201
    html = response.content.decode()
    assert "<html" not in html
    assert 'data-testid="score-breakdown"' in html
    assert "6.00" in html
    assert Score.objects.filter(trace=trace).count() == 1


@pytest.mark.django_db
def test_score_without_js_redirects_to_the_detail_showing_it(client: Client) -> None:
    trace = TraceFactory.create(steps=["x"])
    response = client.post(f"/traces/{trace.id}/score/")
    assert response.status_code == 302
    assert response["Location"] == f"/traces/{trace.id}/#score"
    assert "5.10" in client.get(f"/traces/{trace.id}/").content.decode()


@pytest.mark.django_db
def test_score_unknown_trace_is_404_and_get_is_405(client: Client) -> None:
    assert client.post(f"/traces/{ZERO}/score/").status_code == 404
    assert client.get(f"/traces/{ZERO}/score/").status_code == 405


@pytest.mark.django_db
def test_upload_page_renders(client: Client) -> None:
    html = client.get("/traces/upload/").content.decode()
    assert 'name="trace_json"' in html
    assert 'name="jsonl_file"' in html


@pytest.mark.django_db
def test_upload_pasted_json_creates_a_trace(client: Client) -> None:
    response = client.post("/traces/upload/", {"trace_json": json.dumps(make_payload())})
    assert response.status_code == 200
    trace = Trace.objects.get()
    assert f"/traces/{trace.id}/" in response.content.decode()
    assert trace.payload == make_payload()


@pytest.mark.django_db
def test_upload_invalid_json_names_the_field_and_keeps_the_text(client: Client) -> None:
    raw = make_payload()
    raw["steps"][0]["i"] = 1
    response = client.post("/traces/upload/", {"trace_json": json.dumps(raw)})
    html = response.content.decode()
    assert "steps: Value error, Step indices must be unique" in html
    assert "Step indices" in html and "&quot;prompt&quot;" in html
    assert not Trace.objects.exists()
    response = client.post("/traces/upload/", {"trace_json": "{nope"})
    assert "Invalid JSON" in response.content.decode()


@pytest.mark.django_db
def test_upload_pasted_json_over_the_limit_is_refused(client: Client, settings: Any) -> None:
    settings.TRACE_MAX_BYTES = 1024
    response = client.post(
        "/traces/upload/", {"trace_json": json.dumps(make_payload(prompt="x" * 2000))}
    )
    assert "exceeds maximum of 1024 bytes" in response.content.decode()
    assert not Trace.objects.exists()


@pytest.mark.django_db
def test_upload_needs_exactly_one_source(client: Client) -> None:
    assert "Paste a trace" in client.post("/traces/upload/", {}).content.decode()
    upload = SimpleUploadedFile("t.jsonl", json.dumps(make_payload()).encode())
    response = client.post(
        "/traces/upload/", {"trace_json": json.dumps(make_payload()), "jsonl_file": upload}
    )
    assert "not both" in response.content.decode()
    assert not Trace.objects.exists()


def _jsonl(*lines: str) -> SimpleUploadedFile:
    return SimpleUploadedFile("traces.jsonl", ("\n".join(lines) + "\n").encode())


@pytest.mark.django_db
def test_upload_jsonl_imports_good_lines_and_lists_bad_ones(client: Client) -> None:
    bad = make_payload()
    del bad["prompt"]
    upload = _jsonl(
        json.dumps(make_payload()), "{broken", "", json.dumps(bad), json.dumps(make_payload())
    )
    response = client.post("/traces/upload/", {"jsonl_file": upload})
    html = response.content.decode()
    assert Trace.objects.count() == 2
    assert "2 traces created, 2 lines rejected" in html
    assert '<td class="num">2</td><td>trace: Invalid JSON' in html
    assert '<td class="num">5</td>' not in html
    assert '<td class="num">4</td><td>prompt: Field required</td>' in html


@pytest.mark.django_db
def test_upload_jsonl_all_or_nothing_imports_nothing(client: Client) -> None:
    upload = _jsonl(json.dumps(make_payload()), "{broken")
    response = client.post("/traces/upload/", {"jsonl_file": upload, "all_or_nothing": "on"})
    assert "Nothing was imported" in response.content.decode()
    assert not Trace.objects.exists()


@pytest.mark.django_db
def test_compare_page_shows_both_sides_with_scores(client: Client) -> None:
    base = TraceFactory.create(steps=["x" * 10], prompt="Base prompt")
    other = TraceFactory.create(steps=["x"], prompt="Other prompt")
    response = client.get(f"/traces/compare/?base={base.id}&other={other.id}")
    html = response.content.decode()
    assert response.status_code == 200
    assert "6.00" in html and "5.10" in html
    assert html.index("Base prompt") < html.index("Other prompt")
    assert not Score.objects.exists()


@pytest.mark.django_db
def test_compare_page_form_errors_and_missing_traces(client: Client) -> None:
    assert client.get("/traces/compare/").status_code == 200
    response = client.get("/traces/compare/?base=nope&other=")
    assert "Enter a valid UUID" in response.content.decode()
    trace = TraceFactory.create()
    response = client.get(f"/traces/compare/?base={trace.id}&other={ZERO}")
    assert response.status_code == 404
    assert f"Other trace {ZERO} not found" in response.content.decode()
