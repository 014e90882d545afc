"""The Tunix panel (`runs:home`): runtime status, the launch form, its results and errors."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.urls import reverse
from django_tasks_db.models import DBTaskResult

from datasets.tests.factories import dataset_with_traces
from runs.models import RunMode, RunStatus, TunixRun
from runs.tests.factories import TunixRunFactory

pytestmark = pytest.mark.django_db

HTMX = {"HX-Request": "true"}


def form_data(**overrides: Any) -> dict[str, Any]:
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


def test_home_shows_runtime_status_form_defaults_and_dataset_choices(client: Client) -> None:
    dataset_with_traces(name="alpha", version="v1", count=1)
    dataset_with_traces(name="beta", version="v2", count=1)
    response = client.get(reverse("runs:home"))
    assert response.status_code == 200
    html = response.content.decode()
    assert 'data-testid="tunix:status"' in html
    assert "Runtime required:" in html
    assert 'value="tiny-qwen3"' in html
    assert "tiny-qwen3" in html  # the CPU smoke hint
    assert 'name="dry_run"' in html and "checked" in html.split('name="dry_run"')[1][:80]
    assert 'value="2e-05"' in html
    assert '<option value="beta-v2">' in html and '<option value="alpha-v1">' in html
    # Newest dataset first in the suggestions.
    assert html.index("beta-v2") < html.index("alpha-v1")
    # The history is collapsed and not loaded.
    assert 'aria-expanded="false"' in html
    assert 'id="history-body" hidden' in html
    assert 'data-testid="tunix:history-list"' not in html


def test_home_without_datasets_points_to_the_datasets_page(client: Client) -> None:
    html = client.get(reverse("runs:home")).content.decode()
    assert 'data-testid="tunix:no-datasets"' in html
    assert f'href="{reverse("datasets:list")}"' in html
    dataset_with_traces(count=1)
    html = client.get(reverse("runs:home")).content.decode()
    assert 'data-testid="tunix:no-datasets"' not in html


def test_runtime_status_when_not_installed(client: Client, tunix_missing: None) -> None:
    html = client.get(reverse("runs:home")).content.decode()
    assert "Tunix not installed" in html
    assert "Runtime required:\n        Yes" in html
    assert "pip install -e &#x27;.[tunix]&#x27;" in html


def test_runtime_status_when_installed(client: Client, settings: Any) -> None:
    settings.TUNIX_RUNTIME_MODULE = "json"  # importable: the real check answers "available"
    html = client.get(reverse("runs:home")).content.decode()
    assert "Runtime required:\n        No (Artifact-based)" in html
    assert "Tunix runtime is available" in html


def test_htmx_post_launches_a_dry_run_and_returns_the_result_fragment(client: Client) -> None:
    dataset_with_traces(name="demo", version="v1", count=3)
    response = client.post(reverse("runs:home"), form_data(), headers=HTMX)
    assert response.status_code == 200
    html = response.content.decode()
    assert not html.lstrip().startswith("<!doctype")  # a fragment, not the page
    assert html.lstrip().startswith('<section id="launch"')
    run = TunixRun.objects.get()
    assert run.status == RunStatus.COMPLETED and run.mode == RunMode.DRY_RUN
    assert 'data-testid="tunix:run-result"' in html
    assert f'href="/runs/{run.run_id}/"' in html
    assert '<span class="status-badge status-completed" data-testid="tunix:run-status">' in html
    assert "Dry-run validation successful" in html
    assert "3 traces sampled" in html  # stdout, in its <pre>
    assert 'data-testid="tunix:run-exit-code">—<' in html  # dry-run exit code is null


def test_plain_post_renders_the_whole_page_with_the_result(client: Client) -> None:
    dataset_with_traces(name="demo", version="v1", count=2)
    response = client.post(reverse("runs:home"), form_data())
    assert response.status_code == 200
    html = response.content.decode()
    assert html.startswith("<!doctype html>")
    assert 'data-testid="tunix:run-result"' in html
    assert 'data-testid="tunix:run-history-section"' in html
    assert TunixRun.objects.count() == 1


def test_failed_dry_run_shows_the_failure_and_stderr(client: Client) -> None:
    response = client.post(reverse("runs:home"), form_data(dataset_key="missing-v1"), headers=HTMX)
    html = response.content.decode()
    assert "Run failed" in html
    assert "status-failed" in html
    assert "Dataset not found: missing-v1" in html
    assert TunixRun.objects.get().status == RunStatus.FAILED


def test_unchecked_dry_run_queues_a_local_run_and_goes_to_its_page(
    client: Client, fake_trainer: Any
) -> None:
    dataset_with_traces(name="demo", version="v1", count=3)
    response = client.post(
        reverse("runs:home"), form_data(dry_run=None, model_id="fake-ok"), headers=HTMX
    )
    run = TunixRun.objects.get()
    assert run.mode == RunMode.LOCAL and run.status == RunStatus.PENDING
    assert run.queue == "default"
    # Answered at once: the browser goes to the run's page, a worker executes it.
    assert response.status_code == 200
    assert response["HX-Redirect"] == f"/runs/{run.run_id}/"
    task = DBTaskResult.objects.get(id=run.task_id)
    assert task.queue_name == "default" and task.status == "READY"
    page = client.get(response["HX-Redirect"]).content.decode()
    assert "Run queued on default; this page follows it live." in page
    assert '<span class="status-badge status-pending" data-testid="run:status">' in page

    plain = client.post(reverse("runs:home"), form_data(dry_run=None, model_id="fake-ok"))
    assert plain.status_code == 302
    second = TunixRun.objects.exclude(pk=run.pk).get()
    assert plain["Location"] == f"/runs/{second.run_id}/"


def test_the_queue_choice_appears_with_several_queues_and_is_validated(
    client: Client, settings: Any
) -> None:
    assert 'name="queue"' not in client.get(reverse("runs:home")).content.decode()
    settings.TUNIX_QUEUES = ["default", "gpu"]
    settings.TASKS = {"default": {**settings.TASKS["default"], "QUEUES": ["default", "gpu"]}}
    html = client.get(reverse("runs:home")).content.decode()
    assert '<select name="queue"' in html
    assert '<option value="gpu">gpu</option>' in html
    assert '<option value="default" selected>default</option>' in html

    bad = client.post(reverse("runs:home"), form_data(dry_run=None, queue="tpu"), headers=HTMX)
    html = bad.content.decode()
    marker = 'data-testid="tunix:field-error-queue"'
    assert marker in html and "Select a valid choice" in html.split(marker)[1][:200]
    assert not TunixRun.objects.exists()

    good = client.post(reverse("runs:home"), form_data(dry_run=None, queue="gpu"), headers=HTMX)
    run = TunixRun.objects.get()
    assert good["HX-Redirect"] == f"/runs/{run.run_id}/"
    assert run.queue == "gpu" and run.config["queue"] == "gpu"
    # "Launch again" offers the same queue.
    again = client.get(reverse("runs:home"), {"from": str(run.run_id)}).content.decode()
    assert '<option value="gpu" selected>gpu</option>' in again
    assert DBTaskResult.objects.get(id=run.task_id).queue_name == "gpu"


def test_a_queue_the_database_cannot_take_is_a_form_error_and_keeps_the_values(
    client: Client,
) -> None:
    # A real failure of the queue's table (renamed away inside the test's transaction).
    table = DBTaskResult._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(f"ALTER TABLE {table} RENAME TO {table}_gone")
    response = client.post(reverse("runs:home"), form_data(dry_run=None, model_id="my/model"))
    assert response.status_code == 503
    html = response.content.decode()
    error = html.split('data-testid="tunix:error"')[1][:300]
    assert "The run could not be queued" in error and "Nothing was launched" in error
    assert 'value="my/model"' in html
    assert not TunixRun.objects.exists()
    fragment = client.post(reverse("runs:home"), form_data(dry_run=None), headers=HTMX)
    assert fragment.status_code == 200
    assert 'data-testid="tunix:error"' in fragment.content.decode()


@pytest.mark.parametrize(
    ("overrides", "field", "message"),
    [
        ({"dataset_key": ""}, "dataset_key", "This field is required."),
        ({"model_id": ""}, "model_id", "This field is required."),
        ({"dataset_key": "x" * 257}, "dataset_key", "at most 256 characters"),
        ({"output_dir": "o" * 513}, "output_dir", "at most 512 characters"),
        ({"learning_rate": "0"}, "learning_rate", "greater than 0"),
        ({"learning_rate": "1.5"}, "learning_rate", "less than or equal to 1"),
        ({"learning_rate": "fast"}, "learning_rate", "Enter a number."),
        ({"num_epochs": "0"}, "num_epochs", "greater than or equal to 1"),
        ({"num_epochs": "101"}, "num_epochs", "less than or equal to 100"),
        ({"num_epochs": "2.5"}, "num_epochs", "Enter a whole number."),
        ({"batch_size": "513"}, "batch_size", "less than or equal to 512"),
        ({"max_seq_length": "127"}, "max_seq_length", "greater than or equal to 128"),
        ({"max_seq_length": "32769"}, "max_seq_length", "less than or equal to 32768"),
    ],
)
def test_field_errors_are_shown_next_to_their_field_and_nothing_runs(
    client: Client, overrides: dict[str, str], field: str, message: str
) -> None:
    response = client.post(reverse("runs:home"), form_data(**overrides), headers=HTMX)
    assert response.status_code == 200  # htmx swaps the form with its errors
    html = response.content.decode()
    marker = f'data-testid="tunix:field-error-{field}"'
    assert marker in html
    assert message in html.split(marker)[1][:200]
    assert 'data-testid="tunix:run-result"' not in html
    assert not TunixRun.objects.exists()


def test_plain_post_with_errors_is_422_and_keeps_the_typed_values(client: Client) -> None:
    response = client.post(reverse("runs:home"), form_data(num_epochs="0", model_id="my/model"))
    assert response.status_code == 422
    html = response.content.decode()
    assert html.startswith("<!doctype html>")
    assert 'data-testid="tunix:field-error-num_epochs"' in html
    assert 'value="my/model"' in html
    assert not TunixRun.objects.exists()


def test_invalid_dataset_key_from_the_service_is_a_field_error(client: Client) -> None:
    response = client.post(reverse("runs:home"), form_data(dataset_key="../etc"), headers=HTMX)
    html = response.content.decode()
    assert 'data-testid="tunix:field-error-dataset_key"' in html
    assert not TunixRun.objects.exists()


def test_output_dir_outside_the_allowed_roots_is_a_field_error(client: Client) -> None:
    response = client.post(reverse("runs:home"), form_data(output_dir="/etc/evil"), headers=HTMX)
    html = response.content.decode()
    assert 'data-testid="tunix:field-error-output_dir"' in html
    assert not TunixRun.objects.exists()


def test_local_run_is_queued_even_without_the_runtime_on_this_server(
    client: Client, tunix_missing: None
) -> None:
    # The worker that takes it checks for the runtime (it may be another machine).
    html = client.get(reverse("runs:home")).content.decode()
    assert "Local runs need the Tunix runtime on the worker that takes them" in html
    response = client.post(reverse("runs:home"), form_data(dry_run=None), headers=HTMX)
    run = TunixRun.objects.get()
    assert run.status == RunStatus.PENDING
    assert response["HX-Redirect"] == f"/runs/{run.run_id}/"


def test_run_output_is_escaped_in_the_result(client: Client) -> None:
    response = client.post(
        reverse("runs:home"), form_data(dataset_key="a<b", model_id="<script>alert(1)</script>")
    )
    html = response.content.decode()
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_launch_again_prefills_the_form_from_a_stored_run(client: Client) -> None:
    run = TunixRunFactory.create(
        dataset_key="prior-v3",
        model_id="tiny-gemma3",
        mode=RunMode.LOCAL,
        config={
            "dataset_key": "prior-v3",
            "model_id": "tiny-gemma3",
            "output_dir": "outputs/again",
            "dry_run": False,
            "learning_rate": 0.001,
            "num_epochs": 7,
            "batch_size": 4,
            "max_seq_length": 512,
        },
    )
    response = client.get(reverse("runs:home"), {"from": str(run.run_id)})
    assert response.status_code == 200
    html = response.content.decode()
    assert f"Pre-filled from run {run.run_id}" in html
    for value in ("prior-v3", "tiny-gemma3", "outputs/again", "0.001", "7", "4", "512"):
        assert f'value="{value}"' in html
    dry_run = html.split('name="dry_run"')[1][:60]
    assert "checked" not in dry_run
    # Prefilling changes nothing: still one run, as it was.
    assert TunixRun.objects.count() == 1


@pytest.mark.parametrize("value", ["not-a-uuid", "00000000-0000-4000-8000-000000000000"])
def test_launch_again_from_an_unknown_run_shows_defaults_and_a_notice(
    client: Client, value: str
) -> None:
    response = client.get(reverse("runs:home"), {"from": value})
    assert response.status_code == 200
    html = response.content.decode()
    assert "There is no run with that id to copy" in html
    assert 'value="tiny-qwen3"' in html


def test_home_rejects_other_methods(client: Client) -> None:
    assert client.put(reverse("runs:home")).status_code == 405
