"""The API of queued runs: async launch, status, cancel, live logs, artifacts, /metrics.

Every endpoint through the test client on the real database, its bodies checked
against the OpenAPI document the server publishes.
"""

from __future__ import annotations

import json
import socket
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from runs.models import RunEvent, RunLogChunk, RunStatus, TunixRun, TunixWorker
from runs.processes import host_name
from runs.tests.factories import TunixRunFactory
from tunix_registry.tests.openapi_check import assert_fits, schema_errors

pytestmark = pytest.mark.django_db

BODY = {"dataset_key": "demo-v1", "model_id": "tiny-qwen3"}


def launch(client: Client, body: dict[str, Any], mode: str | None = "async") -> Any:
    url = "/api/tunix/run" + (f"?mode={mode}" if mode else "")
    return client.post(url, data=body, content_type="application/json")


# --- Launch -----------------------------------------------------------------------------


def test_async_launch_answers_a_pending_run_with_its_task(
    client: Client, openapi: dict[str, Any], tunix_missing: None
) -> None:
    response = launch(client, {**BODY, "dry_run": False})
    assert response.status_code == 200
    assert_fits(openapi, "/api/tunix/run", "post", response)
    body = response.json()
    assert body["status"] == "pending"
    assert body["message"] == "Local execution pending"
    assert body["mode"] == "local"
    assert body["queue"] == "default"
    assert body["completed_at"] is None and body["exit_code"] is None
    run = TunixRun.objects.get(pk=body["run_id"])
    assert run.status == "pending" and run.task_id
    assert [(e.from_status, e.to_status) for e in RunEvent.objects.filter(run=run)] == [
        (None, "pending")
    ]


def test_async_dry_run_is_pending_too(client: Client) -> None:
    body = launch(client, BODY).json()
    assert (body["status"], body["message"]) == ("pending", "Dry-run execution pending")


def test_without_async_mode_the_launch_stays_synchronous(
    client: Client, tunix_missing: None
) -> None:
    for mode in (None, "sync", "ASYNC"):
        assert launch(client, {**BODY, "dry_run": False}, mode=mode).status_code == 501
    assert TunixRun.objects.count() == 0
    finished = launch(client, BODY, mode="whatever").json()
    assert finished["status"] == "failed"  # no such dataset: a finished dry-run
    assert finished["queue"] == ""


def two_queues(settings: Any) -> None:
    settings.TUNIX_QUEUES = ["default", "gpu"]
    settings.TASKS = {"default": {**settings.TASKS["default"], "QUEUES": ["default", "gpu"]}}


def test_a_named_queue_is_used_and_an_unknown_one_is_422_naming_it(
    client: Client, settings: Any
) -> None:
    two_queues(settings)
    assert launch(client, {**BODY, "queue": "gpu"}).json()["queue"] == "gpu"
    for mode in ("async", None):
        refused = launch(client, {**BODY, "queue": "tpu"}, mode=mode)
        assert refused.status_code == 422
        [error] = refused.json()["detail"]
        assert error["loc"] == ["body", "queue"]
        assert "Unknown queue 'tpu'" in error["msg"]
    nul = launch(client, {**BODY, "queue": "gp\x00u"})
    assert nul.status_code == 422
    assert nul.json()["detail"][0]["loc"] == ["body", "queue"]
    assert TunixRun.objects.count() == 1


def test_openapi_lists_the_configured_queues(openapi: dict[str, Any]) -> None:
    queue = openapi["components"]["schemas"]["TunixRunRequest"]["properties"]["queue"]
    assert {"enum": ["default"]}.items() <= queue["anyOf"][0].items()


@pytest.mark.parametrize("mode", ["async", None])
def test_a_refused_output_dir_is_a_422_naming_the_field(client: Client, mode: str | None) -> None:
    response = launch(client, {**BODY, "output_dir": "../../x"}, mode=mode)
    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["loc"] == ["body", "output_dir"]
    assert error["msg"] == "output_dir must stay inside the outputs directory"
    assert TunixRun.objects.count() == 0


# --- Status -----------------------------------------------------------------------------


