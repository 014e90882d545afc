"""Access control of the JSON API and /metrics, tried the way an attacker would.

Every write endpoint (and the two reads sent as POST) meets each kind of caller:
nobody, a viewer's token, a launcher's token, tokens that must not work, a
browser session with and without its CSRF token, non-JSON bodies and the forms
another site can make a browser send. A refused request changes nothing (the
rows are counted before and after). Every read endpoint is refused to nobody and
answered to a viewer. A walk over the API's registered operations keeps both
lists complete, and makes a future write endpoint without a write permission
fail here (docs/decisions.md#accounts).
"""

from __future__ import annotations

import base64
import json
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import pytest
from django.conf import settings
from django.test import Client
from django.test.client import MULTIPART_CONTENT, encode_multipart
from django.utils import timezone

from accounts.access import Access
from accounts.models import ApiToken
from accounts.roles import (
    ADD_TRACES,
    BUILD_DATASETS,
    CANCEL_RUNS,
    LAUNCH_RUNS,
    READ_PERMISSIONS,
    VIEW_DATASETS,
    WRITE_PERMISSIONS,
)
from accounts.services import token_issue, token_revoke
from datasets.models import Dataset
from datasets.tests.factories import dataset_with_traces
from evaluations.models import Evaluation
from evaluations.schemas import EvaluationRequest
from evaluations.services import evaluation_enqueue
from runs.models import RunEvent, RunStatus, TunixRun
from runs.processes import host_name
from runs.tests.factories import TunixRunFactory
from traces.models import Score, Trace
from traces.tests.factories import TraceFactory, make_payload
from tunix_registry.actors import COMMAND
from tunix_registry.api import api

pytestmark = pytest.mark.django_db

CHALLENGE = re.compile(r"^Bearer( |$)")
EVIL = "https://evil.example"
AUTH_REQUIRED = {"detail": "Authentication required"}
BAD_TOKEN = {"detail": "Invalid or revoked token"}
DENIED = {"detail": "Permission denied"}
CSRF_FAILED = {"detail": "CSRF check failed"}
UNSUPPORTED = {"detail": "Unsupported media type: request bodies must be application/json"}


# --- The endpoints -----------------------------------------------------------------------


@dataclass(frozen=True)
class Endpoint:
    """One POST operation: its route as registered, what it needs, what it answers."""

    route: str  # the ninja route under /api ("/tunix/runs/{run_id}/cancel")
    prepare: Callable[[], tuple[str, Any]]  # makes what the request needs: (url, JSON body)
    permission: str
    ok: int
    name: str = ""

    @property
    def writes(self) -> bool:
        return self.permission in WRITE_PERMISSIONS


def _dataset_key() -> str:
    return dataset_with_traces(name="access", version="v1", count=2).key


def _trace_create() -> tuple[str, Any]:
    return "/api/traces", make_payload(meta={"src": "access"})


def _trace_batch() -> tuple[str, Any]:
    return "/api/traces/batch", [make_payload(meta={"src": "access"})] * 2


def _trace_score() -> tuple[str, Any]:
    return f"/api/traces/{TraceFactory.create().id}/score", {"criteria": "baseline"}


def _dataset_build() -> tuple[str, Any]:
    TraceFactory.create_batch(2)
    return "/api/datasets/build", {"dataset_name": "built", "dataset_version": "v1", "limit": 2}


def _run(query: str = "", **fields: Any) -> Callable[[], tuple[str, Any]]:
    def prepare() -> tuple[str, Any]:
        body = {"dataset_key": _dataset_key(), "model_id": "tiny-qwen3", **fields}
        return "/api/tunix/run" + query, body

    return prepare


def _run_cancel() -> tuple[str, Any]:
    run = TunixRunFactory.create(status=RunStatus.PENDING, mode="dry-run")
    return f"/api/tunix/runs/{run.run_id}/cancel", None


def _evaluated_run() -> TunixRun:
    key = dataset_with_traces(name="probe", version="v1", count=2).key
    return TunixRunFactory.create(
        mode="local",
        exit_code=0,
        dataset_key=key,
        output_dir="outputs/evaluated",
        training={"export_format": "full", "checkpoint_steps": [1]},
    )


def _evaluation_launch() -> tuple[str, Any]:
    run = _evaluated_run()
    return f"/api/tunix/runs/{run.run_id}/evaluations", {"dataset": run.dataset_key}


