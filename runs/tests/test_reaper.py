"""The reaper: runs whose process is gone or whose lease expired end, and stuck queue rows move.

Runs left `running` by a process of this host that is gone end `failed`
(interrupted); runs of any host whose heartbeat is older than the lease end
`failed` naming the lost worker; pending runs whose task was taken but never
claimed are queued again.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import call_command
from django.utils import timezone
from django_tasks_db.models import DBTaskResult

from runs.models import RunEvent, RunLogChunk, RunMetric, RunMode, RunStatus, TunixRun
from runs.processes import process_fingerprint
from runs.schemas import TunixRunRequest
from runs.selectors import run_directory
from runs.services import INTERRUPTED_MESSAGE, run_enqueue, run_reap, run_requeue_unclaimed
from runs.tests.factories import TunixRunFactory
from tunix_registry.actors import COMMAND

pytestmark = pytest.mark.django_db

HOST = socket.gethostname()


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def running(**fields: object) -> TunixRun:
    fields.setdefault("supervisor_host", HOST)
    fields.setdefault("supervisor_pid", dead_pid())
    return TunixRunFactory.create(status=RunStatus.RUNNING, message="", **fields)


def test_a_run_whose_supervisor_is_dead_is_failed_as_interrupted() -> None:
    run = running()
    assert run_reap() == [run.run_id]
    run.refresh_from_db()
    assert run.status == "failed"
    assert run.message == INTERRUPTED_MESSAGE
    assert run.stderr == INTERRUPTED_MESSAGE
    assert run.exit_code is None
    assert run.completed_at is not None and run.duration_seconds is not None
    event = RunEvent.objects.get(run=run)
    assert (event.from_status, event.to_status) == ("running", "failed")
    assert "reaped" in event.reason
    assert run_reap() == []


def test_live_supervisors_other_hosts_and_finished_runs_are_left_alone() -> None:
    me = os.getpid()
    alive = running(supervisor_pid=me, supervisor_fingerprint=process_fingerprint(me))
    elsewhere = running(supervisor_host="another-host")
    finished = TunixRunFactory.create(supervisor_host=HOST, supervisor_pid=dead_pid())
    assert run_reap() == []
    for run in (alive, elsewhere, finished):
        before = run.status
        run.refresh_from_db()
        assert run.status == before


def test_a_recycled_pid_does_not_keep_a_dead_run_alive() -> None:
    # Our own (live) pid, but recorded for a process that started at another time.
    run = running(supervisor_pid=os.getpid(), supervisor_fingerprint="other-boot:12345")
    assert run_reap() == [run.run_id]


def test_an_orphaned_trainer_group_is_killed_and_its_output_kept(data_dir: Path) -> None:
    run = running(mode=RunMode.LOCAL)
    run_dir = run_directory(run_id=run.run_id)
    run_dir.mkdir(parents=True)
    (run_dir / "stdout.log").write_text("step 1 loss 2.0\n")
    (run_dir / "metrics.jsonl").write_text('{"step": 1, "loss": 2.0}\n')
    trainer = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import pathlib, signal, time; signal.signal(15, signal.SIG_IGN); "
            "pathlib.Path('ready').touch(); time.sleep(300)",
        ],
        cwd=run_dir,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 10
        while not (run_dir / "ready").exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        TunixRun.objects.filter(pk=run.pk).update(host=HOST, pid=trainer.pid)
        assert run_reap() == [run.run_id]
        trainer.wait(timeout=10)
        assert trainer.returncode == -signal.SIGKILL
    finally:
        if trainer.poll() is None:
            trainer.kill()
    run.refresh_from_db()
    assert run.status == "failed"
    assert run.stdout == "step 1 loss 2.0\n"
    assert run.metrics_steps == 1 and run.final_loss == 2.0


def test_an_unrelated_process_with_the_recorded_pid_is_not_killed(data_dir: Path) -> None:
    run = running(mode=RunMode.LOCAL)
    other = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(300)"], start_new_session=True
    )
    try:
        TunixRun.objects.filter(pk=run.pk).update(host=HOST, pid=other.pid)
        assert run_reap() == [run.run_id]
        time.sleep(0.1)
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()


def test_reap_runs_command_prints_what_it_reaped() -> None:
    from io import StringIO

    run = running()
    out = StringIO()
    call_command("reap_runs", stdout=out)
    assert f"reaped {run.run_id}" in out.getvalue()
    assert "1 run(s) reaped" in out.getvalue()
    out = StringIO()
    call_command("reap_runs", stdout=out)
    assert out.getvalue().strip() == "0 run(s) reaped"


def test_runs_of_a_host_declared_gone_are_reaped_too() -> None:
    from io import StringIO

    me = os.getpid()
    elsewhere = running(supervisor_host="old-container", supervisor_pid=me)
    mine_alive = running(supervisor_pid=me, supervisor_fingerprint=process_fingerprint(me))
    assert run_reap() == []
    out = StringIO()
    # Naming this very host does not override the liveness check.
    call_command("reap_runs", "--host-gone", "old-container", "--host-gone", HOST, stdout=out)
    assert out.getvalue().splitlines() == [f"reaped {elsewhere.run_id}", "1 run(s) reaped"]
    mine_alive.refresh_from_db()
    assert mine_alive.status == "running"


# --- Leases ------------------------------------------------------------------------------


def expired(seconds_over: float = 5.0) -> datetime:
    return timezone.now() - timedelta(seconds=settings.TUNIX_RUN_LEASE_SECONDS + seconds_over)


def test_a_run_of_another_host_is_failed_once_its_lease_expires() -> None:
    fresh = running(supervisor_host="gpu-box", worker_id="gpu-1", heartbeat_at=timezone.now())
    lost = running(supervisor_host="gpu-box", worker_id="gpu-2", heartbeat_at=expired())
    assert run_reap() == [lost.run_id]
    lost.refresh_from_db()
    lease = settings.TUNIX_RUN_LEASE_SECONDS
    message = f"Run failed: lost its worker gpu-2 on gpu-box (no heartbeat for {lease} s)"
    assert (lost.status, lost.message, lost.stderr) == ("failed", message, message)
    assert RunEvent.objects.get(run=lost).reason == f"reaped: lease expired ({message})"
    fresh.refresh_from_db()
    assert fresh.status == "running"


def test_a_lease_is_not_judged_by_a_reaper_that_says_its_view_is_too_young() -> None:
    lost = running(supervisor_host="gpu-box", worker_id="gpu-2", heartbeat_at=expired())
    assert run_reap(expire_leases=False) == []
    assert run_reap() == [lost.run_id]


def test_a_live_supervisor_here_keeps_its_run_whatever_its_heartbeat() -> None:
    # As after a database outage: the heartbeat could not be written, the process lives.
    me = os.getpid()
    alive = running(
        supervisor_pid=me, supervisor_fingerprint=process_fingerprint(me), heartbeat_at=expired()
    )
    assert run_reap() == []
    alive.refresh_from_db()
    assert alive.status == "running"


def test_a_dead_workers_run_names_the_worker() -> None:
    run = running(worker_id="w7")
    assert run_reap() == [run.run_id]
    run.refresh_from_db()
    assert run.message == (
        f"Run interrupted: lost its worker w7 on {HOST} (its process is gone: killed or restarted)"
    )


def test_a_lost_run_being_cancelled_ends_cancelled() -> None:
    run = running(supervisor_host="gpu-box", worker_id="gpu-2", heartbeat_at=expired())
    TunixRun.objects.filter(pk=run.pk).update(status=RunStatus.CANCEL_REQUESTED)
    assert run_reap() == [run.run_id]
    run.refresh_from_db()
    assert run.status == "cancelled"
    assert RunEvent.objects.get(run=run).from_status == "cancel_requested"


def test_a_lost_run_of_another_host_keeps_what_the_database_holds() -> None:
    run = running(
        mode=RunMode.LOCAL, supervisor_host="gpu-box", worker_id="gpu-2", heartbeat_at=expired()
    )
    RunLogChunk.objects.create(run=run, seq=1, stream="stdout", chunk="step 1\n")
    RunLogChunk.objects.create(run=run, seq=2, stream="stderr", chunk="warning\n")
    RunLogChunk.objects.create(run=run, seq=3, stream="stdout", chunk="step 2\n")
    RunMetric.objects.create(run=run, step=1, loss=2.5)
    RunMetric.objects.create(run=run, step=2, loss=2.0)
    assert run_reap() == [run.run_id]
    run.refresh_from_db()
    assert run.stdout == "step 1\nstep 2\n"
    assert run.stderr.startswith("warning\n\nRun failed: lost its worker gpu-2")
    assert (run.metrics_steps, run.final_loss) == (2, 2.0)


def test_the_queue_row_of_a_reaped_run_is_closed() -> None:
    run = run_enqueue(actor=COMMAND, request=TunixRunRequest(dataset_key="demo-v1", model_id="m"))
    DBTaskResult.objects.filter(id=run.task_id).update(status="RUNNING", worker_ids=["w1"])
    TunixRun.objects.filter(pk=run.pk).update(
        status=RunStatus.RUNNING,
        worker_id="w1",
        supervisor_host=HOST,
        supervisor_pid=dead_pid(),
    )
    assert run_reap() == [run.run_id]
    task = DBTaskResult.objects.get(id=run.task_id)
    assert task.status == "FAILED" and task.finished_at is not None
    assert "lost its worker w1" in task.traceback


# --- Runs whose task was taken but never claimed --------------------------------------------


def test_a_pending_run_whose_task_was_taken_but_never_claimed_is_queued_again() -> None:
    run = run_enqueue(actor=COMMAND, request=TunixRunRequest(dataset_key="demo-v1", model_id="m"))
    # A worker took the task and died before it claimed the run.
    DBTaskResult.objects.filter(id=run.task_id).update(status="RUNNING", worker_ids=["w-gone"])
    assert run_requeue_unclaimed() == []  # not older than a lease yet
    TunixRun.objects.filter(pk=run.pk).update(created_at=expired())
    waiting = run_enqueue(
        actor=COMMAND, request=TunixRunRequest(dataset_key="demo-v1", model_id="m")
    )
    TunixRun.objects.filter(pk=waiting.pk).update(created_at=expired())
    assert run_reap() == []
    stored = TunixRun.objects.get(pk=run.pk)
    assert stored.status == "pending" and stored.task_id != run.task_id
    assert DBTaskResult.objects.get(id=stored.task_id).status == "READY"
    old = DBTaskResult.objects.get(id=run.task_id)
    assert old.status == "FAILED"
    assert RunEvent.objects.filter(run=run).last().reason == (  # type: ignore[union-attr]
        "queued again on default: its task was taken by worker w-gone, which never claimed it"
    )
    # A run still waiting in the queue is left alone; asking again changes nothing.
    assert TunixRun.objects.get(pk=waiting.pk).task_id == waiting.task_id
    assert run_requeue_unclaimed() == []


def test_a_pending_run_whose_task_failed_before_the_claim_is_queued_again() -> None:
    run = run_enqueue(actor=COMMAND, request=TunixRunRequest(dataset_key="demo-v1", model_id="m"))
    DBTaskResult.objects.filter(id=run.task_id).update(status="FAILED")
    TunixRun.objects.filter(pk=run.pk).update(created_at=expired())
    assert run_requeue_unclaimed() == [run.run_id]


def test_a_kept_outcome_brings_the_output_its_supervisor_could_not_store(data_dir: Path) -> None:
    from runs.outcomes import RunOutcome, pending_outcome_save

    run = running(mode=RunMode.LOCAL)
    directory = run_directory(run_id=run.run_id)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "stdout.log").write_text("step 1\nstep 2\nreleased \u00e9\n", encoding="utf-8")
    (directory / "stderr.log").write_text("warning\n", encoding="utf-8")
    # Stored before the database went away: the first line only.
    RunLogChunk.objects.create(run=run, seq=1, stream="stdout", chunk="step 1\n")
    pending_outcome_save(
        run_id=run.run_id,
        outcome=RunOutcome(status=RunStatus.COMPLETED, message="done", exit_code=0),
    )
    assert run_reap() == [run.run_id]
    run.refresh_from_db()
    assert run.status == "completed"
    chunks = list(RunLogChunk.objects.filter(run=run).order_by("seq"))
    assert [c.seq for c in chunks] == [1, 2, 3]
    assert "".join(c.chunk for c in chunks if c.stream == "stdout") == (
        "step 1\nstep 2\nreleased \u00e9\n"
    )
    assert [c.chunk for c in chunks if c.stream == "stderr"] == ["warning\n"]


def test_a_log_the_cap_already_cut_is_not_caught_up(data_dir: Path) -> None:
    from runs.logs import log_catch_up

    run = running(mode=RunMode.LOCAL)
    directory = run_directory(run_id=run.run_id)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "stdout.log").write_text("a\nb\nc\n", encoding="utf-8")
    RunLogChunk.objects.create(run=run, seq=1, stream="stdout", chunk="a\n")
    RunLogChunk.objects.create(run=run, seq=2, stream="marker", chunk="[... 2 bytes ...]")
    assert log_catch_up(run_id=run.run_id, run_dir=directory, max_bytes=1 << 20) == 0
    assert RunLogChunk.objects.filter(run=run).count() == 2
