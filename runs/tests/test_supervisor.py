"""The supervisor loop around a real trainer subprocess (runs/tests/fake_trainer.py).

The run executes in a background thread (as a worker's task would) while the test
watches the database; every wait is a poll with a deadline.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from django.conf import settings as django_settings
from django.db import OperationalError, connection
from django.test import Client

from datasets.tests.factories import dataset_with_traces
from runs.execution import run_execute
from runs.logs import marker_text
from runs.models import RunEvent, RunLogChunk, RunMetric, TunixRun
from runs.outcomes import RunOutcome
from runs.schemas import TunixRunRequest
from runs.selectors import run_directory
from runs.services import StartedRun, run_cancel, run_finish, run_start
from runs.tests.conftest import FAKE_TRAINER
from tunix_registry.actors import COMMAND

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("fake_trainer")]

T = TypeVar("T")
DEADLINE = 30.0


def eventually(check: Callable[[], T], *, what: str, seconds: float = DEADLINE) -> T:
    """Poll `check` until it returns something truthy (a locked database is polled again)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            value = check()
        except OperationalError:
            value = None  # SQLite's shared test database: a writer holds the table
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def pid_gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state in ("Z", "X")


class Background:
    """A local run started and executed in a thread, as a worker would."""

    def __init__(self, model_id: str) -> None:
        request = TunixRunRequest(dataset_key="demo-v1", model_id=model_id, dry_run=False)
        self.started: StartedRun = run_start(actor=COMMAND, request=request)
        assert self.started.recorded
        self.run_id = self.started.run.run_id
        self.directory = self.started.directory
        self.result: dict[str, Any] = {}
        self.thread = threading.Thread(target=self._work, daemon=True)
        self.thread.start()

    def _work(self) -> None:
        try:
            self.result["run"] = run_execute(started=self.started)
        finally:
            connection.close()

    def trainer_pid(self) -> int:
        path = self.directory / "trainer.pid"
        return int(eventually(lambda: path.is_file() and path.read_text(), what="trainer.pid"))

    def join(self) -> TunixRun:
        self.thread.join(DEADLINE)
        assert not self.thread.is_alive(), "the run did not end"
        run: TunixRun = self.result["run"]
        return run


def stored_text(run_id: Any, *streams: str) -> str:
    chunks = RunLogChunk.objects.filter(run_id=run_id, stream__in=streams).order_by("seq")
    return "".join(chunks.values_list("chunk", flat=True))


def test_output_and_metrics_reach_the_database_while_the_trainer_runs() -> None:
    dataset_with_traces(count=1)
    job = Background("fake-stream")
    run_id = job.run_id
    eventually(
        lambda: RunLogChunk.objects.filter(run_id=run_id, chunk__contains="step 3 é").exists(),
        what="a log chunk while the trainer runs",
    )
    eventually(
        lambda: RunMetric.objects.filter(run_id=run_id, step__gte=3).exists(),
        what="metric rows while the trainer runs",
    )
    live = eventually(
        lambda: TunixRun.objects.filter(pk=run_id, metrics_steps__gte=3).first(),
        what="the run's metrics summary while it runs",
    )
    assert live is not None and live.metrics_steps
    assert live.status == "running"
    assert live.final_loss == pytest.approx(10.0 / live.metrics_steps)
    assert live.heartbeat_at is not None
    (job.directory / "go.flag").write_text("go")
    run = job.join()

    assert run.status == "completed"
    stored = TunixRun.objects.get(pk=run_id)
    assert stored.status == "completed"
    # The stored chunks are the whole log, in order, seq counted from 1.
    assert stored_text(run_id, "stdout") == (job.directory / "stdout.log").read_text()
    assert stored_text(run_id, "stdout").endswith("released\n")
    seqs = list(RunLogChunk.objects.filter(run_id=run_id).values_list("seq", flat=True))
    assert seqs == list(range(1, len(seqs) + 1))
    steps = list(RunMetric.objects.filter(run_id=run_id).values_list("step", flat=True))
    assert steps == list(range(1, len(steps) + 1))
    assert stored.metrics_steps == steps[-1]


