"""Evaluations through the API: launch, refusals, execution, items, cancel.

The launches are real (test client, real database, the task row queued); execution
claims the evaluation and runs the fake engine (evaluations/tests/fake_engine.py), a
real subprocess that reads the config and items with the engine's own code and writes
the engine's files, so what the registry makes of them is checked without JAX.
evaluations/tests/test_evaluation_worker.py executes them on real workers.
"""

from __future__ import annotations

import json
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django_tasks_db.models import DBTaskResult

from datasets.selectors import dataset_export_lines
from datasets.tests.factories import dataset_with_traces
from evaluations import execution, services
from evaluations.metrics import METRICS
from evaluations.models import Evaluation, EvaluationItem, EvaluationStatus
from evaluations.schemas import MetricName
from runs.models import RunMode, RunStatus, TunixRun
from runs.outputs import output_dir_absolute
from runs.tests.factories import TunixRunFactory
from runs.trainer.data import held_out_indices
from tunix_registry.tests.openapi_check import assert_fits

pytestmark = pytest.mark.django_db

JSON = "application/json"
FAKE_ENGINE = Path(__file__).with_name("fake_engine.py")


@pytest.fixture
def fake_engine(settings: Any) -> None:
    settings.TUNIX_EVALUATION_COMMAND = [sys.executable, str(FAKE_ENGINE)]
    settings.TUNIX_HEARTBEAT_SECONDS = 0.2
    settings.TUNIX_CANCEL_GRACE_SECONDS = 2.0


def trained_run(export: str = "full", **fields: Any) -> TunixRun:
    """A completed local run whose trainer exported a model (files on disk)."""
    run: TunixRun = TunixRunFactory.create(
        mode=RunMode.LOCAL,
        status=fields.pop("status", RunStatus.COMPLETED),
        exit_code=0,
        dataset_key=fields.pop("dataset_key", "sft-v1"),
        output_dir=f"outputs/trained_{uuid.uuid4().hex[:8]}",
        training={"export_format": export, "checkpoint_steps": [4]},
        **fields,
    )
    model = output_dir_absolute(run.output_dir) / "model"
    model.mkdir(parents=True)
    (model / "config.json").write_text('{"model_type": "qwen3"}')
    return run


def launch(client: Client, run: TunixRun | uuid.UUID, **body: Any) -> Any:
    run_id = run if isinstance(run, uuid.UUID) else run.run_id
    return client.post(
        f"/api/tunix/runs/{run_id}/evaluations", data=body, content_type="application/json"
    )


def execute(evaluation_id: Any) -> str:
    claimed = services.evaluation_claim(evaluation_id=uuid.UUID(str(evaluation_id)), worker_id="t")
    assert claimed is not None
    return execution.evaluation_execute(claimed)


def test_the_metric_names_of_the_request_are_the_registered_metrics() -> None:
    assert set(MetricName.__args__) == set(METRICS)  # type: ignore[attr-defined]


