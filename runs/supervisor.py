"""The loop around a local run's trainer process, wherever the run executes.

`trainer_supervise` waits for the trainer (a worker's task or a synchronous
request alike) and, while it runs:
- ships new output from stdout.log/stderr.log (the files stay: they are the
  complete logs) to the database as log chunks, about once a second or every
  64 KB (`runs.logs.LogShipper`), decoding UTF-8 across reads without ever
  splitting a character;
- ingests new metrics.jsonl lines and keeps the run's metrics summary current
  (`runs.logs.run_metrics_store`);
- beats every TUNIX_HEARTBEAT_SECONDS (`runs.services.run_heartbeat`): on
  `cancel_requested` it stops the trainer's process group (SIGTERM, SIGKILL after
  TUNIX_CANCEL_GRACE_SECONDS); on a terminal status (someone else finished the
  run) it stops the trainer and leaves the stored outcome be;
- stops the trainer once it exceeds TUNIX_RUN_TIMEOUT_SECONDS.

A database error is logged and the loop goes on; what could not be written is
tried again later (docs/decisions.md#database-failure-never-fails-the-user). It
writes only when there is something new, so supervising costs the trainer next
to nothing. A run with no row (`record=False`) is only waited for and timed.
"""

from __future__ import annotations

import codecs
import contextlib
import logging
import os
import select
import signal
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import DatabaseError, connection

from runs.logs import CHUNK_MAX_BYTES, LogShipper, run_metrics_store
from runs.metrics import METRICS_FILE, MetricsReader
from runs.models import TERMINAL_STATUSES, RunStatus
from runs.processes import KILL_GRACE_SECONDS, process_group_signal, process_group_stop
from runs.services import run_heartbeat

logger = logging.getLogger(__name__)

# How often the loop wakes while the trainer runs, and ships what is new.
TICK_SECONDS = 0.5
SHIP_SECONDS = 1.0
# Bytes read from a log per wake-up, and the most output held in memory while the
# database cannot take it (the files keep the rest, to be read later).
READ_MAX_BYTES = 1 << 20
PENDING_MAX_BYTES = 4 << 20
# Tries, and the pause before each next one, of the writes made once the trainer ended.
FINAL_WRITE_PAUSES = (0.5, 1.0)


class Ending:
    """How supervising a trainer ended."""

    EXITED = "exited"
    TIMEOUT = "timeout"
    CANCELLED = "cancelled"
    # Someone else (the reaper, an operator) finished the run while it executed.
    SUPERSEDED = "superseded"


@dataclass
class Supervision:
    ending: str
    returncode: int | None
    metrics: list[dict[str, Any]] = field(default_factory=list)
    # The line appended to stderr.log, and the log's size before it.
    note: str | None = None
    stderr_bytes: int | None = None


class _LogReader:
    """New text of one log file since the last read, decoded incrementally."""

    def __init__(self, path: Path, stream: str) -> None:
        self.path = path
        self.stream = stream
        self.offset = 0
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._resync = False

    def unread(self) -> int:
        try:
            return max(0, self.path.stat().st_size - self.offset)
        except OSError:
            return 0

    def read(self, limit: int) -> tuple[str, int]:
        """Up to `limit` new bytes as text, and how many bytes were dropped to resync."""
        try:
            with self.path.open("rb") as handle:
                handle.seek(self.offset)
                data = handle.read(limit)
        except OSError:
            return "", 0
        self.offset += len(data)
        dropped = 0
        if self._resync:
            # After a skip the read may start inside a character: drop its continuation bytes.
            while dropped < min(3, len(data)) and (data[dropped] & 0xC0) == 0x80:
                dropped += 1
            data = data[dropped:]
            self._resync = not data
        return self._decoder.decode(data), dropped

    def skip(self, keep: int) -> int:
        """Jump ahead so that `keep` unread bytes remain; the bytes skipped."""
        skipped = self.unread() - keep
        if skipped <= 0:
            return 0
        buffered = len(self._decoder.getstate()[0])
        self._decoder.reset()
        self.offset += skipped
        self._resync = True
        return skipped + buffered

    def finish(self) -> str:
        return self._decoder.decode(b"", final=True)


