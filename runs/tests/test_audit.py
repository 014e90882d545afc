"""Who did what on runs: `launched_by` on every launch path, the actor on every event.

Launches go through the real stack (the API with bearer tokens, the pages with a
signed-in client, `manage.py tunix_run`); the reaper's events are exercised as in
test_reaper.py, a worker's claim with a real worker subprocess as in test_worker.py.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Callable
from datetime import timedelta
from io import StringIO
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from django.db import connection
from django.db.models import ProtectedError
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from django_tasks_db.models import DBTaskResult

from accounts.tests.factories import UserFactory
from datasets.tests.factories import dataset_with_traces
from runs.models import RunEvent, RunStatus, TunixRun
from runs.processes import host_name
from runs.services import run_reap
from runs.tests.factories import TunixRunFactory
from runs.tests.test_worker import DEADLINE_SECONDS, Registry, registry  # noqa: F401
from tunix_registry.actors import COMMAND, Actor
from tunix_registry.tests.openapi_check import assert_fits

RUN_URL = "/api/tunix/run"
RUNS_URL = "/api/tunix/runs"
JSON = "application/json"


def actors(run_id: Any) -> list[tuple[str, str]]:
    """(to_status, actor) of a run's events, oldest first."""
    return list(
        RunEvent.objects.filter(run_id=run_id)
        .order_by("created_at", "id")
        .values_list("to_status", "actor")
    )


def body(**fields: Any) -> dict[str, Any]:
    return {"dataset_key": "demo-v1", "model_id": "tiny-qwen3", **fields}


# --- The API ------------------------------------------------------------------------------


def test_an_api_launch_records_its_user_and_names_them_on_its_events(
    anon_client: Client, user_factory: Callable[..., Any], bearer: Callable[[Any], Any]
) -> None:
    dataset_with_traces(count=2)
    alice = user_factory(username="alice")
    response = anon_client.post(RUN_URL, body(), content_type=JSON, **bearer(alice))
    assert response.status_code == 200, response.content
    assert response.json()["launched_by"] == "alice"
    run = TunixRun.objects.get()
    assert run.launched_by == alice
    # A synchronous run is executed, and finished, by the request that launched it.
    assert actors(run.run_id) == [("running", "user:alice"), ("completed", "user:alice")]
    detail = anon_client.get(f"{RUNS_URL}/{run.run_id}", **bearer(alice)).json()
    assert detail["launched_by"] == "alice"


def test_a_queued_launch_and_a_cancel_by_someone_else_name_each_of_them(
    anon_client: Client, user_factory: Callable[..., Any], bearer: Callable[[Any], Any]
) -> None:
    alice, bob = user_factory(username="alice"), user_factory(username="bob")
    queued = anon_client.post(
        f"{RUN_URL}?mode=async", body(dry_run=False), content_type=JSON, **bearer(alice)
    )
    assert queued.status_code == 200, queued.content
    run_id = queued.json()["run_id"]
    assert queued.json()["launched_by"] == "alice"
    cancelled = anon_client.post(f"{RUNS_URL}/{run_id}/cancel", content_type=JSON, **bearer(bob))
    assert cancelled.json()["status"] == "cancelled"
    assert actors(run_id) == [("pending", "user:alice"), ("cancelled", "user:bob")]
    # The launcher stays the launcher.
    assert TunixRun.objects.get(pk=run_id).launched_by == alice


@pytest.mark.django_db
def test_an_anonymous_write_records_no_launcher(anon_client: Client, settings: Any) -> None:
    settings.TUNIX_ANONYMOUS_ACCESS = "write"
    dataset_with_traces(count=1)
    response = anon_client.post(RUN_URL, body(), content_type=JSON)
    assert response.status_code == 200, response.content
    assert response.json()["launched_by"] is None
    run = TunixRun.objects.get()
    assert run.launched_by is None
    assert actors(run.run_id) == [("running", "anonymous"), ("completed", "anonymous")]
    queued = anon_client.post(f"{RUN_URL}?mode=async", body(), content_type=JSON)
    anon_client.post(f"{RUNS_URL}/{queued.json()['run_id']}/cancel", content_type=JSON)
    assert actors(queued.json()["run_id"]) == [("pending", "anonymous"), ("cancelled", "anonymous")]