def test_status_of_a_pending_and_a_finished_run(client: Client, openapi: dict[str, Any]) -> None:
    pending = launch(client, BODY).json()
    url = f"/api/tunix/runs/{pending['run_id']}/status"
    response = client.get(url)
    assert response.status_code == 200
    assert_fits(openapi, "/api/tunix/runs/{run_id}/status", "get", response)
    body = response.json()
    run = TunixRun.objects.get(pk=pending["run_id"])
    assert body["status"] == "pending"
    assert body["queued_at"] == run.created_at.isoformat()
    assert body["started_at"] is None and body["completed_at"] is None
    done = TunixRunFactory.create(exit_code=0)
    body = client.get(f"/api/tunix/runs/{done.run_id}/status").json()
    assert body["status"] == "completed" and body["exit_code"] == 0
    assert body["started_at"] is not None and body["completed_at"] is not None


def test_status_404_and_422(client: Client, openapi: dict[str, Any]) -> None:
    missing = uuid.uuid4()
    response = client.get(f"/api/tunix/runs/{missing}/status")
    assert response.status_code == 404
    assert response.json() == {"detail": f"Tunix run not found: {missing}"}
    assert_fits(openapi, "/api/tunix/runs/{run_id}/status", "get", response)
    assert client.get("/api/tunix/runs/not-a-uuid/status").status_code == 422


# --- Cancel -----------------------------------------------------------------------------


def test_cancel_a_pending_run_ends_it_at_once(client: Client, openapi: dict[str, Any]) -> None:
    run_id = launch(client, BODY).json()["run_id"]
    response = client.post(f"/api/tunix/runs/{run_id}/cancel", content_type="application/json")
    assert response.status_code == 200
    assert_fits(openapi, "/api/tunix/runs/{run_id}/cancel", "post", response)
    assert response.json() == {"message": "Run cancellation requested", "status": "cancelled"}
    run = TunixRun.objects.get(pk=run_id)
    assert run.status == "cancelled" and run.completed_at is not None
    assert run.message == "Dry-run execution cancelled"
    events = [(e.from_status, e.to_status) for e in RunEvent.objects.filter(run=run)]
    assert events == [(None, "pending"), ("pending", "cancelled")]
    again = client.post(f"/api/tunix/runs/{run_id}/cancel", content_type="application/json")
    assert again.status_code == 400
    assert again.json() == {"detail": "Run is already in terminal state: cancelled"}
    assert_fits(openapi, "/api/tunix/runs/{run_id}/cancel", "post", again)


def test_cancel_a_running_run_requests_it(client: Client) -> None:
    run = TunixRunFactory.create(status=RunStatus.RUNNING, mode="local")
    response = client.post(f"/api/tunix/runs/{run.run_id}/cancel", content_type="application/json")
    assert response.json() == {
        "message": "Run cancellation requested",
        "status": "cancel_requested",
    }
    run.refresh_from_db()
    assert run.status == "cancel_requested"
    assert RunEvent.objects.filter(
        run=run, from_status="running", to_status="cancel_requested"
    ).exists()
    # Asking again while the supervisor stops it changes nothing.
    assert (
        client.post(
            f"/api/tunix/runs/{run.run_id}/cancel", content_type="application/json"
        ).status_code
        == 200
    )
    assert RunEvent.objects.filter(run=run).count() == 1


def test_cancel_errors(client: Client) -> None:
    missing = uuid.uuid4()
    response = client.post(f"/api/tunix/runs/{missing}/cancel", content_type="application/json")
    assert response.status_code == 404
    assert response.json() == {"detail": f"Tunix run not found: {missing}"}
    done = TunixRunFactory.create(status=RunStatus.FAILED)
    refused = client.post(f"/api/tunix/runs/{done.run_id}/cancel", content_type="application/json")
    assert refused.status_code == 400
    assert refused.json() == {"detail": "Run is already in terminal state: failed"}
    assert (
        client.post("/api/tunix/runs/nope/cancel", content_type="application/json").status_code
        == 422
    )


# --- Logs -------------------------------------------------------------------------------


