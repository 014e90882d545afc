"""The database failing while a run is recorded never fails the user, for real.

See docs/decisions.md#database-failure-never-fails-the-user. Another connection
locks the runs table (SQLite: a write transaction on the shared test database;
PostgreSQL: LOCK TABLE ... ACCESS EXCLUSIVE, which our side gives up on after
TUNIX_RUN_DB_LOCK_TIMEOUT_MS). The fake trainer waits for a signal file, so the
lock is taken while the run is executing.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.db import connection
from django.test import Client

from datasets.tests.factories import dataset_with_traces
from runs.models import RunEvent, TunixRun
from runs.outcomes import OUTCOME_FILE
from runs.selectors import run_directory
from runs.services import run_reap

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("fake_trainer")]


class TableLock:
    """A second database connection that can hold a lock on the runs table."""

    def __init__(self) -> None:
        params = connection.settings_dict
        self.vendor = connection.vendor
        if self.vendor == "sqlite":
            self.raw: Any = sqlite3.connect(
                params["NAME"], uri=True, isolation_level=None, check_same_thread=False
            )
        else:
            import psycopg

            self.raw = psycopg.connect(
                dbname=params["NAME"],
                user=params["USER"],
                password=params["PASSWORD"],
                host=params["HOST"],
                port=params["PORT"] or None,
                autocommit=True,
            )

    def scalar(self, sql: str) -> Any:
        return self.raw.execute(sql).fetchone()[0]

    def acquire(self) -> None:
        if self.vendor == "sqlite":
            # The test database is a shared-cache in-memory SQLite, whose table
            # locks do not wait: while another thread writes, try again.
            deadline = time.monotonic() + 30
            while True:
                try:
                    self.raw.execute("BEGIN IMMEDIATE")
                    self.raw.execute("UPDATE runs_tunixrun SET message = message WHERE 0")
                    return
                except sqlite3.OperationalError:
                    if self.raw.in_transaction:
                        self.raw.execute("ROLLBACK")
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.01)
        else:
            self.raw.execute("BEGIN")
            self.raw.execute("LOCK TABLE runs_tunixrun IN ACCESS EXCLUSIVE MODE")

    def release(self) -> None:
        self.raw.execute("ROLLBACK")

    def close(self) -> None:
        self.raw.close()


def in_background(work: Callable[[], None]) -> threading.Thread:
    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    return thread


@pytest.fixture(autouse=True)
def _short_lock_wait(settings: Any) -> None:
    settings.TUNIX_RUN_DB_LOCK_TIMEOUT_MS = 300


def test_a_failed_final_write_still_answers_200_and_is_recorded_later(
    client: Client, data_dir: Path
) -> None:
    dataset_with_traces(count=1)
    lock = TableLock()
    finished = threading.Event()
    problems: list[str] = []

    def hold_lock_while_finishing() -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            flags = list((data_dir / "runs").glob("*/started.flag"))
            if flags and lock.scalar("SELECT count(*) FROM runs_tunixrun WHERE pid IS NOT NULL"):
                break
            time.sleep(0.02)
        else:
            problems.append("the trainer never started")
        lock.acquire()
        (flags[0].parent / "go.flag").write_text("go")
        finished.wait(30)
        lock.release()

    holder = in_background(hold_lock_while_finishing)
    started = time.monotonic()
    response = client.post(
        "/api/tunix/run",
        data={"dataset_key": "demo-v1", "model_id": "fake-wait", "dry_run": False},
        content_type="application/json",
    )
    elapsed = time.monotonic() - started
    finished.set()
    holder.join(30)
    lock.close()
    assert not problems

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "completed"
    assert body["exit_code"] == 0
    assert body["stdout"] == "released\n"
    assert elapsed < 15

    # The row could not be finished; the outcome waits in the run directory...
    run = TunixRun.objects.get(pk=body["run_id"])
    assert run.status == "running"
    assert (run_directory(run_id=run.run_id) / OUTCOME_FILE).is_file()
    # ...and the connection is healthy for the next request.
    assert client.get("/api/tunix/runs").status_code == 200

    # The reaper records it once the database is back.
    assert run_reap() == [run.run_id]
    run.refresh_from_db()
    assert (run.status, run.exit_code, run.stdout) == ("completed", 0, "released\n")
    assert run.message == "Local execution completed successfully"
    assert not (run_directory(run_id=run.run_id) / OUTCOME_FILE).exists()
    reasons = list(RunEvent.objects.filter(run=run).values_list("to_status", "reason"))
    assert reasons[-1] == ("completed", "outcome recorded after a failed database write")


def test_a_database_locked_for_the_whole_request_still_answers_the_outcome(
    client: Client,
) -> None:
    dataset_with_traces(count=2)
    lock = TableLock()
    lock.acquire()
    try:
        response = client.post(
            "/api/tunix/run",
            data={"dataset_key": "demo-v1", "model_id": "tiny-qwen3"},
            content_type="application/json",
        )
    finally:
        lock.release()
        lock.close()
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "completed"
    assert "2 traces sampled" in body["stdout"]
    # Nothing was written, nothing is left running, and the database works again.
    assert not TunixRun.objects.exists()
    assert client.get("/api/tunix/runs").json()["data"] == []