def test_the_list_shows_and_filters_by_launcher_combined_with_the_other_filters(
    client: Client, user_factory: Callable[..., Any]
) -> None:
    alice, bob = user_factory(username="alice"), user_factory(username="bob")
    mine_failed = TunixRunFactory.create(launched_by=alice, status=RunStatus.FAILED)
    mine_done = TunixRunFactory.create(launched_by=alice, status=RunStatus.COMPLETED)
    TunixRunFactory.create(launched_by=bob, status=RunStatus.FAILED)
    nobody = TunixRunFactory.create()

    everything = client.get(RUNS_URL).json()["data"]
    launchers = {item["run_id"]: item["launched_by"] for item in everything}
    assert launchers[str(mine_done.run_id)] == "alice"
    assert launchers[str(nobody.run_id)] is None

    mine = client.get(RUNS_URL, {"launched_by": "alice"}).json()["data"]
    assert [item["run_id"] for item in mine] == [str(mine_done.run_id), str(mine_failed.run_id)]
    failed = client.get(RUNS_URL, {"launched_by": "alice", "status": "failed"}).json()["data"]
    assert [item["run_id"] for item in failed] == [str(mine_failed.run_id)]
    unknown = client.get(RUNS_URL, {"launched_by": "nobody-by-that-name"})
    assert unknown.status_code == 200
    assert unknown.json()["data"] == []
    # An empty value is no filter, as for the other filters.
    assert len(client.get(RUNS_URL, {"launched_by": ""}).json()["data"]) == 4
    too_long = client.get(RUNS_URL, {"launched_by": "x" * 151})
    assert too_long.status_code == 422


def test_deep_and_cursor_pages_carry_the_launcher_too(
    client: Client, user_factory: Callable[..., Any]
) -> None:
    alice = user_factory(username="alice")
    TunixRunFactory.create_batch(3, launched_by=alice)
    first = client.get(RUNS_URL, {"limit": 2}).json()
    after = client.get(RUNS_URL, {"limit": 2, "cursor": first["pagination"]["next_cursor"]})
    assert [item["launched_by"] for item in after.json()["data"]] == ["alice"]
    TunixRunFactory.create_batch(200, launched_by=alice)
    deep = client.get(RUNS_URL, {"limit": 2, "offset": 201}).json()["data"]
    assert [item["launched_by"] for item in deep] == ["alice", "alice"]


def _count(client: Client, url: str) -> int:
    with CaptureQueriesContext(connection) as queries:
        assert client.get(url).status_code == 200
    return len(queries.captured_queries)


def test_launchers_cost_the_list_and_the_detail_no_query(
    client: Client, user_factory: Callable[..., Any]
) -> None:
    TunixRunFactory.create_batch(3)
    client.get(RUNS_URL)  # the session and the permissions, cached for the next requests
    without = _count(client, RUNS_URL)
    alone = TunixRun.objects.first()
    assert alone is not None
    detail_without = _count(client, f"{RUNS_URL}/{alone.run_id}")
    launched = [TunixRunFactory.create(launched_by=user_factory()) for _ in range(5)]
    assert _count(client, RUNS_URL) == without
    assert _count(client, f"{RUNS_URL}/{launched[0].run_id}") == detail_without
    with CaptureQueriesContext(connection) as queries:
        client.get(RUNS_URL)
    own = [q["sql"] for q in queries.captured_queries if "runs_tunixrun" in q["sql"]]
    assert len(own) == 1 and "auth_user" in own[0]


def test_bodies_with_a_launcher_fit_the_published_schema(
    client: Client, openapi: dict[str, Any], user_factory: Callable[..., Any]
) -> None:
    run = TunixRunFactory.create(launched_by=user_factory(username="alice"))
    assert_fits(openapi, "/api/tunix/runs", "get", client.get(RUNS_URL))
    assert_fits(openapi, "/api/tunix/runs/{run_id}", "get", client.get(f"{RUNS_URL}/{run.run_id}"))
    item = openapi["components"]["schemas"]["TunixRunListItem"]["properties"]
    assert "launched_by" in item
    params = {p["name"] for p in openapi["paths"]["/api/tunix/runs"]["get"]["parameters"]}
    assert "launched_by" in params


# --- Pages --------------------------------------------------------------------------------


def _form(**overrides: Any) -> dict[str, Any]:
    data = {
        "dataset_key": "demo-v1",
        "model_id": "tiny-qwen3",
        "output_dir": "",
        "learning_rate": "2e-5",
        "num_epochs": "3",
        "batch_size": "8",
        "max_seq_length": "2048",
        "dry_run": "on",
    }
    data.update(overrides)
    return {k: v for k, v in data.items() if v is not None}