@pytest.mark.usefixtures("fake_engine")
def test_a_held_out_evaluation_scores_the_lines_the_trainer_kept_out(
    client: Client, openapi: dict[str, Any]
) -> None:
    dataset_with_traces(name="sft", version="v1", count=30)
    run = trained_run()
    response = launch(client, run)
    assert response.status_code == 200, response.content
    assert_fits(openapi, "/api/tunix/runs/{run_id}/evaluations", "post", response)
    body = response.json()
    assert body["status"] == "pending"
    assert (body["run_id"], body["dataset_key"], body["held_out"]) == (
        str(run.run_id),
        "sft-v1",
        True,
    )
    assert body["metrics"] == ["answer_correctness@v1", "exact_match@v1"]
    assert body["generation"] == {
        "max_new_tokens": 64,
        "temperature": 0.0,
        "seed": 0,
        "batch_size": 8,
    }
    evaluation = Evaluation.objects.get(pk=body["evaluation_id"])
    # The task is queued with it, on the default queue.
    task = DBTaskResult.objects.get(id=evaluation.task_id)
    assert (task.queue_name, task.args_kwargs["args"]) == ("default", [body["evaluation_id"]])

    assert execute(evaluation.evaluation_id) == "completed"
    detail = client.get(f"/api/tunix/evaluations/{evaluation.evaluation_id}")
    assert detail.status_code == 200
    assert_fits(openapi, "/api/tunix/evaluations/{evaluation_id}", "get", detail)
    done = detail.json()
    held = held_out_indices(30)
    assert (done["items_total"], done["items_done"]) == (len(held), len(held)) == (3, 3)
    assert done["scores"]["exact_match@v1"]["count"] == 3
    # The fake engine answers every even item right: items 0 and 2 of 3.
    assert done["scores"]["answer_correctness@v1"]["mean"] == pytest.approx(2 / 3)
    assert 0 <= done["scores"]["answer_correctness@v1"]["ci_low"] < 2 / 3
    assert done["items_per_second"] == 250.0
    assert done["exit_code"] == 0 and done["message"] == "Evaluation completed"
    assert "immutable" in detail["Cache-Control"]
    again = client.get(
        f"/api/tunix/evaluations/{evaluation.evaluation_id}", HTTP_IF_NONE_MATCH=detail["ETag"]
    )
    assert again.status_code == 304

    # The items are the held-out lines of the dataset, in its order.
    exported = (
        execution.evaluation_directory(evaluation.evaluation_id) / execution.DATASET_FILE
    ).read_text()
    every = [json.loads(line) for line in dataset_export_lines(key="sft-v1", fmt="tunix_sft")]
    assert [json.loads(line) for line in exported.splitlines()] == [every[i] for i in held]
    items = client.get(f"/api/tunix/evaluations/{evaluation.evaluation_id}/items?limit=2")
    assert_fits(openapi, "/api/tunix/evaluations/{evaluation_id}/items", "get", items)
    first = items.json()
    assert [item["index"] for item in first["data"]] == [0, 1]
    assert first["data"][1]["prediction"] == "no idea"
    assert first["data"][1]["scores"] == {"answer_correctness@v1": 0.0, "exact_match@v1": 0.0}
    cursor = first["pagination"]["next_cursor"]
    rest = client.get(
        f"/api/tunix/evaluations/{evaluation.evaluation_id}/items?limit=2&cursor={cursor}"
    ).json()
    assert [item["index"] for item in rest["data"]] == [2]
    assert rest["pagination"]["next_cursor"] is None


@pytest.mark.usefixtures("fake_engine")
def test_a_baseline_evaluates_the_base_model_on_a_named_dataset(client: Client) -> None:
    dataset_with_traces(name="sft", version="v1", count=4)
    dataset_with_traces(name="probe", version="v2", count=5)
    run = trained_run()
    body = launch(
        client,
        run,
        dataset="probe-v2",
        baseline=True,
        metrics=["exact_match@v1"],
        generation={"max_new_tokens": 8, "batch_size": 2},
    ).json()
    assert (body["baseline"], body["dataset_key"], body["held_out"]) == (True, "probe-v2", False)
    assert execute(body["evaluation_id"]) == "completed"
    evaluation = Evaluation.objects.get(pk=body["evaluation_id"])
    config = (execution.evaluation_directory(evaluation.evaluation_id) / "eval.yaml").read_text()
    assert "model_id: tiny-qwen3" in config
    assert "max_new_tokens: 8" in config
    assert evaluation.items_total == 5
    assert list(evaluation.scores or {}) == ["exact_match@v1"]
    assert EvaluationItem.objects.filter(evaluation=evaluation).count() == 5
    # The trained model itself is what a plain evaluation loads.
    plain = launch(client, run, dataset="probe-v2").json()
    assert execute(plain["evaluation_id"]) == "completed"
    config = (execution.evaluation_directory(plain["evaluation_id"]) / "eval.yaml").read_text()
    assert str(output_dir_absolute(run.output_dir) / "model") in config
    listed = client.get(f"/api/tunix/runs/{run.run_id}/evaluations").json()
    assert [e["evaluation_id"] for e in listed["data"]] == [
        plain["evaluation_id"],
        body["evaluation_id"],
    ]
    assert client.get("/api/tunix/evaluations?limit=1").json()["pagination"]["next_cursor"]


