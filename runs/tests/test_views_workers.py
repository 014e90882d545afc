"""The workers page (`runs:workers`): live workers and queue depths."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from runs.models import RunStatus, TunixWorker
from runs.tests.factories import TunixRunFactory

pytestmark = pytest.mark.django_db


def worker(worker_id: str, **fields: Any) -> TunixWorker:
    now = timezone.now()
    defaults: dict[str, Any] = {
        "host": "box-a",
        "pid": 100,
        "queues": ["default"],
        "started_at": now - timedelta(minutes=5),
        "heartbeat_at": now - timedelta(seconds=2),
    }
    defaults.update(fields)
    return TunixWorker.objects.create(worker_id=worker_id, **defaults)


def test_workers_page_lists_live_workers_with_their_run_and_heartbeat(
    client: Client, settings: Any
) -> None:
    settings.TUNIX_QUEUES = ["default", "gpu"]
    run = TunixRunFactory.create(status=RunStatus.RUNNING, worker_id="w-gpu")
    worker("w-gpu", host="gpu-<box>", queues=["gpu", "default"], current_run_id=run.run_id)
    worker("w-idle", host="cpu-box")
    worker("w-stopped", stopped_at=timezone.now())
    worker("w-dead", heartbeat_at=timezone.now() - timedelta(hours=1))
    TunixRunFactory.create_batch(2, status=RunStatus.PENDING, queue="gpu")
    response = client.get(reverse("runs:workers"))
    assert response.status_code == 200
    html = response.content.decode()
    assert "Live workers (2)" in html
    assert 'data-testid="workers:row-w-gpu"' in html and 'data-testid="workers:row-w-idle"' in html
    assert "w-stopped" not in html and "w-dead" not in html
    assert "gpu-&lt;box&gt;" in html
    assert '<span class="badge">gpu</span> <span class="badge">default</span>' in html
    assert f'href="/runs/{run.run_id}/" data-testid="workers:current-w-gpu"' in html
    row = html.split('data-testid="workers:row-w-idle"')[1].split("</tr>")[0]
    assert "idle" in row
    assert 'data-testid="workers:heartbeat-w-idle">2.' in html
    assert 'data-testid="workers:depth-gpu">2<' in html
    assert 'data-testid="workers:depth-default">0<' in html
    # The nav links here, marked as the current page.
    assert '<a href="/workers/" aria-current="page">Workers</a>' in html
    # It refreshes itself: the htmx request gets only the live part.
    fragment = client.get(reverse("runs:workers"), headers={"HX-Request": "true"})
    body = fragment.content.decode()
    assert body.lstrip().startswith('<div id="workers-live"')
    assert 'hx-trigger="every 5s"' in body


def test_workers_page_without_workers_says_how_to_start_one(client: Client) -> None:
    html = client.get(reverse("runs:workers")).content.decode()
    assert 'data-testid="workers:empty"' in html
    assert "manage.py run_worker" in html
    assert client.get("/workers").status_code == 301


def test_every_page_links_to_the_workers_page(client: Client) -> None:
    html = client.get(reverse("runs:home")).content.decode()
    assert '<a href="/workers/">Workers</a>' in html
    assert '<a href="/" aria-current="page">Runs</a>' in html
