"""Storing a run's output and metrics in the database while it executes.

- `LogShipper`: a run's output as RunLogChunk rows (seq from 1), so that any machine
  shows a run executing on another. Past TUNIX_RUN_LOG_MAX_BYTES it keeps the head
  (the first half of the cap) and the tail (the last half): the oldest tail chunks
  are deleted and one chunk on stream `marker`, placed right after the head, says
  how many bytes were left out (docs/decisions.md#live-logs).
- `run_metrics_store`: new RunMetric rows and the run's metrics summary fields.
- `log_catch_up`: the output a supervisor could not store before it ended, from
  the run directory's log files (the reaper calls it on the run's own host).

The supervisor (`runs.supervisor`) calls both about once a second, only when there
is something new. They raise DatabaseError and leave the state as it was, so the
same call can be made again later (the writes are idempotent).
"""

from __future__ import annotations

import uuid
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.db import transaction

from runs.metrics import metric_rows, metrics_summary
from runs.models import EXECUTING_STATUSES, RunLogChunk, RunMetric, TunixRun
from runs.services import _limit_lock_wait

# Output is stored in chunks of at most this many bytes.
CHUNK_MAX_BYTES = 65536
STREAMS = ("stdout", "stderr")
MARKER_STREAM = "marker"


def marker_text(left_out: int) -> str:
    """The text of the chunk that stands for the output the cap left out."""
    return f"\n[... {left_out} bytes of output left out ...]\n"


def utf8_split(text: str, at: int) -> tuple[str, str]:
    """`text` cut after at most `at` UTF-8 bytes, never inside a character."""
    data = text.encode("utf-8")
    if len(data) <= at:
        return text, ""
    cut = max(at, 0)
    while cut > 0 and (data[cut] & 0xC0) == 0x80:
        cut -= 1
    return data[:cut].decode("utf-8"), data[cut:].decode("utf-8")


def utf8_split_after(text: str, at: int) -> tuple[str, str]:
    """`text` cut after at least `at` UTF-8 bytes (the next character boundary)."""
    data = text.encode("utf-8")
    if len(data) <= at:
        return text, ""
    cut = max(at, 0)
    while cut < len(data) and (data[cut] & 0xC0) == 0x80:
        cut += 1
    return data[:cut].decode("utf-8"), data[cut:].decode("utf-8")


@dataclass
class _State:
    seq: int = 0
    head_bytes: int = 0
    head_full: bool = False
    # The seq reserved for the marker once the head is full; its row is written
    # when something is first left out.
    marker_seq: int | None = None
    left_out: int = 0
    # (seq, bytes) of the stored tail chunks, oldest first.
    tail: deque[tuple[int, int]] = field(default_factory=deque)
    tail_bytes: int = 0

    def copy(self) -> _State:
        return _State(
            seq=self.seq,
            head_bytes=self.head_bytes,
            head_full=self.head_full,
            marker_seq=self.marker_seq,
            left_out=self.left_out,
            tail=deque(self.tail),
            tail_bytes=self.tail_bytes,
        )