def add_chunks(run: TunixRun, *texts: str, start: int = 1) -> None:
    RunLogChunk.objects.bulk_create(
        RunLogChunk(run=run, seq=start + i, stream="stdout", chunk=text)
        for i, text in enumerate(texts)
    )


def parse_sse(raw: bytes) -> list[dict[str, Any]]:
    """The events of a stream as a client reads them: event, data (parsed), id, retry."""
    events = []
    for block in raw.decode().split("\n\n"):
        if not block.strip():
            continue
        event: dict[str, Any] = {}
        for line in block.split("\n"):
            field, _, value = line.partition(": ")
            event[field] = json.loads(value) if field == "data" else value
        events.append(event)
    return events


def stream(client: Client, run: TunixRun, query: str = "", **headers: str) -> list[dict[str, Any]]:
    response = client.get(f"/api/tunix/runs/{run.run_id}/logs{query}", headers=headers)
    assert response.status_code == 200
    assert response["Content-Type"] == "text/event-stream"
    assert response["Cache-Control"] == "no-cache"
    return parse_sse(response.getvalue())


def test_sse_of_a_finished_run_sends_its_chunks_then_its_status_and_closes(
    client: Client, openapi: dict[str, Any]
) -> None:
    run = TunixRunFactory.create(status=RunStatus.COMPLETED, mode="local")
    add_chunks(run, "step 1\n", "step 2\n", "done\n")
    events = stream(client, run)
    assert events[0] == {"retry": "1000"}
    logs = [e for e in events if e.get("event") == "log"]
    assert [e["id"] for e in logs] == ["1", "2", "3"]
    assert [e["data"]["chunk"] for e in logs] == ["step 1\n", "step 2\n", "done\n"]
    assert logs[0]["data"]["stream"] == "stdout"
    assert logs[0]["data"]["created_at"].endswith("+00:00")
    assert events[-1] == {"event": "status", "data": {"status": "completed"}}
    # Every event fits the event schema the document declares.
    declared = openapi["paths"]["/api/tunix/runs/{run_id}/logs"]["get"]["responses"]["200"]
    options = declared["content"]["text/event-stream"]["schema"]["oneOf"]
    components = openapi["components"]["schemas"]
    for event in events[1:]:
        [option] = [o for o in options if o["properties"]["event"]["const"] == event["event"]]
        content = option["properties"]["data"]["contentSchema"]
        assert schema_errors(event["data"], content, components, "data") == []


def test_sse_resumes_after_since_seq_or_last_event_id(client: Client) -> None:
    run = TunixRunFactory.create(status=RunStatus.FAILED, mode="local")
    add_chunks(run, "a", "b", "c", "d")
    after_two = [e["id"] for e in stream(client, run, "?since_seq=2") if e.get("event") == "log"]
    assert after_two == ["3", "4"]
    resumed = stream(client, run, **{"Last-Event-ID": "3"})
    assert [e["id"] for e in resumed if e.get("event") == "log"] == ["4"]
    assert resumed[-1]["data"] == {"status": "failed"}
    # since_seq wins over the header; a header that is not a seq is ignored.
    both = stream(client, run, "?since_seq=1", **{"Last-Event-ID": "3"})
    assert [e["id"] for e in both if e.get("event") == "log"] == ["2", "3", "4"]
    junk = stream(client, run, **{"Last-Event-ID": "x"})
    assert len([e for e in junk if e.get("event") == "log"]) == 4


def test_sse_of_an_executing_run_beats_and_closes_after_the_bounded_time(
    client: Client, settings: Any
) -> None:
    settings.TUNIX_LOG_STREAM_SECONDS = 0.3
    run = TunixRunFactory.create(status=RunStatus.RUNNING, mode="local")
    add_chunks(run, "step 1\n", "step 2\n")
    events = stream(client, run)
    kinds = [e.get("event") for e in events[1:]]
    assert kinds[:2] == ["log", "log"]
    assert set(kinds[2:]) == {"heartbeat"}
    assert events[-1]["data"] == {"seq": 2}
    assert "status" not in kinds  # not terminal: the client reconnects
    # The run ends; the reconnecting client gets the rest and the status.
    add_chunks(run, "done\n", start=3)
    TunixRun.objects.filter(pk=run.pk).update(status=RunStatus.COMPLETED)
    rest = stream(client, run, **{"Last-Event-ID": str(events[-1]["data"]["seq"])})
    assert [e.get("event") for e in rest[1:]] == ["log", "status"]
    assert rest[1]["id"] == "3"
    assert rest[-1]["data"] == {"status": "completed"}