def test_a_capped_log_keeps_its_head_and_tail_and_a_marker_for_the_gap(
    client: Client, settings: Any
) -> None:
    settings.TUNIX_RUN_LOG_MAX_BYTES = 4096
    dataset_with_traces(count=1)
    response = client.post(
        "/api/tunix/run",
        data={"dataset_key": "demo-v1", "model_id": "fake-flood", "dry_run": False},
        content_type="application/json",
    )
    body = response.json()
    assert body["status"] == "completed"
    run_id = body["run_id"]
    directory = run_directory(run_id=run_id)
    stdout = (directory / "stdout.log").read_bytes()
    stderr = (directory / "stderr.log").read_bytes()
    total = len(stdout) + len(stderr)
    assert total > 300_000

    chunks = list(RunLogChunk.objects.filter(run_id=run_id).order_by("seq"))
    markers = [c for c in chunks if c.stream == "marker"]
    assert len(markers) == 1
    marker = markers[0]
    head = [c for c in chunks if c.seq < marker.seq]
    tail = [c for c in chunks if c.seq > marker.seq]
    size = lambda cs: sum(len(c.chunk.encode()) for c in cs)  # noqa: E731
    assert 2048 - 3 <= size(head) <= 2048  # a character is never cut
    assert 0 < size(tail) <= 2048
    left_out = total - size(head) - size(tail)
    assert marker.chunk == marker_text(left_out)
    # The head is where each stream began, the tail where each one ended.
    head_out = "".join(c.chunk for c in head if c.stream == "stdout")
    assert stdout.decode().startswith(head_out) and head_out
    tail_out = "".join(c.chunk for c in tail if c.stream == "stdout")
    assert stdout.decode().endswith(tail_out) and tail_out
    # The files keep everything; the run's excerpt is as before.
    assert body["stdout"].startswith("000000 ")


def test_cancel_requested_stops_a_trainer_that_ignores_sigterm(settings: Any) -> None:
    settings.TUNIX_HEARTBEAT_SECONDS = 0.2
    settings.TUNIX_CANCEL_GRACE_SECONDS = 0.5
    dataset_with_traces(count=1)
    job = Background("fake-stubborn")
    pid = job.trainer_pid()
    eventually(
        lambda: RunLogChunk.objects.filter(run_id=job.run_id, chunk__contains="stubborn").exists(),
        what="the trainer's first line stored",
    )
    assert (
        eventually(lambda: run_cancel(actor=COMMAND, run_id=job.run_id), what="cancel")
        == "cancel_requested"
    )
    run = job.join()

    assert run.status == "cancelled"
    stored = TunixRun.objects.get(pk=job.run_id)
    assert (stored.status, stored.exit_code) == ("cancelled", None)
    assert stored.message == "Local execution cancelled"
    assert stored.stdout == "stubborn: ignoring SIGTERM\n"
    assert stored.stderr.endswith("Execution cancelled on request (the trainer was stopped)")
    assert stored.metrics_steps == 1
    assert list(RunMetric.objects.filter(run_id=job.run_id).values_list("step", flat=True)) == [1]
    assert "Execution cancelled on request" in stored_text(job.run_id, "stderr")
    transitions = list(
        RunEvent.objects.filter(run_id=job.run_id).values_list("from_status", "to_status")
    )
    assert transitions == [
        (None, "running"),
        ("running", "cancel_requested"),
        ("cancel_requested", "cancelled"),
    ]
    assert eventually(lambda: pid_gone(pid), what="the trainer gone")


def test_a_run_finished_elsewhere_is_left_as_it_is_and_its_trainer_stopped(settings: Any) -> None:
    settings.TUNIX_HEARTBEAT_SECONDS = 0.2
    dataset_with_traces(count=1)
    job = Background("fake-stubborn")
    pid = job.trainer_pid()
    other = RunOutcome(status="failed", message="failed by someone else")
    row = TunixRun.objects.get(pk=job.run_id)
    assert eventually(
        lambda: run_finish(actor=COMMAND, run=row, outcome=other, reason="test"), what="finish"
    )
    run = job.join()

    assert (run.status, run.message) == ("failed", "failed by someone else")
    stored = TunixRun.objects.get(pk=job.run_id)
    assert (stored.status, stored.message) == ("failed", "failed by someone else")
    assert RunEvent.objects.filter(run_id=job.run_id).count() == 2
    assert eventually(lambda: pid_gone(pid), what="the trainer gone")


def test_a_timeout_ends_the_run_and_its_note_is_in_the_stored_log(settings: Any) -> None:
    settings.TUNIX_RUN_TIMEOUT_SECONDS = 1
    dataset_with_traces(count=1)
    job = Background("fake-stubborn")
    pid = job.trainer_pid()
    run = job.join()
    assert run.status == "timeout"
    assert TunixRun.objects.get(pk=job.run_id).status == "timeout"
    assert "Execution timeout (exceeded 1 seconds)" in stored_text(job.run_id, "stderr")
    assert stored_text(job.run_id, "stdout") == "stubborn: ignoring SIGTERM\n"
    assert eventually(lambda: pid_gone(pid), what="the trainer gone")