def _pending_evaluation() -> Evaluation:
    run = _evaluated_run()
    request = EvaluationRequest(dataset=run.dataset_key)
    return evaluation_enqueue(run_id=run.run_id, request=request, actor=COMMAND)


def _evaluation_cancel() -> tuple[str, Any]:
    return f"/api/tunix/evaluations/{_pending_evaluation().evaluation_id}/cancel", None


def _sft_export() -> tuple[str, Any]:
    return "/api/tunix/sft/export", {"dataset_key": _dataset_key()}


def _sft_manifest() -> tuple[str, Any]:
    body = {"dataset_key": _dataset_key(), "model_id": "tiny-qwen3", "output_dir": "out"}
    return "/api/tunix/sft/manifest", body


WRITES = [
    Endpoint("/traces", _trace_create, ADD_TRACES, 201, "trace-create"),
    Endpoint("/traces/batch", _trace_batch, ADD_TRACES, 201, "trace-batch"),
    Endpoint("/traces/{trace_id}/score", _trace_score, ADD_TRACES, 201, "trace-score"),
    Endpoint("/datasets/build", _dataset_build, BUILD_DATASETS, 201, "dataset-build"),
    Endpoint("/tunix/run", _run(), LAUNCH_RUNS, 200, "run-sync-dry-run"),
    Endpoint("/tunix/run", _run("?mode=async"), LAUNCH_RUNS, 200, "run-async-dry-run"),
    Endpoint("/tunix/run", _run("?mode=async", dry_run=False), LAUNCH_RUNS, 200, "run-async-local"),
    Endpoint("/tunix/runs/{run_id}/cancel", _run_cancel, CANCEL_RUNS, 200, "run-cancel"),
    Endpoint(
        "/tunix/runs/{run_id}/evaluations",
        _evaluation_launch,
        LAUNCH_RUNS,
        200,
        "evaluation-launch",
    ),
    Endpoint(
        "/tunix/evaluations/{evaluation_id}/cancel",
        _evaluation_cancel,
        CANCEL_RUNS,
        200,
        "evaluation-cancel",
    ),
]
# Reads sent as POST (the body names what to read): a viewer may, nothing is written.
POST_READS = [
    Endpoint("/tunix/sft/export", _sft_export, VIEW_DATASETS, 200, "sft-export"),
    Endpoint("/tunix/sft/manifest", _sft_manifest, VIEW_DATASETS, 201, "sft-manifest"),
]
POSTS = WRITES + POST_READS


def each(endpoints: list[Endpoint]) -> Any:
    return pytest.mark.parametrize("endpoint", endpoints, ids=[e.name for e in endpoints])


def state() -> dict[str, Any]:
    """Everything a POST endpoint could create or change."""
    return {
        "traces": Trace.objects.count(),
        "scores": Score.objects.count(),
        "datasets": Dataset.objects.count(),
        "runs": sorted(TunixRun.objects.values_list("run_id", "status")),
        "events": RunEvent.objects.count(),
        "evaluations": sorted(Evaluation.objects.values_list("evaluation_id", "status")),
    }


def send(
    client: Client, method: str, url: str, data: str | bytes, content_type: str, **extra: Any
) -> Any:
    """A request with its Content-Type even when the body is empty (the test client
    leaves the header out then; a browser's form sends it)."""
    return client.generic(
        method, url, data, content_type=content_type, CONTENT_TYPE=content_type, **extra
    )


def post(client: Client, url: str, body: Any, **extra: Any) -> Any:
    data = "" if body is None else json.dumps(body)
    return send(client, "POST", url, data, "application/json", **extra)


def assert_unauthenticated(response: Any, detail: dict[str, Any]) -> None:
    assert response.status_code == 401, response.content
    assert response.json() == detail
    assert CHALLENGE.match(response["WWW-Authenticate"]), response["WWW-Authenticate"]


# --- Who is asking ------------------------------------------------------------------------


def bearer_header(secret: str) -> dict[str, Any]:
    return {"HTTP_AUTHORIZATION": f"Bearer {secret}"}


def _revoked(user_factory: Callable[..., Any]) -> dict[str, Any]:
    issued = token_issue(user_factory("launcher"), "revoked")
    token_revoke(issued.token)
    return bearer_header(issued.secret)


def _deleted_user(user_factory: Callable[..., Any]) -> dict[str, Any]:
    user = user_factory("launcher")
    secret = token_issue(user, "orphan").secret
    user.delete()
    return bearer_header(secret)


