"""`manage.py run_worker`: a real worker subprocess executing queued runs.

The test process and its workers share one database: this process's default
connection is swapped for a file SQLite database in the test's data directory
(or, on PostgreSQL, a database of the test's own), which the workers reach as a
production worker would (TUNIX_REGISTRY_DATA_DIR, or DATABASE_URL). Runs are
launched through the services, exactly as the API and the pages do. Nothing
waits a fixed time: `wait_for` polls up to a generous deadline.
"""

from __future__ import annotations

import copy
import os
import secrets
import shlex
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from io import StringIO
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import pytest
from django.core.management import CommandError, call_command
from django.db import connections
from django_tasks_db.models import DBTaskResult

from datasets.tests.factories import dataset_with_traces
from runs.models import RunEvent, RunStatus, TunixRun, TunixWorker
from runs.outcomes import RunOutcome, pending_outcome_save
from runs.processes import host_name, process_alive
from runs.schemas import TunixRunRequest
from runs.selectors import run_directory
from runs.services import STOPPED_MESSAGE, run_cancel, run_enqueue
from runs.tasks import execute_run
from runs.tests.conftest import FAKE_TRAINER
from runs.tests.factories import TunixRunFactory
from tunix_registry.actors import COMMAND

T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[2]
DEADLINE_SECONDS = 90.0
LEASE_SECONDS = 6
TERMINAL = ("completed", "failed", "timeout", "cancelled")


def wait_for(what: str, check: Callable[[], T | None], *, output: Callable[[], str]) -> T:
    """Poll `check` until it answers something truthy; fail with the workers' output."""
    deadline = time.monotonic() + DEADLINE_SECONDS
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}\n{output()}")
        time.sleep(0.1)


@dataclass
class Worker:
    process: subprocess.Popen[bytes]
    log: Path
    worker_id: str

    def output(self) -> str:
        return self.log.read_text(errors="replace")


class Registry:
    """The shared database, the environment of its workers and the workers started."""

    def __init__(self, env: dict[str, str], data_dir: Path) -> None:
        self.env = env
        self.data_dir = data_dir
        self.workers: list[Worker] = []

    def worker(self, worker_id: str, *args: str) -> Worker:
        log = self.data_dir / f"{worker_id}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [
                    sys.executable,
                    "manage.py",
                    "run_worker",
                    "--worker-id",
                    worker_id,
                    "--interval",
                    "0.2",
                    "--no-startup-delay",
                    *args,
                ],
                cwd=ROOT,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        started = Worker(process=process, log=log, worker_id=worker_id)
        self.workers.append(started)
        return started

    def output(self) -> str:
        return "\n".join(f"--- {w.worker_id} ---\n{w.output()}" for w in self.workers)

    def wait_run(self, run_id: uuid.UUID, *statuses: str) -> TunixRun:
        def reached() -> TunixRun | None:
            run = TunixRun.objects.get(pk=run_id)
            return run if run.status in statuses else None

        return wait_for(f"run {run_id} to be {'/'.join(statuses)}", reached, output=self.output)

    def stop(self, worker: Worker, sig: int = signal.SIGTERM) -> int:
        if worker.process.poll() is None:
            worker.process.send_signal(sig)
        try:
            return worker.process.wait(timeout=DEADLINE_SECONDS)
        except subprocess.TimeoutExpired:
            pytest.fail(f"worker {worker.worker_id} did not stop\n{self.output()}")

    def close(self) -> None:
        for worker in self.workers:
            if worker.process.poll() is None:
                os.killpg(worker.process.pid, signal.SIGKILL)
                worker.process.wait()


def _postgres_url(settings_dict: dict[str, Any]) -> str:
    user = quote(settings_dict.get("USER") or "", safe="")
    password = quote(settings_dict.get("PASSWORD") or "", safe="")
    auth = f"{user}:{password}@" if password else (f"{user}@" if user else "")
    host = settings_dict.get("HOST") or "localhost"
    port = settings_dict.get("PORT") or "5432"
    if host.startswith("/"):
        return f"postgresql://{auth}/{settings_dict['NAME']}?host={quote(host)}&port={port}"
    return f"postgresql://{auth}{host}:{port}/{settings_dict['NAME']}"


