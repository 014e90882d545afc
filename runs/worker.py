"""A worker: takes queued runs from named queues and executes them on this machine.

`manage.py run_worker` runs one `RunWorker`. Taking a task from the queue is
django-tasks-db's `Worker` (`SELECT … FOR UPDATE SKIP LOCKED` on PostgreSQL, an
exclusive transaction on SQLite); its task, `runs.tasks.execute_run`, claims the
run by a compare-and-set and executes it (docs/decisions.md#queued-execution).
Around that loop this adds what the registry needs:

- A `TunixWorker` row (host, pid, queues, started_at) that a housekeeping thread
  keeps current every TUNIX_HEARTBEAT_SECONDS (heartbeat_at, current_run_id),
  and `stopped_at` on a clean exit.
- The reaper (`runs.services.run_reap`) from the same thread every
  `reap_interval()` seconds, so runs of dead workers end within a lease plus
  that interval without anyone running a command (docs/decisions.md#leases). It
  judges leases only once this worker has reached the database for a whole lease.
- Database outages are survived: a failed loop iteration or beat is logged on
  one line, the broken connections are dropped, and the loop goes on after a
  back-off of 1 s doubling to 10 s.
- Signals: SIGTERM or SIGINT stops taking work and stops the run executing now
  (the supervisor stops its trainer and records it failed, `STOPPED_MESSAGE`);
  SIGUSR1 drains: the current run finishes, then the worker exits. Further
  signals while stopping are ignored; SIGKILL is the only force, and a killed
  worker's run is failed by the reaper.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from types import FrameType

from django.conf import settings
from django.db import DatabaseError, InterfaceError, connection
from django.utils import timezone
from django_tasks_db.compat import DEFAULT_TASK_BACKEND_ALIAS
from django_tasks_db.management.commands.db_worker import Worker
from django_tasks_db.models import DBTaskResult

from runs.models import TunixRun, TunixWorker
from runs.processes import host_name
from runs.services import database_reset, run_reap
from tunix_registry.actors import REAPER

logger = logging.getLogger(__name__)

WORKER_ID_MAX_LENGTH = 64
BACKOFF_FIRST_SECONDS = 1.0
BACKOFF_MAX_SECONDS = 10.0
DATABASE_ERRORS = (DatabaseError, InterfaceError)

# The worker of this process, if it is one (tasks tell it which run they execute).
_active: RunWorker | None = None


def default_worker_id() -> str:
    """host-pid-random, at most 64 characters (the host is shortened to fit)."""
    suffix = f"-{os.getpid()}-{secrets.token_hex(3)}"
    return host_name()[: WORKER_ID_MAX_LENGTH - len(suffix)] + suffix


def reap_interval() -> float:
    """Seconds between two reaps by a worker: a quarter lease, at most 15 s, at least 1 s."""
    return max(1.0, min(15.0, settings.TUNIX_RUN_LEASE_SECONDS / 4))


class Backoff:
    """Waits between retries against an unavailable database: 1 s doubling to 10 s."""

    def __init__(self) -> None:
        self.failures = 0

    def next(self) -> float:
        delay = min(BACKOFF_MAX_SECONDS, BACKOFF_FIRST_SECONDS * 2**self.failures)
        self.failures += 1
        return delay

    def reset(self) -> None:
        self.failures = 0


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:200]}" if text else type(exc).__name__


class RunWorker(Worker):
    """django-tasks-db's worker plus a worker row, heartbeats, the reaper and outage survival."""

    def __init__(
        self,
        *,
        queues: list[str],
        worker_id: str,
        interval: float = 1.0,
        batch: bool = False,
        max_tasks: int | None = None,
        startup_delay: bool = True,
        out: Callable[[str], None] | None = None,
    ) -> None:
        super().__init__(
            queue_names=list(queues),
            interval=interval,
            batch=batch,
            backend_name=DEFAULT_TASK_BACKEND_ALIAS,
            startup_delay=startup_delay,
            max_tasks=max_tasks,
            worker_id=worker_id,
            excluded_queue_names=[],
        )
        self.host = host_name()
        self.pid = os.getpid()
        self.started_at = timezone.now()
        self.out = out or (lambda line: None)
        self.current_run_id: uuid.UUID | None = None
        self.stopping = False
        self._done = threading.Event()
        self._registered = False
        # Task rows whose result could not be stored (the database failed meanwhile).
        self._unclosed: list[uuid.UUID] = []
        self._housekeeper = threading.Thread(
            target=self._housekeeping, name=f"worker-{worker_id}-heartbeat", daemon=True
        )

    # --- Signals ----------------------------------------------------------------------

    def configure_signals(self) -> None:
        signal.signal(signal.SIGTERM, self.shutdown)
        signal.signal(signal.SIGINT, self.shutdown)
        signal.signal(signal.SIGUSR1, self.drain)

    def shutdown(self, signum: int, frame: FrameType | None) -> None:
        """SIGTERM/SIGINT: take no more work and stop the current run (it is recorded)."""
        if self.stopping:
            logger.warning("worker %s: %s ignored, already stopping", self.worker_id, _name(signum))
            return
        self.stopping = True
        self.running = False
        if self.running_task:
            self.out(f"{_name(signum)}: stopping the current run, then exiting")
        # Raised in the main thread: out of a sleep or a query, or through the
        # supervisor of the executing run, which stops its trainer and records it.
        sys.exit(0)

    def drain(self, signum: int, frame: FrameType | None) -> None:
        """SIGUSR1: take no more work; exit once the current run has ended."""
        if self.stopping:
            return
        self.running = False
        if self.running_task:
            self.out(f"{_name(signum)}: finishing the current run, then exiting")
            return
        self.stopping = True
        sys.exit(0)

    # --- The loop ---------------------------------------------------------------------

    def run(self) -> None:
        global _active
        _active = self
        self.out(
            f"worker {self.worker_id} on {self.host} (pid {self.pid}) takes queues "
            f"{','.join(self.queue_names)}"
        )
        self._housekeeper.start()
        backoff = Backoff()
        try:
            while self.running:
                try:
                    super().run()
                except DATABASE_ERRORS as exc:
                    self.startup_delay = False
                    delay = self._database_down("worker loop", exc, backoff)
                    self._wait_for_database(delay, backoff)
                    continue
                break
        finally:
            # A signal from here on must not cut the unregistering short.
            self.stopping = True
            self.running = False
            self._done.set()
            self._housekeeper.join(timeout=settings.TUNIX_HEARTBEAT_SECONDS + 30)
            self._unregister()
            _active = None
            self.out(f"worker {self.worker_id} stopped")

    def run_task(self, db_task_result: DBTaskResult) -> None:
        try:
            super().run_task(db_task_result)
        except DATABASE_ERRORS:
            # The task ran, but storing its result failed; close the row once the
            # database is back (the run row holds the outcome).
            self._unclosed.append(db_task_result.id)
            raise

    def _database_down(self, where: str, exc: BaseException, backoff: Backoff) -> float:
        delay = backoff.next()
        logger.warning(
            "worker %s: database unavailable in the %s (%s); retrying in %.0f s",
            self.worker_id,
            where,
            _one_line(exc),
            delay,
        )
        with contextlib.suppress(*DATABASE_ERRORS):
            connection.close()
        database_reset()
        return delay

    def _wait_for_database(self, delay: float, backoff: Backoff) -> None:
        """Sleep `delay`, then until the database answers; close what was left open."""
        while self.running:
            time.sleep(delay)
            try:
                connection.ensure_connection()
                self._close_unclosed()
            except DATABASE_ERRORS as exc:
                delay = self._database_down("worker loop", exc, backoff)
                continue
            logger.warning("worker %s: database reachable again", self.worker_id)
            backoff.reset()
            return

    def _close_unclosed(self) -> None:
        if not self._unclosed:
            return
        DBTaskResult.objects.filter(id__in=self._unclosed, status="RUNNING").update(
            status="FAILED",
            finished_at=timezone.now(),
            traceback="The worker lost the database while storing this task's result; "
            "the run's own row holds its outcome",
        )
        self._unclosed.clear()

    # --- The run being executed -------------------------------------------------------

    def run_started(self, run: TunixRun) -> None:
        self.current_run_id = run.run_id
        self.out(f"run {run.run_id} started: {run.mode} from queue {run.queue or '-'}")
        try:
            TunixWorker.objects.filter(pk=self.worker_id).update(current_run_id=run.run_id)
        except DATABASE_ERRORS:
            database_reset()  # the next beat writes it

    def run_ended(self, run: TunixRun, started: float) -> None:
        self.current_run_id = None
        elapsed = time.monotonic() - started
        self.out(f"run {run.run_id} finished: {run.status} after {elapsed:.1f} s")
        try:
            TunixWorker.objects.filter(pk=self.worker_id).update(current_run_id=None)
        except DATABASE_ERRORS:
            database_reset()

    # --- Heartbeat and reaper (a thread of their own) ---------------------------------

    def _housekeeping(self) -> None:
        beat_every = settings.TUNIX_HEARTBEAT_SECONDS
        reap_every = reap_interval()
        lease = settings.TUNIX_RUN_LEASE_SECONDS
        backoff = Backoff()
        connected_since: float | None = None
        next_reap = 0.0
        try:
            while not self._done.is_set():
                wait = beat_every
                try:
                    self._beat()
                    now = time.monotonic()
                    if connected_since is None:
                        if backoff.failures:
                            logger.warning(
                                "worker %s: heartbeat reaches the database again", self.worker_id
                            )
                        connected_since = now
                        backoff.reset()
                    if now >= next_reap:
                        next_reap = now + reap_every
                        self._reap(expire_leases=now - connected_since >= lease)
                except DATABASE_ERRORS as exc:
                    connected_since = None
                    wait = self._database_down("heartbeat", exc, backoff)
                except Exception:
                    logger.exception("worker %s: heartbeat or reaper failed", self.worker_id)
                self._done.wait(wait)
        finally:
            with contextlib.suppress(*DATABASE_ERRORS):
                connection.close()

    def _beat(self) -> None:
        now = timezone.now()
        if self._registered:
            updated = TunixWorker.objects.filter(pk=self.worker_id).update(
                heartbeat_at=now, current_run_id=self.current_run_id
            )
            if updated:
                return
        TunixWorker.objects.update_or_create(
            worker_id=self.worker_id,
            defaults={
                "host": self.host,
                "pid": self.pid,
                "queues": self.queue_names,
                "started_at": self.started_at,
                "heartbeat_at": now,
                "current_run_id": self.current_run_id,
                "stopped_at": None,
            },
        )
        self._registered = True

    def _reap(self, *, expire_leases: bool) -> None:
        for run_id in run_reap(expire_leases=expire_leases, actor=REAPER):
            status = TunixRun.objects.filter(pk=run_id).values_list("status", flat=True).first()
            self.out(f"run {run_id} reaped: {status}")
        if expire_leases:
            from evaluations.services import evaluation_reap

            for evaluation_id in evaluation_reap():
                self.out(f"evaluation {evaluation_id} reaped: failed (lost its worker)")

    def _unregister(self) -> None:
        try:
            TunixWorker.objects.filter(pk=self.worker_id).update(
                stopped_at=timezone.now(), current_run_id=None, heartbeat_at=timezone.now()
            )
        except DATABASE_ERRORS as exc:
            logger.warning(
                "worker %s: stop not recorded (%s); its heartbeat ages out instead",
                self.worker_id,
                _one_line(exc),
            )
        finally:
            with contextlib.suppress(*DATABASE_ERRORS):
                connection.close()


def _name(signum: int) -> str:
    return signal.Signals(signum).name


def worker_stopping() -> bool:
    """Whether this process is a worker told to stop (SIGTERM/SIGINT)."""
    return _active is not None and _active.stopping


@contextlib.contextmanager
def executing(run: TunixRun) -> Iterator[None]:
    """While a task executes `run`: the worker of this process (if any) reports it."""
    worker = _active
    if worker is None:
        yield
        return
    started = time.monotonic()
    worker.run_started(run)
    try:
        yield
    finally:
        worker.run_ended(run, started)