def _inactive_user(user_factory: Callable[..., Any]) -> dict[str, Any]:
    user = user_factory("launcher")
    secret = token_issue(user, "dormant").secret
    user.is_active = False
    user.save(update_fields=["is_active"])
    return bearer_header(secret)


def _basic_with_the_right_password(user_factory: Callable[..., Any]) -> dict[str, Any]:
    user = user_factory("launcher")
    pair = base64.b64encode(f"{user.username}:correct horse battery staple".encode()).decode()
    return {"HTTP_AUTHORIZATION": f"Basic {pair}"}


def _header(value: str) -> Callable[[Callable[..., Any]], dict[str, Any]]:
    return lambda user_factory: {"HTTP_AUTHORIZATION": value}


def _secret_altered(user_factory: Callable[..., Any]) -> dict[str, Any]:
    secret = token_issue(user_factory("launcher"), "real").secret
    return bearer_header(secret[:-1] + ("A" if secret[-1] != "A" else "B"))


def _secret_without_scheme(user_factory: Callable[..., Any]) -> dict[str, Any]:
    return {"HTTP_AUTHORIZATION": token_issue(user_factory("launcher"), "bare").secret}


def _secret_under_another_scheme(user_factory: Callable[..., Any]) -> dict[str, Any]:
    secret = token_issue(user_factory("launcher"), "scheme").secret
    return {"HTTP_AUTHORIZATION": f"Token {secret}"}


# Every endpoint meets these; the variants after them are tried on one of each kind.
UNUSABLE = {
    "revoked-token": _revoked,
    "deleted-user": _deleted_user,
    "inactive-user": _inactive_user,
    "basic-right-password": _basic_with_the_right_password,
    "bearer-alone": _header("Bearer"),
    "garbage": _header("\x7f not a header at all ;;"),
}
MALFORMED = {
    "bearer-space": _header("Bearer "),
    "empty-header": _header(""),
    "unknown-tnx-secret": _header("Bearer tnx_" + "A" * 43),
    "altered-secret": _secret_altered,
    "secret-without-scheme": _secret_without_scheme,
    "secret-other-scheme": _secret_under_another_scheme,
    "oversized": _header("Bearer tnx_" + "A" * 5000),
}


@pytest.fixture
def viewer(user_factory: Callable[..., Any]) -> Any:
    return user_factory("viewer")


# --- Writes and POST reads ---------------------------------------------------------------


@each(POSTS)
def test_anonymous_is_401_with_a_bearer_challenge_and_changes_nothing(
    anon_client: Client, endpoint: Endpoint
) -> None:
    url, body = endpoint.prepare()
    before = state()
    assert_unauthenticated(post(anon_client, url, body), AUTH_REQUIRED)
    assert state() == before


@each(WRITES)
def test_a_viewer_token_is_403_and_changes_nothing(
    anon_client: Client, viewer: Any, bearer: Callable[[Any], dict[str, Any]], endpoint: Endpoint
) -> None:
    url, body = endpoint.prepare()
    before = state()
    response = post(anon_client, url, body, **bearer(viewer))
    assert (response.status_code, response.json()) == (403, DENIED)
    assert "WWW-Authenticate" not in response
    assert state() == before


@each(POST_READS)
def test_a_viewer_token_may_use_the_reads_sent_as_post(
    anon_client: Client, viewer: Any, bearer: Callable[[Any], dict[str, Any]], endpoint: Endpoint
) -> None:
    url, body = endpoint.prepare()
    before = state()
    assert post(anon_client, url, body, **bearer(viewer)).status_code == endpoint.ok
    assert state() == before


@pytest.mark.parametrize("role", ["launcher", "admin"])
@each(POSTS)
def test_a_launcher_or_admin_token_is_allowed(
    anon_client: Client,
    user_factory: Callable[..., Any],
    bearer: Callable[[Any], dict[str, Any]],
    endpoint: Endpoint,
    role: str,
) -> None:
    url, body = endpoint.prepare()
    before = state()
    response = post(anon_client, url, body, **bearer(user_factory(role)))
    assert response.status_code == endpoint.ok, response.content
    assert (state() != before) is endpoint.writes


@pytest.mark.parametrize("credentials", UNUSABLE.values(), ids=UNUSABLE.keys())
@each(POSTS)
def test_unusable_credentials_are_401_and_change_nothing(
    anon_client: Client,
    user_factory: Callable[..., Any],
    endpoint: Endpoint,
    credentials: Callable[[Callable[..., Any]], dict[str, Any]],
) -> None:
    url, body = endpoint.prepare()
    headers = credentials(user_factory)
    before = state()
    assert_unauthenticated(post(anon_client, url, body, **headers), BAD_TOKEN)
    assert state() == before