@pytest.fixture
def registry(data_dir: Path, settings: Any, django_db_blocker: Any) -> Iterator[Registry]:
    settings.TUNIX_RUNTIME_MODULE = "json"
    settings.TUNIX_TRAINER_COMMAND = [sys.executable, str(FAKE_TRAINER)]
    settings.TUNIX_RUN_LEASE_SECONDS = LEASE_SECONDS
    settings.TUNIX_HEARTBEAT_SECONDS = 0.5
    settings.TUNIX_CANCEL_GRACE_SECONDS = 2.0
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "DJANGO_", "TUNIX_"))
    }
    env.update(
        DJANGO_SETTINGS_MODULE="tunix_registry.settings_test",
        TUNIX_REGISTRY_DATA_DIR=str(data_dir),
        TUNIX_REGISTRY_LOG_LEVEL="WARNING",
        TUNIX_RUNTIME_MODULE="json",
        TUNIX_TRAINER_COMMAND=shlex.join([sys.executable, str(FAKE_TRAINER)]),
        TUNIX_RUN_TIMEOUT_SECONDS="120",
        TUNIX_RUN_LEASE_SECONDS=str(LEASE_SECONDS),
        TUNIX_HEARTBEAT_SECONDS="0.5",
        TUNIX_CANCEL_GRACE_SECONDS="2",
        PYTHONUNBUFFERED="1",
    )
    with django_db_blocker.unblock():
        original = connections["default"]
        settings_dict = copy.deepcopy(original.settings_dict)
        created = None
        if original.vendor == "postgresql":
            created = f"tunix_worker_test_{secrets.token_hex(4)}"
            with original.cursor() as cursor:
                cursor.execute(f'CREATE DATABASE "{created}"')
            settings_dict["NAME"] = created
            env["DATABASE_URL"] = _postgres_url(settings_dict)
        else:
            settings_dict["NAME"] = str(data_dir / "db.sqlite3")
        shared = original.__class__(settings_dict, alias="default")
        connections["default"] = shared
        registry = Registry(env, data_dir)
        try:
            call_command("migrate", verbosity=0)
            yield registry
        finally:
            registry.close()
            shared.close()
            connections["default"] = original
            if created:
                with original.cursor() as cursor:
                    cursor.execute(f'DROP DATABASE "{created}" WITH (FORCE)')


def launch(model_id: str = "tiny-qwen3", *, dry_run: bool = True, key: str = "demo-v1") -> TunixRun:
    return run_enqueue(
        actor=COMMAND, request=TunixRunRequest(dataset_key=key, model_id=model_id, dry_run=dry_run)
    )


def events(run_id: uuid.UUID) -> list[tuple[str | None, str, str]]:
    return list(
        RunEvent.objects.filter(run_id=run_id)
        .order_by("created_at", "id")
        .values_list("from_status", "to_status", "reason")
    )


def task_status(run: TunixRun) -> str:
    stored = TunixRun.objects.get(pk=run.pk)
    return str(DBTaskResult.objects.get(id=stored.task_id).status)


