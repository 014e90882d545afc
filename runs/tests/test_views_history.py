"""The run history (`runs:history` fragment, the opened history on `runs:home`, `runs:row`)."""

from __future__ import annotations

import re
import uuid
from datetime import UTC

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from accounts.tests.helpers import app_queries
from runs.models import RunMode, RunStatus
from runs.tests.factories import TunixRunFactory, runs_at

pytestmark = pytest.mark.django_db

HTMX = {"HX-Request": "true"}


def row_ids(html: str) -> list[str]:
    return re.findall(r'data-testid="tunix:history-row-([0-9a-f-]+)"', html)


def history(client: Client, **params: str) -> str:
    response = client.get(reverse("runs:history"), params, headers=HTMX)
    assert response.status_code == 200
    return response.content.decode()


def test_empty_history_says_no_runs_yet(client: Client) -> None:
    html = history(client)
    assert "No runs yet" in html
    assert 'data-testid="tunix:history-list"' not in html


def test_history_lists_all_runs_newest_first_with_their_columns(client: Client) -> None:
    runs = runs_at(3)
    local = TunixRunFactory.create(
        mode=RunMode.LOCAL, exit_code=0, final_loss=0.12345, metrics_steps=10, model_id="m/x"
    )
    html = history(client)
    assert row_ids(html) == [str(local.run_id)] + [str(r.run_id) for r in reversed(runs)]
    rid = local.run_id
    assert (
        f'<span class="status-badge status-completed" data-testid="tunix:history-status-{rid}"'
        in html
    )
    assert f'data-testid="tunix:history-mode-{rid}">local<' in html
    assert f'data-testid="tunix:history-dataset-{rid}">demo-v1<' in html
    assert f'data-testid="tunix:history-model-{rid}">m/x<' in html
    assert f'data-testid="tunix:history-duration-{rid}">1.50 s<' in html
    assert f'data-testid="tunix:history-loss-{rid}">0.1235<' in html
    # Dry-runs have no loss.
    assert f'data-testid="tunix:history-loss-{runs[0].run_id}"><span class="muted">—<' in html
    # Started at: UTC ISO in datetime and on hover, for runs.js to show in local time.
    iso = local.started_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")
    assert re.search(rf'<time datetime="{iso}Z" title="{iso}Z \(UTC\)" data-local-time>', html)
    # Rows expand with real buttons.
    assert f'aria-controls="run-detail-{rid}"' in html and 'aria-expanded="false"' in html


def test_history_never_loads_stdout_or_stderr_and_never_counts(client: Client) -> None:
    runs_at(5, stdout="BIG-OUTPUT-MARKER", stderr="BIG-ERROR-MARKER")
    with CaptureQueriesContext(connection) as queries:
        html = history(client)
    # The page's own queries; authentication's (session, user) are counted apart.
    own = app_queries(queries.captured_queries)
    sql = " ".join(q["sql"] for q in own).lower()
    assert "count(" not in sql
    assert '"stdout"' not in sql and '"stderr"' not in sql
    assert "BIG-OUTPUT-MARKER" not in html
    assert len(own) == 1


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"status": "failed"}, {"failed-dry-a", "failed-local-a", "failed-dry-b"}),
        ({"mode": "local"}, {"failed-local-a", "done-local-b"}),
        ({"dataset_key": "a-v1"}, {"failed-dry-a", "failed-local-a", "done-dry-a"}),
        ({"status": "failed", "mode": "dry-run"}, {"failed-dry-a", "failed-dry-b"}),
        ({"status": "failed", "mode": "local", "dataset_key": "a-v1"}, {"failed-local-a"}),
        ({"status": "", "mode": "", "dataset_key": ""}, None),  # empty filters are absent
    ],
)
def test_filters_combine_with_and(
    client: Client, params: dict[str, str], expected: set[str] | None
) -> None:
    made = {
        "failed-dry-a": ("a-v1", RunStatus.FAILED, RunMode.DRY_RUN),
        "failed-local-a": ("a-v1", RunStatus.FAILED, RunMode.LOCAL),
        "done-dry-a": ("a-v1", RunStatus.COMPLETED, RunMode.DRY_RUN),
        "failed-dry-b": ("b-v1", RunStatus.FAILED, RunMode.DRY_RUN),
        "done-local-b": ("b-v1", RunStatus.COMPLETED, RunMode.LOCAL),
    }
    ids = {
        str(
            TunixRunFactory.create(dataset_key=key, status=status, mode=mode, message=name).run_id
        ): name
        for name, (key, status, mode) in made.items()
    }
    html = history(client, **params)
    assert {ids[i] for i in row_ids(html)} == (expected if expected is not None else set(made))