@pytest.mark.parametrize("credentials", MALFORMED.values(), ids=MALFORMED.keys())
@each([POSTS[0], WRITES[-1], POST_READS[0]])
def test_malformed_or_wrong_secrets_are_401_and_change_nothing(
    anon_client: Client,
    user_factory: Callable[..., Any],
    endpoint: Endpoint,
    credentials: Callable[[Callable[..., Any]], dict[str, Any]],
) -> None:
    url, body = endpoint.prepare()
    headers = credentials(user_factory)
    before = state()
    assert_unauthenticated(post(anon_client, url, body, **headers), BAD_TOKEN)
    assert state() == before


@each(WRITES)
def test_a_revoked_token_is_401_even_beside_a_launchers_session(
    client: Client, user_factory: Callable[..., Any], endpoint: Endpoint
) -> None:
    url, body = endpoint.prepare()
    before = state()
    assert_unauthenticated(post(client, url, body, **_revoked(user_factory)), BAD_TOKEN)
    assert state() == before


def test_a_token_beside_a_session_acts_as_the_tokens_user(
    client: Client, launcher: Any, user_factory: Callable[..., Any], token_for: Callable[[Any], str]
) -> None:
    other = user_factory("launcher")
    headers = bearer_header(token_for(other))
    created = post(client, "/api/traces", make_payload(), **headers)
    assert created.status_code == 201
    assert Trace.objects.get(pk=created.json()["id"]).created_by == other
    run = post(client, *_run()(), **headers)
    assert run.status_code == 200
    assert TunixRun.objects.get(pk=run.json()["run_id"]).launched_by == other
    # The session alone is its own user.
    mine = post(client, "/api/traces", make_payload())
    assert Trace.objects.get(pk=mine.json()["id"]).created_by == launcher


# --- Browser sessions and CSRF -----------------------------------------------------------


def browser(user: Any) -> Client:
    """A client that checks CSRF as a browser's requests are checked, signed in as `user`."""
    signed_in = Client(enforce_csrf_checks=True)
    signed_in.force_login(user)
    return signed_in


def page_csrf_token(client: Client) -> str:
    """The token a page gives htmx (`hx-headers` on <body>); the page also sets the cookie."""
    page = client.get("/")
    assert page.status_code == 200
    match = re.search(r"""hx-headers='\{"X-CSRFToken": "([^"]+)"\}'""", page.content.decode())
    assert match, "the page carries no CSRF token for htmx"
    assert settings.CSRF_COOKIE_NAME in client.cookies
    return match.group(1)


@each(WRITES)
def test_a_session_write_without_the_csrf_token_is_403(launcher: Any, endpoint: Endpoint) -> None:
    session = browser(launcher)
    page_csrf_token(session)  # the CSRF cookie is there, the header is not
    url, body = endpoint.prepare()
    before = state()
    response = post(session, url, body)
    assert (response.status_code, response.json()) == (403, CSRF_FAILED)
    assert state() == before


@each(POSTS)
def test_a_session_write_with_the_pages_csrf_token_is_allowed(
    launcher: Any, endpoint: Endpoint
) -> None:
    session = browser(launcher)
    token = page_csrf_token(session)
    url, body = endpoint.prepare()
    before = state()
    response = post(session, url, body, HTTP_X_CSRFTOKEN=token)
    assert response.status_code == endpoint.ok, response.content
    assert (state() != before) is endpoint.writes


@each(WRITES)
def test_a_session_write_with_a_wrong_csrf_token_is_403(launcher: Any, endpoint: Endpoint) -> None:
    session = browser(launcher)
    page_csrf_token(session)
    url, body = endpoint.prepare()
    before = state()
    response = post(session, url, body, HTTP_X_CSRFTOKEN="x" * 64)
    assert (response.status_code, response.json()) == (403, CSRF_FAILED)
    assert state() == before


@each(WRITES)
def test_the_right_csrf_token_from_another_origin_is_403(launcher: Any, endpoint: Endpoint) -> None:
    session = browser(launcher)
    token = page_csrf_token(session)
    url, body = endpoint.prepare()
    before = state()
    response = post(session, url, body, HTTP_X_CSRFTOKEN=token, HTTP_ORIGIN=EVIL)
    assert (response.status_code, response.json()) == (403, CSRF_FAILED)
    assert state() == before