def test_a_worker_executes_queued_dry_runs_and_a_local_run(registry: Registry) -> None:
    dataset_with_traces(count=3)
    dry = [launch(), launch(key="missing-v1")]
    local = launch("fake-ok", dry_run=False)
    assert {r.status for r in [*dry, local]} == {"pending"}

    worker = registry.worker("w1")
    done = [registry.wait_run(r.run_id, *TERMINAL) for r in dry]
    trained = registry.wait_run(local.run_id, *TERMINAL)
    assert [r.status for r in done] == ["completed", "failed"]
    assert trained.status == "completed", trained.stderr
    assert trained.metrics_steps is not None and trained.exit_code == 0
    assert trained.worker_id == "w1" and trained.supervisor_host == host_name()
    for run in [*done, trained]:
        kinds = [(e[0], e[1]) for e in events(run.run_id)]
        assert kinds[:2] == [(None, "pending"), ("pending", "running")]
        assert events(run.run_id)[1][2] == f"claimed by worker w1 on {host_name()}"
        assert task_status(run) == "SUCCESSFUL"

    row = wait_for(
        "the worker row",
        lambda: TunixWorker.objects.filter(pk="w1", current_run_id__isnull=True).first(),
        output=registry.output,
    )
    assert (row.host, row.pid, row.queues, row.stopped_at) == (
        host_name(),
        worker.process.pid,
        ["default"],
        None,
    )
    assert registry.stop(worker) == 0
    row.refresh_from_db()
    assert row.stopped_at is not None
    out = worker.output()
    assert f"run {trained.run_id} started: local from queue default" in out
    assert f"run {trained.run_id} finished: completed" in out
    assert "worker w1 stopped" in out


def test_a_task_delivered_twice_executes_its_run_once(registry: Registry) -> None:
    dataset_with_traces(count=1)
    run = launch()
    duplicate = execute_run.enqueue(str(run.run_id))
    worker = registry.worker("w1", "--batch")
    assert worker.process.wait(DEADLINE_SECONDS) == 0
    stored = TunixRun.objects.get(pk=run.pk)
    assert stored.status == "completed"
    assert [e[1] for e in events(run.run_id)] == ["pending", "running", "completed"]
    results = dict(DBTaskResult.objects.values_list("id", "return_value"))
    assert sorted(results.values(), key=str) == ["", "completed"]
    assert str(duplicate.id) in {str(i) for i in results}


def test_a_killed_workers_run_is_reaped_by_another_worker_naming_it(
    registry: Registry,
) -> None:
    dataset_with_traces(count=1)
    held = launch("fake-wait", dry_run=False)
    first = registry.worker("w1")
    running = registry.wait_run(held.run_id, "running")
    run_dir = run_directory(run_id=held.run_id)
    wait_for("the trainer", lambda: (run_dir / "started.flag").exists(), output=registry.output)
    trainer = TunixRun.objects.get(pk=held.pk).pid
    assert trainer is not None and running.worker_id == "w1"
    os.killpg(first.process.pid, signal.SIGKILL)
    first.process.wait()
    # A run whose supervisor died after keeping its outcome on disk (a failed write).
    kept = TunixRunFactory.create(
        status=RunStatus.RUNNING, supervisor_pid=first.process.pid, worker_id="w0", message=""
    )
    pending_outcome_save(
        run_id=kept.run_id, outcome=RunOutcome(status="completed", message="kept on disk")
    )
    # No one runs a command: the next worker's own reaper finds both.
    second = registry.worker("w2")
    lost = registry.wait_run(held.run_id, "failed")
    assert lost.message.startswith("Run interrupted: lost its worker w1 on ")
    assert events(held.run_id)[-1][2] == "reaped: supervising process gone"
    assert task_status(lost) == "FAILED"
    recorded = registry.wait_run(kept.run_id, "completed")
    assert recorded.message == "kept on disk"
    wait_for("the trainer to die", lambda: not process_alive(trainer), output=registry.output)
    assert f"run {held.run_id} reaped: failed" in second.output()
    assert registry.stop(second) == 0


def test_a_lease_expires_on_a_worker_of_another_host(registry: Registry) -> None:
    from datetime import timedelta

    from django.utils import timezone

    old = timezone.now() - timedelta(seconds=LEASE_SECONDS + 5)
    lost = TunixRunFactory.create(
        status=RunStatus.RUNNING,
        message="",
        worker_id="gpu-7",
        supervisor_host="gpu-box",
        supervisor_pid=4242,
        heartbeat_at=old,
        started_at=old,
    )
    worker = registry.worker("w1")
    reaped = registry.wait_run(lost.run_id, "failed")
    assert reaped.message == (
        f"Run failed: lost its worker gpu-7 on gpu-box (no heartbeat for {LEASE_SECONDS} s)"
    )
    assert registry.stop(worker) == 0