def test_sse_sends_more_than_one_page_of_chunks(client: Client) -> None:
    run = TunixRunFactory.create(status=RunStatus.COMPLETED, mode="local")
    add_chunks(run, *[f"line {i}\n" for i in range(1, 1201)])
    logs = [e for e in stream(client, run) if e.get("event") == "log"]
    assert [int(e["id"]) for e in logs] == list(range(1, 1201))


def test_logs_as_json_for_polling_clients(client: Client, openapi: dict[str, Any]) -> None:
    run = TunixRunFactory.create(status=RunStatus.RUNNING, mode="local")
    add_chunks(run, "a", "b", "c")
    url = f"/api/tunix/runs/{run.run_id}/logs"
    response = client.get(url, {"since_seq": 1}, headers={"Accept": "application/json"})
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/json")
    assert_fits(openapi, "/api/tunix/runs/{run_id}/logs", "get", response)
    body = response.json()
    assert body["status"] == "running" and body["run_id"] == str(run.run_id)
    assert [c["seq"] for c in body["chunks"]] == [2, 3]
    assert body["next_seq"] == 3
    empty = client.get(url, {"since_seq": 3}, headers={"Accept": "application/json"}).json()
    assert (empty["chunks"], empty["next_seq"]) == ([], 3)


def test_logs_errors(client: Client, openapi: dict[str, Any]) -> None:
    missing = uuid.uuid4()
    for accept in ("text/event-stream", "application/json"):
        response = client.get(f"/api/tunix/runs/{missing}/logs", headers={"Accept": accept})
        assert response.status_code == 404
        assert response.json() == {"detail": f"Tunix run not found: {missing}"}
    assert_fits(openapi, "/api/tunix/runs/{run_id}/logs", "get", response)
    run = TunixRunFactory.create()
    for bad in ("-1", "x", str(2**31)):
        response = client.get(f"/api/tunix/runs/{run.run_id}/logs", {"since_seq": bad})
        assert response.status_code == 422
        assert response.json()["detail"][0]["loc"] == ["query", "since_seq"]
    assert client.get("/api/tunix/runs/nope/logs").status_code == 422


# --- Artifacts --------------------------------------------------------------------------


def finished_local_run(data_dir: Path, **fields: Any) -> tuple[TunixRun, Path]:
    out = data_dir / "outputs" / "exp"
    out.mkdir(parents=True)
    (out / "model.safetensors").write_bytes(b"weights")
    (out / "config.json").write_text("{}")
    fields.setdefault("host", host_name())
    run = TunixRunFactory.create(mode="local", exit_code=0, output_dir="outputs/exp", **fields)
    return run, out


def test_artifacts_are_listed_from_the_record(
    client: Client, openapi: dict[str, Any], data_dir: Path
) -> None:
    recorded = [
        {"name": "config.json", "size": 2, "sha256": "44136fa3"},
        {"name": "model.safetensors", "size": 7, "sha256": "abc"},
    ]
    run, _ = finished_local_run(data_dir, artifacts=recorded, host="gpu-box-1")
    response = client.get(f"/api/tunix/runs/{run.run_id}/artifacts")
    assert response.status_code == 200
    assert_fits(openapi, "/api/tunix/runs/{run_id}/artifacts", "get", response)
    assert response.json() == {
        "artifacts": [{**a, "path": a["name"]} for a in recorded],
        "host": "gpu-box-1",
    }


