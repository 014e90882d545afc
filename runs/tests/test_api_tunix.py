"""GET /api/tunix/status, POST /api/tunix/sft/export and /sft/manifest."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml
from django.test import Client

from datasets.tests.factories import dataset_with_traces
from runs.runtime import STATUS_AVAILABLE_MESSAGE, STATUS_UNAVAILABLE_MESSAGE
from traces.tests.factories import TraceFactory

pytestmark = pytest.mark.django_db


def post(client: Client, url: str, body: dict[str, Any]) -> Any:
    return client.post(url, data=body, content_type="application/json")


def ndjson(response: Any) -> list[dict[str, Any]]:
    text = b"".join(response.streaming_content).decode()
    return [json.loads(line) for line in text.splitlines()]


@pytest.mark.usefixtures("tunix_missing")
def test_status_when_the_runtime_is_missing(client: Client) -> None:
    assert client.get("/api/tunix/status").json() == {
        "available": False,
        "version": None,
        "runtime_required": True,
        "message": STATUS_UNAVAILABLE_MESSAGE,
    }


def test_status_when_the_runtime_is_present(client: Client, settings: Any) -> None:
    settings.TUNIX_RUNTIME_MODULE = "json"
    body = client.get("/api/tunix/status").json()
    assert body["available"] is True
    assert body["runtime_required"] is False
    assert body["message"] == STATUS_AVAILABLE_MESSAGE
    assert isinstance(body["version"], str) and body["version"]


def test_status_does_not_import_the_runtime(client: Client, settings: Any) -> None:
    import sys

    settings.TUNIX_RUNTIME_MODULE = "runs.tests.fake_trainer"
    sys.modules.pop("runs.tests.fake_trainer", None)
    assert client.get("/api/tunix/status").json()["available"] is True
    assert "runs.tests.fake_trainer" not in sys.modules


def test_manifest_yaml_is_exactly_the_reference_layout(client: Client) -> None:
    dataset_with_traces(count=1)
    response = post(
        client,
        "/api/tunix/sft/manifest",
        {"dataset_key": "demo-v1", "model_id": "google/gemma-2b-it", "output_dir": "./out"},
    )
    assert response.status_code == 201
    body = response.json()
    assert body["manifest_yaml"] == (
        "version: '1.0'\n"
        "runner: tunix\n"
        "mode: sft\n"
        "model:\n"
        "  model_id: google/gemma-2b-it\n"
        "dataset:\n"
        "  format: tunix_sft\n"
        "  path: ./datasets/demo-v1.jsonl\n"
        "training:\n"
        "  learning_rate: 2.0e-05\n"
        "  num_epochs: 3\n"
        "  batch_size: 8\n"
        "  max_seq_length: 2048\n"
        "output:\n"
        "  output_dir: ./out\n"
    )
    assert body["dataset_key"] == "demo-v1"
    assert body["model_id"] == "google/gemma-2b-it"
    assert body["format"] == "tunix_sft"
    assert body["message"] == (
        "Manifest generated for dataset demo-v1. Save as YAML and execute with Tunix CLI."
    )


def test_manifest_carries_the_hyperparameters(client: Client) -> None:
    dataset_with_traces(count=1)
    body = post(
        client,
        "/api/tunix/sft/manifest",
        {
            "dataset_key": "demo-v1",
            "model_id": "m",
            "output_dir": "o",
            "learning_rate": 0.5,
            "num_epochs": 7,
            "batch_size": 2,
            "max_seq_length": 512,
        },
    ).json()
    parsed = yaml.safe_load(body["manifest_yaml"])
    assert parsed["training"] == {
        "learning_rate": 0.5,
        "num_epochs": 7,
        "batch_size": 2,
        "max_seq_length": 512,
    }


def test_manifest_errors(client: Client) -> None:
    url = "/api/tunix/sft/manifest"
    response = post(client, url, {"dataset_key": "none-v1", "model_id": "m", "output_dir": "o"})
    assert response.status_code == 404
    assert response.json() == {"detail": "Dataset not found: none-v1"}
    response = post(client, url, {"dataset_key": "../x", "model_id": "m", "output_dir": "o"})
    assert response.status_code == 422
    assert "dataset_key" in response.json()["detail"]
    response = post(client, url, {"dataset_key": "d", "model_id": "m"})
    assert response.status_code == 422
    assert "output_dir" in str(response.json()["detail"])
    response = post(
        client, url, {"dataset_key": "d", "model_id": "m", "output_dir": "o", "learning_rate": 2}
    )
    assert response.status_code == 422


def test_export_of_a_dataset_streams_tunix_sft_ndjson(client: Client) -> None:
    dataset_with_traces(count=3)
    response = post(client, "/api/tunix/sft/export", {"dataset_key": "demo-v1"})
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/x-ndjson")
    assert response.streaming
    rows = ndjson(response)
    assert len(rows) == 3
    assert all("<start_of_turn>" in row["prompts"] for row in rows)


def test_export_of_trace_ids_keeps_order_repeats_and_skips_unknown(client: Client) -> None:
    a, b = TraceFactory.create_batch(2)
    unknown = "00000000-0000-0000-0000-000000000000"
    response = post(
        client,
        "/api/tunix/sft/export",
        {"trace_ids": [f" {b.id} ", str(a.id), str(b.id), unknown]},
    )
    assert response.status_code == 200
    assert len(ndjson(response)) == 3


@pytest.mark.parametrize("body", [{}, {"trace_ids": []}, {"dataset_key": None, "trace_ids": None}])
def test_export_needs_a_key_or_ids(client: Client, body: dict[str, Any]) -> None:
    response = post(client, "/api/tunix/sft/export", body)
    assert response.status_code == 400
    assert response.json() == {"detail": "Either dataset_key or trace_ids must be provided"}


def test_export_errors(client: Client) -> None:
    url = "/api/tunix/sft/export"
    response = post(client, url, {"dataset_key": "none-v1"})
    assert response.status_code == 404
    assert response.json() == {"detail": "Manifest not found for dataset: none-v1"}
    response = post(client, url, {"trace_ids": ["not-a-uuid"]})
    assert response.status_code == 400
    assert response.json() == {"detail": "badly formed hexadecimal UUID string"}
    assert post(client, url, {"dataset_key": "a/../b"}).status_code == 422
    assert post(client, url, {"dataset_key": ""}).status_code == 422
    assert post(client, url, {"trace_ids": "abc", "limit": 0}).status_code == 422
