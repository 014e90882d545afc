"""HTTP caching of the datasets API: an immutable manifest, a list that revalidates."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from accounts.tests.helpers import app_queries
from datasets.models import Dataset
from datasets.services import dataset_build
from datasets.tests.factories import dataset_with_traces

pytestmark = pytest.mark.django_db


def test_the_manifest_has_a_strong_etag_and_a_long_cache_lifetime(client: Client) -> None:
    dataset_with_traces(count=2)
    response = client.get("/api/datasets/demo-v1")
    assert response.status_code == 200
    etag = response["ETag"]
    assert etag.startswith('"') and not etag.startswith("W/")
    cache_control = response["Cache-Control"]
    assert "max-age=31536000" in cache_control
    assert "immutable" in cache_control
    assert client.get("/api/datasets/demo-v1")["ETag"] == etag


def test_a_matching_if_none_match_is_a_304_after_one_lookup(client: Client) -> None:
    dataset_with_traces(count=3)
    etag = client.get("/api/datasets/demo-v1")["ETag"]
    # The endpoint's own queries; authentication's (session, user) are counted apart.
    with CaptureQueriesContext(connection) as queries:
        response = client.get("/api/datasets/demo-v1", headers={"If-None-Match": etag})
    assert len(app_queries(queries.captured_queries)) == 1
    assert response.status_code == 304
    assert response.content == b""
    assert response["ETag"] == etag
    with CaptureQueriesContext(connection) as queries:
        full = client.get("/api/datasets/demo-v1", headers={"If-None-Match": '"other"'})
    # the lookup, the dataset, its trace ids
    assert len(app_queries(queries.captured_queries)) == 3
    assert full.status_code == 200
    assert len(full.json()["trace_ids"]) == 3


def test_a_version_built_again_under_the_same_key_has_another_etag(client: Client) -> None:
    dataset_with_traces(count=1)
    etag = client.get("/api/datasets/demo-v1")["ETag"]
    Dataset.objects.filter(key="demo-v1").delete()
    dataset_build(name="demo", version="v1", limit=1)
    response = client.get("/api/datasets/demo-v1", headers={"If-None-Match": etag})
    assert response.status_code == 200
    assert response["ETag"] != etag


def test_an_unknown_or_invalid_dataset_is_not_a_304(client: Client) -> None:
    dataset_with_traces(count=1)
    etag = client.get("/api/datasets/demo-v1")["ETag"]
    missing = client.get("/api/datasets/nope-v1", headers={"If-None-Match": "*"})
    assert missing.status_code == 404
    assert missing.json() == {"detail": "Dataset not found: nope-v1"}
    invalid = client.get("/api/datasets/..", headers={"If-None-Match": etag})
    assert invalid.status_code == 422


def test_the_list_revalidates_with_an_etag_of_its_body(client: Client) -> None:
    dataset_with_traces(count=1)
    response = client.get("/api/datasets")
    assert response.status_code == 200
    assert "no-cache" in response["Cache-Control"]
    etag = response["ETag"]
    again = client.get("/api/datasets", headers={"If-None-Match": etag})
    assert again.status_code == 304
    dataset_build(name="demo", version="v2", limit=1)
    changed = client.get("/api/datasets", headers={"If-None-Match": etag})
    assert changed.status_code == 200
    assert [d["dataset_key"] for d in changed.json()["data"]] == ["demo-v2", "demo-v1"]
