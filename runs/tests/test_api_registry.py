"""GET /api/tunix/runs, /runs/{id} and /runs/{id}/metrics; no delete/patch/retry."""

from __future__ import annotations

import re
import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accounts.tests.helpers import app_queries
from runs.models import RunMode, RunStatus, TunixRun
from runs.tests.factories import RunMetricFactory, TunixRunFactory, runs_at

pytestmark = pytest.mark.django_db

URL = "/api/tunix/runs"


def get(client: Client, url: str = URL, **params: Any) -> Any:
    return client.get(url, params)


def ids(body: dict[str, Any]) -> list[str]:
    return [item["run_id"] for item in body["data"]]


def test_empty_list_shape(client: Client) -> None:
    body = get(client).json()
    assert body == {
        "data": [],
        "pagination": {"limit": 20, "offset": 0, "next_offset": None, "next_cursor": None},
    }


def test_items_are_newest_first_without_output_columns(client: Client) -> None:
    runs = runs_at(3, stdout="secret stdout", stderr="secret stderr")
    body = get(client).json()
    assert ids(body) == [str(r.run_id) for r in reversed(runs)]
    item = body["data"][0]
    assert set(item) == {
        "run_id",
        "dataset_key",
        "model_id",
        "mode",
        "status",
        "started_at",
        "duration_seconds",
        # Additive: who launched it (null: a factory's run has no launcher).
        "launched_by",
    }
    assert item["started_at"].endswith("+00:00")


def test_list_query_does_not_read_stdout_or_stderr(client: Client) -> None:
    runs_at(3)
    with CaptureQueriesContext(connection) as queries:
        assert get(client).status_code == 200
    selects = [q["sql"] for q in queries.captured_queries if "runs_tunixrun" in q["sql"]]
    assert selects
    for sql in selects:
        assert '"stdout"' not in sql and '"stderr"' not in sql and '"config"' not in sql


@pytest.mark.parametrize("offset", [0, 200])
def test_a_list_page_is_one_narrow_query_whatever_its_rows(
    client: Client, launcher: Any, offset: int
) -> None:
    # Rows of every status, some with a launcher: however many rows and whatever
    # they hold, the page reads its columns in one query (two from the deep offset
    # on: the ids, then the rows), never a column the list does not show.
    for status in RunStatus.values:
        TunixRunFactory.create_batch(50, status=status, launched_by=launcher)
    with CaptureQueriesContext(connection) as queries:
        response = get(client, limit=100, offset=offset)
    assert response.status_code == 200
    assert len(response.json()["data"]) == 100
    own = app_queries(queries.captured_queries)
    assert len(own) == (2 if offset >= 200 else 1)
    rows = own[-1]["sql"]
    for column in ("supervisor_host", "heartbeat_at", "output_dir", "message", "artifacts"):
        assert f'"{column}"' not in rows
    assert {item["launched_by"] for item in response.json()["data"]} == {launcher.username}


def test_equal_created_at_is_ordered_by_run_id_descending(client: Client) -> None:
    moment = timezone.now()
    made = [TunixRunFactory.create(started_at=moment, created_at=moment) for _ in range(5)]
    expected = sorted((str(r.run_id) for r in made), reverse=True)
    assert ids(get(client).json()) == expected
    # and pages never repeat or skip a run
    seen = []
    for offset in (0, 2, 4):
        seen += ids(get(client, limit=2, offset=offset).json())
    assert seen == expected


def test_pagination_2_2_1_example(client: Client) -> None:
    runs_at(5)
    first = get(client, limit=2).json()
    assert len(first["data"]) == 2 and first["pagination"]["next_offset"] == 2
    second = get(client, limit=2, offset=2).json()
    assert len(second["data"]) == 2 and second["pagination"]["next_offset"] == 4
    third = get(client, limit=2, offset=4).json()
    assert len(third["data"]) == 1 and third["pagination"]["next_offset"] is None
    assert third["pagination"]["next_cursor"] is None
    assert len(set(ids(first) + ids(second) + ids(third))) == 5


def test_default_limit_is_20_and_maximum_100(client: Client) -> None:
    runs_at(101)
    body = get(client).json()
    assert len(body["data"]) == 20 and body["pagination"]["next_offset"] == 20
    body = get(client, limit=100).json()
    assert len(body["data"]) == 100 and body["pagination"]["next_offset"] == 100
    assert len(get(client, limit=100, offset=100).json()["data"]) == 1