def test_cancel_a_pending_run_and_a_running_one(registry: Registry) -> None:
    dataset_with_traces(count=1)
    pending = launch()
    assert run_cancel(actor=COMMAND, run_id=pending.run_id) == "cancelled"
    assert task_status(pending) == "FAILED"
    held = launch("fake-wait", dry_run=False)
    worker = registry.worker("w1")
    registry.wait_run(held.run_id, "running")
    wait_for(
        "the trainer",
        lambda: (run_directory(run_id=held.run_id) / "started.flag").exists(),
        output=registry.output,
    )
    assert run_cancel(actor=COMMAND, run_id=held.run_id) == "cancel_requested"
    cancelled = registry.wait_run(held.run_id, *TERMINAL)
    assert cancelled.status == "cancelled", cancelled.message
    assert TunixRun.objects.get(pk=pending.pk).status == "cancelled"
    assert [e[1] for e in events(pending.run_id)] == ["pending", "cancelled"]
    assert registry.stop(worker) == 0


def test_sigterm_stops_the_current_run_and_sigusr1_lets_it_finish(registry: Registry) -> None:
    dataset_with_traces(count=1)
    first = launch("fake-wait", dry_run=False)
    worker = registry.worker("w1")
    registry.wait_run(first.run_id, "running")
    flag = run_directory(run_id=first.run_id) / "started.flag"
    wait_for("the trainer", flag.exists, output=registry.output)
    trainer = TunixRun.objects.get(pk=first.pk).pid
    assert registry.stop(worker, signal.SIGTERM) == 0
    stopped = TunixRun.objects.get(pk=first.pk)
    assert (stopped.status, stopped.message) == ("failed", STOPPED_MESSAGE)
    assert trainer is not None and not process_alive(trainer)
    assert TunixWorker.objects.get(pk="w1").stopped_at is not None

    second = launch("fake-wait", dry_run=False)
    draining = registry.worker("w2")
    registry.wait_run(second.run_id, "running")
    run_dir = run_directory(run_id=second.run_id)
    wait_for("the trainer", (run_dir / "started.flag").exists, output=registry.output)
    third = launch()
    draining.process.send_signal(signal.SIGUSR1)
    wait_for(
        "the drain notice",
        lambda: "finishing the current run" in draining.output(),
        output=registry.output,
    )
    (run_dir / "go.flag").touch()
    assert draining.process.wait(DEADLINE_SECONDS) == 0
    assert TunixRun.objects.get(pk=second.pk).status == "completed"
    # Drained: the run queued meanwhile was left for another worker.
    assert TunixRun.objects.get(pk=third.pk).status == "pending"


def test_tunix_run_local_queues_and_wait_follows_to_the_end(registry: Registry) -> None:
    dataset_with_traces(count=2)
    out = StringIO()
    call_command("tunix_run", "demo-v1", "fake-ok", "--local", stdout=out)
    queued = TunixRun.objects.get()
    assert queued.status == "pending"
    assert (
        out.getvalue().splitlines()[0] == f"run {queued.run_id}: pending (local) on queue default"
    )

    worker = registry.worker("w1")
    out = StringIO()
    call_command("tunix_run", "demo-v1", "fake-ok", "--local", "--wait", stdout=out)
    text = out.getvalue()
    followed = TunixRun.objects.exclude(pk=queued.pk).get()
    assert f"run {followed.run_id}: completed (local)" in text
    assert "exit code: 0" in text and "metrics: " in text
    assert f"logs: {run_directory(run_id=followed.run_id)}" in text

    out = StringIO()
    with pytest.raises(CommandError, match="ended failed") as caught:
        call_command("tunix_run", "demo-v1", "fake-fail", "--local", "--wait", stdout=out)
    assert caught.value.returncode == 1
    assert "exit code: 3" in out.getvalue()
    assert registry.stop(worker) == 0