def test_no_match_says_so(client: Client) -> None:
    TunixRunFactory.create()
    html = history(client, status="timeout")
    assert "No runs match these filters" in html


def test_invalid_filters_show_an_error_naming_the_field(client: Client) -> None:
    TunixRunFactory.create()
    html = history(client, status="exploded")
    assert 'data-testid="tunix:history-error-filters"' in html
    assert "status: Select a valid choice" in html
    html = history(client, offset="-1")
    assert "offset: Ensure this value is greater than or equal to 0" in html
    html = history(client, limit="101")
    assert "limit:" in html
    html = history(client, dataset_key="k" * 257)
    assert "dataset_key:" in html
    # On the page itself the history opens with the error, as a 400.
    page = client.get(reverse("runs:home"), {"mode": "fast"})
    assert page.status_code == 400
    assert "mode: Select a valid choice" in page.content.decode()


def test_pagination_by_offset_with_next_and_previous(client: Client) -> None:
    runs = list(reversed(runs_at(25)))  # newest first
    first = history(client)
    assert row_ids(first) == [str(r.run_id) for r in runs[:20]]
    assert 'data-testid="tunix:history-previous"' not in first
    assert 'href="/?offset=20"' in first
    assert 'hx-get="/runs/history/?offset=20"' in first
    second = history(client, offset="20")
    assert row_ids(second) == [str(r.run_id) for r in runs[20:]]
    assert 'data-testid="tunix:history-next"' not in second
    assert 'href="/?history=1"' in second  # "newer" goes back to the first page
    small = history(client, limit="10", offset="10")
    assert row_ids(small) == [str(r.run_id) for r in runs[10:20]]
    assert 'href="/?limit=10&amp;offset=20"' in small
    assert 'href="/?limit=10"' in small
    assert "No more runs" in history(client, offset="100")


def test_pagination_keeps_the_filters(client: Client) -> None:
    runs_at(22, status=RunStatus.FAILED, dataset_key="x-v1")
    runs_at(3)
    html = history(client, status="failed", dataset_key="x-v1")
    assert len(row_ids(html)) == 20
    assert 'href="/?status=failed&amp;dataset_key=x-v1&amp;offset=20"' in html
    assert len(row_ids(history(client, status="failed", dataset_key="x-v1", offset="20"))) == 2


def test_history_pushes_the_filtered_page_url_only_when_it_changes(client: Client) -> None:
    TunixRunFactory.create()
    url = reverse("runs:history")
    changed = client.get(
        url, {"status": "failed"}, headers={**HTMX, "HX-Current-URL": "http://testserver/"}
    )
    assert changed.headers["HX-Push-Url"] == "/?status=failed"
    same = client.get(
        url,
        {"status": "failed"},
        headers={**HTMX, "HX-Current-URL": "http://testserver/?status=failed"},
    )
    assert "HX-Push-Url" not in same.headers
    # Opening the history on a page whose query holds no filters keeps the URL.
    opened = client.get(
        url, headers={**HTMX, "HX-Current-URL": f"http://testserver/?from={uuid.uuid4()}"}
    )
    assert "HX-Push-Url" not in opened.headers
    cleared = client.get(
        url, headers={**HTMX, "HX-Current-URL": "http://testserver/?status=failed"}
    )
    assert cleared.headers["HX-Push-Url"] == "/"


def test_history_without_htmx_redirects_to_the_opened_page(client: Client) -> None:
    response = client.get(reverse("runs:history"), {"mode": "local"})
    assert response.status_code == 302
    assert response.headers["Location"] == "/?mode=local"
    response = client.get(reverse("runs:history"))
    assert response.headers["Location"] == "/?history=1"


def test_a_bookmarked_filtered_url_opens_the_history_with_the_filters(client: Client) -> None:
    failed = TunixRunFactory.create(status=RunStatus.FAILED, mode=RunMode.DRY_RUN)
    TunixRunFactory.create(status=RunStatus.COMPLETED)
    response = client.get(reverse("runs:home"), {"status": "failed", "mode": "dry-run"})
    assert response.status_code == 200
    html = response.content.decode()
    assert 'id="history-body" hidden' not in html
    assert 'aria-expanded="true" aria-controls="history-body"' in html
    assert row_ids(html) == [str(failed.run_id)]
    # The filter controls show the filters.
    assert '<option value="failed" selected>' in html
    assert '<option value="dry-run" selected>' in html


