"""The reaper: runs left `running` by a process that is gone end as failed (interrupted)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.core.management import call_command

from runs.models import RunEvent, RunMode, RunStatus, TunixRun
from runs.processes import process_fingerprint
from runs.selectors import run_directory
from runs.services import INTERRUPTED_MESSAGE, run_reap
from runs.tests.factories import TunixRunFactory

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
