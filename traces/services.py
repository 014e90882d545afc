"""Everything that writes traces and scores.

The API, the pages and `manage.py import_traces` call these functions; none of
them creates a Trace or Score row on its own. Payloads given here are already
normalised by `traces.schemas` (one schema, three entry points).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import IO, TYPE_CHECKING, Any, NamedTuple

from django.db import connection, transaction
from django.utils import timezone

from traces.models import Score, Trace
from traces.schemas import TraceInvalid, trace_payload_dump, trace_payload_validate_json
from tunix_registry.timestamps import utc_iso

if TYPE_CHECKING:
    from django.contrib.auth.models import User

BASELINE = "baseline"


class TraceCreated(NamedTuple):
    """What was inserted for one trace (what the create endpoints answer)."""

    id: uuid.UUID
    created_at: datetime
    trace_version: str


_COLUMNS = ("id", "created_at", "trace_version", "payload", "created_by_id")
# Below this many rows a plain INSERT costs PostgreSQL fewer round trips than COPY.
_COPY_FROM_ROWS = 8
# PostgreSQL accepts at most 65,535 parameters in one statement.
_MAX_ROWS_PER_STATEMENT = 65_535 // len(_COLUMNS)


def _uuid4_many(count: int) -> list[uuid.UUID]:
    """`count` random (version 4) UUIDs from one read of the OS's randomness.

    uuid.uuid4() makes one getrandom() call per id, a noticeable share of an
    import's time; the ids are the same kind either way.
    """
    raw = os.urandom(16 * count)
    return [uuid.UUID(bytes=raw[i : i + 16], version=4) for i in range(0, 16 * count, 16)]


def _insert(payloads: list[dict[str, Any]], created_by: User | None) -> list[TraceCreated]:
    """INSERT normalised payloads, one statement per batch; return what was inserted.

    Like bulk_create, but without the ORM's per-field preparation and model
    instances, which dominate bulk_create's cost for JSON rows. The JSON text
    is serialised by pydantic-core; all rows get the same `created_at`.
    On PostgreSQL a batch of more than a few rows is one `COPY ... FROM STDIN`;
    otherwise a multi-row VALUES list, split where the backend limits the
    parameters of a statement (SQLite). Every row is credited to `created_by`
    (None: anonymous). Callers own the transaction.
    """
    now = timezone.now()
    creator = created_by.pk if created_by is not None else None
    created = [
        TraceCreated(trace_id, now, p["trace_version"])
        for trace_id, p in zip(_uuid4_many(len(payloads)), payloads, strict=True)
    ]
    if not created:
        return created
    texts = [trace_payload_dump(p) for p in payloads]
    table = connection.ops.quote_name(Trace._meta.db_table)
    columns = ", ".join(_COLUMNS)
    with connection.cursor() as cursor:
        postgresql = connection.vendor == "postgresql"
        if postgresql and len(created) > _COPY_FROM_ROWS:
            # COPY: no SQL text or parameter list growing with the batch to build,
            # quote or parse; psycopg's C extension formats the rows. Measured
            # against the multi-row INSERT below on the same PostgreSQL (median
            # of 20 transactions, three rounds): 1,000 traces 18-24 ms against
            # 29-31 ms (1.3-1.6x), 100 traces 2.5-3.2 ms against 3.1-4.3 ms.
            # test_small_and_large_batches_store_the_same_payloads covers both.
            with cursor.cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
                for row, text in zip(created, texts, strict=True):
                    copy.write_row((row.id, now, row.trace_version, text, creator))
            return created
        stamp = connection.ops.adapt_datetimefield_value(now)
        native_uuid = connection.features.has_native_uuid_field
        placeholders = "(%s, %s, %s, %s::jsonb, %s)" if postgresql else "(%s, %s, %s, %s, %s)"
        per_statement = min(
            connection.ops.bulk_batch_size(list(_COLUMNS), created), _MAX_ROWS_PER_STATEMENT
        )
        for start in range(0, len(created), per_statement):
            stop = min(start + per_statement, len(created))
            params: list[Any] = []
            for row, text in zip(created[start:stop], texts[start:stop], strict=True):
                params += (
                    row.id if native_uuid else row.id.hex,
                    stamp,
                    row.trace_version,
                    text,
                    creator,
                )
            values = ", ".join([placeholders] * (stop - start))
            cursor.execute(
                f"INSERT INTO {table} ({columns}) VALUES {values}",  # noqa: S608
                params,
            )
    return created


def trace_create(*, payload: dict[str, Any], created_by: User | None = None) -> TraceCreated:
    """Store one normalised trace, created by `created_by` (None: anonymous)."""
    return _insert([payload], created_by)[0]


def trace_create_batch(
    *, payloads: list[dict[str, Any]], created_by: User | None = None
) -> list[TraceCreated]:
    """Store normalised traces all-or-nothing in one transaction.

    Every row of the batch carries the same insertion time and creator; the
    result is exactly what was inserted (no re-read).
    """
    with transaction.atomic():
        return _insert(payloads, created_by)


# --- Scoring ---------------------------------------------------------------


def baseline_score(*, payload: dict[str, Any], scored_at: datetime) -> tuple[float, dict[str, Any]]:
    """The baseline scorer: step count and step length, each worth 50 points (Python `round`)."""
    steps = payload["steps"]
    n = len(steps)
    total_chars = sum(len(step["content"]) for step in steps)
    avg_len = total_chars / n
    step_score = min(n / 10, 1.0) * 50
    length_score = min(avg_len / 500, 1.0) * 50
    score = round(step_score + length_score, 2)
    details = {
        "step_count": n,
        "avg_step_length": round(avg_len, 2),
        "total_chars": total_chars,
        "step_score": round(step_score, 2),
        "length_score": round(length_score, 2),
        "criteria": BASELINE,
        "scored_at": utc_iso(scored_at),
    }
    return score, details


def trace_score(*, trace_id: uuid.UUID, criteria: str = BASELINE) -> Score:
    """Score a trace and record the result (every call adds a row).

    Raises `Trace.DoesNotExist` for an unknown id.
    """
    if criteria != BASELINE:
        raise ValueError(f"unknown criteria {criteria!r}")
    payload = Trace.objects.filter(pk=trace_id).values_list("payload", flat=True).first()
    if payload is None:
        raise Trace.DoesNotExist(f"Trace {trace_id} not found")
    now = timezone.now()
    score, details = baseline_score(payload=payload, scored_at=now)
    return Score.objects.create(
        id=uuid.uuid4(),
        trace_id=trace_id,
        criteria=criteria,
        score=score,
        details=details,
        created_at=now,
    )


# --- Importing JSONL -------------------------------------------------------


@dataclass(frozen=True)
class Rejection:
    line: int
    reason: str


@dataclass
class ImportResult:
    created: int = 0
    rejected: int = 0
    lines: int = 0
    # The first `keep_rejections` rejections (all are passed to `on_reject`).
    rejections: list[Rejection] = field(default_factory=list)
    # True when --all-or-nothing discarded the good lines because of a bad one.
    discarded: bool = False


def _lines_bounded(stream: IO[bytes], max_bytes: int) -> Iterator[tuple[bytes | None, int]]:
    """Yield (line, bytes consumed) with at most `max_bytes + 1` bytes held at once.

    A longer line yields (None, consumed) after its remainder is skipped, so a
    file with one enormous line cannot exhaust memory.
    """
    while True:
        line = stream.readline(max_bytes + 1)
        if not line:
            return
        consumed = len(line)
        if len(line) > max_bytes and not line.endswith(b"\n"):
            while True:
                rest = stream.readline(1 << 16)
                consumed += len(rest)
                if not rest or rest.endswith(b"\n"):
                    break
            yield None, consumed
        else:
            yield line, consumed


def trace_import(
    *,
    stream: IO[bytes],
    batch_size: int = 1000,
    all_or_nothing: bool = False,
    max_line_bytes: int,
    on_reject: Callable[[Rejection], None] | None = None,
    on_progress: Callable[[int], object] | None = None,
    keep_rejections: int = 200,
    created_by: User | None = None,
) -> ImportResult:
    """Import a JSONL stream of traces, one trace per line, in constant memory.

    Each line goes through the API's schema; blank lines are skipped. Good
    lines are inserted `batch_size` at a time. By default a bad line is
    reported and the good ones are kept; with `all_or_nothing` the whole import
    runs in one transaction that is rolled back if any line was rejected
    (inserting stops at the first bad line, validation goes on to report every
    bad line). `on_progress` receives the bytes consumed since its last call.
    Every trace is credited to `created_by` (None: anonymous, or a command
    without `--as`).
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    result = ImportResult()
    pending: list[dict[str, Any]] = []
    pending_bytes = 0

    def reject(line_no: int, reason: str) -> None:
        rejection = Rejection(line=line_no, reason=reason)
        result.rejected += 1
        if len(result.rejections) < keep_rejections:
            result.rejections.append(rejection)
        if on_reject is not None:
            on_reject(rejection)

    def flush() -> None:
        nonlocal pending_bytes
        if pending and not (all_or_nothing and result.rejected):
            with transaction.atomic():
                _insert(pending, created_by)
            result.created += len(pending)
        pending.clear()
        if on_progress is not None and pending_bytes:
            on_progress(pending_bytes)
        pending_bytes = 0

    def run() -> None:
        nonlocal pending_bytes
        for line_no, (line, consumed) in enumerate(_lines_bounded(stream, max_line_bytes), 1):
            result.lines = line_no
            pending_bytes += consumed
            if line is None:
                reject(line_no, f"line exceeds maximum of {max_line_bytes} bytes")
            elif line.strip():
                try:
                    payload = trace_payload_validate_json(line)
                except TraceInvalid as exc:
                    reject(line_no, str(exc))
                else:
                    if not (all_or_nothing and result.rejected):
                        pending.append(payload)
            if len(pending) >= batch_size or (not pending and pending_bytes >= 1 << 20):
                flush()
        flush()

    if all_or_nothing:
        with transaction.atomic():
            run()
            if result.rejected:
                result.discarded = True
                result.created = 0
                transaction.set_rollback(True)
    else:
        run()
    return result