def test_artifacts_of_an_executing_run_are_listed_from_the_directory(
    client: Client, data_dir: Path
) -> None:
    run, out = finished_local_run(data_dir, status=RunStatus.RUNNING)
    (out / "checkpoints").mkdir()
    body = client.get(f"/api/tunix/runs/{run.run_id}/artifacts").json()
    assert body["artifacts"] == [
        {"name": "config.json", "size": 2, "path": "config.json", "sha256": None},
        {"name": "model.safetensors", "size": 7, "path": "model.safetensors", "sha256": None},
    ]
    dry = TunixRunFactory.create(supervisor_host="")
    assert client.get(f"/api/tunix/runs/{dry.run_id}/artifacts").json() == {
        "artifacts": [],
        "host": None,
    }
    missing = client.get(f"/api/tunix/runs/{uuid.uuid4()}/artifacts")
    assert (missing.status_code, missing.json()) == (404, {"detail": "Run not found"})


def test_artifact_download_streams_the_file(client: Client, data_dir: Path) -> None:
    run, _ = finished_local_run(
        data_dir, artifacts=[{"name": "model.safetensors", "size": 7, "sha256": None}]
    )
    response = client.get(f"/api/tunix/runs/{run.run_id}/artifacts/model.safetensors/download")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/octet-stream"
    assert 'filename="model.safetensors"' in response["Content-Disposition"]
    assert response.getvalue() == b"weights"


@pytest.mark.parametrize(
    "name", ["..", ".", "a%2Fb", "..%2F..%2Fetc%2Fpasswd", "%2Fetc%2Fpasswd", "x%00y", "a\\b"]
)
def test_artifact_names_escaping_the_directory_are_403(
    client: Client, data_dir: Path, name: str
) -> None:
    run, _ = finished_local_run(data_dir)
    response = client.get(f"/api/tunix/runs/{run.run_id}/artifacts/{name}/download")
    assert response.status_code == 403
    assert response.json() == {"detail": "Invalid artifact path"}


def test_artifact_download_404s(client: Client, data_dir: Path) -> None:
    run, out = finished_local_run(
        data_dir, artifacts=[{"name": "config.json", "size": 2, "sha256": None}]
    )
    base = f"/api/tunix/runs/{run.run_id}/artifacts"
    # Not in the recorded list (even though the file is there now).
    unlisted = client.get(f"{base}/model.safetensors/download")
    assert (unlisted.status_code, unlisted.json()) == (404, {"detail": "Artifact not found"})
    (out / "config.json").unlink()
    gone = client.get(f"{base}/config.json/download")
    assert (gone.status_code, gone.json()) == (404, {"detail": "Artifact not found"})
    missing = client.get(f"/api/tunix/runs/{uuid.uuid4()}/artifacts/config.json/download")
    assert (missing.status_code, missing.json()) == (404, {"detail": "Run not found"})


def test_artifact_held_by_another_host_is_a_404_naming_it(client: Client, data_dir: Path) -> None:
    run = TunixRunFactory.create(
        mode="local",
        output_dir="outputs/elsewhere",
        host="gpu-box-7",
        supervisor_host="gpu-box-7",
        artifacts=[{"name": "model.safetensors", "size": 7, "sha256": "abc"}],
    )
    response = client.get(f"/api/tunix/runs/{run.run_id}/artifacts/model.safetensors/download")
    assert response.status_code == 404
    assert response.json() == {"detail": "Artifact not on this server: held by host gpu-box-7"}


# --- /metrics ---------------------------------------------------------------------------