@each(WRITES)
def test_a_viewer_session_with_its_csrf_token_is_403(viewer: Any, endpoint: Endpoint) -> None:
    session = browser(viewer)
    token = page_csrf_token(session)
    url, body = endpoint.prepare()
    before = state()
    response = post(session, url, body, HTTP_X_CSRFTOKEN=token)
    assert (response.status_code, response.json()) == (403, DENIED)
    assert state() == before


# --- Bodies that are not JSON, and what another site can send ----------------------------


def _form_fields(body: Any) -> dict[str, Any]:
    """The fields of a form carrying `body`'s values (nested values as JSON text)."""
    if not isinstance(body, dict):
        return {} if body is None else {"data": json.dumps(body)}
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in body.items()}


def encoded(body: Any, media_type: str) -> tuple[str | bytes, str]:
    """`body` as a form of `media_type` would carry it: (data, Content-Type)."""
    if media_type == "text/plain":
        # A text/plain form whose one field is named `{"...":"` yields the JSON itself.
        return ("" if body is None else json.dumps(body)), "text/plain;charset=UTF-8"
    if media_type == "multipart/form-data":
        return encode_multipart("BoUnDaRy", _form_fields(body)), MULTIPART_CONTENT
    return urlencode(_form_fields(body)), "application/x-www-form-urlencoded"


FORM_TYPES = ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data"]


@pytest.mark.parametrize(
    ("media_type", "who"),
    [(t, "anonymous") for t in FORM_TYPES] + [("text/plain", "launcher-token")],
)
@each(POSTS)
def test_non_json_bodies_are_415_before_authentication(
    anon_client: Client,
    launcher: Any,
    bearer: Callable[[Any], dict[str, Any]],
    endpoint: Endpoint,
    media_type: str,
    who: str,
) -> None:
    url, body = endpoint.prepare()
    data, content_type = encoded(body, media_type)
    headers = bearer(launcher) if who == "launcher-token" else {}
    before = state()
    response = send(anon_client, "POST", url, data, content_type, **headers)
    assert (response.status_code, response.json()) == (415, UNSUPPORTED)
    # Refused before authentication: no challenge, whoever asks.
    assert "WWW-Authenticate" not in response
    assert state() == before


@pytest.mark.parametrize("cookie", ["no-credentials", "session-cookie"])
@pytest.mark.parametrize("media_type", ["application/x-www-form-urlencoded", "text/plain"])
@each(POSTS)
def test_a_cross_site_form_post_is_refused(
    launcher: Any, endpoint: Endpoint, media_type: str, cookie: str
) -> None:
    """The request a hidden, self-submitting form on another site makes the browser send."""
    visitor = browser(launcher) if cookie == "session-cookie" else Client(enforce_csrf_checks=True)
    url, body = endpoint.prepare()
    data, content_type = encoded(body, media_type)
    before = state()
    response = send(
        visitor, "POST", url, data, content_type, HTTP_ORIGIN=EVIL, HTTP_REFERER=EVIL + "/"
    )
    assert (response.status_code, response.json()) == (415, UNSUPPORTED)
    assert state() == before


@each(POSTS)
def test_a_cross_site_bodyless_post_with_the_session_cookie_is_403(
    launcher: Any, endpoint: Endpoint
) -> None:
    """`fetch(url, {method: "POST", mode: "no-cors", credentials: "include"})`: no body,
    no Content-Type, so not a 415; the missing CSRF token refuses it."""
    session = browser(launcher)
    url, _ = endpoint.prepare()
    before = state()
    response = session.generic("POST", url, "", content_type="", HTTP_ORIGIN=EVIL)
    assert (response.status_code, response.json()) == (403, CSRF_FAILED)
    assert state() == before


@each(POSTS)
def test_other_methods_never_reach_a_handler(client: Client, endpoint: Endpoint) -> None:
    url, body = endpoint.prepare()
    data = "" if body is None else json.dumps(body)
    before = state()
    for method in ("PUT", "PATCH", "DELETE", "OPTIONS", "HEAD", "TRACE"):
        response = send(client, method, url, data, "application/json")
        assert response.status_code == 405, method
        assert "POST" in response["Allow"], method
    assert state() == before


# --- Reads -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Read:
    route: str
    prepare: Callable[[], str]  # the URL of an existing resource
    name: str
    headers: dict[str, Any] = field(default_factory=dict)


