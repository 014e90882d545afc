"""POST /api/tunix/run: validation, 501, dry-runs persisted with null exit codes.

See docs/decisions.md#dry-runs-persisted and docs/decisions.md#nullable-fields.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from django.test import Client

from datasets.tests.factories import dataset_with_traces
from runs.models import RunEvent, TunixRun
from runs.runtime import RUNTIME_UNAVAILABLE_MESSAGE

pytestmark = pytest.mark.django_db

URL = "/api/tunix/run"


def post(client: Client, body: dict[str, Any]) -> Any:
    return client.post(URL, data=body, content_type="application/json")


def test_dry_run_success_is_persisted_completed_with_null_exit_code(client: Client) -> None:
    dataset_with_traces(name="demo", version="v1", count=4)
    response = post(client, {"dataset_key": "demo-v1", "model_id": "tiny-qwen3"})
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "completed"
    assert body["mode"] == "dry-run"
    assert body["exit_code"] is None
    assert body["stderr"] == ""
    assert body["message"] == "Dry-run validation successful"
    assert body["metrics"] is None
    assert body["started_at"].endswith("+00:00")
    assert body["completed_at"].endswith("+00:00")
    assert body["duration_seconds"] >= 0
    short = body["run_id"][:8]
    assert body["output_dir"] == f"outputs/tunix_run_{short}"

    run = TunixRun.objects.get(pk=body["run_id"])
    assert (run.status, run.mode, run.exit_code) == ("completed", "dry-run", None)
    assert run.stdout == body["stdout"]
    assert run.message == "Dry-run validation successful"
    assert run.config["model_id"] == "tiny-qwen3"
    assert run.config["dry_run"] is True
    assert run.completed_at is not None and run.duration_seconds is not None
    events = list(RunEvent.objects.filter(run=run).order_by("created_at", "id"))
    assert [(e.from_status, e.to_status) for e in events] == [
        (None, "running"),
        ("running", "completed"),
    ]


def test_dry_run_stdout_is_the_template_with_the_real_trace_count(client: Client) -> None:
    dataset_with_traces(name="demo", version="v1", count=7)
    body = post(
        client,
        {
            "dataset_key": "demo-v1",
            "model_id": "tiny-qwen3",
            "output_dir": "exp/a",
            "learning_rate": 0.001,
        },
    ).json()
    manifest_len = len(body["stdout"].split("Manifest YAML generated (")[1].split(" ")[0])
    assert manifest_len > 0
    stdout = body["stdout"]
    lines = stdout.split("\n")
    assert lines[0] == "Dry-run validation completed successfully."
    assert "Dataset: demo-v1\nModel: tiny-qwen3\nOutput Directory: outputs/exp/a\n" in stdout
    assert "\u2705 Dataset manifest found\n" in stdout
    assert "\u2705 Dataset export validated (7 traces sampled)\n" in stdout
    assert (
        "Training Configuration:\n- Learning Rate: 0.001\n- Epochs: 3\n- Batch Size: 8\n"
        "- Max Sequence Length: 2048\n\nTo execute this run, set dry_run=false in the request.\n"
    ) in stdout
    assert "\nTo execute this run, set dry_run=false in the request.\n\nPreflight:\n" in stdout


def test_dry_run_of_a_missing_dataset_is_a_persisted_failed_run(client: Client) -> None:
    response = post(client, {"dataset_key": "nope-v1", "model_id": "tiny-qwen3"})
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "failed"
    assert body["exit_code"] is None
    assert body["stdout"] == ""
    assert body["stderr"] == "Dataset not found: nope-v1"
    assert body["message"] == "Dry-run failed: dataset not found"
    run = TunixRun.objects.get(pk=body["run_id"])
    assert run.status == "failed" and run.completed_at is not None
    assert run.message == "Dry-run failed: dataset not found"


def test_dry_run_of_an_empty_dataset_fails(client: Client) -> None:
    dataset_with_traces(name="empty", version="v1", count=0)
    body = post(client, {"dataset_key": "empty-v1", "model_id": "tiny-qwen3"}).json()
    assert body["status"] == "failed"
    assert body["stderr"] == "Dataset is empty (no traces found)"
    assert body["message"] == "Dry-run failed: empty dataset"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"model_id": "tiny-qwen3"}, "dataset_key"),
        ({"dataset_key": "", "model_id": "tiny-qwen3"}, "dataset_key"),
        ({"dataset_key": "k" * 257, "model_id": "tiny-qwen3"}, "dataset_key"),
        ({"dataset_key": "d"}, "model_id"),
        ({"dataset_key": "d", "model_id": "tiny-qwen3", "output_dir": ""}, "output_dir"),
        ({"dataset_key": "d", "model_id": "tiny-qwen3", "learning_rate": 2.0}, "learning_rate"),
        ({"dataset_key": "d", "model_id": "tiny-qwen3", "learning_rate": 0}, "learning_rate"),
        ({"dataset_key": "d", "model_id": "tiny-qwen3", "num_epochs": 0}, "num_epochs"),
        ({"dataset_key": "d", "model_id": "tiny-qwen3", "batch_size": 513}, "batch_size"),
        ({"dataset_key": "d", "model_id": "tiny-qwen3", "max_seq_length": 127}, "max_seq_length"),
        ({"dataset_key": "d", "model_id": "tiny-qwen3", "dry_run": "maybe"}, "dry_run"),
    ],
)
def test_invalid_bodies_are_422_naming_the_field_and_create_no_row(
    client: Client, body: dict[str, Any], field: str
) -> None:
    response = post(client, body)
    assert response.status_code == 422
    assert field in str(response.json()["detail"])
    assert TunixRun.objects.count() == 0


def test_malformed_json_is_rejected_without_a_row(client: Client) -> None:
    response = client.post(URL, data="{not json", content_type="application/json")
    assert 400 <= response.status_code < 500
    assert TunixRun.objects.count() == 0


@pytest.mark.parametrize(
    "key",
    ["../../../tmp/evil_ds", "a/b", "k" * 254 + "..", "has space", "..", "x..y"],
)
def test_invalid_dataset_key_is_422_naming_dataset_key_and_leaves_no_row(
    client: Client, key: str
) -> None:
    response = post(client, {"dataset_key": key, "model_id": "tiny-qwen3"})
    assert response.status_code == 422
    assert "dataset_key" in str(response.json()["detail"])
    assert TunixRun.objects.count() == 0


def test_a_256_character_key_ends_as_a_finished_run_not_a_running_one(client: Client) -> None:
    key = "k" * 256
    body = post(client, {"dataset_key": key, "model_id": "tiny-qwen3"}).json()
    assert body["status"] == "failed"
    assert not TunixRun.objects.filter(status="running").exists()


@pytest.mark.parametrize(
    "output_dir", ["../escape", "a/../../b", "/etc/tunix", "/", ".", "a/\x00b"]
)
def test_output_dir_escaping_the_allowed_roots_is_422(client: Client, output_dir: str) -> None:
    dataset_with_traces(count=1)
    response = post(
        client, {"dataset_key": "demo-v1", "model_id": "tiny-qwen3", "output_dir": output_dir}
    )
    assert response.status_code == 422
    assert "output_dir" in str(response.json()["detail"])
    assert TunixRun.objects.count() == 0


def test_absolute_output_dir_under_an_allowed_root_is_stored_as_given(
    client: Client, settings: Any, tmp_path: Any
) -> None:
    root = tmp_path / "checkpoints"
    settings.TUNIX_OUTPUT_ROOTS = [root]
    dataset_with_traces(count=1)
    body = post(
        client, {"dataset_key": "demo-v1", "model_id": "tiny-qwen3", "output_dir": str(root / "r1")}
    ).json()
    assert body["status"] == "completed"
    assert body["output_dir"] == str(root.resolve() / "r1")


def test_absolute_output_dir_inside_the_data_dir_is_stored_relative(
    client: Client, data_dir: Any
) -> None:
    dataset_with_traces(count=1)
    body = post(
        client,
        {
            "dataset_key": "demo-v1",
            "model_id": "tiny-qwen3",
            "output_dir": str(data_dir / "outputs/x"),
        },
    ).json()
    assert body["output_dir"] == "outputs/x"


def test_unknown_fields_are_ignored(client: Client) -> None:
    dataset_with_traces(count=1)
    body = post(
        client,
        {
            "dataset_key": "demo-v1",
            "model_id": "tiny-qwen3",
            "hyperparameters": {"learning_rate": 9},
        },
    ).json()
    assert body["status"] == "completed"
    assert TunixRun.objects.get().config["learning_rate"] == 2e-5


@pytest.mark.usefixtures("tunix_missing")
def test_local_run_without_runtime_is_501_and_creates_no_row(client: Client) -> None:
    dataset_with_traces(count=1)
    response = post(client, {"dataset_key": "demo-v1", "model_id": "tiny-qwen3", "dry_run": False})
    assert response.status_code == 501
    assert response.json() == {"detail": RUNTIME_UNAVAILABLE_MESSAGE}
    assert "Tunix runtime not available" in RUNTIME_UNAVAILABLE_MESSAGE
    assert TunixRun.objects.count() == 0


@pytest.mark.usefixtures("tunix_missing")
def test_dry_run_works_without_runtime(client: Client) -> None:
    dataset_with_traces(count=1)
    assert post(client, {"dataset_key": "demo-v1", "model_id": "tiny-qwen3"}).json()["status"] == (
        "completed"
    )


def test_run_ids_are_fresh_uuids(client: Client) -> None:
    dataset_with_traces(count=1)
    ids = {
        post(client, {"dataset_key": "demo-v1", "model_id": "tiny-qwen3"}).json()["run_id"]
        for _ in "ab"
    }
    assert len(ids) == 2
    assert all(uuid.UUID(i).version == 4 for i in ids)