class LogShipper:
    """One run's stored output: appends chunks, keeps head + tail under the cap."""

    def __init__(self, *, run_id: uuid.UUID, max_bytes: int) -> None:
        self.run_id = run_id
        self.head_budget = max_bytes // 2
        self.tail_budget = max_bytes - self.head_budget
        # Tail chunks are dropped whole, oldest first: small enough that what is
        # dropped is a small part of the tail.
        self.tail_chunk_bytes = max(256, min(CHUNK_MAX_BYTES, self.tail_budget // 16))
        self._state = _State()

    @property
    def head_full(self) -> bool:
        """Whether further output goes to the tail (the reader may skip what it cannot keep)."""
        return self._state.head_full

    @property
    def left_out(self) -> int:
        return self._state.left_out

    def store(self, pieces: list[tuple[str, str]]) -> None:
        """Store new output, `(stream, text)` in the order it was read, in one transaction.

        Raises DatabaseError with nothing changed (call again with the same pieces).
        """
        state = self._state.copy()
        chunks: list[RunLogChunk] = []
        tail_pieces: list[tuple[str, str]] = []
        for stream, text in pieces:
            if stream not in STREAMS:
                raise ValueError(f"stream must be one of {', '.join(STREAMS)}")
            rest = text
            while rest and not state.head_full:
                room = min(self.head_budget - state.head_bytes, CHUNK_MAX_BYTES)
                piece, rest = utf8_split(rest, room)
                if piece:
                    chunks.append(self._chunk(state, stream, piece))
                    state.head_bytes += len(piece.encode("utf-8"))
                if rest and (state.head_bytes >= self.head_budget or not piece):
                    state.head_full = True
                    state.seq += 1
                    state.marker_seq = state.seq
            if rest:
                tail_pieces.append((stream, rest))
        deleted = self._tail_store(state, tail_pieces, chunks)
        self._write(state, chunks, deleted)

    def _tail_store(
        self, state: _State, pieces: list[tuple[str, str]], chunks: list[RunLogChunk]
    ) -> list[int]:
        """Add tail output to `chunks`; the seqs of older tail chunks it pushes out."""
        # Of this output only its last tail_budget bytes can be kept.
        excess = sum(len(text.encode("utf-8")) for _, text in pieces) - self.tail_budget
        deleted: list[int] = []
        for stream, text in pieces:
            rest = text
            if excess > 0:
                dropped, rest = utf8_split_after(rest, excess)
                size = len(dropped.encode("utf-8"))
                excess -= size
                state.left_out += size
            while rest:
                piece, rest = utf8_split(rest, self.tail_chunk_bytes)
                if not piece:  # a chunk limit below one character: keep it whole
                    piece, rest = rest, ""
                size = len(piece.encode("utf-8"))
                chunk = self._chunk(state, stream, piece)
                chunks.append(chunk)
                state.tail.append((chunk.seq, size))
                state.tail_bytes += size
                while state.tail_bytes > self.tail_budget:
                    seq, old = state.tail.popleft()
                    state.tail_bytes -= old
                    state.left_out += old
                    deleted.append(seq)
        return deleted

    def count_skipped(self, size: int) -> None:
        """Note output that was never read because the tail could not have kept it."""
        if size > 0:
            state = self._state.copy()
            state.left_out += size
            self._write(state, [], [])

    def _chunk(self, state: _State, stream: str, text: str) -> RunLogChunk:
        state.seq += 1
        return RunLogChunk(run_id=self.run_id, seq=state.seq, stream=stream, chunk=text)

    def _write(self, state: _State, chunks: list[RunLogChunk], deleted: list[int]) -> None:
        before = self._state
        new_chunks, gone = {c.seq for c in chunks}, set(deleted)
        # Chunks stored and dropped within this very call need no row at all.
        chunks = [c for c in chunks if c.seq not in gone]
        deleted = [seq for seq in deleted if seq not in new_chunks]
        marker_changed = state.left_out != before.left_out and state.marker_seq is not None
        if not (chunks or deleted or marker_changed):
            self._state = state
            return
        with transaction.atomic():
            _limit_lock_wait()
            if deleted:
                RunLogChunk.objects.filter(run_id=self.run_id, seq__in=deleted).delete()
            if chunks:
                RunLogChunk.objects.bulk_create(chunks, ignore_conflicts=True)
            if marker_changed and state.marker_seq is not None:
                RunLogChunk.objects.update_or_create(
                    run_id=self.run_id,
                    seq=state.marker_seq,
                    defaults={"stream": MARKER_STREAM, "chunk": marker_text(state.left_out)},
                )
        self._state = state


def run_metrics_store(
    *, run_id: uuid.UUID, rows: list[dict[str, Any]], series: list[dict[str, Any]]
) -> None:
    """Store new metric rows and the summary of the whole `series` on an executing run.

    Rows already stored (same step) are left as they are. Raises DatabaseError.
    """
    with transaction.atomic():
        _limit_lock_wait()
        RunMetric.objects.bulk_create(
            [RunMetric(run_id=run_id, **row) for row in metric_rows(rows, series)],
            batch_size=1000,
            ignore_conflicts=True,
        )
        summary = metrics_summary(series)
        if summary:
            TunixRun.objects.filter(pk=run_id, status__in=EXECUTING_STATUSES).update(**summary)


def log_catch_up(*, run_id: uuid.UUID, run_dir: Path, max_bytes: int) -> int:
    """Store the output in `run_dir`'s log files that never reached the database; bytes stored.

    For a run whose supervisor could not make its last writes (the database was
    down when the trainer ended): the reaper, on the run's own host, calls this
    before it records the kept outcome. Per stream, what is stored must be the
    start of the file; the rest is appended after the last chunk, within the cap.
    A log the cap already cut (a marker chunk exists) is left as it is: its
    gap cannot be placed again.
    """
    chunks = RunLogChunk.objects.filter(run_id=run_id).order_by("seq")
    stored: dict[str, list[str]] = {stream: [] for stream in STREAMS}
    last_seq, total = 0, 0
    for chunk in chunks.iterator(chunk_size=200):
        if chunk.stream == MARKER_STREAM:
            return 0
        stored.setdefault(chunk.stream, []).append(chunk.chunk)
        last_seq = chunk.seq
        total += len(chunk.chunk.encode("utf-8"))
    new: list[RunLogChunk] = []
    for stream in STREAMS:
        try:
            text = (run_dir / f"{stream}.log").read_bytes().decode("utf-8", errors="replace")
        except OSError:
            continue
        have = "".join(stored[stream])
        if not text.startswith(have):
            continue
        rest = text[len(have) :]
        while rest and total < max_bytes:
            piece, rest = utf8_split(rest, min(CHUNK_MAX_BYTES, max_bytes - total))
            if not piece:
                break
            last_seq += 1
            total += len(piece.encode("utf-8"))
            new.append(RunLogChunk(run_id=run_id, seq=last_seq, stream=stream, chunk=piece))
    if new:
        RunLogChunk.objects.bulk_create(new, ignore_conflicts=True)
    return sum(len(chunk.chunk.encode("utf-8")) for chunk in new)
