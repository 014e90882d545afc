"""The embedded setup as `make run` has it: gunicorn and one worker sharing one SQLite file.

Real processes in one data directory, driven only over HTTP as a user would:
async launches queue behind a held run, a pending run and a running run whose
trainer ignores SIGTERM are cancelled, and the web server is killed and started
again while the worker executes. It runs in the SQLite pass (the PostgreSQL
faults are in test_faults_workers.py, test_faults_postgres.py and
test_faults_web.py). Nothing is timed: waits poll up to generous deadlines.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.db import connection

from runs.tests.faults import Harness, Web, manage
from traces.tests.factories import make_payload

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")

RUN_SECONDS = 120.0
TERMINAL = {"completed", "failed", "timeout", "cancelled"}


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[Harness]:
    if connection.vendor != "sqlite":
        pytest.skip("the embedded SQLite setup is tested in the SQLite pass")
    harness = Harness(root=tmp_path, database_url="")
    yield harness
    left = harness.close()
    assert not left, f"trainer processes outlived the test (killed now): {left}"


def launch(web: Web, model_id: str, *, dry_run: bool = False) -> str:
    body = {"dataset_key": "faults-v1", "model_id": model_id, "dry_run": dry_run}
    code, run = web.call("POST", "/api/tunix/run?mode=async", body)
    assert (code, run["status"]) == (200, "pending"), run
    return str(run["run_id"])


def get(web: Web, path: str) -> Any:
    code, body = web.call("GET", path)
    assert code == 200, (path, body)
    return body


def wait_status(harness: Harness, web: Web, run_id: str, wanted: set[str]) -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        run = get(web, f"/api/tunix/runs/{run_id}")
        return run if run["status"] in wanted else None

    found = harness.wait_for(reached, timeout=RUN_SECONDS, what=f"run {run_id} in {wanted}")
    assert found is not None
    return found


def wait_log(harness: Harness, web: Web, run_id: str, text: str) -> None:
    def shipped() -> bool:
        return text in json.dumps(get(web, f"/api/tunix/runs/{run_id}/logs"))

    harness.wait_for(shipped, timeout=RUN_SECONDS, what=f"{text!r} in the log of {run_id}")


def test_gunicorn_and_one_worker_on_sqlite_cancel_and_survive_a_web_restart(
    embedded: Harness,
) -> None:
    harness = embedded
    data_dir = harness.data_dir("data")
    manage(harness.worker_env(data_dir), "migrate", "--noinput", "-v", "0")
    worker = harness.worker("w1", data_dir=data_dir)
    web = harness.web("web", data_dir=data_dir)
    code, _ = web.call("POST", "/api/traces/batch", [make_payload(), make_payload()])
    assert code == 201
    code, dataset = web.call(
        "POST", "/api/datasets/build", {"dataset_name": "faults", "dataset_version": "v1"}
    )
    assert (code, dataset["trace_count"]) == (201, 2)

    held = launch(web, "fault-hold")
    wait_status(harness, web, held, {"running"})
    # One worker executes one run at a time: these wait behind the held one.
    stubborn = launch(web, "fault-stubborn")
    waiting = launch(web, "tiny-qwen3", dry_run=True)
    dry = launch(web, "tiny-qwen3", dry_run=True)

    code, body = web.call("POST", f"/api/tunix/runs/{waiting}/cancel")
    assert (code, body["message"]) == (200, "Run cancellation requested"), body
    assert get(web, f"/api/tunix/runs/{waiting}")["status"] == "cancelled"

    # The web server dies and comes back; the worker's run is not its business.
    harness.stop(web.started, signal.SIGKILL)
    web = harness.web("web", data_dir=data_dir)
    (data_dir / "runs" / held / "go.flag").write_text("go")
    finished = wait_status(harness, web, held, TERMINAL)
    assert finished["status"] == "completed", finished
    assert "released" in finished["stdout"]

    wait_status(harness, web, stubborn, {"running"})
    wait_log(harness, web, stubborn, "stubborn")
    code, body = web.call("POST", f"/api/tunix/runs/{stubborn}/cancel")
    assert code == 200, body
    cancelled = wait_status(harness, web, stubborn, TERMINAL)
    assert cancelled["status"] == "cancelled", cancelled
    assert "SIGTERM ignored" in cancelled["stdout"], cancelled["stdout"]
    harness.wait_no_trainers()

    assert wait_status(harness, web, dry, TERMINAL)["status"] == "completed"
    listed = {run["run_id"]: run["status"] for run in get(web, "/api/tunix/runs")["data"]}
    assert listed == {
        held: "completed",
        stubborn: "cancelled",
        waiting: "cancelled",
        dry: "completed",
    }
    assert not (data_dir / "runs" / waiting).exists()
    assert worker.alive(), harness.diagnostics()
