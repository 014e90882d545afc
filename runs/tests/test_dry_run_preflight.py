"""A dry-run runs the trainer's preflight on what the run would get: POST /api/tunix/run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from datasets.models import Dataset
from datasets.selectors import dataset_export_lines
from datasets.services import dataset_build
from datasets.tests.factories import dataset_with_traces
from runs import dataset_records
from runs.tests.test_preflight import write_checkpoint
from runs.trainer import data
from runs.trainer.errors import DatasetError
from runs.trainer.tokenizer import ByteTokenizer
from traces.models import Trace
from traces.tests.factories import TraceFactory

pytestmark = pytest.mark.django_db


def dry_run(client: Client, model_id: str = "tiny-qwen3", **extra: Any) -> dict[str, Any]:
    body = {"dataset_key": "demo-v1", "model_id": model_id, **extra}
    response = client.post("/api/tunix/run", data=body, content_type="application/json")
    assert response.status_code == 200, response.content
    result: dict[str, Any] = response.json()
    assert result["mode"] == "dry-run"
    return result


def test_a_good_dry_run_reports_the_preflight_after_the_original_lines(client: Client) -> None:
    dataset_with_traces(count=5)
    body = dry_run(client, max_seq_length=256, batch_size=2)
    assert (body["status"], body["message"]) == ("completed", "Dry-run validation successful")
    stdout = body["stdout"]
    original, _, preflight = stdout.partition("\nPreflight:\n")
    assert original.startswith("Dry-run validation completed successfully.\n")
    assert "\u2705 Dataset export validated (5 traces sampled)\n" in original
    assert original.endswith("To execute this run, set dry_run=false in the request.\n")
    lines = preflight.splitlines()
    assert lines[0] == "- Model: tiny-qwen3 (tiny, family qwen3)"
    assert lines[1] == "- Parameters: 91,008"
    assert "- Dataset: 5 examples (5 train / 0 eval), 0 truncated, longest " in preflight
    assert "(max_seq_length 256)" in preflight
    assert "available on this machine (MemAvailable)" in preflight


def test_an_over_long_trace_fails_with_the_trainers_reason(client: Client) -> None:
    TraceFactory.create_batch(3)
    TraceFactory.create(prompt="why? " * 100)
    dataset_build(name="demo", version="v1", limit=4)
    records = data.records_from_lines(dataset_export_lines(key="demo-v1", fmt="tunix_sft"))
    with pytest.raises(DatasetError) as caught:
        data.encode_records(records, ByteTokenizer(), 128)
    assert caught.value.reason.startswith("dataset line 1 is over-long: ")  # newest first

    body = dry_run(client, max_seq_length=128)
    assert body["status"] == "failed"
    assert body["stderr"] == caught.value.reason
    assert body["message"] == "Dry-run failed: preflight: dataset line 1 is over-long"
    assert body["exit_code"] is None


def test_a_checkpoint_without_its_tokenizer_fails_naming_it(
    client: Client, tmp_path: Path, settings: Any
) -> None:
    root = tmp_path / "models"
    directory = write_checkpoint(root / "no-tokenizer", tokenizer=False).resolve()
    settings.TUNIX_MODEL_ROOTS = [root.resolve()]
    dataset_with_traces(count=3)
    body = dry_run(client, model_id="no-tokenizer")
    assert body["status"] == "failed"
    assert body["stderr"] == (
        f"checkpoint directory {directory} has no tokenizer "
        "(looked for byte_tokenizer.json, tokenizer.json, tokenizer.model)"
    )
    assert body["message"] == (
        f"Dry-run failed: preflight: checkpoint directory {directory} has no tokenizer"
    )


def test_random_qwen3_32b_does_not_fit_this_machine(client: Client) -> None:
    dataset_with_traces(count=3)
    body = dry_run(client, model_id="random-qwen3-32b")
    assert body["status"] == "failed"
    assert body["message"] == "Dry-run failed: preflight: model does not fit"
    assert body["stderr"].startswith("model does not fit: estimated ")
    assert body["stderr"].endswith(" available on this machine (MemAvailable)")


def test_the_workers_device_memory_setting_is_what_the_estimate_meets(
    client: Client, settings: Any
) -> None:
    settings.TUNIX_DEVICE_MEMORY_BYTES = 1024**3
    dataset_with_traces(count=3)
    body = dry_run(client, model_id="random-qwen3-0.6b")
    assert body["status"] == "failed"
    assert body["stderr"].endswith(
        "> 1.0 GiB available on the workers' devices (TUNIX_DEVICE_MEMORY_BYTES)"
    )
    # Weights at 2 bytes each, as on an accelerator.
    assert "(parameters 1.1 GiB, " in body["stderr"]
    assert dry_run(client, model_id="tiny-qwen3")["status"] == "completed"


def test_an_unknown_model_fails_the_dry_run_as_it_would_fail_the_run(client: Client) -> None:
    dataset_with_traces(count=3)
    body = dry_run(client, model_id="no-such-model")
    assert body["status"] == "failed"
    assert body["stderr"].startswith("unknown model 'no-such-model': use one of tiny-qwen3, ")
    assert body["message"] == "Dry-run failed: preflight: unknown model 'no-such-model'"


# --- The dataset's records, remembered while it is unchanged (runs.dataset_records) -----


def stored_line_reads(queries: CaptureQueriesContext) -> list[str]:
    return [q["sql"] for q in queries.captured_queries if '"sft_line"' in q["sql"]]


def test_dry_runs_of_an_unchanged_dataset_parse_it_once_and_see_a_deleted_trace(
    client: Client, settings: Any
) -> None:
    # A fixed device memory: otherwise the preflight's memory line quotes the
    # machine's available memory, which moves between two dry-runs.
    settings.TUNIX_DEVICE_MEMORY_BYTES = 8 * 1024**3
    dataset = dataset_with_traces(count=5)
    with CaptureQueriesContext(connection) as first_queries:
        first = dry_run(client, max_seq_length=256)
    with CaptureQueriesContext(connection) as second_queries:
        second = dry_run(client, max_seq_length=256)
    assert stored_line_reads(first_queries)
    assert stored_line_reads(second_queries) == []
    assert (
        first["stdout"].partition("\nPreflight:\n")[2]
        == (second["stdout"].partition("\nPreflight:\n")[2])
    )
    assert "- Dataset: 5 examples (5 train / 0 eval)" in second["stdout"]

    # One of its traces deleted: the next dry-run reads the four that are left.
    member = dataset.members.order_by("position").first()
    assert member is not None
    Trace.objects.filter(pk=member.trace_id).delete()
    with CaptureQueriesContext(connection) as third_queries:
        third = dry_run(client, max_seq_length=256)
    assert stored_line_reads(third_queries)
    assert "- Dataset: 4 examples (4 train / 0 eval)" in third["stdout"]


def test_only_a_few_small_datasets_are_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    datasets = [dataset_with_traces(name=f"d{n}", count=2) for n in range(dataset_records.KEPT + 1)]

    def reads(dataset: Dataset) -> int:
        with CaptureQueriesContext(connection) as queries:
            records = dataset_records.dataset_records(dataset, 2)
        assert [record.line for record in records] == [1, 2]
        return len(stored_line_reads(queries))

    for dataset in datasets:
        assert reads(dataset) == 1
    # The first one was let go to keep the last KEPT.
    assert reads(datasets[0]) == 1
    assert reads(datasets[-1]) == 0
    # A dataset longer than MAX_CHARACTERS is read every time.
    monkeypatch.setattr(dataset_records, "MAX_CHARACTERS", 10)
    big = dataset_with_traces(name="big", count=2)
    assert reads(big) == 1
    assert reads(big) == 1
