"""The hot-read path answers exactly what Django would, and hands everything else to Django."""

from __future__ import annotations

import io
import sys
import time
from collections.abc import Iterable
from datetime import timedelta
from typing import Any
from wsgiref.types import StartResponse, WSGIEnvironment

import pytest
from django.core.handlers.wsgi import WSGIHandler
from django.db import DEFAULT_DB_ALIAS, connection, connections
from django.test import Client, override_settings
from django.utils import timezone

from runs.models import RunMode, RunStatus, TunixRun
from runs.tests.factories import RunMetricFactory, TunixRunFactory
from traces.tests.factories import TraceFactory
from tunix_registry.hotpath import HotReads, hot_reads

pytestmark = pytest.mark.django_db


class Inner:
    """The application behind the hot path: records whether a request reached it."""

    def __init__(self) -> None:
        self.paths: list[str] = []

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        self.paths.append(environ["PATH_INFO"])
        start_response("299 Passed On", [("Content-Type", "text/plain")])
        return [b"django"]


def _environ(path: str, *, method: str = "GET", host: str = "testserver") -> WSGIEnvironment:
    path_info, _, query = path.partition("?")
    return {
        "REQUEST_METHOD": method,
        "PATH_INFO": path_info,
        "QUERY_STRING": query,
        "SCRIPT_NAME": "",
        "SERVER_NAME": "testserver",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_HOST": host,
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(b""),
        "wsgi.errors": sys.stderr,
        "wsgi.version": (1, 0),
        "wsgi.multithread": False,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }


def _call(app: Any, path: str, **kwargs: Any) -> tuple[str, dict[str, str], bytes]:
    seen: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        seen.update(status=status, headers=dict(headers))
        return lambda data: None

    chunks = app(_environ(path, **kwargs), start_response)
    body = b"".join(chunks)
    if hasattr(chunks, "close"):
        chunks.close()
    return seen["status"], seen["headers"], body