@pytest.mark.parametrize(
    ("params", "detail"),
    [
        ({"limit": 101}, "limit must be between 1 and 100"),
        ({"limit": 0}, "limit must be between 1 and 100"),
        ({"offset": -1}, "offset must be non-negative"),
    ],
)
def test_out_of_range_pages_are_422_with_string_detail(
    client: Client, params: dict[str, Any], detail: str
) -> None:
    response = get(client, **params)
    assert response.status_code == 422
    assert response.json() == {"detail": detail}


@pytest.mark.parametrize("params", [{"offset": "1e20"}, {"offset": 10**20}, {"limit": "x"}])
def test_absurd_or_non_integer_pages_are_422_never_500(
    client: Client, params: dict[str, Any]
) -> None:
    assert get(client, **params).status_code == 422


def test_deep_offset_page_matches_the_shallow_order(client: Client) -> None:
    runs = runs_at(230)
    newest_first = [str(r.run_id) for r in reversed(runs)]
    body = get(client, limit=20, offset=205).json()
    assert ids(body) == newest_first[205:225]
    assert body["pagination"]["next_offset"] == 225
    body = get(client, limit=20, offset=220).json()
    assert ids(body) == newest_first[220:]
    assert body["pagination"]["next_offset"] is None


def test_filters_combine_with_and(client: Client) -> None:
    now = timezone.now()
    combos = [
        (s, k, m)
        for s in (RunStatus.COMPLETED, RunStatus.FAILED)
        for k in ("a-v1", "b-v1")
        for m in (RunMode.DRY_RUN, RunMode.LOCAL)
    ]
    made = {}
    for i, (s, k, m) in enumerate(combos):
        run = TunixRunFactory.create(
            status=s, dataset_key=k, mode=m, started_at=now + timedelta(seconds=i)
        )
        made[(s, k, m)] = str(run.run_id)

    def expect(**filters: str) -> list[str]:
        keys = ("status", "dataset_key", "mode")
        chosen = [
            made[c]
            for c in reversed(combos)
            if all(filters.get(name) in (None, "", c[j]) for j, name in enumerate(keys))
        ]
        return chosen

    cases: list[dict[str, str]] = [
        {"status": "failed"},
        {"dataset_key": "a-v1"},
        {"mode": "local"},
        {"status": "failed", "dataset_key": "b-v1"},
        {"status": "completed", "mode": "dry-run"},
        {"dataset_key": "a-v1", "mode": "local"},
        {"status": "failed", "dataset_key": "a-v1", "mode": "dry-run"},
        {"status": "", "dataset_key": "", "mode": ""},
    ]
    for filters in cases:
        assert ids(get(client, **filters).json()) == expect(**filters), filters
    assert len(ids(get(client, status="failed", mode="local").json())) == 2


def test_unknown_filter_values_match_nothing(client: Client) -> None:
    runs_at(2)
    assert get(client, status="done").json()["data"] == []
    assert get(client, mode="Dry-run").json()["data"] == []


def test_cursor_pages_walk_the_whole_list(client: Client) -> None:
    runs = runs_at(7, dataset_key="c-v1")
    TunixRunFactory.create(dataset_key="other-v1")
    expected = [str(r.run_id) for r in reversed(runs)]
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 3, "dataset_key": "c-v1"}
        if cursor:
            params["cursor"] = cursor
        body = get(client, **params).json()
        seen += ids(body)
        pages += 1
        cursor = body["pagination"]["next_cursor"]
        if cursor is None:
            break
    assert seen == expected
    assert pages == 3


def test_cursor_is_stable_when_newer_runs_arrive(client: Client) -> None:
    runs = runs_at(4)
    first = get(client, limit=2).json()
    TunixRunFactory.create(started_at=timezone.now() + timedelta(hours=1))
    second = get(client, limit=2, cursor=first["pagination"]["next_cursor"]).json()
    assert ids(second) == [str(runs[1].run_id), str(runs[0].run_id)]


def test_cursor_breaks_created_at_ties_by_run_id(client: Client) -> None:
    moment = timezone.now()
    made = sorted(
        (str(TunixRunFactory.create(started_at=moment).run_id) for _ in range(5)), reverse=True
    )
    first = get(client, limit=2).json()
    rest = get(client, limit=10, cursor=first["pagination"]["next_cursor"]).json()
    assert ids(first) + ids(rest) == made