def test_history_1_opens_the_unfiltered_history(client: Client) -> None:
    run = TunixRunFactory.create()
    html = client.get(reverse("runs:home"), {"history": "1"}).content.decode()
    assert row_ids(html) == [str(run.run_id)]


def test_row_detail_shows_everything_escaped(client: Client) -> None:
    run = TunixRunFactory.create(
        status=RunStatus.FAILED,
        mode=RunMode.LOCAL,
        exit_code=3,
        message="Training failed <b>",
        stdout="<script>alert(1)</script>\nline two",
        stderr="reason: & <err>",
    )
    response = client.get(reverse("runs:row", args=[run.run_id]), headers=HTMX)
    assert response.status_code == 200
    html = response.content.decode()
    assert f'data-testid="tunix:run-detail-{run.run_id}"' in html
    assert "<dt>Exit code</dt><dd>3</dd>" in html
    assert "Training failed &lt;b&gt;" in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<script>" not in html
    assert "reason: &amp; &lt;err&gt;" in html
    assert '<th scope="row">learning_rate</th>' in html  # the configuration
    assert f'href="/runs/{run.run_id}/"' in html
    assert "Completed at" in html and "<time datetime=" in html


def test_row_detail_errors(client: Client) -> None:
    missing = uuid.uuid4()
    assert client.get(f"/runs/{missing}/row/", headers=HTMX).status_code == 404
    assert client.get("/runs/not-a-uuid/row/", headers=HTMX).status_code == 404
    run = TunixRunFactory.create()
    plain = client.get(reverse("runs:row", args=[run.run_id]))
    assert plain.status_code == 302
    assert plain.headers["Location"] == f"/runs/{run.run_id}/"


def test_history_rejects_posts(client: Client) -> None:
    assert client.post(reverse("runs:history")).status_code == 405


def test_history_polls_only_while_a_row_on_screen_is_live(client: Client) -> None:
    runs_at(2)
    html = history(client)
    assert 'data-testid="tunix:history-poll"' not in html
    assert "every 3s" not in html
    assert 'data-testid="tunix:refresh-history-btn"' in client.get("/?history=1").content.decode()
    for status in (RunStatus.PENDING, RunStatus.RUNNING, RunStatus.CANCEL_REQUESTED):
        live = TunixRunFactory.create(status=status)
        html = history(client)
        poll = html.split('data-testid="tunix:history-poll"')[1].split(">", 1)[0]
        assert 'hx-get="/runs/history/"' in poll
        assert 'hx-trigger="every 3s, runs:changed from:body"' in poll
        paused = "#history-results [aria-expanded=true], #history-results input[name=run]:checked"
        assert f'data-poll-paused-by="{paused}"' in poll
        live.delete()
    # A filtered page polls its own filters and page.
    TunixRunFactory.create(status=RunStatus.RUNNING, dataset_key="x-v1")
    html = history(client, dataset_key="x-v1")
    assert 'hx-get="/runs/history/?dataset_key=x-v1"' in html
    # Live runs off screen (another page, other filters) start no polling.
    assert 'data-testid="tunix:history-poll"' not in history(client, dataset_key="demo-v1")


def test_history_rows_of_pending_and_running_runs_have_a_cancel_button(client: Client) -> None:
    pending = TunixRunFactory.create(status=RunStatus.PENDING)
    running = TunixRunFactory.create(status=RunStatus.RUNNING)
    requested = TunixRunFactory.create(status=RunStatus.CANCEL_REQUESTED)
    done = TunixRunFactory.create(status=RunStatus.COMPLETED)
    html = history(client)
    for run in (pending, running):
        button = html.split(f'data-testid="tunix:cancel-btn-{run.run_id}"')[1].split(">", 1)[0]
        assert f'hx-post="/runs/{run.run_id}/cancel/"' in button
        assert f'hx-confirm="Cancel run {run.run_id}?' in button
        assert 'hx-target="#history-notice"' in button
        assert f'href="/runs/{run.run_id}/cancel/?next=' in html
    for run in (requested, done):
        assert f"tunix:cancel-btn-{run.run_id}" not in html
    badges = [
        '<span class="status-badge status-pending"',
        '<span class="status-badge status-cancel_requested"',
    ]
    for badge in badges:
        assert badge in html
