"""PostgreSQL stopped under a worker mid-run, then started again.

The test stops and starts a cluster of its own (scripts/pg.sh), so the suite's
database is left alone; it runs in the PostgreSQL pass (DATABASE_URL set),
where PostgreSQL is installed. The worker is `manage.py run_worker` with a short
lease; its trainer is runs/tests/fault_trainer.py. The test process reads the
cluster with plain SQL (its own Django connection is the suite's test database).
Nothing is timed: waits poll up to generous deadlines.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
from django.db import connection

from runs.tests.faults import Harness, NotYet, Started, manage, postgres_cluster

pytestmark = [
    pytest.mark.postgres_only,
    pytest.mark.filterwarnings("ignore::ResourceWarning"),
]

LEASE_SECONDS = 4
RUN_SECONDS = 120.0
# Longer than a lease: every heartbeat is older than the lease when the database returns.
OUTAGE_SECONDS = LEASE_SECONDS + 2

SETUP = """
from datasets.tests.factories import dataset_with_traces
dataset_with_traces(name="faults", count=2)
"""

ENQUEUE = """
from runs.schemas import TunixRunRequest
from runs.services import run_enqueue
from tunix_registry.actors import COMMAND
request = TunixRunRequest(dataset_key="faults-v1", model_id={model!r}, dry_run=False)
print(run_enqueue(actor=COMMAND, request=request).run_id)
"""


def last_line(output: str) -> str:
    return output.strip().splitlines()[-1]


def sql(url: str, query: str, *params: Any) -> list[tuple[Any, ...]]:
    try:
        with psycopg.connect(url, connect_timeout=5) as conn:
            return conn.execute(query, params).fetchall()
    except psycopg.OperationalError as exc:
        raise NotYet(str(exc)) from exc


def status(url: str, run_id: str) -> str:
    return sql(url, "SELECT status FROM runs_tunixrun WHERE run_id = %s", run_id)[0][0]


def wait_status(harness: Harness, url: str, run_id: str, wanted: set[str]) -> str:
    def reached() -> str | None:
        now = status(url, run_id)
        return now if now in wanted else None

    found = harness.wait_for(reached, timeout=RUN_SECONDS, what=f"run {run_id} in {wanted}")
    assert found is not None
    return found


def hold_until_running(harness: Harness, url: str, env: dict[str, str], worker: Started) -> str:
    """Queue a held run and wait until its trainer is running on the worker."""
    run_id = last_line(manage(env, "shell", "-c", ENQUEUE.format(model="fault-hold")))
    wait_status(harness, url, run_id, {"running"})
    run_dir = worker.data_dir / "runs" / run_id

    def trainer_up() -> bool:
        return bool(harness.trainers()) and (run_dir / "starts").exists()

    harness.wait_for(trainer_up, timeout=RUN_SECONDS, what=f"the trainer of {run_id}")
    return run_id


def log_text(url: str, run_id: str) -> str:
    rows = sql(url, "SELECT chunk FROM runs_runlogchunk WHERE run_id = %s ORDER BY seq", run_id)
    return "".join(row[0] for row in rows)


def events(url: str, run_id: str) -> list[tuple[str | None, str]]:
    return [
        (row[0], row[1])
        for row in sql(
            url,
            "SELECT from_status, to_status FROM runs_runevent WHERE run_id = %s "
            "ORDER BY created_at, id",
            run_id,
        )
    ]


def test_postgresql_stopped_mid_run_then_restarted(tmp_path: Path) -> None:
    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL is at hand in the PostgreSQL pass (DATABASE_URL set)")
    # Under /tmp and world-readable: the server runs as the postgres user.
    cluster_dir = Path(tempfile.mkdtemp(prefix="tunix-faults-pg."))
    with postgres_cluster(cluster_dir) as pg:
        harness = Harness(root=tmp_path, database_url=pg.url)
        try:
            _outages(harness, pg)
        finally:
            left = harness.close()
        assert not left, f"trainer processes outlived the test (killed now): {left}"


def _outages(harness: Harness, pg: Any) -> None:
    url = pg.url
    env = harness.worker_env(harness.data_dir("setup"))
    manage(env, "migrate", "--noinput", "-v", "0")
    manage(env, "shell", "-c", SETUP)
    worker = harness.worker("w1", lease_seconds=LEASE_SECONDS)

    # 1. Down for longer than a lease while the trainer keeps training, then back:
    #    the worker reconnects, its run is not reaped as lost, and it completes.
    first = hold_until_running(harness, url, env, worker)
    pg.stop()
    time.sleep(OUTAGE_SECONDS)  # the fault's length, not a wait for anything
    assert worker.alive(), harness.diagnostics()
    pg.restart()
    (worker.data_dir / "runs" / first / "go.flag").write_text("go")
    assert wait_status(harness, url, first, {"completed", "failed", "timeout", "cancelled"}) == (
        "completed"
    ), sql(url, "SELECT message, stderr FROM runs_tunixrun WHERE run_id = %s", first)
    stored = log_text(url, first)
    assert "step 3" in stored and "released" in stored, f"stored log chunks: {stored!r}"
    assert events(url, first) == [
        (None, "pending"),
        ("pending", "running"),
        ("running", "completed"),
    ]

    # 2. The trainer finishes while the database is down: its outcome is recorded
    #    once the database is back, and nothing is left running.
    second = hold_until_running(harness, url, env, worker)
    pg.stop()
    (worker.data_dir / "runs" / second / "go.flag").write_text("go")
    harness.wait_no_trainers(timeout=RUN_SECONDS)
    time.sleep(OUTAGE_SECONDS)  # the fault's length, not a wait for anything
    assert worker.alive(), harness.diagnostics()
    pg.restart()
    assert wait_status(harness, url, second, {"completed", "failed", "timeout", "cancelled"}) == (
        "completed"
    ), sql(url, "SELECT message, stderr FROM runs_tunixrun WHERE run_id = %s", second)
    stdout = sql(url, "SELECT stdout FROM runs_tunixrun WHERE run_id = %s", second)[0][0]
    assert "released" in stdout
    assert events(url, second) == [
        (None, "pending"),
        ("pending", "running"),
        ("running", "completed"),
    ]

    # The same worker process goes on taking runs on the restarted database.
    third = last_line(manage(env, "shell", "-c", ENQUEUE.format(model="fault-quick")))
    assert wait_status(harness, url, third, {"completed", "failed"}) == "completed"
    assert worker.alive(), harness.diagnostics()
    left = sql(
        url,
        "SELECT run_id, status FROM runs_tunixrun WHERE status IN ('pending', 'running', "
        "'cancel_requested')",
    )
    assert left == []
    claims = sql(
        url, "SELECT count(*) FROM runs_runevent WHERE to_status = 'running' GROUP BY run_id"
    )
    assert [row[0] for row in claims] == [1, 1, 1]
    # The log the pages and the logs endpoint serve holds what the trainer printed
    # while the database was down.
    stored = log_text(url, second)
    assert "step 3" in stored and "released" in stored, f"stored log chunks: {stored!r}"