@pytest.mark.parametrize("cursor", ["garbage", "Zm9v", "MjAyNnxub3QtYS11dWlk"])
def test_invalid_cursor_is_422(client: Client, cursor: str) -> None:
    response = get(client, cursor=cursor)
    assert response.status_code == 422
    assert "cursor" in response.json()["detail"]


# A whole second renders without a fraction (datetime.isoformat()).
@pytest.mark.parametrize("microsecond", [0, 120_000])
def test_detail_returns_the_stored_run(client: Client, microsecond: int) -> None:
    run = TunixRunFactory.create(
        started_at=timezone.now().replace(microsecond=microsecond),
        mode=RunMode.LOCAL,
        status=RunStatus.FAILED,
        exit_code=3,
        stdout="out <b>",
        stderr="err",
        message="Local execution failed with exit code 3",
        output_dir="outputs/x",
        metrics_steps=30,
        final_loss=1.25,
        best_eval_loss=1.6,
        tokens_per_second=2000.0,
    )
    body = get(client, f"{URL}/{run.run_id}").json()
    assert body == {
        "run_id": str(run.run_id),
        "status": "failed",
        "mode": "local",
        "dataset_key": run.dataset_key,
        "model_id": run.model_id,
        "output_dir": "outputs/x",
        "exit_code": 3,
        "stdout": "out <b>",
        "stderr": "err",
        "duration_seconds": 1.5,
        "started_at": run.started_at.isoformat(),
        "completed_at": run.completed_at.isoformat() if run.completed_at else None,
        "message": "Local execution failed with exit code 3",
        "metrics": {
            "steps": 30,
            "final_loss": 1.25,
            "best_eval_loss": 1.6,
            "tokens_per_second": 2000.0,
        },
        # Additive: where a queued run waited and which worker executed it.
        "queue": "",
        "worker_id": "",
        "heartbeat_at": None,
        # Additive: who launched it (null for a run without a launcher).
        "launched_by": None,
        # Additive: full-weight, the trainer's checkpoint cadence, resumed nothing,
        # and no trainer report (this run has no output directory on disk).
        "lora": None,
        "checkpoint_every_n_steps": None,
        "resumed_from": None,
        "training": None,
        "evaluate_on": None,
    }
    assert body["started_at"].endswith("+00:00")


def test_detail_of_a_running_run_has_null_completion(client: Client) -> None:
    run = TunixRunFactory.create(status=RunStatus.RUNNING, message="")
    body = get(client, f"{URL}/{run.run_id}").json()
    assert body["status"] == "running"
    assert body["completed_at"] is None and body["duration_seconds"] is None


def test_detail_unknown_is_404_and_malformed_is_422(client: Client) -> None:
    zero = uuid.UUID(int=0)
    response = get(client, f"{URL}/{zero}")
    assert response.status_code == 404
    assert response.json() == {"detail": f"Tunix run not found: {zero}"}
    assert get(client, f"{URL}/not-a-uuid").status_code == 422


def test_metrics_series_by_step(client: Client) -> None:
    run = TunixRunFactory.create(mode=RunMode.LOCAL)
    for step, loss in ((20, 1.5), (10, 2.0)):
        RunMetricFactory.create(run=run, step=step, loss=loss, eval_loss=None)
    body = get(client, f"{URL}/{run.run_id}/metrics").json()
    assert body["run_id"] == str(run.run_id)
    assert [(m["step"], m["loss"]) for m in body["metrics"]] == [(10, 2.0), (20, 1.5)]
    assert set(body["metrics"][0]) == {
        "step",
        "loss",
        "eval_loss",
        "tokens_per_second",
        "elapsed_seconds",
    }
    empty = TunixRunFactory.create()
    assert get(client, f"{URL}/{empty.run_id}/metrics").json()["metrics"] == []


def test_metrics_unknown_is_404_and_malformed_is_422(client: Client) -> None:
    zero = uuid.UUID(int=0)
    response = get(client, f"{URL}/{zero}/metrics")
    assert response.status_code == 404
    assert response.json() == {"detail": f"Tunix run not found: {zero}"}
    assert get(client, f"{URL}/nope/metrics").status_code == 422