def test_refusals_name_the_problem_and_create_nothing(client: Client) -> None:
    dataset_with_traces(name="sft", version="v1", count=4)
    missing = uuid.uuid4()
    dry = TunixRunFactory.create()
    failed = trained_run(status=RunStatus.FAILED)
    adapter = trained_run(export="adapter")
    small = trained_run()
    cases: list[tuple[TunixRun | uuid.UUID, dict[str, Any], int, Any]] = [
        (missing, {}, 404, f"Run not found: {missing}"),
        (dry.run_id, {}, 409, f"Run {dry.run_id} is a dry-run: it trained no model to evaluate"),
        (failed, {"dataset": "sft-v1"}, 409, "is failed: only a completed run"),
        (adapter, {"dataset": "sft-v1"}, 409, "exported only a LoRA adapter"),
        (small, {}, 422, "has 4 traces: a trainer holds none out below 20"),
        (small, {"dataset": "nope-v9"}, 422, "Dataset not found: nope-v9"),
        (small, {"dataset": "../etc"}, 422, "dataset"),
        (small, {"metrics": ["bleu@v1"]}, 422, "metrics"),
        (small, {"metrics": []}, 422, "metrics"),
        (small, {"metrics": ["exact_match@v1", "exact_match@v1"]}, 422, "twice"),
        (small, {"generation": {"max_new_tokens": 0}}, 422, "max_new_tokens"),
        (small, {"generation": {"temperature": -1}}, 422, "temperature"),
        (small, {"generation": {"batch_size": "8"}}, 422, "batch_size"),
        (small, {"queue": "nowhere"}, 422, "Unknown queue"),
        (small, {"queue": "default\u0000"}, 422, '"queue"'),
    ]
    for run, body, status, expected in cases:
        response = launch(client, run, **body)
        assert response.status_code == status, (body, response.content)
        assert expected in json.dumps(response.json()["detail"]), (body, response.json())
    assert not Evaluation.objects.exists()
    bad = client.post(
        f"/api/tunix/runs/{small.run_id}/evaluations",
        data="{not json",
        content_type="application/json",
    )
    assert bad.status_code == 400
    assert client.get("/api/tunix/evaluations?cursor=nonsense").status_code == 422
    assert client.get(f"/api/tunix/evaluations/{missing}").status_code == 404
    assert client.get(f"/api/tunix/evaluations/{missing}/items").status_code == 404
    assert client.get("/api/tunix/evaluations/not-a-uuid").status_code == 422


@pytest.mark.usefixtures("fake_engine")
def test_an_engine_failure_is_a_failed_evaluation_with_its_reason(client: Client) -> None:
    dataset_with_traces(name="sft", version="v1", count=2)
    body = launch(client, trained_run(), dataset="sft-v1", generation={"seed": 3}).json()
    assert execute(body["evaluation_id"]) == "failed"
    evaluation = Evaluation.objects.get(pk=body["evaluation_id"])
    assert evaluation.exit_code == 3
    assert evaluation.message == "Evaluation failed with exit code 3"
    assert "error: dataset line 1 is not valid tunix_sft" in evaluation.stderr
    assert evaluation.scores is None
    assert not evaluation.items.exists()