def test_artifacts_are_recorded_with_size_and_sha256(client: Client, data_dir: Path) -> None:
    dataset_with_traces(count=1)
    response = client.post(
        "/api/tunix/run",
        data={
            "dataset_key": "demo-v1",
            "model_id": "fake-artifacts",
            "dry_run": False,
            "output_dir": "art",
        },
        content_type="application/json",
    )
    assert response.json()["status"] == "completed"
    run = TunixRun.objects.get(pk=response.json()["run_id"])
    model = bytes(range(256)) * 4096
    assert run.artifacts == [
        {"name": "model.bin", "size": len(model), "sha256": hashlib.sha256(model).hexdigest()},
        {"name": "notes.txt", "size": 8, "sha256": hashlib.sha256(b"trained\n").hexdigest()},
    ]


def test_a_dry_run_records_no_artifacts(client: Client) -> None:
    dataset_with_traces(count=1)
    response = client.post(
        "/api/tunix/run",
        data={"dataset_key": "demo-v1", "model_id": "tiny-qwen3"},
        content_type="application/json",
    )
    assert response.json()["status"] == "completed"
    assert TunixRun.objects.get(pk=response.json()["run_id"]).artifacts is None


SUPERVISE_ONE = """
from django.core.management import call_command
call_command("migrate", verbosity=0)
from datasets.tests.factories import dataset_with_traces
from runs.execution import run_execute
from runs.schemas import TunixRunRequest
from runs.services import run_start
from tunix_registry.actors import COMMAND
dataset_with_traces(count=1)
started = run_start(actor=COMMAND, request=TunixRunRequest(dataset_key="demo-v1",
                                                           model_id="fake-stubborn",
                                                           dry_run=False))
print("RUN_DIR", started.directory, flush=True)
run_execute(started=started)
"""


@pytest.mark.django_db(transaction=False)
def test_killing_the_supervisor_with_sigkill_kills_the_trainer(tmp_path: Path) -> None:
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("DATABASE_URL", "TUNIX_TRAINER_COMMAND")
    }
    env.update(
        DJANGO_SETTINGS_MODULE="tunix_registry.settings_test",
        TUNIX_REGISTRY_DATA_DIR=str(tmp_path / "data"),
        TUNIX_RUNTIME_MODULE="json",
        TUNIX_TRAINER_COMMAND=f"{sys.executable} {FAKE_TRAINER}",
    )
    supervisor = subprocess.Popen(
        [
            sys.executable,
            str(Path(django_settings.BASE_DIR) / "manage.py"),
            "shell",
            "-c",
            SUPERVISE_ONE,
        ],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert supervisor.stdout is not None
        line = ""
        while not line.startswith("RUN_DIR "):
            line = supervisor.stdout.readline()
            assert line, "the supervising process ended before starting the run"
        directory = Path(line.split(" ", 1)[1].strip())
        pid_file = directory / "trainer.pid"
        pid = int(eventually(lambda: pid_file.is_file() and pid_file.read_text(), what="pid"))
        assert not pid_gone(pid)
        supervisor.kill()
        supervisor.wait(DEADLINE)
        # The trainer ignores SIGTERM; the kernel's SIGKILL on its parent's death is what ends it.
        assert eventually(lambda: pid_gone(pid), what="the trainer to die with its supervisor")
    finally:
        if supervisor.poll() is None:
            supervisor.kill()
        with contextlib.suppress(OSError, ValueError, UnboundLocalError):
            os.killpg(int((directory / "trainer.pid").read_text()), signal.SIGKILL)


def test_the_database_locked_mid_run_delays_the_output_but_loses_none(settings: Any) -> None:
    from runs.tests.test_db_failure import TableLock

    settings.TUNIX_RUN_DB_LOCK_TIMEOUT_MS = 300
    settings.TUNIX_HEARTBEAT_SECONDS = 0.2
    dataset_with_traces(count=1)
    job = Background("fake-stream")
    job.trainer_pid()
    eventually(lambda: RunLogChunk.objects.filter(run_id=job.run_id).exists(), what="a first chunk")
    lock = TableLock()
    lock.acquire()
    try:
        # The trainer writes on while every write of the supervisor fails.
        stdout = job.directory / "stdout.log"
        size = stdout.stat().st_size
        eventually(lambda: stdout.stat().st_size > size + 2000, what="more output")
    finally:
        lock.release()
        lock.close()
    eventually(
        lambda: RunLogChunk.objects.filter(run_id=job.run_id, seq__gte=3).exists(),
        what="output stored again once the database is back",
    )
    (job.directory / "go.flag").write_text("go")
    run = job.join()
    assert run.status == "completed"
    assert TunixRun.objects.get(pk=job.run_id).status == "completed"
    assert stored_text(job.run_id, "stdout") == (job.directory / "stdout.log").read_text()
