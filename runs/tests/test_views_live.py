"""The live run page: its htmx poll (`runs:live`) with a cursor, and when it stops."""

from __future__ import annotations

import re
import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from accounts.tests.helpers import app_queries
from runs.metrics import metric_level
from runs.models import RunLogChunk, RunMetric, RunMode, RunStatus, TunixRun, TunixWorker
from runs.tests.factories import RunEventFactory, RunMetricFactory, TunixRunFactory

pytestmark = pytest.mark.django_db

HTMX = {"HX-Request": "true"}


def running_run(**fields: Any) -> TunixRun:
    now = timezone.now()
    defaults: dict[str, Any] = {
        "mode": RunMode.LOCAL,
        "status": RunStatus.RUNNING,
        "queue": "default",
        "worker_id": "w-1234",
        "supervisor_host": "gpu-box",
        "started_at": now - timedelta(seconds=75),
        "heartbeat_at": now - timedelta(seconds=1),
        "message": "Local execution in progress",
    }
    defaults.update(fields)
    return TunixRunFactory.create(**defaults)


def chunks(run: TunixRun, *texts: str, stream: str = "stdout", start: int = 1) -> None:
    for seq, text in enumerate(texts, start=start):
        RunLogChunk.objects.create(run=run, seq=seq, stream=stream, chunk=text)


def live(client: Client, run: TunixRun, **params: Any) -> str:
    response = client.get(reverse("runs:live", args=[run.run_id]), params, headers=HTMX)
    assert response.status_code == 200
    return response.content.decode()


def poller(html: str) -> str:
    match = re.search(r'<div id="run-live"[^>]*>', html)
    assert match, "no poller"
    return match.group(0)


def cursor(html: str) -> dict[str, str]:
    url = re.search(r'hx-get="([^"]+)"', poller(html))
    assert url, "the poller has no URL"
    query = url.group(1).split("?", 1)[1].replace("&amp;", "&")
    return dict(part.split("=", 1) for part in query.split("&"))


def test_a_running_run_page_polls_every_two_seconds_from_its_last_chunk(client: Client) -> None:
    run = running_run()
    chunks(run, "step 1 loss 2.0\n", "step 2 loss 1.5\n")
    html = client.get(reverse("runs:detail", args=[run.run_id])).content.decode()
    tag = poller(html)
    assert 'hx-trigger="every 2s, runs:changed from:body"' in tag
    assert cursor(html) == {"since_seq": "2", "status": "running"}
    log = html.split('data-testid="run:log"')[1].split("</pre>")[0]
    assert '<span class="runs-log-stdout" data-seq="1">step 1 loss 2.0\n</span>' in log
    assert 'data-testid="run:worker">w-1234 on gpu-box<' in html
    assert re.search(r'data-testid="run:elapsed">1 min \d\d s<', html)
    assert 'data-testid="run:heartbeat">' in html
    assert 'data-testid="run:cancel"' in html


@pytest.mark.parametrize(
    "status", [RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.TIMEOUT, RunStatus.CANCELLED]
)
def test_a_finished_run_page_does_not_poll_and_offers_no_cancel(
    client: Client, status: str
) -> None:
    run = TunixRunFactory.create(status=status, mode=RunMode.LOCAL)
    html = client.get(reverse("runs:detail", args=[run.run_id])).content.decode()
    assert "hx-trigger" not in poller(html)
    assert "hx-get" not in poller(html)
    assert 'data-testid="run:cancel"' not in html
    assert 'data-testid="run:log-panel"' not in html  # no chunks were stored