def test_runs_cannot_be_deleted_patched_or_retried(client: Client) -> None:
    run = TunixRunFactory.create(status=RunStatus.FAILED)
    before = TunixRun.objects.values().get(pk=run.pk)
    url = f"{URL}/{run.run_id}"
    for method in ("delete", "patch", "put"):
        response = getattr(client, method)(
            url, data={"status": "completed"}, content_type="application/json"
        )
        assert response.status_code == 405, method
    assert client.post(url, content_type="application/json").status_code in (404, 405)
    assert client.post(f"{url}/retry", content_type="application/json").status_code in (404, 405)
    assert client.delete(URL).status_code in (404, 405)
    assert TunixRun.objects.values().get(pk=run.pk) == before


@pytest.fixture
def tied_runs() -> list[TunixRun]:
    """230 runs over three datasets, two statuses and two modes; pairs share created_at."""
    moment = timezone.now().replace(microsecond=0)
    runs = []
    for i in range(230):
        when = moment - timedelta(seconds=i // 2, microseconds=(i // 2) % 3 * 250_001)
        runs.append(
            TunixRunFactory.create(
                status=(RunStatus.COMPLETED, RunStatus.FAILED)[i % 2],
                mode=(RunMode.DRY_RUN, RunMode.LOCAL)[i % 8 == 0],
                dataset_key=f"k{i % 3}-v1",
                started_at=when,
                created_at=when,
            )
        )
    return runs


PAGE_CASES: list[dict[str, Any]] = [
    {},
    {"status": "failed"},
    {"dataset_key": "k1-v1", "mode": "local"},
    {"status": "completed", "dataset_key": "k2-v1", "mode": "dry-run"},
    {"offset": 7, "limit": 3},
    {"offset": 201, "limit": 10},
    {"offset": 205, "limit": 50, "status": "", "dataset_key": ""},
    {"offset": 100, "limit": 10, "status": "completed"},
    {"offset": 200, "limit": 5, "mode": "dry-run"},
    {"offset": 229, "limit": 5},
    {"offset": 400, "limit": 5},
]


def _plain(**params: Any) -> list[str]:
    """The ids of a page by the plainest ORM query there is."""
    qs = TunixRun.objects.order_by("-created_at", "-run_id")
    for name in ("status", "dataset_key", "mode"):
        if params.get(name):
            qs = qs.filter(**{name: params[name]})
    offset, limit = params.get("offset", 0), params.get("limit", 20)
    return [str(run_id) for run_id in qs.values_list("run_id", flat=True)[offset : offset + limit]]


def test_list_pages_equal_the_plain_orm_query_across_ties(
    client: Client, tied_runs: list[TunixRun]
) -> None:
    for params in PAGE_CASES:
        body = get(client, **params).json()
        assert ids(body) == _plain(**params), params
        total = TunixRun.objects.filter(
            **{k: v for k, v in params.items() if k in ("status", "dataset_key", "mode") and v}
        ).count()
        limit, offset = params.get("limit", 20), params.get("offset", 0)
        expected_next = offset + limit if offset + limit < total else None
        assert body["pagination"]["next_offset"] == expected_next, params


@pytest.mark.parametrize(
    "filters", [{}, {"status": "failed"}, {"dataset_key": "k0-v1", "mode": "dry-run"}]
)
def test_following_cursors_walks_every_run_once_in_order(
    client: Client, tied_runs: list[TunixRun], filters: dict[str, str]
) -> None:
    seen: list[str] = []
    params: dict[str, Any] = {**filters, "limit": 17}
    while True:
        body = get(client, **params).json()
        seen += ids(body)
        if body["pagination"]["next_cursor"] is None:
            break
        assert body["pagination"]["next_offset"] is not None or "cursor" in params
        params = {**filters, "limit": 17, "cursor": body["pagination"]["next_cursor"]}
    assert seen == _plain(**filters, limit=1000)


def test_page_history_and_api_list_show_the_same_runs(
    client: Client, tied_runs: list[TunixRun]
) -> None:
    from django.urls import reverse

    for params in PAGE_CASES:
        if params.get("offset", 0) > 1000:
            continue
        page = client.get(reverse("runs:home"), {**params, "history": 1})
        assert page.status_code == 200, params
        rows = re.findall(r'data-testid="tunix:history-row-([0-9a-f-]+)"', page.content.decode())
        assert rows == ids(get(client, **params).json()), params


# --- Bodies against their declared schemas ----------------------------------


def _assert_fits(schema: type[Any], body: dict[str, Any]) -> None:
    schema.model_validate(body)
    assert set(body) == set(schema.model_fields), schema


def test_run_bodies_fit_their_declared_schemas(client: Client) -> None:
    from runs.schemas import TunixRunListItem, TunixRunListResponse, TunixRunResponse

    local = TunixRunFactory.create(
        mode=RunMode.LOCAL, status=RunStatus.COMPLETED, metrics_steps=3, final_loss=0.5
    )
    TunixRunFactory.create(status=RunStatus.RUNNING, completed_at=None)
    listed = get(client).json()
    _assert_fits(TunixRunListResponse, listed)
    for item in listed["data"]:
        _assert_fits(TunixRunListItem, item)
    detail = get(client, f"{URL}/{local.run_id}").json()
    _assert_fits(TunixRunResponse, detail)
    assert detail["metrics"] == {
        "steps": 3,
        "final_loss": 0.5,
        "best_eval_loss": local.best_eval_loss,
        "tokens_per_second": local.tokens_per_second,
    }
    assert detail["started_at"] == local.started_at.isoformat()
    assert local.completed_at is not None
    assert detail["completed_at"] == local.completed_at.isoformat()
    launched = client.post(
        "/api/tunix/run",
        {"dataset_key": "some-v1", "model_id": "m"},
        content_type="application/json",
    ).json()
    _assert_fits(TunixRunResponse, launched)


# --- HTTP caching -------------------------------------------------------------


def test_a_finished_run_is_immutable_and_revalidated_without_a_query(client: Client) -> None:
    run = TunixRunFactory.create(status=RunStatus.COMPLETED)
    url = f"{URL}/{run.run_id}"
    first = client.get(url)
    etag = first["ETag"]
    assert etag.startswith('"') and not etag.startswith("W/")
    assert "immutable" in first["Cache-Control"] and "max-age=" in first["Cache-Control"]
    with CaptureQueriesContext(connection) as queries:
        again = client.get(url, headers={"If-None-Match": etag})
    # The endpoint's own queries; authentication's (session, user) are counted apart.
    assert app_queries(queries.captured_queries) == []
    assert again.status_code == 304
    assert again.content == b""
    assert again["ETag"] == etag
    assert client.get(url, headers={"If-None-Match": '"other"'}).status_code == 200


def test_an_etag_this_server_did_not_sign_is_answered_in_full(client: Client) -> None:
    run = TunixRunFactory.create(status=RunStatus.FAILED)
    url = f"{URL}/{run.run_id}"
    etag = client.get(url)["ETag"]
    unknown = uuid.uuid4()
    # The same tag with another run's id: the signature no longer matches.
    forged = etag.replace(str(run.run_id), str(unknown))
    assert forged != etag
    response = client.get(f"{URL}/{unknown}", headers={"If-None-Match": forged})
    assert response.status_code == 404
    assert response.json() == {"detail": f"Tunix run not found: {unknown}"}
    # A running run's tag from another server's key does not pass either.
    assert client.get(url, headers={"If-None-Match": etag[:-3] + 'ab"'}).status_code == 200


def test_a_running_run_revalidates_and_its_etag_changes_when_it_finishes(client: Client) -> None:
    run = TunixRunFactory.create(status=RunStatus.RUNNING, completed_at=None)
    url = f"{URL}/{run.run_id}"
    live = client.get(url)
    assert live.status_code == 200
    assert "no-cache" in live["Cache-Control"] and "immutable" not in live["Cache-Control"]
    assert client.get(url, headers={"If-None-Match": live["ETag"]}).status_code == 304
    TunixRun.objects.filter(pk=run.pk).update(
        status=RunStatus.COMPLETED, completed_at=timezone.now(), exit_code=0
    )
    finished = client.get(url, headers={"If-None-Match": live["ETag"]})
    assert finished.status_code == 200
    assert finished.json()["status"] == "completed"
    assert finished["ETag"] != live["ETag"]
    assert "immutable" in finished["Cache-Control"]


def test_the_list_revalidates_against_its_body(client: Client) -> None:
    runs_at(2)
    first = client.get(URL)
    assert "no-cache" in first["Cache-Control"]
    assert client.get(URL, headers={"If-None-Match": first["ETag"]}).status_code == 304
    TunixRunFactory.create()
    changed = client.get(URL, headers={"If-None-Match": first["ETag"]})
    assert changed.status_code == 200
    assert changed["ETag"] != first["ETag"]
