"""Who did what on datasets: `created_by` on every build path (API, build page, command)."""

from __future__ import annotations

import json
from collections.abc import Callable
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.db.models import ProtectedError
from django.test import Client
from django.test.utils import CaptureQueriesContext

from datasets.models import Dataset
from datasets.tests.factories import dataset_with_traces
from traces.tests.factories import TraceFactory
from tunix_registry.tests.openapi_check import assert_fits

JSON = "application/json"


def _build(client: Client, headers: Any, version: str = "v1") -> Any:
    return client.post(
        "/api/datasets/build",
        json.dumps({"dataset_name": "audit", "dataset_version": version}),
        content_type=JSON,
        **headers,
    )


def test_an_api_build_records_its_user_in_the_detail_and_the_list(
    anon_client: Client,
    user_factory: Callable[..., Any],
    bearer: Callable[[Any], Any],
    openapi: dict[str, Any],
    data_dir: Path,
) -> None:
    TraceFactory.create_batch(2)
    alice = user_factory(username="alice")
    assert _build(anon_client, bearer(alice)).status_code == 201
    assert Dataset.objects.get().created_by == alice
    detail = anon_client.get("/api/datasets/audit-v1", **bearer(alice))
    assert detail.json()["created_by"] == "alice"
    assert_fits(openapi, "/api/datasets/{dataset_key}", "get", detail)
    listing = anon_client.get("/api/datasets", **bearer(alice))
    assert [d["created_by"] for d in listing.json()["data"]] == ["alice"]
    assert_fits(openapi, "/api/datasets", "get", listing)
    # manifest.json describes the data alone: who built it is the registry's record.
    manifest = json.loads((data_dir / "datasets/audit-v1/manifest.json").read_text())
    assert "created_by" not in manifest


@pytest.mark.django_db
def test_an_anonymous_build_records_no_creator(anon_client: Client, settings: Any) -> None:
    settings.TUNIX_ANONYMOUS_ACCESS = "write"
    TraceFactory.create()
    assert _build(anon_client, {}).status_code == 201
    assert Dataset.objects.get().created_by is None
    assert anon_client.get("/api/datasets/audit-v1").json()["created_by"] is None


def test_the_list_reads_creators_in_its_one_query(
    client: Client, user_factory: Callable[..., Any]
) -> None:
    dataset_with_traces(name="a", count=1)
    client.get("/api/datasets")
    with CaptureQueriesContext(connection) as before:
        client.get("/api/datasets")
    for n in range(3):
        dataset_with_traces(name=f"b{n}", count=1, created_by=user_factory())
    with CaptureQueriesContext(connection) as after:
        body = client.get("/api/datasets").json()
    assert len(after.captured_queries) == len(before.captured_queries)
    assert sum(d["created_by"] is not None for d in body["data"]) == 3


def test_the_build_page_credits_the_signed_in_user(client: Client) -> None:
    TraceFactory.create()
    form = {
        "dataset_name": "page",
        "dataset_version": "v1",
        "selection_strategy": "latest",
        "seed": "",
        "limit": "100",
        "filter_key": ["", "", ""],
        "filter_value": ["", "", ""],
    }
    response = client.post("/datasets/build/", form, follow=True)
    assert response.redirect_chain == [("/datasets/page-v1/", 302)]
    dataset = Dataset.objects.get()
    assert dataset.created_by is not None and dataset.created_by.username == "launcher"
    html = response.content.decode()
    assert '<dd data-testid="dataset:created-by">launcher</dd>' in html


def test_build_dataset_as_a_user_or_nobody(user_factory: Callable[..., Any]) -> None:
    TraceFactory.create()
    alice = user_factory(username="alice")
    call_command(
        "build_dataset", "cmd", "v1", "--as", "alice", stdout=StringIO(), stderr=StringIO()
    )
    call_command("build_dataset", "cmd", "v2", stdout=StringIO(), stderr=StringIO())
    assert dict(Dataset.objects.values_list("key", "created_by")) == {
        "cmd-v1": alice.pk,
        "cmd-v2": None,
    }
    with pytest.raises(CommandError, match="There is no user 'bob'"):
        call_command("build_dataset", "cmd", "v3", "--as", "bob", stderr=StringIO())
    assert not Dataset.objects.filter(key="cmd-v3").exists()


def test_a_user_who_built_a_dataset_is_protected(user_factory: Callable[..., Any]) -> None:
    alice = user_factory(username="alice")
    dataset_with_traces(count=1, created_by=alice)
    with pytest.raises(ProtectedError):
        alice.delete()
    admin = Client()
    admin.force_login(user_factory(role="admin", username="root"))
    listing = admin.get("/admin/datasets/dataset/", {"created_by__id__exact": alice.pk})
    assert "demo-v1" in listing.content.decode()