def _run_url(suffix: str = "") -> Callable[[], str]:
    return lambda: f"/api/tunix/runs/{TunixRunFactory.create().run_id}{suffix}"


def _artifact_url() -> str:
    out = settings.DATA_DIR / "outputs" / "exp"
    out.mkdir(parents=True)
    (out / "model.safetensors").write_bytes(b"weights")
    run = TunixRunFactory.create(
        mode="local",
        exit_code=0,
        output_dir="outputs/exp",
        host=host_name(),
        artifacts=[{"name": "model.safetensors", "size": 7, "sha256": None}],
    )
    return f"/api/tunix/runs/{run.run_id}/artifacts/model.safetensors/download"


def _compare_runs_url() -> str:
    first, second = TunixRunFactory.create_batch(2)
    return f"/api/tunix/runs/compare?runs={first.run_id},{second.run_id}"


def _compare_url() -> str:
    base, other = TraceFactory.create_batch(2)
    return f"/api/traces/compare?base={base.id}&other={other.id}"


READS = [
    Read("/traces", lambda: "/api/traces", "trace-list"),
    Read("/traces/compare", _compare_url, "trace-compare"),
    Read("/traces/{trace_id}", lambda: f"/api/traces/{TraceFactory.create().id}", "trace-detail"),
    Read("/datasets", lambda: "/api/datasets", "dataset-list"),
    Read("/datasets/{path:dataset_key}", lambda: f"/api/datasets/{_dataset_key()}", "manifest"),
    Read(
        "/datasets/{path:dataset_key}/export.jsonl",
        lambda: f"/api/datasets/{_dataset_key()}/export.jsonl",
        "dataset-export",
    ),
    Read("/tunix/status", lambda: "/api/tunix/status", "tunix-status"),
    Read("/tunix/runs", lambda: "/api/tunix/runs", "run-list"),
    Read("/tunix/runs/compare", _compare_runs_url, "run-compare"),
    Read("/tunix/runs/{run_id}", _run_url(), "run-detail"),
    Read("/tunix/runs/{run_id}/metrics", _run_url("/metrics"), "run-metrics"),
    Read("/tunix/runs/{run_id}/status", _run_url("/status"), "run-status"),
    Read(
        "/tunix/runs/{run_id}/logs",
        _run_url("/logs"),
        "run-logs",
        {"HTTP_ACCEPT": "application/json"},
    ),
    Read("/tunix/runs/{run_id}/artifacts", _run_url("/artifacts"), "run-artifacts"),
    Read(
        "/tunix/runs/{run_id}/artifacts/{path:filename}/download",
        _artifact_url,
        "artifact-download",
    ),
    Read(
        "/tunix/runs/{run_id}/evaluations",
        lambda: f"/api/tunix/runs/{_evaluated_run().run_id}/evaluations",
        "run-evaluations",
    ),
    Read("/tunix/evaluations", lambda: "/api/tunix/evaluations", "evaluation-list"),
    Read(
        "/tunix/evaluations/{evaluation_id}",
        lambda: f"/api/tunix/evaluations/{_pending_evaluation().evaluation_id}",
        "evaluation-detail",
    ),
    Read(
        "/tunix/evaluations/{evaluation_id}/items",
        lambda: f"/api/tunix/evaluations/{_pending_evaluation().evaluation_id}/items",
        "evaluation-items",
    ),
    Read("/tunix/leaderboard", lambda: "/api/tunix/leaderboard", "leaderboard"),
]
each_read = pytest.mark.parametrize("read", READS, ids=[r.name for r in READS])


@each_read
def test_reads_are_401_to_nobody_even_when_asking_for_a_304(
    anon_client: Client, read: Read
) -> None:
    url = read.prepare()
    assert_unauthenticated(anon_client.get(url, **read.headers), AUTH_REQUIRED)
    # A conditional request is authenticated first too: a 304 would say the resource exists.
    assert_unauthenticated(anon_client.get(url, HTTP_IF_NONE_MATCH="*"), AUTH_REQUIRED)


@each_read
def test_reads_are_answered_to_a_viewer_token_and_session(
    anon_client: Client, viewer: Any, bearer: Callable[[Any], dict[str, Any]], read: Read
) -> None:
    url = read.prepare()
    assert anon_client.get(url, **read.headers, **bearer(viewer)).status_code == 200
    session = browser(viewer)
    assert session.get(url, **read.headers).status_code == 200


