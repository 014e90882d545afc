"""Cancelling a run from the pages (`runs:cancel`): confirmation, CSRF, the service's answers."""

from __future__ import annotations

import json
import re
import uuid

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from runs.models import RunEvent, RunMode, RunStatus, TunixRun
from runs.tests.factories import TunixRunFactory

pytestmark = pytest.mark.django_db

HTMX = {"HX-Request": "true"}


def pending_run() -> TunixRun:
    return TunixRunFactory.create(status=RunStatus.PENDING, mode=RunMode.LOCAL, queue="default")


def status_of(run: TunixRun) -> str:
    return str(TunixRun.objects.values_list("status", flat=True).get(pk=run.pk))


def test_get_shows_a_confirmation_form_and_changes_nothing(client: Client) -> None:
    run = pending_run()
    response = client.get(reverse("runs:cancel", args=[run.run_id]))
    assert response.status_code == 200
    html = response.content.decode()
    assert f'Cancel run <span class="mono runs-wrap">{run.run_id}</span>?' in html
    confirm = html.split('data-testid="cancel:confirm"')[1]
    form = confirm.split('<form method="post"')[1].split("</form>")[0]
    assert f'action="/runs/{run.run_id}/cancel/"' in form
    assert 'name="csrfmiddlewaretoken"' in form
    assert 'data-testid="cancel:submit"' in form
    assert status_of(run) == RunStatus.PENDING


def test_the_confirmation_of_a_finished_run_offers_nothing_to_do(client: Client) -> None:
    run = TunixRunFactory.create(status=RunStatus.COMPLETED)
    html = client.get(reverse("runs:cancel", args=[run.run_id])).content.decode()
    assert 'data-testid="cancel:not-cancellable"' in html
    assert "<form" not in html.split('data-testid="cancel:confirm"')[1]


def test_post_cancels_a_pending_run_and_goes_back_to_its_page(client: Client) -> None:
    run = pending_run()
    response = client.post(reverse("runs:cancel", args=[run.run_id]))
    assert response.status_code == 302
    assert response["Location"] == f"/runs/{run.run_id}/"
    assert status_of(run) == RunStatus.CANCELLED
    event = RunEvent.objects.get(run=run)
    assert (event.from_status, event.to_status) == ("pending", "cancelled")
    page = client.get(response["Location"]).content.decode()
    assert "Run cancelled before it started." in page
    assert '<span class="status-badge status-cancelled" data-testid="run:status">' in page


def test_post_asks_a_running_run_to_stop(client: Client) -> None:
    run = TunixRunFactory.create(status=RunStatus.RUNNING, mode=RunMode.LOCAL)
    response = client.post(reverse("runs:cancel", args=[run.run_id]), headers=HTMX)
    assert response.status_code == 200
    assert json.loads(response["HX-Trigger"]) == {"runs:changed": {}}
    html = response.content.decode()
    assert 'class="notice notice-success" data-testid="run:cancel-notice"' in html
    assert "Cancellation requested" in html
    assert status_of(run) == RunStatus.CANCEL_REQUESTED


def test_post_for_a_finished_run_says_so_and_changes_nothing(client: Client) -> None:
    run = TunixRunFactory.create(status=RunStatus.FAILED)
    html = client.post(reverse("runs:cancel", args=[run.run_id]), headers=HTMX).content.decode()
    assert "notice-error" in html
    assert "Run is already in terminal state: failed" in html
    response = client.post(reverse("runs:cancel", args=[run.run_id]))
    assert response.status_code == 302
    page = client.get(response["Location"]).content.decode()
    assert "Run is already in terminal state: failed" in page
    assert status_of(run) == RunStatus.FAILED
    assert not RunEvent.objects.filter(run=run).exists()


def test_post_goes_back_to_a_safe_next_only(client: Client) -> None:
    run = pending_run()
    response = client.post(
        reverse("runs:cancel", args=[run.run_id]), {"next": "/?history=1&status=pending"}
    )
    assert response["Location"] == "/?history=1&status=pending"
    other = pending_run()
    response = client.post(
        reverse("runs:cancel", args=[other.run_id]), {"next": "https://evil.example/"}
    )
    assert response["Location"] == f"/runs/{other.run_id}/"


def test_unknown_runs_and_other_methods(client: Client) -> None:
    assert client.post(f"/runs/{uuid.uuid4()}/cancel/").status_code == 404
    assert client.get(f"/runs/{uuid.uuid4()}/cancel/").status_code == 404
    assert client.post(f"/runs/{uuid.uuid4()}/cancel/", headers=HTMX).status_code == 404
    run = pending_run()
    assert client.put(reverse("runs:cancel", args=[run.run_id])).status_code == 405
    assert client.delete(reverse("runs:cancel", args=[run.run_id])).status_code == 405
    assert status_of(run) == RunStatus.PENDING


def test_csrf_refuses_a_post_without_the_token_or_from_another_origin(launcher: User) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(launcher)
    run = pending_run()
    url = reverse("runs:cancel", args=[run.run_id])
    # No token at all (a form on another site cannot read ours).
    assert client.post(url).status_code == 403
    assert client.post(url, headers=HTMX).status_code == 403
    # A valid token, but sent by a page of another origin.
    html = client.get(url).content.decode()
    match = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', html)
    assert match
    token = match.group(1)
    response = client.post(
        url, {"csrfmiddlewaretoken": token}, headers={"Origin": "https://evil.example"}
    )
    assert response.status_code == 403
    assert status_of(run) == RunStatus.PENDING
    # The page's own form, from our origin, works.
    response = client.post(
        url, {"csrfmiddlewaretoken": token}, headers={"Origin": "http://testserver"}
    )
    assert response.status_code == 302
    assert status_of(run) == RunStatus.CANCELLED


def test_htmx_posts_carry_the_token_from_the_body_headers(launcher: User) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(launcher)
    run = pending_run()
    page = client.get(reverse("runs:detail", args=[run.run_id])).content.decode()
    match = re.search(r"hx-headers='\{\"X-CSRFToken\": \"([^\"]+)\"\}'", page)
    assert match
    response = client.post(
        reverse("runs:cancel", args=[run.run_id]),
        headers={**HTMX, "X-CSRFToken": match.group(1)},
    )
    assert response.status_code == 200
    assert status_of(run) == RunStatus.CANCELLED


def test_the_cancel_button_is_a_link_to_the_confirmation_with_an_htmx_confirm(
    client: Client,
) -> None:
    run = pending_run()
    html = client.get(reverse("runs:detail", args=[run.run_id])).content.decode()
    button = (
        html.split('data-testid="run:cancel"')[0].rsplit("<a ", 1)[1]
        + html.split('data-testid="run:cancel"')[1].split(">", 1)[0]
    )
    assert f'href="/runs/{run.run_id}/cancel/"' in button
    assert f'hx-post="/runs/{run.run_id}/cancel/"' in button
    assert f'hx-confirm="Cancel run {run.run_id}?' in button
