"""Who did what on traces: `created_by` on every create path (API, upload page, import command)."""

from __future__ import annotations

import json
from collections.abc import Callable
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import CommandError, call_command
from django.db.models import ProtectedError
from django.test import Client

from traces.models import Trace
from traces.tests.factories import TraceFactory, make_payload
from tunix_registry.tests.openapi_check import assert_fits

JSON = "application/json"


def creators() -> list[str | None]:
    return sorted(
        (t.created_by.username if t.created_by else None for t in Trace.objects.all()),
        key=str,
    )


def test_api_creates_record_the_token_user_one_and_in_batches(
    anon_client: Client,
    user_factory: Callable[..., Any],
    bearer: Callable[[Any], Any],
    openapi: dict[str, Any],
) -> None:
    alice = user_factory(username="alice")
    one = anon_client.post(
        "/api/traces", json.dumps(make_payload()), content_type=JSON, **bearer(alice)
    )
    assert one.status_code == 201, one.content
    # Above the size where PostgreSQL inserts with COPY, below it a VALUES list.
    for size in (2, 10):
        batch = anon_client.post(
            "/api/traces/batch",
            json.dumps([make_payload(prompt=f"q{n}") for n in range(size)]),
            content_type=JSON,
            **bearer(alice),
        )
        assert batch.status_code == 201, batch.content
    assert creators() == ["alice"] * 13

    detail = anon_client.get(f"/api/traces/{one.json()['id']}", **bearer(alice))
    assert detail.json()["created_by"] == "alice"
    assert_fits(openapi, "/api/traces/{trace_id}", "get", detail)
    other = TraceFactory.create()
    compare = anon_client.get(
        "/api/traces/compare",
        {"base": one.json()["id"], "other": str(other.id)},
        **bearer(alice),
    )
    assert (compare.json()["base"]["created_by"], compare.json()["other"]["created_by"]) == (
        "alice",
        None,
    )
    assert_fits(openapi, "/api/traces/compare", "get", compare)


@pytest.mark.django_db
def test_an_anonymous_write_records_no_creator(anon_client: Client, settings: Any) -> None:
    settings.TUNIX_ANONYMOUS_ACCESS = "write"
    created = anon_client.post("/api/traces", json.dumps(make_payload()), content_type=JSON)
    assert created.status_code == 201, created.content
    anon_client.post("/api/traces/batch", json.dumps([make_payload()]), content_type=JSON)
    assert creators() == [None, None]
    assert anon_client.get(f"/api/traces/{created.json()['id']}").json()["created_by"] is None


def test_the_upload_page_credits_the_signed_in_user_pasted_or_from_a_file(
    client: Client,
) -> None:
    client.post("/traces/upload/", {"trace_json": json.dumps(make_payload())})
    lines = "\n".join(json.dumps(make_payload(prompt=f"p{n}")) for n in range(3))
    upload = SimpleUploadedFile("traces.jsonl", lines.encode(), content_type="application/jsonl")
    response = client.post("/traces/upload/", {"jsonl_file": upload})
    assert response.status_code == 200
    assert creators() == ["launcher"] * 4
    trace = Trace.objects.first()
    assert trace is not None
    page = client.get(f"/traces/{trace.id}/").content.decode()
    assert '<dd data-testid="trace:created-by">launcher</dd>' in page
    older = TraceFactory.create()
    assert (
        '<dd data-testid="trace:created-by">—</dd>'
        in client.get(f"/traces/{older.id}/").content.decode()
    )


def test_import_traces_as_a_user_or_nobody(
    tmp_path: Path, user_factory: Callable[..., Any]
) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps(make_payload()) + "\n")
    user_factory(username="alice")
    call_command("import_traces", str(path), "--no-progress", "--as", "alice", stdout=StringIO())
    call_command("import_traces", str(path), "--no-progress", stdout=StringIO())
    assert creators() == [None, "alice"]
    with pytest.raises(CommandError, match="There is no user 'bob'"):
        call_command("import_traces", str(path), "--no-progress", "--as", "bob")
    assert Trace.objects.count() == 2


def test_a_user_who_created_a_trace_is_protected(user_factory: Callable[..., Any]) -> None:
    alice = user_factory(username="alice")
    TraceFactory.create(created_by=alice)
    with pytest.raises(ProtectedError):
        alice.delete()


def test_the_admin_shows_and_credits_the_creator(user_factory: Callable[..., Any]) -> None:
    alice = user_factory(username="alice")
    trace = TraceFactory.create(created_by=alice)
    admin = Client()
    admin.force_login(user_factory(role="admin", username="root"))
    listing = admin.get("/admin/traces/trace/", {"created_by__id__exact": alice.pk})
    assert str(trace.id) in listing.content.decode()
    added = admin.post(
        "/admin/traces/trace/add/",
        {
            "trace_version": "1.0",
            "payload": json.dumps(make_payload()),
            "created_at_0": "2026-01-02",
            "created_at_1": "03:04:05",
            "_save": "Save",
        },
    )
    assert added.status_code == 302, added.content.decode()[-2000:]
    added_by = Trace.objects.exclude(pk=trace.pk).get().created_by
    assert added_by is not None and added_by.username == "root"