def test_the_poll_returns_only_chunks_after_the_cursor_and_moves_it(client: Client) -> None:
    run = running_run()
    chunks(run, "one\n", "two\n", "three\n")
    RunLogChunk.objects.create(run=run, seq=4, stream="stderr", chunk="warn\n")
    html = live(client, run, since_seq=2, status="running")
    appended = html.split('hx-swap-oob="beforeend:#run-log-lines"')[1].split("</pre>")[0]
    assert "one" not in appended and "two" not in appended
    assert '<span class="runs-log-stdout" data-seq="3">three\n</span>' in appended
    assert '<span class="runs-log-stderr" data-seq="4">warn\n</span>' in appended
    assert cursor(html)["since_seq"] == "4"
    # Nothing new: no append, the cursor stays (and no cache answers in place of the server).
    quiet: dict[str, Any] = {"since_seq": 4, "status": "running"}
    response = client.get(reverse("runs:live", args=[run.run_id]), quiet, headers=HTMX)
    assert "no-cache" in response["Cache-Control"]
    html = live(client, run, since_seq=4, status="running")
    assert "beforeend" not in html
    assert cursor(html)["since_seq"] == "4"
    assert "every 2s" in poller(html)


def test_a_quiet_poll_of_a_running_run_is_two_queries(client: Client) -> None:
    run = running_run(metrics_steps=2, final_loss=1.5)
    RunMetricFactory.create(run=run, step=1, loss=2.0)
    RunMetricFactory.create(run=run, step=2, loss=1.5)
    chunks(run, "a\n")
    url = reverse("runs:live", args=[run.run_id])
    params: dict[str, Any] = {"since_seq": 1, "status": "running", "steps": 2}
    # The poll's own queries; authentication's (session, user) are counted apart.
    with CaptureQueriesContext(connection) as queries:
        html = client.get(url, params, headers=HTMX).content.decode()
    assert len(app_queries(queries.captured_queries)) == 2  # the run, the chunks after the cursor
    # Only the moving fields come back: no chart, no events, no head.
    assert 'id="run-fields"' in html and 'hx-swap-oob="true"' in html
    assert 'id="run-metrics"' not in html and 'id="run-events"' not in html
    assert 'id="run-head"' not in html
    # New steps: the metrics (and the loss curve) come back, one query more.
    RunMetricFactory.create(run=run, step=3, loss=1.0)
    TunixRun.objects.filter(pk=run.pk).update(metrics_steps=3, final_loss=1.0)
    with CaptureQueriesContext(connection) as queries:
        html = client.get(url, params, headers=HTMX).content.decode()
    assert len(app_queries(queries.captured_queries)) == 3
    assert 'id="run-metrics"' in html and 'data-testid="run:loss-chart"' in html
    assert cursor(html)["steps"] == "3"


def test_the_poll_of_a_long_running_run_redraws_its_thinned_chart(client: Client) -> None:
    run = running_run(metrics_steps=3000, metrics_count=3000, final_loss=0.1)
    RunMetric.objects.bulk_create(
        RunMetric(run=run, step=step, loss=300.0 / step, level=metric_level(step - 1))
        for step in range(1, 3001)
    )
    url = reverse("runs:live", args=[run.run_id])
    params: dict[str, Any] = {"since_seq": 0, "status": "running", "steps": 2999}
    with CaptureQueriesContext(connection) as queries:
        html = client.get(url, params, headers=HTMX).content.decode()
    (metrics_sql,) = [q["sql"] for q in queries.captured_queries if "runs_runmetric" in q["sql"]]
    assert '"level" >=' in metrics_sql  # a level of the series, not every step
    chart = html.split('data-testid="run:loss-chart"')[1].split("</figure>")[0]
    assert "from 300.0000 to 0.1000" in chart
    assert "Metrics by step" not in html