def test_a_page_launch_and_cancel_name_the_signed_in_user(client: Client) -> None:
    dataset_with_traces(count=1)
    assert client.post(reverse("runs:home"), _form()).status_code == 200
    dry = TunixRun.objects.get()
    assert dry.launched_by is not None and dry.launched_by.username == "launcher"
    assert actors(dry.run_id) == [("running", "user:launcher"), ("completed", "user:launcher")]

    client.post(reverse("runs:home"), _form(dry_run=None))
    queued = TunixRun.objects.get(status=RunStatus.PENDING)
    client.post(reverse("runs:cancel", args=[queued.run_id]))
    assert actors(queued.run_id) == [("pending", "user:launcher"), ("cancelled", "user:launcher")]

    page = client.get(reverse("runs:detail", args=[queued.run_id])).content.decode()
    assert '<dd data-testid="run:launched-by">launcher</dd>' in page
    assert page.count('data-testid="run:event-actor">by user:launcher</span>') == 2


def test_the_history_shows_and_filters_by_launcher(
    client: Client, user_factory: Callable[..., Any]
) -> None:
    alice = user_factory(username="alice")
    mine = TunixRunFactory.create(launched_by=alice)
    other = TunixRunFactory.create()
    html = client.get(
        reverse("runs:history"), {"launched_by": "alice"}, headers={"HX-Request": "true"}
    ).content.decode()
    assert f'data-testid="tunix:history-launched-by-{mine.run_id}">alice</td>' in html
    assert str(other.run_id) not in html
    everyone = client.get(reverse("runs:history"), headers={"HX-Request": "true"}).content.decode()
    assert f'data-testid="tunix:history-launched-by-{other.run_id}">—</td>' in everyone
    page = client.get(reverse("runs:home"), {"launched_by": "alice"}).content.decode()
    assert 'name="launched_by" value="alice"' in page


def test_an_event_older_than_the_actor_shows_no_actor(client: Client) -> None:
    run = TunixRunFactory.create()
    RunEvent.objects.create(run=run, from_status=None, to_status=run.status, reason="launched")
    page = client.get(reverse("runs:detail", args=[run.run_id])).content.decode()
    assert "launched" in page and 'data-testid="run:event-actor"' not in page
    assert '<dd data-testid="run:launched-by">—</dd>' in page


# --- Commands -----------------------------------------------------------------------------


def test_tunix_run_as_a_user_records_them_and_without_names_the_command(
    user_factory: Callable[..., Any],
) -> None:
    dataset_with_traces(count=1)
    alice = user_factory(username="alice")
    call_command("tunix_run", "demo-v1", "tiny-qwen3", "--as", "alice", stdout=StringIO())
    call_command("tunix_run", "demo-v1", "tiny-qwen3", stdout=StringIO())
    call_command(
        "tunix_run", "demo-v1", "tiny-qwen3", "--local", "--as", "alice", stdout=StringIO()
    )
    as_alice, plain = TunixRun.objects.filter(status=RunStatus.COMPLETED).order_by("created_at")
    assert as_alice.launched_by == alice
    assert actors(as_alice.run_id) == [("running", "user:alice"), ("completed", "user:alice")]
    assert plain.launched_by is None
    assert actors(plain.run_id) == [("running", "command"), ("completed", "command")]
    queued = TunixRun.objects.get(status=RunStatus.PENDING)
    assert queued.launched_by == alice
    assert actors(queued.run_id) == [("pending", "user:alice")]


def test_tunix_run_refuses_an_unknown_or_deactivated_user(
    user_factory: Callable[..., Any],
) -> None:
    user_factory(username="gone", is_active=False)
    with pytest.raises(CommandError, match="There is no user 'nobody'"):
        call_command("tunix_run", "demo-v1", "m", "--as", "nobody", stdout=StringIO())
    with pytest.raises(CommandError, match="'gone' is inactive"):
        call_command("tunix_run", "demo-v1", "m", "--as", "gone", stdout=StringIO())
    assert not TunixRun.objects.exists()


# --- The reaper and workers ---------------------------------------------------------------


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


@pytest.mark.django_db
def test_the_reapers_events_name_the_reaper() -> None:
    lost = TunixRunFactory.create(
        status=RunStatus.RUNNING,
        message="",
        supervisor_host=socket.gethostname(),
        supervisor_pid=_dead_pid(),
    )
    assert run_reap() == [lost.run_id]
    assert actors(lost.run_id)[-1] == ("failed", "reaper")

    call_command("tunix_run", "--local", "demo-v1", "m", stdout=StringIO())
    stuck = TunixRun.objects.get(status=RunStatus.PENDING)
    old = timezone.now() - timedelta(hours=1)
    TunixRun.objects.filter(pk=stuck.pk).update(created_at=old)
    DBTaskResult.objects.filter(id=stuck.task_id).update(status="RUNNING", worker_ids=["w9"])
    call_command("reap_runs", stdout=StringIO())
    assert actors(stuck.run_id) == [("pending", "command"), ("pending", "reaper")]