@each_read
def test_reads_are_403_to_a_user_without_a_role(
    anon_client: Client, user_factory: Callable[..., Any], token_for: Callable[[Any], str],
    read: Read,
) -> None:  # fmt: skip
    url = read.prepare()
    response = anon_client.get(url, **read.headers, **bearer_header(token_for(user_factory(""))))
    assert (response.status_code, response.json()) == (403, DENIED)


@pytest.mark.parametrize(
    "read",
    [r for r in READS if r.name in ("trace-detail", "manifest", "run-detail")],
    ids=["trace-detail", "manifest", "run-detail"],
)
def test_authenticated_reads_are_not_stored_by_shared_caches(
    anon_client: Client, viewer: Any, bearer: Callable[[Any], dict[str, Any]], read: Read
) -> None:
    """A response to a request that carried credentials must not be kept by a shared cache
    and handed to others: `public` would allow exactly that (RFC 9111 §3.5)."""
    response = anon_client.get(read.prepare(), **read.headers, **bearer(viewer))
    assert response.status_code == 200
    cache_control = {d.strip().split("=")[0] for d in response["Cache-Control"].split(",")}
    assert "public" not in cache_control
    assert "private" in cache_control or "no-store" in cache_control


# --- Refusals say nothing about existence -------------------------------------------------


def test_a_viewer_cancelling_an_existing_or_a_missing_run_gets_the_same_403(
    anon_client: Client, viewer: Any, bearer: Callable[[Any], dict[str, Any]]
) -> None:
    run = TunixRunFactory.create(status=RunStatus.PENDING)
    headers = bearer(viewer)
    answers = [
        post(anon_client, f"/api/tunix/runs/{run_id}/cancel", None, **headers)
        for run_id in (run.run_id, uuid.uuid4())
    ]
    assert [(a.status_code, a.content) for a in answers] == [
        (403, b'{"detail":"Permission denied"}')
    ] * 2
    run.refresh_from_db()
    assert run.status == RunStatus.PENDING


@pytest.mark.parametrize(
    "existing",
    [
        lambda: f"/api/tunix/runs/{TunixRunFactory.create().run_id}",
        lambda: f"/api/traces/{TraceFactory.create().id}",
        lambda: f"/api/datasets/{_dataset_key()}",
    ],
    ids=["run", "trace", "dataset"],
)
def test_anonymous_reads_of_an_existing_or_a_missing_resource_get_the_same_401(
    anon_client: Client, existing: Callable[[], str]
) -> None:
    url = existing()
    missing = re.sub(r"[0-9a-f-]{36}$", str(uuid.uuid4()), url).replace("access-v1", "nope-v9")
    assert missing != url
    answers = [anon_client.get(u) for u in (url, missing)]
    assert {(a.status_code, a.content, a["WWW-Authenticate"]) for a in answers} == {
        (401, b'{"detail":"Authentication required"}', 'Bearer realm="tunix-registry"')
    }


def test_anonymous_writes_to_an_existing_or_a_missing_trace_get_the_same_401(
    anon_client: Client,
) -> None:
    urls = [f"/api/traces/{TraceFactory.create().id}/score", f"/api/traces/{uuid.uuid4()}/score"]
    answers = [post(anon_client, u, {"criteria": "baseline"}) for u in urls]
    assert {(a.status_code, a.content) for a in answers} == {
        (401, b'{"detail":"Authentication required"}')
    }
    assert Score.objects.count() == 0


# --- Tokens record their use --------------------------------------------------------------


def test_last_used_at_is_set_on_first_use_and_then_at_most_once_per_touch_interval(
    anon_client: Client, viewer: Any, settings: Any
) -> None:
    # The time of the last use as the database has it, not as this process remembers it.
    settings.TUNIX_TOKEN_CACHE_SECONDS = 0
    issued = token_issue(viewer, "touch")
    headers = bearer_header(issued.secret)

    def use() -> datetime:
        assert anon_client.get("/api/traces", **headers).status_code == 200
        used = ApiToken.objects.get(pk=issued.token.pk).last_used_at
        assert used is not None
        return used

    assert issued.token.last_used_at is None
    settings.TUNIX_TOKEN_TOUCH_SECONDS = 3600
    first = use()
    assert use() == first  # within the interval: not written again
    # A use older than the interval is noted again.
    ApiToken.objects.filter(pk=issued.token.pk).update(last_used_at=first - timedelta(hours=2))
    assert use() > first

    # With no interval every use is written.
    settings.TUNIX_TOKEN_TOUCH_SECONDS = 0
    second = use()
    third = use()
    assert first < second < third <= timezone.now()


