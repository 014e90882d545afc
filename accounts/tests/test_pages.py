"""The accounts pages and the role checks of every page action, through the test client.

Signing in and out, the login wall, the 403 page, controls shown by role, and
the user's own page where API tokens are created (the secret shown once) and
revoked.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import pytest
from django.test import Client

from accounts.models import ApiToken
from accounts.services import token_issue, token_revoke
from datasets.models import Dataset
from datasets.tests.factories import dataset_with_traces
from runs.models import RunMode, RunStatus, TunixRun
from runs.tests.factories import TunixRunFactory
from traces.models import Score, Trace
from traces.tests.factories import TraceFactory, make_payload

pytestmark = pytest.mark.django_db

PASSWORD = "correct horse battery staple"  # accounts.tests.factories.UserFactory's
API_RUNS = "/api/tunix/runs"


def signed_in(user: Any) -> Client:
    browser = Client()
    browser.force_login(user)
    return browser


@pytest.fixture
def viewer(user_factory: Callable[..., Any]) -> Client:
    return signed_in(user_factory("viewer", username="viewer"))


def pending_run() -> TunixRun:
    return TunixRunFactory.create(status=RunStatus.PENDING, mode=RunMode.LOCAL, queue="default")


def templates_of(response: Any) -> list[str]:
    return [t.name for t in response.templates if t.name]


def secret_in(html: str) -> str:
    match = re.search(r'data-testid="token:secret">(tnx_[A-Za-z0-9_-]+)</code>', html)
    assert match, "no secret shown"
    return match.group(1)


# --- The login wall, signing in and out ------------------------------------------------


@pytest.mark.parametrize(
    "path", ["/", "/traces/", "/datasets/", "/workers/", "/accounts/", "/traces/upload/"]
)
def test_anonymous_pages_redirect_to_the_login_page(anon_client: Client, path: str) -> None:
    response = anon_client.get(path)
    assert response.status_code == 302
    assert response["Location"] == f"/accounts/login/?next={path}"


def test_anonymous_run_page_redirects_to_the_login_page(anon_client: Client) -> None:
    run = TunixRunFactory.create()
    response = anon_client.get(f"/runs/{run.run_id}/")
    assert response.status_code == 302
    assert response["Location"] == f"/accounts/login/?next=/runs/{run.run_id}/"


def test_login_page_offers_the_form_and_no_links_that_bounce(anon_client: Client) -> None:
    response = anon_client.get("/accounts/login/?next=/traces/")
    assert response.status_code == 200
    html = response.content.decode()
    form = html.split('data-testid="login-form"')[1].split("</form>")[0]
    assert 'name="username"' in form and 'name="password"' in form
    assert 'name="csrfmiddlewaretoken"' in form
    assert '<input type="hidden" name="next" value="/traces/">' in form
    nav = html.split("<header")[1].split("</header>")[0]
    for path in ('href="/"', 'href="/traces/"', 'href="/datasets/"', 'href="/admin/"'):
        assert path not in nav
    assert 'href="/api/docs"' in nav
    assert "Sign out" not in nav


def test_signing_in_goes_home_and_shows_the_user_in_the_nav(
    anon_client: Client, user_factory: Callable[..., Any]
) -> None:
    user = user_factory("launcher", username="ada")
    response = anon_client.post("/accounts/login/", {"username": "ada", "password": PASSWORD})
    assert response.status_code == 302
    assert response["Location"] == "/"
    html = anon_client.get("/").content.decode()
    nav = html.split("<header")[1].split("</header>")[0]
    assert f'<a href="/accounts/" data-testid="nav:profile">{user.username}</a>' in nav
    signout = nav.split('class="nav-signout"')[0].rsplit("<form", 1)[1]
    assert 'method="post" action="/accounts/logout/"' in signout
    assert 'href="/admin/"' not in nav  # not staff


def test_signing_in_follows_next(anon_client: Client, user_factory: Callable[..., Any]) -> None:
    user_factory("viewer", username="grace")
    response = anon_client.post(
        "/accounts/login/?next=/traces/",
        {"username": "grace", "password": PASSWORD, "next": "/traces/"},
    )
    assert response["Location"] == "/traces/"


def test_a_wrong_password_is_shown_as_an_error(
    anon_client: Client, user_factory: Callable[..., Any]
) -> None:
    user_factory("viewer", username="alan")
    response = anon_client.post("/accounts/login/", {"username": "alan", "password": "nope"})
    assert response.status_code == 200
    html = response.content.decode()
    error = html.split('data-testid="login-error"')[1].split("</div>")[0]
    assert "Please enter a correct username and password" in error
    assert 'value="alan"' in html
    assert anon_client.get("/").status_code == 302


def test_empty_fields_are_named(anon_client: Client) -> None:
    html = anon_client.post("/accounts/login/", {"username": "", "password": ""}).content.decode()
    assert 'id="id_username_error"' in html and 'id="id_password_error"' in html
    assert "This field is required." in html


def test_signing_out_needs_a_post_and_ends_the_session(
    anon_client: Client, user_factory: Callable[..., Any]
) -> None:
    user = user_factory("viewer")
    anon_client.force_login(user)
    assert anon_client.get("/accounts/logout/").status_code == 405
    response = anon_client.post("/accounts/logout/")
    assert response.status_code == 302
    assert response["Location"] == "/accounts/login/"
    assert anon_client.get("/").status_code == 302


def test_the_admin_link_is_for_staff_only(user_factory: Callable[..., Any]) -> None:
    html = signed_in(user_factory("admin")).get("/").content.decode()
    assert 'href="/admin/"' in html.split("</header>")[0]


# --- A viewer: pages without controls, every action a 403 page ------------------------


def test_viewer_sees_the_history_but_no_launch_form(viewer: Client) -> None:
    run = pending_run()
    response = viewer.get("/?history=1")
    assert response.status_code == 200
    html = response.content.decode()
    assert "You can view runs; launching needs the launcher role." in html
    assert 'data-testid="tunix:history-list"' in html
    assert f'data-testid="tunix:history-row-{run.run_id}"' in html
    assert 'id="launch-form"' not in html and 'data-testid="tunix:run-btn"' not in html
    assert f'data-testid="tunix:cancel-btn-{run.run_id}"' not in html
    assert "/cancel/" not in html


def test_viewer_history_fragment_has_no_cancel_button(viewer: Client) -> None:
    run = pending_run()
    html = viewer.get("/runs/history/", headers={"HX-Request": "true"}).content.decode()
    assert f'data-testid="tunix:history-row-{run.run_id}"' in html
    assert "/cancel/" not in html


def test_viewer_run_page_has_no_cancel_or_launch_again(viewer: Client) -> None:
    run = pending_run()
    response = viewer.get(f"/runs/{run.run_id}/")
    assert response.status_code == 200
    html = response.content.decode()
    assert 'data-testid="run:status"' in html
    assert 'data-testid="run:cancel"' not in html
    assert 'data-testid="run:launch-again"' not in html


def test_viewer_trace_and_dataset_pages_have_no_upload_score_or_build(viewer: Client) -> None:
    trace = TraceFactory.create()
    lists = viewer.get("/traces/").content.decode() + viewer.get("/datasets/").content.decode()
    assert "/traces/upload/" not in lists and "/datasets/build/" not in lists
    detail = viewer.get(f"/traces/{trace.id}/")
    assert detail.status_code == 200
    html = detail.content.decode()
    assert 'data-testid="traces:score-form"' not in html and "/score/" not in html


def test_viewer_empty_lists_do_not_invite_what_they_may_not_do(viewer: Client) -> None:
    traces = viewer.get("/traces/").content.decode()
    datasets = viewer.get("/datasets/").content.decode()
    assert "No traces yet." in traces and "Upload one" not in traces
    assert "No datasets yet." in datasets and "Build the first one" not in datasets


def _forbidden(response: Any) -> None:
    assert response.status_code == 403
    assert "403.html" in templates_of(response)
    assert 'data-testid="forbidden"' in response.content.decode()


def test_viewer_may_not_launch(viewer: Client) -> None:
    dataset_with_traces(name="demo", version="v1", count=1)
    data = {"dataset_key": "demo-v1", "model_id": "tiny-qwen3", "dry_run": "on"}
    _forbidden(viewer.post("/", data))
    _forbidden(viewer.post("/", data, headers={"HX-Request": "true"}))
    assert not TunixRun.objects.exists()


def test_viewer_may_not_cancel(viewer: Client) -> None:
    run = pending_run()
    _forbidden(viewer.get(f"/runs/{run.run_id}/cancel/"))
    _forbidden(viewer.post(f"/runs/{run.run_id}/cancel/"))
    assert TunixRun.objects.get(pk=run.pk).status == RunStatus.PENDING


def test_viewer_may_not_upload_traces(viewer: Client) -> None:
    _forbidden(viewer.get("/traces/upload/"))
    _forbidden(viewer.post("/traces/upload/", {"trace_json": json.dumps(make_payload())}))
    assert not Trace.objects.exists()


def test_viewer_may_not_score(viewer: Client) -> None:
    trace = TraceFactory.create()
    _forbidden(viewer.post(f"/traces/{trace.id}/score/"))
    assert not Score.objects.exists()


def test_viewer_may_not_build_datasets(viewer: Client) -> None:
    TraceFactory.create()
    _forbidden(viewer.get("/datasets/build/"))
    data = {"dataset_name": "page", "dataset_version": "v1", "selection_strategy": "latest"}
    _forbidden(viewer.post("/datasets/build/", {**data, "limit": "10"}))
    assert not Dataset.objects.exists()


def test_a_user_without_a_role_reads_nothing_they_may_change(
    user_factory: Callable[..., Any],
) -> None:
    nobody = signed_in(user_factory(""))
    _forbidden(nobody.get("/traces/upload/"))
    assert "launching needs the launcher role" in nobody.get("/").content.decode()


def test_unknown_pages_are_a_plain_404(client: Client) -> None:
    response = client.get("/datasets/no-such-dataset-v1/")
    assert response.status_code == 404
    assert "404.html" in templates_of(response)
    assert 'data-testid="not-found"' in response.content.decode()


# --- A launcher: the controls are there and work ---------------------------------------


def test_launcher_sees_every_control(client: Client) -> None:
    run = pending_run()
    trace = TraceFactory.create()
    home = client.get("/?history=1").content.decode()
    assert 'id="launch-form"' in home and 'data-testid="tunix:run-btn"' in home
    assert f'data-testid="tunix:cancel-btn-{run.run_id}"' in home
    assert "launching needs the launcher role" not in home
    page = client.get(f"/runs/{run.run_id}/").content.decode()
    assert 'data-testid="run:cancel"' in page and 'data-testid="run:launch-again"' in page
    assert 'data-testid="traces:upload-link"' in client.get("/traces/").content.decode()
    detail = client.get(f"/traces/{trace.id}/").content.decode()
    assert 'data-testid="traces:score-form"' in detail
    assert 'data-testid="datasets:build-link"' in client.get("/datasets/").content.decode()
    assert client.get("/traces/upload/").status_code == 200
    assert client.get("/datasets/build/").status_code == 200
    assert client.get(f"/runs/{run.run_id}/cancel/").status_code == 200


def test_launcher_launches_cancels_uploads_scores_and_builds(client: Client) -> None:
    dataset_with_traces(name="demo", version="v1", count=2)
    launch = {
        "dataset_key": "demo-v1",
        "model_id": "tiny-qwen3",
        "output_dir": "",
        "learning_rate": "2e-5",
        "num_epochs": "1",
        "batch_size": "8",
        "max_seq_length": "2048",
        "dry_run": "on",
    }
    assert client.post("/", launch).status_code == 200
    assert TunixRun.objects.get().status == RunStatus.COMPLETED
    run = pending_run()
    assert client.post(f"/runs/{run.run_id}/cancel/").status_code == 302
    assert TunixRun.objects.get(pk=run.pk).status == RunStatus.CANCELLED
    uploaded = client.post("/traces/upload/", {"trace_json": json.dumps(make_payload())})
    assert uploaded.status_code == 200
    assert 'data-testid="upload-result"' in uploaded.content.decode()
    trace = Trace.objects.order_by("-created_at").first()
    assert trace is not None
    assert client.post(f"/traces/{trace.id}/score/").status_code == 302
    assert Score.objects.filter(trace=trace).exists()
    build = {
        "dataset_name": "more",
        "dataset_version": "v1",
        "selection_strategy": "latest",
        "seed": "",
        "limit": "10",
    }
    assert client.post("/datasets/build/", build)["Location"] == "/datasets/more-v1/"


# --- The user's own page: role and API tokens ------------------------------------------


def test_profile_shows_username_role_and_tokens(user_factory: Callable[..., Any]) -> None:
    user = user_factory("viewer", username="vera")
    live = token_issue(user, "laptop").token
    old = token_issue(user, "old").token
    old.revoked_at = old.created_at
    old.save(update_fields=["revoked_at"])
    token_issue(user_factory("launcher"), "not-mine")
    response = signed_in(user).get("/accounts/")
    assert response.status_code == 200
    html = response.content.decode()
    assert 'data-testid="profile:username">vera</h1>' in html
    assert 'data-testid="profile:role">viewer</span>' in html
    assert f'data-testid="token:prefix-{live.pk}">{live.prefix}…</code>' in html
    assert f'data-testid="token:revoke-{live.pk}"' in html
    assert f'data-testid="token:row-{old.pk}"' in html
    assert f'data-testid="token:revoke-{old.pk}"' not in html
    assert "not-mine" not in html
    assert 'data-testid="token:secret"' not in html


def test_a_created_token_is_shown_once_and_authenticates(
    anon_client: Client, user_factory: Callable[..., Any]
) -> None:
    user = user_factory("viewer")
    browser = signed_in(user)
    response = browser.post("/accounts/tokens/", {"name": "ci"})
    assert response.status_code == 201
    assert "no-store" in response["Cache-Control"]
    html = response.content.decode()
    secret = secret_in(html)
    assert "it will not be shown again" in html
    token = ApiToken.objects.get(user=user)
    assert token.name == "ci" and secret.startswith(token.prefix)
    assert secret not in response.get("Location", "")
    assert secret not in json.dumps(dict(browser.session))

    api = anon_client.get(API_RUNS, HTTP_AUTHORIZATION=f"Bearer {secret}")
    assert api.status_code == 200

    again = browser.get("/accounts/").content.decode()
    assert secret not in again
    assert f"{token.prefix}…" in again


def test_revoking_a_token_stops_it_on_the_api(
    anon_client: Client, user_factory: Callable[..., Any]
) -> None:
    user = user_factory("launcher")
    issued = token_issue(user, "script")
    auth = {"Authorization": f"Bearer {issued.secret}"}
    assert anon_client.get(API_RUNS, headers=auth).status_code == 200
    browser = signed_in(user)
    response = browser.post(f"/accounts/tokens/{issued.token.pk}/revoke/", follow=True)
    assert response.redirect_chain == [("/accounts/", 302)]
    html = response.content.decode()
    assert "Token “script” revoked" in html
    assert f'data-testid="token:revoke-{issued.token.pk}"' not in html
    assert anon_client.get(API_RUNS, headers=auth).status_code == 401
    # Revoked twice: said so, nothing changes.
    twice = browser.post(f"/accounts/tokens/{issued.token.pk}/revoke/", follow=True)
    assert "was already revoked" in twice.content.decode()


def test_revoking_someone_elses_token_is_a_404(
    anon_client: Client, user_factory: Callable[..., Any]
) -> None:
    other = token_issue(user_factory("launcher"), "theirs")
    response = signed_in(user_factory("admin")).post(f"/accounts/tokens/{other.token.pk}/revoke/")
    assert response.status_code == 404
    assert ApiToken.objects.get(pk=other.token.pk).revoked_at is None
    auth = {"Authorization": f"Bearer {other.secret}"}
    assert anon_client.get(API_RUNS, headers=auth).status_code == 200


def test_token_pages_take_only_posts(user_factory: Callable[..., Any]) -> None:
    browser = signed_in(user_factory("viewer"))
    assert browser.get("/accounts/tokens/").status_code == 405
    assert browser.post("/accounts/").status_code == 405


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("", "This field is required."),
        ("x" * 101, "Ensure this value has at most 100 characters (it has 101)."),
        ("laptop", "You already have a live token with this name"),
    ],
)
def test_a_bad_token_name_is_a_form_error(
    user_factory: Callable[..., Any], name: str, message: str
) -> None:
    user = user_factory("viewer")
    token_issue(user, "laptop")
    response = signed_in(user).post("/accounts/tokens/", {"name": name})
    assert response.status_code == 422
    html = response.content.decode()
    error = html.split('data-testid="token:name-error"')[1].split("</ul>")[0]
    assert message in error
    assert 'data-testid="token:secret"' not in html
    assert ApiToken.objects.filter(user=user).count() == 1


def test_a_revoked_name_may_be_used_again(user_factory: Callable[..., Any]) -> None:
    user = user_factory("viewer")
    token_revoke(token_issue(user, "laptop").token)
    response = signed_in(user).post("/accounts/tokens/", {"name": "laptop"})
    assert response.status_code == 201
    assert ApiToken.objects.filter(user=user, name="laptop").count() == 2