def test_a_workers_claim_and_outcome_name_the_worker(registry: Registry) -> None:  # noqa: F811
    # The registry's own database, shared with the worker (no test transaction).
    dataset_with_traces(count=1)
    alice = UserFactory.create(role="launcher", username="alice")
    call_command("tunix_run", "demo-v1", "m", "--local", "--as", "alice", stdout=StringIO())
    queued = TunixRun.objects.get()
    worker = registry.worker("w1", "--batch")
    assert worker.process.wait(DEADLINE_SECONDS) == 0, registry.output()
    done = TunixRun.objects.get(pk=queued.pk)
    assert done.launched_by == alice
    me = f"worker:w1@{host_name()}"
    assert [a for _, a in actors(done.run_id)] == ["user:alice", me, me]


# --- Users are kept -----------------------------------------------------------------------


def test_a_user_who_launched_a_run_cannot_be_deleted_only_deactivated(
    user_factory: Callable[..., Any],
) -> None:
    alice = user_factory(username="alice")
    run = TunixRunFactory.create(launched_by=alice)
    with pytest.raises(ProtectedError):
        alice.delete()
    alice.is_active = False
    alice.save()
    run.refresh_from_db()
    assert run.launched_by_name == "alice"
    idle = user_factory(username="idle")
    idle.delete()
    assert not User.objects.filter(username="idle").exists()


def test_the_admin_explains_why_a_launcher_is_kept(
    user_factory: Callable[..., Any],
) -> None:
    alice = user_factory(username="alice")
    run = TunixRunFactory.create(launched_by=alice)
    RunEvent.objects.create(
        run=run, from_status=None, to_status=run.status, reason="launched", actor="user:alice"
    )
    admin = Client()
    admin.force_login(user_factory(role="admin", username="root"))
    page = admin.get(reverse("admin:auth_user_delete", args=[alice.pk])).content.decode()
    assert 'data-testid="admin:user-kept-for-audit"' in page
    assert "Deactivate the user instead" in page
    refused = admin.post(reverse("admin:auth_user_delete", args=[alice.pk]), {"post": "yes"})
    assert refused.status_code == 200
    assert User.objects.filter(pk=alice.pk).exists()
    bulk = admin.post(
        reverse("admin:auth_user_changelist"),
        {"action": "delete_selected", "_selected_action": [alice.pk]},
    ).content.decode()
    assert 'data-testid="admin:user-kept-for-audit"' in bulk

    listing = admin.get(
        reverse("admin:runs_tunixrun_changelist"), {"launched_by__id__exact": alice.pk}
    )
    assert str(run.run_id) in listing.content.decode()
    change = admin.get(reverse("admin:runs_tunixrun_change", args=[run.run_id])).content.decode()
    assert "user:alice" in change


def test_actor_values_are_short_texts() -> None:
    assert Actor.worker("w" * 300, "host").label.startswith("worker:www")
    assert len(Actor.worker("w" * 300, "host").label) == 255
    assert Actor.of(None).label == "anonymous" and COMMAND.label == "command"


@pytest.mark.postgres_only
def test_the_launcher_filter_walks_the_launcher_index_without_a_sort(
    user_factory: Callable[..., Any],
) -> None:
    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL query plan")
    from runs.selectors import run_list

    alice = user_factory(username="alice")
    TunixRunFactory.create_batch(3, launched_by=alice)
    TunixRunFactory.create_batch(3)
    with connection.cursor() as cursor:
        # A tiny table would be read sequentially; rule that out so the plan shows
        # which index the filtered page can use.
        cursor.execute("SET LOCAL enable_seqscan = off")
    for status, index in (
        (None, "run_list_launcher_idx"),
        ("completed", "run_list_launcher_status_idx"),
    ):
        with CaptureQueriesContext(connection) as queries:
            page = run_list(launched_by="alice", status=status)
        assert len(page.items) == 3 and len(queries.captured_queries) == 1
        with connection.cursor() as cursor:
            cursor.execute(f"EXPLAIN {queries.captured_queries[0]['sql']}")
            plan = "\n".join(row[0] for row in cursor.fetchall())
        assert f"Index Scan using {index}" in plan, plan
        assert "Sort" not in plan, plan