@pytest.fixture
def registry() -> dict[str, str]:
    """Traces and runs shaped to reach every branch of the four bodies."""
    now = timezone.now().replace(microsecond=0)
    traces = [
        TraceFactory.create(created_at=now - timedelta(seconds=i, microseconds=i * 7))
        for i in range(25)
    ]
    TraceFactory.create(meta={"source": "ünïcode ✓", "n": [1, 2.5, None]}, created_at=now)
    runs = [
        TunixRunFactory.create(
            started_at=now - timedelta(seconds=i // 2, microseconds=(i % 3) * 250_001),
            status=(RunStatus.COMPLETED, RunStatus.FAILED)[i % 2],
            mode=(RunMode.DRY_RUN, RunMode.LOCAL)[i % 4 == 0],
            dataset_key=f"k{i % 3}-v1",
            stdout="línea ✓\n" * (i % 3),
        )
        for i in range(240)
    ]
    running = TunixRunFactory.create(status=RunStatus.RUNNING, started_at=now)
    metric = RunMetricFactory.create()
    TunixRun.objects.filter(pk=metric.run_id).update(
        metrics_steps=10, final_loss=0.5, best_eval_loss=None, tokens_per_second=1234.5
    )
    first = Client().get("/api/tunix/runs?limit=3").json()["pagination"]["next_cursor"]
    return {
        "trace": str(traces[3].id),
        "run": str(runs[5].run_id),
        "running": str(running.run_id),
        "metrics": str(metric.run_id),
        "cursor": first,
    }


ANSWERED = [
    "/api/traces",
    "/api/traces?limit=5&offset=3",
    "/api/traces?offset=24",
    "/api/traces?offset=500",
    "/api/traces/{trace}",
    "/api/tunix/runs",
    "/api/tunix/runs?limit=100",
    "/api/tunix/runs?status=failed&dataset_key=k1-v1",
    "/api/tunix/runs?mode=local&status=",
    "/api/tunix/runs?offset=201&limit=10",
    "/api/tunix/runs?offset=230&limit=50&mode=dry-run",
    "/api/tunix/runs?cursor={cursor}",
    "/api/tunix/runs?cursor={cursor}&status=completed&offset=7",
    "/api/tunix/runs?dataset_key=nope-v1",
    "/api/tunix/runs/{run}",
    "/api/tunix/runs/{running}",
    "/api/tunix/runs/{metrics}",
]


def test_answers_byte_for_byte_what_django_answers(
    registry: dict[str, str], client: Client
) -> None:
    # One test over every case: the registry takes longer to build than to read.
    for template in ANSWERED:
        path = template.format(**registry)
        inner = Inner()
        status, headers, body = _call(HotReads(inner), path)
        assert inner.paths == [], f"{path} was passed on, not answered"
        expected = client.get(path)
        assert status == "200 OK" == f"{expected.status_code} {expected.reason_phrase}", path
        assert body == expected.content, path
        assert headers == dict(expected.headers), path


PASSED_ON = [
    "/api/traces/00000000-0000-4000-8000-000000000000",  # unknown: Django's 404 message
    "/api/tunix/runs/00000000-0000-4000-8000-000000000000",
    "/api/traces/not-a-uuid",
    "/api/traces/{upper_trace}",  # not the canonical form the URL converter takes
    "/api/traces/{trace}?x=1",
    "/api/traces/{trace}/",
    "/api/traces/",
    "/api/traces?limit=0",
    "/api/traces?limit=101",
    "/api/traces?limit=abc",
    "/api/traces?limit=+5",
    "/api/traces?offset=-1",
    "/api/traces?offset=100000000000000000000",
    "/api/traces?limit=5&limit=6",
    "/api/traces?page=2",
    "/api/traces?limit=%ff",
    "/api/tunix/runs?cursor=bogus",
    "/api/tunix/runs?status=failed&status=completed",
    "/api/tunix/runs?sort=asc",
    "/api/traces/compare?base={trace}&other={trace}",
    "/api/health",
    "/traces/",
]


def test_passes_everything_else_to_django(registry: dict[str, str]) -> None:
    for template in PASSED_ON:
        path = template.format(upper_trace=registry["trace"].upper(), **registry)
        inner = Inner()
        status, _, body = _call(HotReads(inner), path)
        assert (status, body) == ("299 Passed On", b"django"), path
        assert inner.paths == [path.partition("?")[0]], path


@pytest.mark.parametrize("method", ["POST", "HEAD", "PUT", "DELETE", "PATCH"])
def test_only_get_is_answered(method: str) -> None:
    path = f"/api/traces/{TraceFactory.create().id}"
    inner = Inner()
    _call(HotReads(inner), path, method=method)
    assert inner.paths == [path]


# transaction=True: the real handler's request signals would close a connection
# left inside the test's transaction.
@pytest.mark.django_db(transaction=True)
def test_a_host_outside_allowed_hosts_gets_djangos_400() -> None:
    TraceFactory.create()
    app = HotReads(WSGIHandler())
    status, _, _ = _call(app, "/api/traces", host="evil.example")
    assert status.startswith("400")
    status, _, _ = _call(app, "/api/traces", host="testserver:8000")
    assert status == "200 OK"


def test_unusual_security_settings_leave_everything_to_django() -> None:
    with override_settings(SECURE_SSL_REDIRECT=True):
        inner = Inner()
        _call(HotReads(inner), "/api/traces")
    assert inner.paths == ["/api/traces"]


def test_turned_off_by_setting() -> None:
    inner = Inner()
    with override_settings(HOT_READS=False):
        assert hot_reads(inner) is inner
    assert isinstance(hot_reads(inner), HotReads)


def test_a_connection_that_saw_an_error_goes_through_django_first() -> None:
    inner = Inner()
    connection.ensure_connection()
    connection.errors_occurred = True
    try:
        _call(HotReads(inner), "/api/traces")
    finally:
        connection.errors_occurred = False
    assert inner.paths == ["/api/traces"]


@pytest.mark.postgres_only
@pytest.mark.django_db(transaction=True)
def test_a_dead_connection_falls_back_to_django_which_reconnects() -> None:
    if connection.vendor != "postgresql":
        pytest.skip("closing SQLite's in-memory test database would drop it")
    trace = TraceFactory.create()
    app = HotReads(WSGIHandler())
    assert _call(app, f"/api/traces/{trace.id}")[0] == "200 OK"
    # The server side of the connection goes away (a PostgreSQL restart, an idle
    # timeout): the next read fails inside the hot path.
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        (pid,) = cursor.fetchone()
    other = connections.create_connection(DEFAULT_DB_ALIAS)
    with other.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(%s)", [pid])
    other.close()
    status, _, body = _call(app, f"/api/traces/{trace.id}")
    assert status == "200 OK"
    assert str(trace.id).encode() in body
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        assert cursor.fetchone()[0] != pid


@pytest.mark.postgres_only
@pytest.mark.django_db(transaction=True)
def test_an_obsolete_connection_is_replaced_as_django_would() -> None:
    if connection.vendor != "postgresql":
        pytest.skip("SQLite's in-memory test database is never recycled")
    trace = TraceFactory.create()
    app = HotReads(WSGIHandler())
    assert _call(app, f"/api/traces/{trace.id}")[0] == "200 OK"
    old = connection.connection
    connection.close_at = time.monotonic() - 1  # past CONN_MAX_AGE
    status, _, _ = _call(app, f"/api/traces/{trace.id}")
    assert status == "200 OK"
    assert connection.connection is not old
