"""TUNIX_ANONYMOUS_ACCESS=write: nobody may write, yet credentials given are still checked.

Anonymous requests get the launcher's permissions; a token or a session is never
ignored in favour of that: a viewer's token stays a viewer's, a bad token a 401,
a session write still needs its CSRF token. Forms from another site stay 415.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.test import Client

from accounts.tests.test_api_access import (
    BAD_TOKEN,
    CSRF_FAILED,
    DENIED,
    EVIL,
    POSTS,
    UNSUPPORTED,
    WRITES,
    Endpoint,
    _revoked,
    assert_unauthenticated,
    browser,
    each,
    encoded,
    post,
    send,
    state,
)
from runs.models import RunStatus, TunixRun
from runs.tests.factories import TunixRunFactory

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _anonymous_write(settings: Any) -> None:
    settings.TUNIX_ANONYMOUS_ACCESS = "write"


@each(POSTS)
def test_anonymous_writes_are_allowed(anon_client: Client, endpoint: Endpoint) -> None:
    url, body = endpoint.prepare()
    before = state()
    response = post(anon_client, url, body)
    assert response.status_code == endpoint.ok, response.content
    assert (state() != before) is endpoint.writes


def test_anonymous_creates_a_trace_builds_a_dataset_and_launches_a_dry_run(
    anon_client: Client,
) -> None:
    trace = post(anon_client, "/api/traces", WRITES[0].prepare()[1])
    assert trace.status_code == 201
    build = {"dataset_name": "anon", "dataset_version": "v1", "limit": 1}
    dataset = post(anon_client, "/api/datasets/build", build)
    assert (dataset.status_code, dataset.json()["trace_count"]) == (201, 1)
    run = post(anon_client, "/api/tunix/run", {"dataset_key": "anon-v1", "model_id": "tiny-qwen3"})
    assert (run.status_code, run.json()["status"], run.json()["mode"]) == (
        200,
        "completed",
        "dry-run",
    )
    assert TunixRun.objects.get(pk=run.json()["run_id"]).status == RunStatus.COMPLETED


@pytest.mark.parametrize("media_type", ["text/plain", "application/x-www-form-urlencoded"])
@each(POSTS)
def test_a_cross_site_form_is_still_415(endpoint: Endpoint, media_type: str) -> None:
    url, body = endpoint.prepare()
    data, content_type = encoded(body, media_type)
    before = state()
    response = send(
        Client(enforce_csrf_checks=True), "POST", url, data, content_type, HTTP_ORIGIN=EVIL
    )
    assert (response.status_code, response.json()) == (415, UNSUPPORTED)
    assert state() == before


@each(WRITES)
def test_a_viewer_token_is_still_a_viewers(
    anon_client: Client,
    user_factory: Callable[..., Any],
    bearer: Callable[[Any], dict[str, Any]],
    endpoint: Endpoint,
) -> None:
    url, body = endpoint.prepare()
    before = state()
    response = post(anon_client, url, body, **bearer(user_factory("viewer")))
    assert (response.status_code, response.json()) == (403, DENIED)
    assert state() == before


@pytest.mark.parametrize(
    "headers",
    [
        _revoked,
        lambda _: {"HTTP_AUTHORIZATION": "Bearer tnx_" + "A" * 43},
        lambda _: {"HTTP_AUTHORIZATION": "Basic x"},
    ],
    ids=["revoked", "unknown", "basic"],
)
@each(WRITES)
def test_a_bad_token_is_still_401(
    anon_client: Client,
    user_factory: Callable[..., Any],
    endpoint: Endpoint,
    headers: Callable[[Callable[..., Any]], dict[str, Any]],
) -> None:
    url, body = endpoint.prepare()
    before = state()
    assert_unauthenticated(post(anon_client, url, body, **headers(user_factory)), BAD_TOKEN)
    assert state() == before


@each(WRITES)
def test_a_session_write_still_needs_its_csrf_token(launcher: Any, endpoint: Endpoint) -> None:
    url, body = endpoint.prepare()
    before = state()
    response = post(browser(launcher), url, body)
    assert (response.status_code, response.json()) == (403, CSRF_FAILED)
    assert state() == before


@pytest.mark.parametrize(
    "headers",
    [{"HTTP_ORIGIN": EVIL}, {"HTTP_SEC_FETCH_SITE": "cross-site", "HTTP_ORIGIN": EVIL}],
    ids=["origin", "fetch-metadata"],
)
def test_a_cross_site_bodyless_post_cannot_cancel_a_run(
    anon_client: Client, headers: dict[str, Any]
) -> None:
    """What `fetch(url, {method: "POST", mode: "no-cors"})` on another site sends:
    no body, no Content-Type, no credentials."""
    run = TunixRunFactory.create(status=RunStatus.PENDING)
    response = anon_client.generic("POST", f"/api/tunix/runs/{run.run_id}/cancel", "", **headers)
    run.refresh_from_db()
    assert run.status == RunStatus.PENDING
    assert response.status_code == 403


def test_a_bodyless_post_from_a_script_may_cancel(anon_client: Client) -> None:
    """curl and scripts send no Origin: the same bodyless cancel is theirs to make."""
    run = TunixRunFactory.create(status=RunStatus.PENDING)
    response = anon_client.generic("POST", f"/api/tunix/runs/{run.run_id}/cancel", "")
    assert response.status_code == 200
    run.refresh_from_db()
    assert run.status == RunStatus.CANCELLED