def test_a_pending_run_shows_its_queue_position_and_whether_a_worker_serves_it(
    client: Client,
) -> None:
    now = timezone.now()
    for i in range(2):
        TunixRunFactory.create(
            status=RunStatus.PENDING, queue="default", created_at=now - timedelta(seconds=10 - i)
        )
    run = TunixRunFactory.create(
        status=RunStatus.PENDING, mode=RunMode.LOCAL, queue="default", created_at=now
    )
    with CaptureQueriesContext(connection) as queries:
        html = live(client, run, since_seq=0, status="pending")
    # run, chunks, queue position, live workers (authentication's queries counted apart)
    assert len(app_queries(queries.captured_queries)) <= 4
    assert 'data-testid="run:queue-position">3<' in html
    assert 'data-testid="run:no-worker"' in html
    TunixWorker.objects.create(
        worker_id="w-1", host="box", pid=1, queues=["default"], heartbeat_at=now
    )
    html = live(client, run, since_seq=0, status="pending")
    assert 'data-testid="run:no-worker"' not in html
    assert 'data-testid="run:elapsed"' in html


def test_the_poll_of_a_run_that_ended_has_no_trigger_and_shows_the_final_state(
    client: Client,
) -> None:
    run = running_run(
        status=RunStatus.COMPLETED,
        exit_code=0,
        message="Training completed",
        completed_at=timezone.now(),
        duration_seconds=80.0,
        stdout="step 1 loss 2.0\n",
    )
    chunks(run, "step 1 loss 2.0\n", "done\n")
    RunEventFactory.create(run=run, from_status="running", to_status="completed", reason="exit 0")
    html = live(client, run, since_seq=1, status="running")
    tag = poller(html)
    assert "hx-trigger" not in tag and "hx-get" not in tag
    assert '<span class="runs-log-stdout" data-seq="2">done\n</span>' in html
    for region in ("run-head", "run-fields", "run-events", "run-output", "run-metrics"):
        assert f'id="{region}"' in html, region
    assert '<span class="status-badge status-completed" data-testid="run:status">' in html
    assert 'data-testid="run:cancel"' not in html
    assert 'data-testid="run:duration">1 min 20 s<' in html
    assert f'href="/runs/{run.run_id}/logs/stdout.log"' in html


def test_a_cancel_requested_run_keeps_polling_without_a_cancel_button(client: Client) -> None:
    run = running_run(status=RunStatus.CANCEL_REQUESTED)
    html = live(client, run, since_seq=0, status="running")
    assert "every 2s" in poller(html)
    assert '<span class="status-badge status-cancel_requested" data-testid="run:status">' in html
    assert 'data-testid="run:cancel"' not in html


def test_log_text_with_html_in_it_is_escaped(client: Client) -> None:
    run = running_run()
    chunks(run, "<script>alert(1)</script>\n", "</pre><img src=x onerror=alert(2)>\n")
    page = client.get(reverse("runs:detail", args=[run.run_id])).content.decode()
    poll = live(client, run, since_seq=1, status="running")
    for html in (page, poll):
        assert "<script>alert" not in html and "<img src=x" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&lt;/pre&gt;&lt;img src=x onerror=alert(2)&gt;" in poll


def test_poll_errors(client: Client) -> None:
    run = running_run()
    url = reverse("runs:live", args=[run.run_id])
    for params in ({"since_seq": "-1"}, {"since_seq": "x"}, {"status": "bogus"}):
        assert client.get(url, params, headers=HTMX).status_code == 400
    assert client.get(f"/runs/{uuid.uuid4()}/live/", headers=HTMX).status_code == 404
    # Without htmx it is the page itself.
    response = client.get(url)
    assert response.status_code == 302 and response["Location"] == f"/runs/{run.run_id}/"
    assert client.post(url, headers=HTMX).status_code == 405


def test_the_page_opens_on_the_tail_of_a_long_log(client: Client) -> None:
    run = running_run()
    chunks(run, *[f"line {i}\n" for i in range(1, 251)])
    html = client.get(reverse("runs:detail", args=[run.run_id])).content.decode()
    log = html.split('data-testid="run:log"')[1].split("</pre>")[0]
    assert 'data-seq="250"' in log and 'data-seq="51"' in log
    assert 'data-seq="50"' not in log
    assert cursor(html)["since_seq"] == "250"