class _Waiter:
    """Waits for a process to end, sleeping in the kernel (a pidfd) rather than polling."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self.process = process
        self.pidfd: int | None = None
        with contextlib.suppress(AttributeError, OSError):
            self.pidfd = os.pidfd_open(process.pid)
        if self.pidfd is not None:
            self.poller = select.poll()
            self.poller.register(self.pidfd, select.POLLIN)

    def wait(self, seconds: float) -> bool:
        """Whether the process ended within `seconds`."""
        if self.pidfd is None:
            try:
                self.process.wait(timeout=seconds)
            except subprocess.TimeoutExpired:
                return False
            return True
        if self.process.poll() is not None:
            return True
        self.poller.poll(max(0, int(seconds * 1000)))
        return self.process.poll() is not None

    def close(self) -> None:
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None


def _connection_reset() -> None:
    """After a database error: drop the connection, so the next query opens a fresh one."""
    if not connection.in_atomic_block:
        with contextlib.suppress(Exception):
            connection.close()


class _Supervisor:
    def __init__(
        self, *, run_id: uuid.UUID, process: subprocess.Popen[bytes], run_dir: Path, record: bool
    ) -> None:
        self.run_id = run_id
        self.process = process
        self.record = record
        self.readers = [
            _LogReader(run_dir / "stdout.log", "stdout"),
            _LogReader(run_dir / "stderr.log", "stderr"),
        ]
        self.shipper = LogShipper(run_id=run_id, max_bytes=settings.TUNIX_RUN_LOG_MAX_BYTES)
        self.metrics = MetricsReader(run_dir / METRICS_FILE, run_id=run_id)
        self.pending: list[tuple[str, str]] = []
        self.pending_bytes = 0
        self.skipped = 0
        self.metrics_pending: dict[int, dict[str, Any]] = {}

    # --- The loop ---------------------------------------------------------------------

    def run(self) -> Supervision:
        waiter: _Waiter | None = None
        try:
            timeout = settings.TUNIX_RUN_TIMEOUT_SECONDS
            heartbeat = settings.TUNIX_HEARTBEAT_SECONDS
            waiter = _Waiter(self.process)
            now = time.monotonic()
            deadline = now + timeout
            next_ship, next_beat = now + SHIP_SECONDS, now + heartbeat
            while True:
                if waiter.wait(min(TICK_SECONDS, max(0.0, deadline - time.monotonic()))):
                    return self._end(Ending.EXITED)
                now = time.monotonic()
                if now >= deadline:
                    return self._end(Ending.TIMEOUT)
                if not self.record:
                    continue
                self._collect()
                if self.pending_bytes >= CHUNK_MAX_BYTES or now >= next_ship:
                    self._ship()
                    next_ship = now + SHIP_SECONDS
                if now >= next_beat:
                    next_beat = now + heartbeat
                    status = run_heartbeat(run_id=self.run_id)
                    if status is None:
                        _connection_reset()
                    elif status == RunStatus.CANCEL_REQUESTED:
                        return self._end(Ending.CANCELLED)
                    elif status in TERMINAL_STATUSES:
                        return self._end(Ending.SUPERSEDED)
        finally:
            # Also when this process is interrupted: the trainer goes with it.
            try:
                process_group_stop(self.process)
            except BaseException:
                # Interrupted again while stopping it: no more grace.
                process_group_signal(self.process.pid, signal.SIGKILL)
                raise
            finally:
                if waiter is not None:
                    waiter.close()

    def _end(self, ending: str) -> Supervision:
        grace = KILL_GRACE_SECONDS
        if ending == Ending.CANCELLED:
            grace = settings.TUNIX_CANCEL_GRACE_SECONDS
        process_group_stop(self.process, grace=grace)
        returncode = self.process.returncode if ending == Ending.EXITED else None
        return Supervision(ending=ending, returncode=returncode)

    def note(self, text: str) -> int | None:
        """Append a line of the registry's own to the trainer's stderr log; its size before."""
        try:
            with self.readers[1].path.open("ab") as err:
                size = err.tell()
                err.write(f"\n{text}\n".encode())
        except OSError:
            logger.warning("run %s: could not note %r in stderr.log", self.run_id, text)
            return None
        return size

    def drain(self) -> list[dict[str, Any]]:
        """Read and store everything the trainer left; the whole metrics series."""
        self.metrics.read(final=True)
        if not self.record:
            return self.metrics.rows()
        stored = True
        while stored and any(reader.unread() for reader in self.readers):
            self._collect(drain=True)
            if self.pending_bytes >= CHUNK_MAX_BYTES:
                stored = self._final_write(self._ship_logs)
        if stored:
            for reader in self.readers:
                self._append(reader.stream, reader.finish())
            stored = self._final_write(self._ship_logs)
        if not stored:
            logger.warning(
                "run %s: the end of its output was not stored (database unavailable); "
                "the run directory keeps the complete logs",
                self.run_id,
            )
        self._final_write(self._ship_metrics)
        return self.metrics.rows()

    # --- Output ----------------------------------------------------------------------

    def _collect(self, *, drain: bool = False) -> None:
        for reader in self.readers:
            if self.pending_bytes >= PENDING_MAX_BYTES and not drain:
                return
            if self.shipper.head_full:
                # Output the tail could not keep anyway is never read.
                self.skipped += reader.skip(self.shipper.tail_budget + READ_MAX_BYTES)
            text, dropped = reader.read(READ_MAX_BYTES)
            self.skipped += dropped
            self._append(reader.stream, text)

    def _append(self, stream: str, text: str) -> None:
        if not text:
            return
        if self.pending and self.pending[-1][0] == stream:
            self.pending[-1] = (stream, self.pending[-1][1] + text)
        else:
            self.pending.append((stream, text))
        self.pending_bytes += len(text)

    def _ship(self) -> None:
        for write in (self._ship_logs, self._ship_metrics):
            try:
                write()
            except DatabaseError:
                logger.warning("run %s: output not stored yet (database unavailable)", self.run_id)
                _connection_reset()

    def _ship_logs(self) -> None:
        if self.skipped:
            self.shipper.count_skipped(self.skipped)
            self.skipped = 0
        if self.pending:
            self.shipper.store(self.pending)
            self.pending, self.pending_bytes = [], 0

    def _ship_metrics(self) -> None:
        for row in self.metrics.read():
            self.metrics_pending[row["step"]] = row
        if self.metrics_pending:
            run_metrics_store(
                run_id=self.run_id,
                rows=list(self.metrics_pending.values()),
                series=self.metrics.rows(),
            )
            self.metrics_pending = {}

    def _final_write(self, write: Callable[[], None]) -> bool:
        """Make one of the last writes, trying again a little later; whether it was made."""
        for pause in (*FINAL_WRITE_PAUSES, None):
            try:
                write()
                return True
            except DatabaseError:
                _connection_reset()
                if pause is None:
                    return False
                time.sleep(pause)
        return False


def trainer_supervise(
    *,
    run_id: uuid.UUID,
    process: subprocess.Popen[bytes],
    run_dir: Path,
    record: bool,
    note: Callable[[str], str | None] | None = None,
) -> Supervision:
    """Supervise a started trainer until it ends, is stopped, or the run is finished elsewhere.

    `note(ending)` may return a line to append to stderr.log before the last output
    is stored (why the registry stopped the trainer). Raises only what the loop
    itself cannot handle (an interrupt, a broken setting); the trainer's group is
    stopped then too.
    """
    supervisor = _Supervisor(run_id=run_id, process=process, run_dir=run_dir, record=record)
    supervision = supervisor.run()
    line = note(supervision.ending) if note else None
    if line:
        supervision.note, supervision.stderr_bytes = line, supervisor.note(line)
    supervision.metrics = supervisor.drain()
    return supervision
