"""The datasets JSON API: build, list, manifest and the streamed export."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from django.http import StreamingHttpResponse
from django.test import Client

from datasets.models import Dataset, DatasetMember
from datasets.tests.factories import dataset_with_traces
from traces.models import Trace
from traces.tests.factories import TraceFactory

pytestmark = pytest.mark.django_db

TRAVERSAL_PATHS = [
    "..",
    "../x",
    "a/../../b",
    "a%2F..%2Fb",
    "..%2F..%2Fetc",
    "a%5Cb",
    "a\\b",
    "%2E%2E",
    "x" * 257,
]


def _build(client: Client, **body: Any) -> Any:
    return client.post("/api/datasets/build", body, content_type="application/json")


def test_build_answers_201_with_a_relative_manifest_path(client: Client, data_dir: Path) -> None:
    TraceFactory.create_batch(3, meta={"source": "exp"})
    TraceFactory.create(meta=None)
    response = _build(
        client, dataset_name="my data", dataset_version="v 1", filters={"source": "exp"}
    )
    assert response.status_code == 201
    body = response.json()
    assert set(body) == {"dataset_key", "build_id", "trace_count", "manifest_path"}
    assert body["dataset_key"] == "my_data-v_1"
    assert body["trace_count"] == 3
    assert body["manifest_path"] == "datasets/my_data-v_1/manifest.json"
    manifest = json.loads((data_dir / body["manifest_path"]).read_text())
    assert manifest["build_id"] == body["build_id"]
    assert manifest["dataset_name"] == "my data"
    assert manifest["filters"] == {"source": "exp"}


def test_build_with_no_matching_traces_is_an_empty_dataset(client: Client) -> None:
    response = _build(client, dataset_name="empty", dataset_version="v1")
    assert response.status_code == 201
    assert response.json()["trace_count"] == 0


def test_random_build_without_a_seed_is_422(client: Client) -> None:
    response = _build(client, dataset_name="r", dataset_version="v1", selection_strategy="random")
    assert response.status_code == 422
    assert response.json() == {
        "detail": "Random selection strategy requires a seed for reproducibility"
    }


def test_random_builds_with_the_same_seed_select_the_same_traces(client: Client) -> None:
    TraceFactory.create_batch(20)
    keys = []
    for version, seed in [("a", 5), ("b", 5), ("c", 6)]:
        response = _build(
            client,
            dataset_name="r",
            dataset_version=version,
            selection_strategy="random",
            seed=seed,
            limit=8,
        )
        assert response.status_code == 201
        keys.append(response.json()["dataset_key"])
    manifests = [client.get(f"/api/datasets/{key}").json()["trace_ids"] for key in keys]
    assert manifests[0] == manifests[1]
    assert manifests[0] != manifests[2]


def test_rebuilding_an_existing_version_is_409_and_changes_nothing(client: Client) -> None:
    TraceFactory.create_batch(2)
    first = _build(client, dataset_name="d", dataset_version="v1")
    TraceFactory.create_batch(2)
    again = _build(client, dataset_name="d", dataset_version="v1", limit=50)
    assert again.status_code == 409
    assert again.json() == {
        "detail": "Dataset d-v1 already exists; versions are immutable, build a new version instead"
    }
    dataset = Dataset.objects.get()
    assert str(dataset.build_id) == first.json()["build_id"]
    assert dataset.trace_count == 2


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"dataset_version": "v1"}, "dataset_name"),
        ({"dataset_name": "", "dataset_version": "v1"}, "dataset_name"),
        ({"dataset_name": "x" * 129, "dataset_version": "v1"}, "dataset_name"),
        ({"dataset_name": "d", "dataset_version": "v" * 65}, "dataset_version"),
        ({"dataset_name": "d", "dataset_version": "v1", "limit": 0}, "limit"),
        ({"dataset_name": "d", "dataset_version": "v1", "limit": 10_001}, "limit"),
        ({"dataset_name": "d", "dataset_version": "v1", "limit": "many"}, "limit"),
        (
            {"dataset_name": "d", "dataset_version": "v1", "selection_strategy": "x"},
            "selection_strategy",
        ),
        ({"dataset_name": "d", "dataset_version": "v1", "filters": [1]}, "filters"),
        ({"dataset_name": "d", "dataset_version": "v1", "seed": "x"}, "seed"),
        ({"dataset_name": "d", "dataset_version": "v1", "seed": 2**64}, "seed"),
        ({"dataset_name": "d", "dataset_version": "v1", "session_id": "s" * 129}, "session_id"),
        (
            {"dataset_name": "d", "dataset_version": "v1", "parent_dataset_id": "p" * 257},
            "parent_dataset_id",
        ),
        (
            {"dataset_name": "d", "dataset_version": "v1", "training_run_id": "t" * 129},
            "training_run_id",
        ),
    ],
)
def test_bad_build_bodies_are_422_naming_the_field(
    client: Client, body: dict[str, Any], field: str
) -> None:
    response = _build(client, **body)
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert isinstance(detail, list)
    assert field in detail[0]["loc"]
    assert not Dataset.objects.exists()


def test_malformed_json_body_is_a_4xx(client: Client) -> None:
    response = client.post("/api/datasets/build", "{not json", content_type="application/json")
    assert response.status_code in (400, 422)
    assert not Dataset.objects.exists()


@pytest.mark.parametrize(
    ("name", "version", "field"),
    [
        ("..", "v1", "dataset_name"),
        ("a\\b", "v1", "dataset_name"),
        ("ok", "../../x", "dataset_version"),
        ("ok", "v1\\..", "dataset_version"),
        ("ok", "v1%2F..", "dataset_version"),
    ],
)
def test_build_with_an_invalid_key_is_422_and_touches_no_files(
    client: Client, data_dir: Path, name: str, version: str, field: str
) -> None:
    TraceFactory.create()
    response = _build(client, dataset_name=name, dataset_version=version)
    assert response.status_code == 422
    assert response.json()["detail"].startswith(f"{field}:")
    assert list(data_dir.iterdir()) == []
    assert not Dataset.objects.exists()


def test_export_streams_ndjson_in_membership_order(client: Client) -> None:
    dataset = dataset_with_traces(count=3, meta={"source": "exp"})
    response = client.get("/api/datasets/demo-v1/export.jsonl?format=tunix_sft")
    assert response.status_code == 200
    assert isinstance(response, StreamingHttpResponse)
    assert response["Content-Type"] == "application/x-ndjson"
    body = response.getvalue().decode()
    lines = body.splitlines()
    ids = [str(i) for i in dataset.members.order_by("position").values_list("trace_id", flat=True)]
    assert [json.loads(line)["id"] for line in lines] == ids
    assert body.endswith("}\n")
    record = json.loads(lines[0])
    assert record["metadata"]["format"] == "tunix_sft"
    assert record["metadata"]["source"] == "exp"
    assert record["prompts"].startswith("<start_of_turn>user\n")


def test_export_defaults_to_the_trace_format(client: Client) -> None:
    dataset_with_traces(count=1)
    response = client.get("/api/datasets/demo-v1/export.jsonl")
    record = json.loads(response.getvalue())
    assert list(record) == ["id", "prompts", "trace_steps", "final_answer", "metadata"]


def test_training_example_exports_are_identical(client: Client) -> None:
    dataset_with_traces(count=3)
    url = "/api/datasets/demo-v1/export.jsonl?format=training_example"
    first = client.get(url).getvalue()
    assert first == client.get(url).getvalue()
    record = json.loads(first.splitlines()[0])
    assert "show your reasoning steps" in record["prompt"]
    assert record["response"].startswith("Reasoning:\n1. ")
    assert "\nAnswer: " in record["response"]
    assert "source_trace_id" in record["metadata"]


def test_export_of_an_empty_dataset_is_an_empty_body(client: Client) -> None:
    _build(client, dataset_name="e", dataset_version="v1")
    response = client.get("/api/datasets/e-v1/export.jsonl")
    assert response.status_code == 200
    assert response.getvalue() == b""


def test_export_skips_traces_deleted_since_the_build(client: Client) -> None:
    dataset = dataset_with_traces(count=3)
    member = dataset.members.get(position=1)
    Trace.objects.filter(id=member.trace_id).delete()
    body = client.get("/api/datasets/demo-v1/export.jsonl").getvalue()
    assert len(body.splitlines()) == 2
    assert str(member.trace_id).encode() not in body
    assert DatasetMember.objects.count() == 3


def test_unknown_format_is_422_before_the_lookup(client: Client) -> None:
    response = client.get("/api/datasets/nope-v1/export.jsonl?format=csv")
    assert response.status_code == 422
    assert "format" in response.json()["detail"]


def test_unknown_dataset_is_404(client: Client, data_dir: Path) -> None:
    response = client.get("/api/datasets/nope-v1/export.jsonl")
    assert response.status_code == 404
    assert response.json() == {"detail": "Dataset not found: nope-v1"}
    assert client.get("/api/datasets/nope-v1").json() == {"detail": "Dataset not found: nope-v1"}
    assert list(data_dir.iterdir()) == []


@pytest.mark.parametrize("key", TRAVERSAL_PATHS)
def test_traversal_keys_are_422_on_export_and_manifest_without_touching_files(
    client: Client, data_dir: Path, key: str
) -> None:
    for url in (f"/api/datasets/{key}/export.jsonl", f"/api/datasets/{key}"):
        response = client.get(url)
        assert response.status_code == 422, url
        assert "dataset_key" in response.json()["detail"]
    assert list(data_dir.iterdir()) == []


def test_manifest_endpoint_renders_the_manifest_from_the_database(client: Client) -> None:
    dataset = dataset_with_traces(count=2, session_id="s", training_run_id="run-1")
    response = client.get("/api/datasets/demo-v1")
    assert response.status_code == 200
    body = response.json()
    assert body["dataset_key"] == "demo-v1"
    assert body["build_id"] == str(dataset.build_id)
    assert body["created_at"].endswith("Z")
    assert body["trace_count"] == 2
    assert len(body["trace_ids"]) == 2
    assert body["stats"]["trace_count"] == 2
    assert body["session_id"] == "s"
    assert body["parent_dataset_id"] is None
    assert body["training_run_id"] == "run-1"
    assert body["dataset_schema_version"] == "1.0"


def test_list_is_paginated_newest_first(client: Client) -> None:
    TraceFactory.create()
    for version in ("v1", "v2", "v3"):
        _build(client, dataset_name="d", dataset_version=version)
    first = client.get("/api/datasets?limit=2").json()
    assert [d["dataset_key"] for d in first["data"]] == ["d-v3", "d-v2"]
    assert first["pagination"] == {"limit": 2, "offset": 0, "next_offset": 2}
    assert set(first["data"][0]) == {
        "dataset_key",
        "build_id",
        "dataset_name",
        "dataset_version",
        "created_at",
        "selection_strategy",
        "seed",
        "trace_count",
        # Additive: who built it (null: built without a user).
        "created_by",
    }
    second = client.get("/api/datasets?limit=2&offset=2").json()
    assert [d["dataset_key"] for d in second["data"]] == ["d-v1"]
    assert second["pagination"]["next_offset"] is None


def test_empty_list(client: Client) -> None:
    assert client.get("/api/datasets").json() == {
        "data": [],
        "pagination": {"limit": 20, "offset": 0, "next_offset": None},
    }


@pytest.mark.parametrize(
    ("query", "detail"),
    [
        ("limit=0", "limit must be between 1 and 100"),
        ("limit=101", "limit must be between 1 and 100"),
        ("offset=-1", "offset must be non-negative"),
    ],
)
def test_list_range_errors_are_422(client: Client, query: str, detail: str) -> None:
    response = client.get(f"/api/datasets?{query}")
    assert response.status_code == 422
    assert response.json() == {"detail": detail}


def test_list_with_a_non_integer_limit_is_422(client: Client) -> None:
    assert client.get("/api/datasets?limit=x").status_code == 422


def test_build_id_is_a_uuid(client: Client) -> None:
    body = _build(client, dataset_name="u", dataset_version="v1").json()
    assert uuid.UUID(body["build_id"])


def test_openapi_documents_the_dataset_endpoints(client: Client) -> None:
    paths = client.get("/api/openapi.json").json()["paths"]
    assert "/api/datasets/build" in paths
    assert "/api/datasets" in paths
    assert any(p.endswith("/export.jsonl") for p in paths)