def test_a_pending_evaluation_is_cancelled_at_once_and_never_executed(client: Client) -> None:
    dataset_with_traces(name="sft", version="v1", count=2)
    body = launch(client, trained_run(), dataset="sft-v1").json()
    response = client.post(
        f"/api/tunix/evaluations/{body['evaluation_id']}/cancel", content_type=JSON
    )
    assert response.json() == {
        "message": "Evaluation cancellation requested",
        "status": "cancelled",
    }
    evaluation = Evaluation.objects.get(pk=body["evaluation_id"])
    assert evaluation.status == EvaluationStatus.CANCELLED
    assert evaluation.stderr == services.CANCELLED_BEFORE_START
    assert DBTaskResult.objects.get(id=evaluation.task_id).status == "FAILED"
    assert services.evaluation_claim(evaluation_id=evaluation.evaluation_id, worker_id="w") is None
    again = client.post(f"/api/tunix/evaluations/{body['evaluation_id']}/cancel", content_type=JSON)
    assert again.status_code == 400
    assert "terminal state: cancelled" in again.json()["detail"]
    assert (
        client.post(f"/api/tunix/evaluations/{uuid.uuid4()}/cancel", content_type=JSON).status_code
        == 404
    )


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("fake_engine")
def test_cancelling_an_executing_evaluation_stops_its_engine(client: Client) -> None:
    dataset_with_traces(name="sft", version="v1", count=40)
    body = launch(client, trained_run(), dataset="sft-v1", generation={"seed": 7}).json()
    evaluation_id = uuid.UUID(body["evaluation_id"])
    claimed = services.evaluation_claim(evaluation_id=evaluation_id, worker_id="t")
    assert claimed is not None
    result: dict[str, str] = {}

    def work() -> None:
        try:
            result["status"] = execution.evaluation_execute(claimed)
        finally:
            connection.close()

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while Evaluation.objects.get(pk=evaluation_id).items_done < 2:
        assert time.monotonic() < deadline, "no progress recorded"
        time.sleep(0.1)
    progress = client.get(f"/api/tunix/evaluations/{evaluation_id}").json()
    assert progress["status"] == "running" and progress["items_total"] == 40
    assert 2 <= progress["items_done"] < 40
    assert "no-cache" in client.get(f"/api/tunix/evaluations/{evaluation_id}")["Cache-Control"]
    cancel = client.post(f"/api/tunix/evaluations/{evaluation_id}/cancel", content_type=JSON)
    assert cancel.json()["status"] == "cancel_requested"
    thread.join(30)
    assert not thread.is_alive()
    assert result["status"] == "cancelled"
    evaluation = Evaluation.objects.get(pk=evaluation_id)
    assert evaluation.message == "Evaluation cancelled"
    assert evaluation.stderr.endswith("Evaluation cancelled on request (the engine was stopped)")
    assert evaluation.scores is None and not evaluation.items.exists()


def test_list_limits_are_checked(client: Client) -> None:
    for url in ("/api/tunix/evaluations", f"/api/tunix/runs/{uuid.uuid4()}/evaluations"):
        for limit in ("0", "101", "9456692424113264"):
            response = client.get(url, {"limit": limit})
            assert response.status_code == 422, (url, limit)
            assert "limit must be between 1 and 100" in response.json()["detail"]
    run = trained_run()
    evaluation = Evaluation.objects.create(
        evaluation_id=uuid.uuid4(),
        run=run,
        dataset_key="sft-v1",
        metrics=["exact_match@v1"],
        generation={},
        status="pending",
        queue="default",
        created_at=run.created_at,
    )
    items = client.get(f"/api/tunix/evaluations/{evaluation.evaluation_id}/items?limit=101")
    assert items.status_code == 422


def test_the_openapi_document_names_each_shape_once(openapi: dict[str, Any]) -> None:
    # The trace score's shape and the evaluation score's have their own names.
    schemas = openapi["components"]["schemas"]
    assert "mean" in schemas["EvaluationScoreOut"]["properties"]
    assert "mean" not in schemas["ScoreOut"]["properties"]
    metrics = schemas["EvaluationRequest"]["properties"]["metrics"]
    assert metrics["uniqueItems"] is True


def test_an_evaluation_whose_worker_stopped_beating_is_failed_by_the_reaper(
    settings: Any,
) -> None:
    from datetime import timedelta
    from io import StringIO

    from django.core.management import call_command
    from django.utils import timezone

    settings.TUNIX_RUN_LEASE_SECONDS = 60
    run = trained_run()
    now = timezone.now()

    def executing(beat_seconds_ago: int) -> Evaluation:
        return Evaluation.objects.create(
            evaluation_id=uuid.uuid4(),
            run=run,
            dataset_key="sft-v1",
            metrics=["exact_match@v1"],
            generation={},
            status="running",
            queue="default",
            worker_id="w9",
            host="gone-host",
            created_at=now,
            heartbeat_at=now - timedelta(seconds=beat_seconds_ago),
        )

    lost, alive = executing(120), executing(5)
    out = StringIO()
    call_command("reap_runs", stdout=out)
    assert f"reaped evaluation {lost.evaluation_id}" in out.getvalue()
    lost.refresh_from_db()
    assert lost.status == "failed" and lost.completed_at is not None
    assert (
        lost.message == "Evaluation failed: lost its worker w9 on gone-host (no heartbeat for 60 s)"
    )
    alive.refresh_from_db()
    assert alive.status == "running"
    assert services.evaluation_reap() == []