def test_a_refused_token_is_not_marked_used(
    anon_client: Client, viewer: Any, settings: Any
) -> None:
    settings.TUNIX_TOKEN_TOUCH_SECONDS = 0
    issued = token_issue(viewer, "refused")
    token_revoke(issued.token)
    assert anon_client.get("/api/traces", **bearer_header(issued.secret)).status_code == 401
    assert ApiToken.objects.get(pk=issued.token.pk).last_used_at is None


# --- /metrics and the public endpoints ---------------------------------------------------


def test_metrics_needs_a_viewer(
    anon_client: Client,
    viewer: Any,
    user_factory: Callable[..., Any],
    bearer: Callable[[Any], dict[str, Any]],
) -> None:
    assert_unauthenticated(anon_client.get("/metrics"), AUTH_REQUIRED)
    assert_unauthenticated(anon_client.get("/metrics", **_revoked(user_factory)), BAD_TOKEN)
    roleless = anon_client.get("/metrics", **bearer(user_factory("")))
    assert (roleless.status_code, roleless.json()) == (403, DENIED)
    scraped = anon_client.get("/metrics", **bearer(viewer))
    assert scraped.status_code == 200
    assert scraped["Content-Type"].startswith("text/plain")
    assert b"tunix_runs_total" in scraped.content
    assert browser(viewer).get("/metrics").status_code == 200


@pytest.mark.parametrize("url", ["/api/health", "/api/openapi.json", "/api/docs"])
def test_health_and_the_api_description_are_public(anon_client: Client, url: str) -> None:
    assert anon_client.get(url).status_code == 200


# --- Every operation is covered, and every write needs a write permission ----------------

# Unsafe operations that only read, and the view permission they need instead.
POST_READ_ROUTES = {("POST", "/tunix/sft/export"), ("POST", "/tunix/sft/manifest")}
PUBLIC_ROUTES = {("GET", "/health")}


def registered_operations() -> list[tuple[str, str, Any]]:
    """(method, route, operation) of every operation the API serves, as mounted."""
    api.urls  # noqa: B018 (mounting binds each router's operations, with its default auth)
    found = []
    for bound in api._get_bound_routers():
        for path, path_view in bound.path_operations.items():
            for operation in path_view.operations:
                for method in operation.methods:
                    found.append((method, bound.prefix + path, operation))
    return found


def permissions_of(operation: Any) -> set[str]:
    return {a.permission for a in operation.auth_callbacks if isinstance(a, Access)}


def test_the_walk_sees_the_templates_routes() -> None:
    """The mounted operations are the routers' own, and the walk is not empty."""
    walked = {(m, r) for m, r, _ in registered_operations()}
    declared = {
        (method, prefix + path)
        for prefix, router in api._routers
        for path, path_view in router.path_operations.items()
        for operation in path_view.operations
        for method in operation.methods
    }
    assert walked == declared
    assert len(walked) >= 20


def test_every_unsafe_operation_needs_a_write_permission_except_the_post_reads() -> None:
    unsafe = [(m, r, op) for m, r, op in registered_operations() if m not in {"GET", "HEAD"}]
    assert {(m, r) for m, r, _ in unsafe} >= POST_READ_ROUTES
    for method, route, operation in unsafe:
        needed = permissions_of(operation)
        assert len(needed) == len(operation.auth_callbacks) == 1, (method, route)
        if (method, route) in POST_READ_ROUTES:
            assert needed <= READ_PERMISSIONS, (method, route, needed)
        else:
            assert needed <= WRITE_PERMISSIONS, (method, route, needed)


def test_every_operation_but_health_has_an_access_auth() -> None:
    for method, route, operation in registered_operations():
        if (method, route) in PUBLIC_ROUTES:
            assert not operation.auth_callbacks
            continue
        assert operation.auth_callbacks, (method, route)
        assert all(isinstance(a, Access) for a in operation.auth_callbacks), (method, route)
        assert permissions_of(operation) <= READ_PERMISSIONS | WRITE_PERMISSIONS


def test_every_operation_is_exercised_by_this_module() -> None:
    """A new endpoint fails here until it is added to WRITES, POST_READS or READS above."""
    served = {(m, r) for m, r, _ in registered_operations()} - PUBLIC_ROUTES
    exercised = {("POST", e.route) for e in POSTS} | {("GET", r.route) for r in READS}
    assert served == exercised