def scrape(client: Client) -> dict[str, float]:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    samples = {}
    for line in response.content.decode().splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def test_metrics_are_the_database_counts(client: Client, settings: Any) -> None:
    settings.TUNIX_QUEUES = ["default", "gpu"]
    TunixRunFactory.create_batch(3, status=RunStatus.COMPLETED, duration_seconds=0.2)
    TunixRunFactory.create(status=RunStatus.FAILED, mode="local", duration_seconds=4000.0)
    TunixRunFactory.create(status=RunStatus.PENDING, queue="gpu", mode="local")
    TunixRunFactory.create(status=RunStatus.RUNNING, mode="local")
    now = timezone.now()
    TunixWorker.objects.create(worker_id="w1", host=socket.gethostname(), pid=1, heartbeat_at=now)
    TunixWorker.objects.create(worker_id="w2", host="b", pid=2, heartbeat_at=now, stopped_at=now)
    m = scrape(client)
    assert m['tunix_runs_total{status="completed",mode="dry-run"}'] == 3
    assert m['tunix_runs_total{status="failed",mode="local"}'] == 1
    assert m['tunix_runs_total{status="cancelled",mode="local"}'] == 0
    assert m['tunix_runs_in_progress{status="pending",mode="local"}'] == 1
    assert m['tunix_runs_in_progress{status="running",mode="local"}'] == 1
    dry = 'mode="dry-run",status="completed"'
    assert m[f'tunix_runs_duration_seconds_bucket{{{dry},le="0.1"}}'] == 0
    assert m[f'tunix_runs_duration_seconds_bucket{{{dry},le="0.5"}}'] == 3
    assert m[f'tunix_runs_duration_seconds_bucket{{{dry},le="+Inf"}}'] == 3
    assert m[f"tunix_runs_duration_seconds_sum{{{dry}}}"] == pytest.approx(0.6)
    assert m[f"tunix_runs_duration_seconds_count{{{dry}}}"] == 3
    local = 'mode="local",status="failed"'
    assert m[f'tunix_runs_duration_seconds_bucket{{{local},le="3600"}}'] == 0
    assert m[f'tunix_runs_duration_seconds_bucket{{{local},le="14400"}}'] == 1
    assert m['tunix_queue_depth{queue="default"}'] == 0
    assert m['tunix_queue_depth{queue="gpu"}'] == 1
    assert m["tunix_workers_live"] == 1


def test_db_write_latency_accumulates_in_the_database(client: Client) -> None:
    first = scrape(client)
    second = scrape(client)
    assert first["tunix_db_write_latency_ms_count"] == 1
    assert second["tunix_db_write_latency_ms_count"] == 2
    assert second['tunix_db_write_latency_ms_bucket{le="+Inf"}'] == 2
    assert second["tunix_db_write_latency_ms_sum"] > first["tunix_db_write_latency_ms_sum"] > 0
    bounds = [k for k in second if k.startswith("tunix_db_write_latency_ms_bucket")]
    values = [second[k] for k in bounds]
    assert values == sorted(values)


def test_metrics_only_answers_get(client: Client) -> None:
    assert client.post("/metrics").status_code == 405


@pytest.mark.django_db(transaction=True)
def test_sse_through_a_live_server_delivers_chunks_as_they_arrive(
    live_server: Any,
    settings: Any,
    user_factory: Callable[..., Any],
    token_for: Callable[[Any], str],
) -> None:
    """A viewer sees chunks stored while its stream is open, then the status, then the end."""
    settings.TUNIX_LOG_STREAM_SECONDS = 60.0
    run = TunixRunFactory.create(status=RunStatus.RUNNING, mode="local")
    add_chunks(run, "step 1\n")
    url = f"{live_server.url}/api/tunix/runs/{run.run_id}/logs"
    secret = token_for(user_factory("viewer"))
    headers = {"Authorization": f"Bearer {secret}"}
    stream = urllib.request.Request(url, headers=headers)  # noqa: S310 (http, test server)
    received: list[dict[str, Any]] = []
    ended = False
    with urllib.request.urlopen(stream, timeout=30) as response:  # noqa: S310 (http, test server)
        assert response.headers["Content-Type"] == "text/event-stream"
        block: list[str] = []
        for raw in response:
            line = raw.decode().rstrip("\n")
            if line:
                block.append(line)
                continue
            received += parse_sse("\n".join(block).encode())
            block = []
            if not ended and any(e.get("event") == "heartbeat" for e in received):
                # The stream is open and caught up: the run prints and ends meanwhile.
                add_chunks(run, "done\n", start=2)
                TunixRun.objects.filter(pk=run.pk).update(status=RunStatus.COMPLETED)
                ended = True
    logs = [e for e in received if e.get("event") == "log"]
    assert [(e["id"], e["data"]["chunk"]) for e in logs] == [("1", "step 1\n"), ("2", "done\n")]
    assert received[-1] == {"event": "status", "data": {"status": "completed"}}
