"""GET /metrics: the run registry in Prometheus text format (version 0.0.4).

Every value is computed from the database at scrape time, so any server process
on any machine answers the same (docs/decisions.md#metrics-endpoint):

- `tunix_runs_total{status, mode}` (counter): finished runs by final status. A
  finished run never changes and is never deleted, so each series only grows.
- `tunix_runs_in_progress{status, mode}` (gauge): pending, running and
  cancel_requested runs.
- `tunix_runs_duration_seconds{mode, status}` (histogram): durations of the
  finished runs, from one aggregate query.
- `tunix_queue_depth{queue}` (gauge): pending runs per configured queue.
- `tunix_workers_live` (gauge): workers that beat within a lease.
- `tunix_db_write_latency_ms` (histogram): one timed write per scrape, the
  histogram kept in the database (`db_write_probe`).

The format is written here (about fifty lines) rather than with prometheus_client:
that library's value lies in in-process counters, which are exactly what this
endpoint must not use.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable

from django.db import DatabaseError, transaction
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from django.views.decorators.http import require_GET

from accounts.access import AccessDenied, access_denied_response, require
from accounts.roles import VIEW_RUNS
from runs import selectors
from runs.models import TERMINAL_STATUSES, DbWriteProbe, RunMode, RunStatus

logger = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# From a one-second dry-run to a day-long fine-tune.
DURATION_BUCKETS_SECONDS = (0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 14400.0, 86400.0)
DB_LATENCY_BUCKETS_MS = (0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0)

Labels = dict[str, str]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


def _sample(name: str, labels: Labels, value: float) -> str:
    if not labels:
        return f"{name} {_number(value)}"
    inner = ",".join(f'{key}="{_escape(val)}"' for key, val in labels.items())
    return f"{name}{{{inner}}} {_number(value)}"


def _family(name: str, kind: str, help_text: str, samples: Iterable[str]) -> list[str]:
    return [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", *samples]


def _histogram(
    name: str,
    labels: Labels,
    bounds: tuple[float, ...],
    cumulative: list[int],
    total: float,
    count: int,
) -> list[str]:
    lines = [
        _sample(f"{name}_bucket", {**labels, "le": _number(bound)}, n)
        for bound, n in zip(bounds, cumulative, strict=True)
    ]
    lines.append(_sample(f"{name}_bucket", {**labels, "le": "+Inf"}, count))
    lines.append(_sample(f"{name}_sum", labels, total))
    lines.append(_sample(f"{name}_count", labels, count))
    return lines


def db_write_probe() -> DbWriteProbe:
    """Time one committed one-row write and add it to the stored histogram; the histogram.

    The timed write is an UPDATE of the probe row's `probed_at` in its own
    transaction (on PostgreSQL it includes the WAL flush of the commit): what a
    small run write (an event, a heartbeat) costs from this process now. A second
    small transaction adds the observation under a row lock, so concurrent
    scrapes from any process add up.
    """
    DbWriteProbe.objects.get_or_create(pk=1)
    started = time.perf_counter()
    with transaction.atomic():
        DbWriteProbe.objects.filter(pk=1).update(probed_at=timezone.now())
    latency = (time.perf_counter() - started) * 1000.0
    with transaction.atomic():
        probe = DbWriteProbe.objects.select_for_update().get(pk=1)
        counts = list(probe.bucket_counts)
        if len(counts) != len(DB_LATENCY_BUCKETS_MS):
            # The bounds changed: start the histogram again.
            counts, probe.sum_ms, probe.count = [0] * len(DB_LATENCY_BUCKETS_MS), 0.0, 0
        probe.bucket_counts = [
            n + (1 if latency <= bound else 0)
            for n, bound in zip(counts, DB_LATENCY_BUCKETS_MS, strict=True)
        ]
        probe.sum_ms += latency
        probe.count += 1
        probe.save(update_fields=["bucket_counts", "sum_ms", "count"])
    return probe


def metrics_text() -> str:
    """The whole exposition: four reads, and the probe's two one-row writes."""
    counts = selectors.run_counts()
    finished: dict[tuple[str, str], int] = {
        (status, mode): 0 for status in sorted(TERMINAL_STATUSES) for mode in RunMode.values
    }
    active: dict[tuple[str, str], int] = {
        (status, mode): 0
        for status in (RunStatus.PENDING, RunStatus.RUNNING, RunStatus.CANCEL_REQUESTED)
        for mode in RunMode.values
    }
    for status, mode, n in counts:
        (finished if status in TERMINAL_STATUSES else active)[(status, mode)] = n
    lines = _family(
        "tunix_runs_total",
        "counter",
        "Finished runs by final status and mode (all processes; from the database).",
        (
            _sample("tunix_runs_total", {"status": s, "mode": m}, n)
            for (s, m), n in finished.items()
        ),
    )
    lines += _family(
        "tunix_runs_in_progress",
        "gauge",
        "Runs pending, running or being cancelled, by status and mode.",
        (
            _sample("tunix_runs_in_progress", {"status": s, "mode": m}, n)
            for (s, m), n in active.items()
        ),
    )
    durations: list[str] = []
    for h in selectors.run_duration_histograms(bounds=DURATION_BUCKETS_SECONDS):
        durations += _histogram(
            "tunix_runs_duration_seconds",
            {"mode": h.mode, "status": h.status},
            DURATION_BUCKETS_SECONDS,
            h.bucket_counts,
            h.sum_seconds,
            h.count,
        )
    lines += _family(
        "tunix_runs_duration_seconds",
        "histogram",
        "Durations of finished runs by mode and final status.",
        durations,
    )
    lines += _family(
        "tunix_queue_depth",
        "gauge",
        "Pending runs per queue.",
        (
            _sample("tunix_queue_depth", {"queue": q}, n)
            for q, n in selectors.queue_depths().items()
        ),
    )
    lines += _family(
        "tunix_workers_live",
        "gauge",
        "Workers that sent a heartbeat within a lease and have not stopped.",
        [_sample("tunix_workers_live", {}, len(selectors.workers_live()))],
    )
    probe = db_write_probe()
    lines += _family(
        "tunix_db_write_latency_ms",
        "histogram",
        "Latency of a committed one-row write, timed once per scrape by whichever "
        "process answered it (stored in the database, so every process reports all).",
        _histogram(
            "tunix_db_write_latency_ms",
            {},
            DB_LATENCY_BUCKETS_MS,
            list(probe.bucket_counts),
            probe.sum_ms,
            probe.count,
        ),
    )
    return "\n".join(lines) + "\n"


@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    """The Prometheus scrape target (GET /metrics): a viewer's bearer token (or session)."""
    try:
        require(request, VIEW_RUNS)
    except AccessDenied as exc:
        return access_denied_response(exc)
    try:
        body = metrics_text()
    except DatabaseError:
        logger.exception("/metrics: database unavailable")
        return HttpResponse("database unavailable\n", status=503, content_type=CONTENT_TYPE)
    response = HttpResponse(body, content_type=CONTENT_TYPE)
    response["Cache-Control"] = "no-store"
    return response
