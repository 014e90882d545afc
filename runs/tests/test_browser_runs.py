"""The run pages in a real browser: what only a browser shows (htmx swaps, expanders, layout).

Set UPDATE_SCREENSHOTS=1 to refresh docs/screenshots/ from the screenshot test.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import sys
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from django.utils import timezone

from datasets.tests.factories import dataset_with_traces
from runs.models import RunMode, RunStatus, TunixRun
from runs.tests.conftest import FAKE_TRAINER
from runs.tests.factories import RunEventFactory, RunMetricFactory, TunixRunFactory, runs_at
from traces.tests.factories import make_payload
from tunix_registry.actors import COMMAND

if TYPE_CHECKING:
    from playwright.sync_api import Dialog, Page

    from runs.tests.faults import Harness, Web

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

# Elements sticking out of the viewport, for the failure message.
WIDE_ELEMENTS_JS = """
[...document.querySelectorAll("body *")]
  .filter((el) => el.getBoundingClientRect().right > window.innerWidth + 0.5)
  .slice(0, 8)
  .map((el) => el.tagName + "." + el.className + " " + Math.round(el.getBoundingClientRect().right))
"""
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
# The launcher who signs in on the registry that the `registry` fixture starts.
REGISTRY_LAUNCHER = "registry-launcher"


def open_history(page: Page) -> None:
    from playwright.sync_api import expect

    toggle = page.get_by_test_id("tunix:toggle-history-btn")
    toggle.click()
    expect(toggle).to_have_attribute("aria-expanded", "true")
    expect(page.locator("#history-body")).to_be_visible()


def rows(page: Page) -> Any:
    return page.locator('tr[data-testid^="tunix:history-row-"]')


def test_history_is_collapsed_opens_on_demand_and_refreshes_only_when_asked(page: Page) -> None:
    from playwright.sync_api import expect

    dataset_with_traces(name="demo", version="v1", count=3)
    runs_at(2)
    page.goto("/")
    toggle = page.get_by_test_id("tunix:toggle-history-btn")
    expect(toggle).to_have_attribute("aria-expanded", "false")
    expect(page.locator("#history-body")).to_be_hidden()
    expect(rows(page)).to_have_count(0)  # nothing loaded while collapsed

    open_history(page)
    expect(rows(page)).to_have_count(2)

    page.get_by_label("Dataset", exact=True).fill("demo-v1")
    page.get_by_test_id("tunix:run-btn").click()
    result = page.get_by_test_id("tunix:run-result")
    expect(result).to_be_visible()
    expect(page.get_by_test_id("tunix:run-status")).to_have_text("completed")
    new_id = str(TunixRun.objects.order_by("-created_at").first().run_id)  # type: ignore[union-attr]
    # No auto-refresh: the history still shows the two older runs.
    page.wait_for_timeout(300)
    expect(rows(page)).to_have_count(2)

    page.get_by_test_id("tunix:refresh-history-btn").click()
    expect(rows(page)).to_have_count(3)
    expect(rows(page).first).to_have_attribute("data-testid", f"tunix:history-row-{new_id}")

    # Collapsing hides it again; reopening shows the loaded rows without a new request.
    toggle.click()
    expect(toggle).to_have_attribute("aria-expanded", "false")
    expect(page.locator("#history-body")).to_be_hidden()
    toggle.click()
    expect(rows(page)).to_have_count(3)


def test_filters_narrow_the_rows_and_survive_a_reload(page: Page) -> None:
    from playwright.sync_api import expect

    failed = TunixRunFactory.create(status=RunStatus.FAILED, dataset_key="a-v1")
    TunixRunFactory.create(status=RunStatus.FAILED, dataset_key="b-v1")
    TunixRunFactory.create(status=RunStatus.COMPLETED, dataset_key="a-v1")
    page.goto("/")
    open_history(page)
    expect(rows(page)).to_have_count(3)

    page.get_by_label("Status").select_option("failed")
    expect(rows(page)).to_have_count(2)
    expect(page).to_have_url(re.compile(r"/\?status=failed$"))

    page.get_by_label("Dataset key").fill("a-v1")
    page.get_by_label("Dataset key").press("Enter")
    expect(rows(page)).to_have_count(1)
    expect(page).to_have_url(re.compile(r"/\?status=failed&dataset_key=a-v1$"))

    page.reload()
    expect(page.get_by_test_id("tunix:toggle-history-btn")).to_have_attribute(
        "aria-expanded", "true"
    )
    expect(rows(page)).to_have_count(1)
    expect(rows(page).first).to_have_attribute("data-testid", f"tunix:history-row-{failed.run_id}")
    expect(page.get_by_label("Status")).to_have_value("failed")
    expect(page.get_by_label("Dataset key")).to_have_value("a-v1")

    page.get_by_label("Mode", exact=True).select_option("local")
    expect(page.get_by_test_id("tunix:history-empty")).to_have_text(
        re.compile("No runs match these filters")
    )
    expect(page).to_have_url(re.compile(r"/\?status=failed&mode=local&dataset_key=a-v1$"))

    # Back goes to the previous filters (htmx restores the page it left).
    page.go_back()
    expect(page).to_have_url(re.compile(r"/\?status=failed&dataset_key=a-v1$"))
    expect(rows(page)).to_have_count(1)


def test_a_row_expands_with_its_output_as_text_and_collapses(page: Page) -> None:
    from playwright.sync_api import expect

    dialogs: list[str] = []

    def on_dialog(dialog: Dialog) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", on_dialog)
    run = TunixRunFactory.create(
        status=RunStatus.FAILED,
        exit_code=None,
        message="Dry-run failed: dataset not found",
        stdout="<script>alert(1)</script>",
        stderr="<img src=x onerror=alert(2)>",
    )
    page.goto("/?history=1")
    button = page.get_by_test_id(f"tunix:view-detail-btn-{run.run_id}")
    expect(button).to_have_attribute("aria-expanded", "false")
    expect(button).to_have_text(f"View run {run.run_id}")
    button.click()
    detail = page.get_by_test_id(f"tunix:run-detail-{run.run_id}")
    expect(detail).to_be_visible()
    expect(button).to_have_attribute("aria-expanded", "true")
    expect(button).to_have_text(f"Hide run {run.run_id}")
    expect(page.get_by_role("button", name=f"Hide run {run.run_id}")).to_be_visible()
    expect(page.get_by_test_id(f"tunix:detail-stdout-{run.run_id}")).to_have_text(
        "<script>alert(1)</script>"
    )
    expect(page.get_by_test_id(f"tunix:detail-stderr-{run.run_id}")).to_have_text(
        "<img src=x onerror=alert(2)>"
    )
    expect(detail).to_contain_text("Dry-run failed: dataset not found")
    expect(detail.get_by_role("link", name=re.compile("Open the run page"))).to_have_attribute(
        "href", f"/runs/{run.run_id}/"
    )
    button.click()
    expect(detail).to_be_hidden()
    expect(button).to_have_attribute("aria-expanded", "false")
    # The keyboard works the same way (a real button).
    button.focus()
    page.keyboard.press("Enter")
    expect(detail).to_be_visible()
    page.wait_for_timeout(200)
    assert dialogs == []


def test_a_failing_request_shows_an_error_message(page: Page) -> None:
    from playwright.sync_api import expect

    run = TunixRunFactory.create()
    page.goto("/?history=1")
    expect(rows(page)).to_have_count(1)
    TunixRun.objects.filter(pk=run.pk).delete()  # the row's detail now answers 404
    page.get_by_test_id(f"tunix:view-detail-btn-{run.run_id}").click()
    error = page.get_by_test_id("tunix:history-error")
    expect(error).to_be_visible()
    expect(error).to_contain_text("Could not load the run history (HTTP 404")


def test_the_launch_form_shows_field_errors_and_the_missing_runtime_hint(
    page: Page, settings: Any
) -> None:
    from playwright.sync_api import expect

    page.goto("/")
    page.get_by_label("Dataset", exact=True).fill("demo-v1")
    page.get_by_label("Epochs").fill("0")
    page.get_by_test_id("tunix:run-btn").click()
    error = page.get_by_test_id("tunix:field-error-num_epochs")
    expect(error).to_contain_text("greater than or equal to 1")
    expect(page.get_by_label("Epochs")).to_have_value("0")
    expect(page.get_by_test_id("tunix:run-btn")).to_be_enabled()
    assert not TunixRun.objects.exists()

    settings.TUNIX_RUNTIME_MODULE = "no_such_module_xyz"
    page.reload()
    expect(page.get_by_test_id("tunix:status")).to_contain_text("Tunix not installed")
    expect(page.get_by_text("Local runs need the Tunix runtime on the worker")).to_be_visible()


def test_a_local_launch_lands_on_the_pending_run_which_is_cancelled_after_confirming(
    page: Page, settings: Any
) -> None:
    from playwright.sync_api import expect

    settings.TUNIX_RUNTIME_MODULE = "json"
    dataset_with_traces(name="demo", version="v1", count=2)
    page.goto("/")
    page.get_by_label("Dataset", exact=True).fill("demo-v1")
    page.get_by_label("Model id").fill("fake-ok")
    page.get_by_label("Dry run").uncheck()
    page.get_by_test_id("tunix:run-btn").click()
    expect(page).to_have_url(re.compile(r"/runs/[0-9a-f-]{36}/$"))
    run = TunixRun.objects.get()
    assert run.status == RunStatus.PENDING
    expect(page.get_by_text("Run queued on default; this page follows it live.")).to_be_visible()
    expect(page.get_by_test_id("run:status")).to_have_text("pending")
    expect(page.get_by_test_id("run:queue-position")).to_have_text("1 (next)")
    expect(page.get_by_test_id("run:no-worker")).to_be_visible()  # nobody serves the queue here

    dialogs: list[str] = []

    def answer(accept: bool) -> Any:
        def on_dialog(dialog: Dialog) -> None:
            dialogs.append(dialog.message)
            dialog.accept() if accept else dialog.dismiss()

        return on_dialog

    page.once("dialog", answer(False))
    page.get_by_test_id("run:cancel").click()
    page.wait_for_timeout(300)
    assert dialogs and dialogs[0].startswith(f"Cancel run {run.run_id}?")
    assert TunixRun.objects.get().status == RunStatus.PENDING  # dismissed: nothing changed

    page.once("dialog", answer(True))
    page.get_by_test_id("run:cancel").click()
    expect(page.get_by_test_id("run:cancel-notice")).to_have_text(
        "Run cancelled before it started."
    )
    # The live region follows at once, and then stops polling.
    expect(page.get_by_test_id("run:status")).to_have_text("cancelled")
    expect(page.get_by_test_id("run:cancel")).to_have_count(0)
    expect(page.get_by_test_id("run:events")).to_contain_text("cancelled before it started")
    assert page.get_by_test_id("run:live").get_attribute("hx-trigger") is None
    assert TunixRun.objects.get().status == RunStatus.CANCELLED


def test_without_javascript_cancel_goes_through_a_confirmation_page(
    browser: Any, live_server: Any, user_factory: Callable[..., Any]
) -> None:
    from playwright.sync_api import expect

    from conftest import sign_in

    run = TunixRunFactory.create(status=RunStatus.PENDING, mode=RunMode.LOCAL, queue="default")
    context = browser.new_context(base_url=live_server.url, java_script_enabled=False)
    try:
        page = context.new_page()
        # The login form works without JavaScript too.
        sign_in(page, user_factory("launcher", username="no-js-launcher").username)
        page.goto(f"/runs/{run.run_id}/")
        page.get_by_test_id("run:cancel").click()
        expect(page).to_have_url(re.compile(rf"/runs/{run.run_id}/cancel/$"))
        assert TunixRun.objects.get().status == RunStatus.PENDING
        page.get_by_test_id("cancel:submit").click()
        expect(page).to_have_url(re.compile(rf"/runs/{run.run_id}/$"))
        expect(page.get_by_test_id("run:status")).to_have_text("cancelled")
        expect(page.get_by_text("Run cancelled before it started.")).to_be_visible()
    finally:
        context.close()
    assert TunixRun.objects.get().status == RunStatus.CANCELLED


def test_the_history_refreshes_itself_while_a_row_is_live(page: Page) -> None:
    from playwright.sync_api import expect

    live = TunixRunFactory.create(status=RunStatus.PENDING, mode=RunMode.LOCAL, queue="default")
    page.goto("/?history=1")
    status = page.get_by_test_id(f"tunix:history-status-{live.run_id}")
    expect(status).to_have_text("pending")
    # Another client cancels it; the history shows it without a click, then stops polling.
    from runs.services import run_cancel

    run_cancel(actor=COMMAND, run_id=live.run_id)
    expect(status).to_have_text("cancelled", timeout=15_000)
    expect(page.get_by_test_id("tunix:history-poll")).to_have_count(0)
    expect(page.get_by_test_id(f"tunix:cancel-btn-{live.run_id}")).to_have_count(0)

    # A row's own Cancel button, after the confirmation.
    other = TunixRunFactory.create(status=RunStatus.PENDING, mode=RunMode.LOCAL, queue="default")
    page.get_by_test_id("tunix:refresh-history-btn").click()
    button = page.get_by_test_id(f"tunix:cancel-btn-{other.run_id}")
    messages: list[str] = []

    def accept(dialog: Dialog) -> None:
        messages.append(dialog.message)
        dialog.accept()

    page.once("dialog", accept)
    button.click()
    expect(page.get_by_test_id("tunix:history-notice")).to_have_text(
        "Run cancelled before it started."
    )
    expect(page.get_by_test_id(f"tunix:history-status-{other.run_id}")).to_have_text("cancelled")
    assert messages[0].startswith(f"Cancel run {other.run_id}?")
    assert TunixRun.objects.get(pk=other.pk).status == RunStatus.CANCELLED


def test_narrow_screens_have_no_horizontal_overflow(page: Page) -> None:
    from playwright.sync_api import expect

    long_key = "a-very-long-dataset-name-for-a-narrow-window-" * 2 + "v1"
    run = TunixRunFactory.create(
        dataset_key=long_key[:200],
        mode=RunMode.LOCAL,
        exit_code=0,
        stdout="x" * 3000,
        metrics_steps=3,
        final_loss=1.2,
    )
    for step, value in ((1, 2.0), (2, 1.5), (3, 1.2)):
        RunMetricFactory.create(run=run, step=step, loss=value)
    page.set_viewport_size({"width": 375, "height": 800})

    def assert_no_overflow() -> None:
        width = page.evaluate("document.documentElement.scrollWidth")
        wide = page.evaluate(WIDE_ELEMENTS_JS)
        assert width <= 375, f"page is {width}px wide at 375px: {wide}"

    page.goto("/?history=1")
    page.get_by_test_id(f"tunix:view-detail-btn-{run.run_id}").click()
    expect(page.get_by_test_id(f"tunix:run-detail-{run.run_id}")).to_be_visible()
    assert_no_overflow()
    page.goto(f"/runs/{run.run_id}/")
    expect(page.get_by_test_id("run:loss-chart")).to_be_visible()
    assert_no_overflow()


def test_screenshots_of_the_panel_and_an_expanded_row(page: Page, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    dataset_with_traces(name="gsm8k_reasoning", version="v3", count=12)
    dataset_with_traces(name="demo", version="v1", count=2)
    TunixRunFactory.create(
        dataset_key="gsm8k_reasoning-v3",
        status=RunStatus.FAILED,
        message="Dry-run failed: dataset not found",
        stderr="Dataset not found: gsm8k_reasoning-v3",
    )
    local = TunixRunFactory.create(
        dataset_key="gsm8k_reasoning-v3",
        mode=RunMode.LOCAL,
        exit_code=0,
        message="Training completed",
        started_at=timezone.now() - timedelta(seconds=90),
        completed_at=timezone.now() - timedelta(seconds=5.8),
        duration_seconds=84.2,
        metrics_steps=40,
        final_loss=0.8123,
        best_eval_loss=0.9504,
        tokens_per_second=1830.0,
        stdout="step 10 loss 2.4100\nstep 20 loss 1.6320\nstep 30 loss 1.0914\n"
        "step 40 loss 0.8123\ncheckpoint saved to outputs/tunix_run_1f3a9c2e\n",
        config={
            "dataset_key": "gsm8k_reasoning-v3",
            "model_id": "tiny-qwen3",
            "output_dir": None,
            "dry_run": False,
            "learning_rate": 0.001,
            "num_epochs": 4,
            "batch_size": 8,
            "max_seq_length": 512,
        },
    )
    RunEventFactory.create(run=local, from_status=None, to_status="running", reason="launched")
    RunEventFactory.create(run=local, reason="Training completed (exit code 0)")
    for i in range(40):
        RunMetricFactory.create(
            run=local,
            step=i + 1,
            loss=2.6 * (0.955**i) + 0.05 * ((i * 7) % 3),
            eval_loss=(2.5 * (0.96**i) + 0.1) if (i + 1) % 10 == 0 else None,
        )
    TunixRunFactory.create(status=RunStatus.TIMEOUT, mode=RunMode.LOCAL, model_id="tiny-llama3")

    page.set_viewport_size({"width": 1100, "height": 900})
    page.goto("/")
    page.get_by_label("Dataset", exact=True).fill("gsm8k_reasoning-v3")
    page.get_by_label("Model id").fill("tiny-qwen3")
    page.get_by_test_id("tunix:run-btn").click()
    expect(page.get_by_test_id("tunix:run-result")).to_be_visible()
    shots = {"panel.png": tmp_path / "panel.png"}
    page.locator("#launch").screenshot(path=str(shots["panel.png"]))

    open_history(page)
    button = page.get_by_test_id(f"tunix:view-detail-btn-{local.run_id}")
    button.click()
    expect(page.get_by_test_id(f"tunix:run-detail-{local.run_id}")).to_be_visible()
    shots["history-expanded.png"] = tmp_path / "history-expanded.png"
    page.locator("#run-history").screenshot(path=str(shots["history-expanded.png"]))

    page.goto(f"/runs/{local.run_id}/")
    expect(page.get_by_test_id("run:loss-chart")).to_be_visible()
    shots["run-page.png"] = tmp_path / "run-page.png"
    page.screenshot(path=str(shots["run-page.png"]), full_page=True)

    for path in shots.values():
        assert path.stat().st_size > 10_000
    if os.environ.get("UPDATE_SCREENSHOTS") == "1":
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        for name, path in shots.items():
            shutil.copyfile(path, SCREENSHOTS / name)


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[tuple[Harness, Web, Path]]:
    """`make run` in miniature: gunicorn and one `run_worker` on one SQLite data directory.

    Real processes, as a user runs them; the browser talks to that gunicorn. The
    worker's trainer is the fake trainer (runs/tests/fake_trainer.py).
    """
    from conftest import BROWSER_PASSWORD
    from runs.tests.faults import Harness, manage

    harness = Harness(root=tmp_path / "registry", database_url="")
    data_dir = harness.data_dir("data")
    trainer = {"TUNIX_TRAINER_COMMAND": shlex.join([sys.executable, str(FAKE_TRAINER)])}
    manage(harness.worker_env(data_dir), "migrate", "--noinput", "-v", "0")
    # The person at the browser: a launcher of this registry's own database.
    launcher = {**harness.worker_env(data_dir), "DJANGO_USER_PASSWORD": BROWSER_PASSWORD}
    manage(launcher, "create_user", REGISTRY_LAUNCHER, "--role", "launcher")
    harness.worker("browser-w1", data_dir=data_dir, lease_seconds=30, **trainer)
    web = harness.web("web", data_dir=data_dir)
    code, _ = web.call("POST", "/api/traces/batch", [make_payload(), make_payload()])
    assert code == 201
    code, _ = web.call(
        "POST", "/api/datasets/build", {"dataset_name": "demo", "dataset_version": "v1"}
    )
    assert code == 201
    yield harness, web, data_dir
    harness.close()


def launch_from_form(page: Page, model_id: str) -> str:
    from playwright.sync_api import expect

    page.goto("/")
    page.get_by_label("Dataset", exact=True).fill("demo-v1")
    page.get_by_label("Model id").fill(model_id)
    page.get_by_label("Dry run").uncheck()
    page.get_by_test_id("tunix:run-btn").click()
    expect(page).to_have_url(re.compile(r"/runs/[0-9a-f-]{36}/$"))
    return page.url.rstrip("/").rsplit("/", 1)[1]


def test_runs_on_a_real_worker_move_on_their_page_and_cancel_from_it(
    browser: Any, registry: tuple[Harness, Web, Path]
) -> None:
    from playwright.sync_api import expect

    from conftest import sign_in

    harness, web, data_dir = registry
    context = browser.new_context(base_url=web.base, viewport={"width": 1100, "height": 900})
    context.set_default_timeout(60_000)  # a loaded machine: these bound a hang, not speed
    try:
        page = context.new_page()
        sign_in(page, REGISTRY_LAUNCHER)
        watched = launch_from_form(page, "fake-stream")
        page.evaluate("window.stillTheSamePage = true")
        status = page.get_by_test_id("run:status")
        expect(status).to_have_text("running")
        expect(page.get_by_test_id("run:worker")).to_contain_text("browser-w1 on ")
        log = page.get_by_test_id("run:log")
        expect(log).to_contain_text("step 1 é")
        expect(page.get_by_test_id("run:loss-chart")).to_be_visible()
        # The log and the curve keep moving while it trains.
        steps = int(page.get_by_test_id("run:steps").inner_text())
        lines = page.evaluate("document.getElementById('run-log-lines').children.length")
        page.wait_for_function(
            "([steps, lines]) => Number(document.querySelector('[data-testid=\"run:steps\"]')"
            ".textContent) > steps && document.getElementById('run-log-lines').children.length"
            " > lines",
            arg=[steps, lines],
        )
        # The log tail follows the newest lines (runs.js keeps a reader at the bottom there).
        page.wait_for_function(
            "() => { const el = document.getElementById('run-log-lines');"
            " return el.scrollHeight > el.clientHeight"
            " && el.scrollHeight - el.scrollTop - el.clientHeight < 30; }"
        )

        if os.environ.get("UPDATE_SCREENSHOTS") == "1":
            page.screenshot(path=str(SCREENSHOTS / "run-page-live.png"), full_page=True)

        # The history on another tab follows the live run by itself.
        history = context.new_page()
        history.goto("/?history=1")
        row_status = history.get_by_test_id(f"tunix:history-status-{watched}")
        expect(row_status).to_have_text("running")

        (data_dir / "runs" / watched / "go.flag").write_text("go")
        expect(status).to_have_text("completed")
        expect(log).to_contain_text("released")
        expect(page.get_by_test_id("run:duration")).not_to_have_text("—")
        expect(page.get_by_test_id("run:logs")).to_be_visible()
        assert page.evaluate("window.stillTheSamePage") is True  # swapped, never reloaded
        assert page.get_by_test_id("run:live").get_attribute("hx-trigger") is None
        expect(row_status).to_have_text("completed")
        with page.expect_download() as download:
            page.get_by_role("link", name="Download complete stdout.log").click()
        text = Path(download.value.path()).read_text(encoding="utf-8")
        assert text.startswith("step 1 é\n") and text.endswith("released\n")

        # Another run: cancelled from its page after the confirmation.
        stopped = launch_from_form(page, "fake-sleep")
        expect(status).to_have_text("running")
        expect(log).to_contain_text("started, sleeping")
        page.once("dialog", lambda dialog: dialog.accept())
        page.get_by_test_id("run:cancel").click()
        expect(page.get_by_test_id("run:cancel-notice")).to_contain_text("Cancellation requested")
        expect(status).to_have_text("cancelled")
        expect(page.get_by_test_id("run:events")).to_contain_text("cancellation requested")
        expect(page.get_by_test_id("run:cancel")).to_have_count(0)
        code, run = web.call("GET", f"/api/tunix/runs/{stopped}")
        assert (code, run["status"]) == (200, "cancelled"), run
        assert "started, sleeping" in run["stdout"]

        page.goto("/workers/")
        expect(page.get_by_test_id("workers:row-browser-w1")).to_be_visible()
        expect(page.get_by_test_id("workers:depth-default")).to_have_text("0")
    except AssertionError:
        print(harness.diagnostics())
        raise
    finally:
        context.close()
