"""The admin shows runs read-only, output escaped, events inline."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client

from runs.models import RunLogChunk, RunStatus, TunixRun, TunixWorker
from runs.tests.factories import RunEventFactory, RunMetricFactory, TunixRunFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client_logged_in(client: Client) -> Client:
    user = User.objects.create_superuser("root", "root@example.com", "pw-for-tests-only")
    client.force_login(user)
    return client


def test_changelist_filters_search_and_no_add(admin_client_logged_in: Client) -> None:
    client = admin_client_logged_in
    run = TunixRunFactory.create(dataset_key="alpha-v1", status=RunStatus.FAILED, metrics_count=3)
    TunixRunFactory.create(dataset_key="beta-v1")
    RunMetricFactory.create_batch(3, run=run)
    response = client.get("/admin/runs/tunixrun/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "alpha-v1" in html and "beta-v1" in html
    assert "/admin/runs/tunixrun/add/" not in html

    def keys(**params: str) -> set[str]:
        listed = client.get("/admin/runs/tunixrun/", params).context["cl"].result_list
        return {r.dataset_key for r in listed}

    assert keys(status__exact="failed") == {"alpha-v1"}
    assert keys(q=str(run.run_id)) == {"alpha-v1"}
    assert keys(q="beta") == {"beta-v1"}
    assert keys(mode__exact="local") == set()
    assert keys(dataset_key="alpha-v1") == {"alpha-v1"}
    choices = response.context["cl"].filter_specs[2].lookup_choices
    assert choices == [("alpha-v1", "alpha-v1"), ("beta-v1", "beta-v1")]
    assert ">3<" in html  # the logged steps column


def test_detail_is_read_only_with_escaped_output_and_events(
    admin_client_logged_in: Client,
) -> None:
    client = admin_client_logged_in
    run = TunixRunFactory.create(stdout="<script>alert(1)</script>", stderr="a & b")
    RunEventFactory.create(run=run, reason="launched <b>now</b>")
    url = f"/admin/runs/tunixrun/{run.run_id}/change/"
    response = client.get(url)
    assert response.status_code == 200
    html = response.content.decode()
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert '<pre class="run-output">a &amp; b</pre>' in html
    assert "launched &lt;b&gt;now&lt;/b&gt;" in html
    assert 'name="_save"' not in html
    before = TunixRun.objects.values().get(pk=run.pk)
    response = client.post(url, {"status": "completed", "dataset_key": "changed"})
    assert response.status_code == 403
    assert client.get("/admin/runs/tunixrun/add/").status_code == 403
    assert (
        client.post(f"/admin/runs/tunixrun/{run.run_id}/delete/", {"post": "yes"}).status_code
        == 403
    )
    assert TunixRun.objects.values().get(pk=run.pk) == before


def test_bulk_delete_action_is_not_offered(admin_client_logged_in: Client) -> None:
    run = TunixRunFactory.create()
    response: Any = admin_client_logged_in.post(
        "/admin/runs/tunixrun/",
        {"action": "delete_selected", "_selected_action": [str(run.run_id)], "post": "yes"},
    )
    assert response.status_code in (200, 302, 403)
    assert TunixRun.objects.filter(pk=run.pk).exists()


def test_log_chunks_are_linked_from_the_run_and_listed_read_only(
    admin_client_logged_in: Client,
) -> None:
    client = admin_client_logged_in
    run = TunixRunFactory.create()
    other = TunixRunFactory.create()
    for seq in range(1, 4):
        RunLogChunk.objects.create(run=run, seq=seq, stream="stdout", chunk=f"<b>line {seq}</b>")
    RunLogChunk.objects.create(run=other, seq=1, stream="stderr", chunk="other run")
    html = client.get(f"/admin/runs/tunixrun/{run.run_id}/change/").content.decode()
    link = f"/admin/runs/runlogchunk/?run__run_id__exact={run.run_id}"
    assert f'href="{link}"' in html
    listing = client.get(link)
    assert listing.status_code == 200
    assert [c.seq for c in listing.context["cl"].result_list] == [1, 2, 3]
    body = listing.content.decode()
    assert "&lt;b&gt;line 1&lt;/b&gt;" in body and "<b>line 1</b>" not in body
    assert "other run" not in body
    chunk = RunLogChunk.objects.get(run=run, seq=2)
    detail = client.get(f"/admin/runs/runlogchunk/{chunk.pk}/change/")
    assert detail.status_code == 200
    assert '<pre class="run-output">&lt;b&gt;line 2&lt;/b&gt;</pre>' in detail.content.decode()
    assert (
        client.post(f"/admin/runs/runlogchunk/{chunk.pk}/delete/", {"post": "yes"}).status_code
        == 403
    )
    assert RunLogChunk.objects.count() == 4


def test_workers_are_listed_read_only(admin_client_logged_in: Client) -> None:
    client = admin_client_logged_in
    TunixWorker.objects.create(worker_id="w-1", host="box", pid=7, queues=["default"])
    response = client.get("/admin/runs/tunixworker/")
    assert response.status_code == 200
    assert "w-1" in response.content.decode()
    assert "/admin/runs/tunixworker/add/" not in response.content.decode()
    assert client.get("/admin/runs/tunixworker/w-1/change/").status_code == 200
    response = client.post("/admin/runs/tunixworker/w-1/change/", {"host": "changed"})
    assert response.status_code == 403
    assert client.post("/admin/runs/tunixworker/w-1/delete/", {"post": "yes"}).status_code == 403
    assert TunixWorker.objects.get().host == "box"
