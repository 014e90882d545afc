"""The admin shows runs read-only, output escaped, events inline."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client

from runs.models import RunStatus, TunixRun
from runs.tests.factories import RunEventFactory, RunMetricFactory, TunixRunFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client_logged_in(client: Client) -> Client:
    user = User.objects.create_superuser("root", "root@example.com", "pw-for-tests-only")
    client.force_login(user)
    return client


def test_changelist_filters_search_and_no_add(admin_client_logged_in: Client) -> None:
    client = admin_client_logged_in
    run = TunixRunFactory.create(dataset_key="alpha-v1", status=RunStatus.FAILED)
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
    assert ">3<" in html  # the metrics count column


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
