"""In a real browser: every page works under the Content-Security-Policy.

The browser itself enforces the policy: a blocked inline script or style, an
eval (htmx trigger filters, `hx-on`, `js:` values) or a foreign resource would
show up as a `securitypolicyviolation` event and a console error. Each page is
opened, its htmx behaviour exercised where it has some, and no violation may
appear. See docs/decisions.md#security-headers.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest

from datasets.tests.factories import dataset_with_traces
from runs.models import RunStatus
from runs.tests.factories import TunixRunFactory
from traces.tests.factories import TraceFactory

if TYPE_CHECKING:
    from playwright.sync_api import ConsoleMessage, Page

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

# Collects the document's violation reports from before any script of the page runs.
RECORD_VIOLATIONS = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (event) => {
  const where = `${event.sourceFile}:${event.lineNumber}`;
  window.__cspViolations.push(
    `${event.violatedDirective} blocked ${event.blockedURI || "inline"} at ${where}`
  );
});
"""


class Violations:
    """Violations seen on a page: its own reports and the console's CSP errors."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.console: list[str] = []
        page.add_init_script(RECORD_VIOLATIONS)
        page.on("console", self._on_console)

    def _on_console(self, message: ConsoleMessage) -> None:
        text = message.text
        if "Content Security Policy" in text or "unsafe-eval" in text or "EvalError" in text:
            self.console.append(text)

    def assert_none(self, where: str) -> None:
        reported: list[str] = self.page.evaluate("window.__cspViolations || []")
        assert reported == [] and self.console == [], f"{where}: {reported} {self.console}"


@pytest.fixture
def violations(page: Page) -> Violations:
    return Violations(page)


def test_the_pages_run_without_a_violation(page: Page, violations: Violations) -> None:
    from playwright.sync_api import expect

    dataset_with_traces(name="demo", version="v1", count=2)
    trace = TraceFactory.create(prompt="Hello <b>there</b>")
    running = TunixRunFactory.create(status=RunStatus.RUNNING, dataset_key="demo-v1")
    TunixRunFactory.create(status=RunStatus.COMPLETED, dataset_key="demo-v1")

    # The run list with its history open: rows, the live poll, an expanded row.
    with page.expect_response(lambda r: "/runs/history/" in r.url, timeout=10_000):
        page.goto("/?history=1")  # ... and the live poll comes round
    expect(page.locator('tr[data-testid^="tunix:history-row-"]')).to_have_count(2)
    assert page.evaluate("typeof window.htmx") == "object"
    # htmx inserted no inline <style> of its own (includeIndicatorStyles is off).
    assert page.evaluate("document.querySelectorAll('style').length") == 0
    page.get_by_test_id(f"tunix:history-row-{running.run_id}").get_by_role(
        "button", name="View"
    ).click()
    expect(page.locator(f"#run-detail-body-{running.run_id}")).not_to_be_empty()
    violations.assert_none("home")

    with page.expect_response(lambda r: "/live/" in r.url, timeout=10_000):
        page.goto(f"/runs/{running.run_id}/")  # ... and its live part polls
    violations.assert_none("run page")

    page.goto("/workers/")
    violations.assert_none("workers")

    page.goto("/traces/")
    expect(page.get_by_text("Hello <b>there</b>").first).to_be_visible()
    page.goto(f"/traces/{trace.pk}/")
    violations.assert_none("traces")

    page.goto("/datasets/")
    page.goto("/datasets/demo-v1/")
    expect(page.get_by_role("heading", name="Dataset demo-v1")).to_be_visible()
    page.goto("/datasets/build/")
    violations.assert_none("datasets")


def test_the_history_poll_waits_while_a_row_is_open(page: Page, violations: Violations) -> None:
    """The poll's pause (static/js/runs.js, data-poll-paused-by) replaces a trigger filter."""
    from playwright.sync_api import expect

    running = TunixRunFactory.create(status=RunStatus.RUNNING, dataset_key="demo-v1")
    page.add_init_script(
        """
        document.addEventListener("htmx:confirm", (event) => {
          if (!event.detail.triggeringEvent && event.detail.elt.dataset.pollPausedBy) {
            console.log("history poll tick");
          }
        });
        """
    )
    fetched: list[str] = []
    page.on("request", lambda request: fetched.append(request.url))
    page.goto("/?history=1")
    row = page.get_by_test_id(f"tunix:history-row-{running.run_id}")
    row.get_by_role("button", name="View").click()
    expect(page.locator(f"#run-detail-body-{running.run_id}")).not_to_be_empty()
    toggle = row.get_by_role("button", name=re.compile("Hide|View"))
    expect(toggle).to_have_attribute("aria-expanded", "true")

    # Two poll ticks come round while the row is open: neither fetches the history.
    fetched.clear()
    for _ in range(2):
        page.wait_for_event(
            "console", lambda message: message.text == "history poll tick", timeout=10_000
        )
    assert [url for url in fetched if "/runs/history/" in url] == []
    expect(toggle).to_have_attribute("aria-expanded", "true")

    # Closed again, the next tick refreshes the rows.
    with page.expect_request(lambda r: "/runs/history/" in r.url, timeout=10_000):
        toggle.click()
    violations.assert_none("history poll")


def test_the_api_docs_render_and_call_the_api_under_the_policy(
    page: Page, violations: Violations
) -> None:
    from playwright.sync_api import expect

    page.goto("/api/docs")
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("Tunix Registry API")
    # Try an operation out: the docs fetch the API from the page ('self').
    health = page.locator("#operations-health-tunix_registry_api_health")
    health.locator(".opblock-summary").click()
    health.get_by_role("button", name="Try it out").click()
    with page.expect_response(lambda r: r.url.endswith("/api/health")):
        health.get_by_role("button", name="Execute").click()
    expect(health.locator(".response .response-col_status").first).to_contain_text("200")
    violations.assert_none("api docs")


def test_the_admin_works_under_the_policy(
    anon_page: Page, user_factory: Callable[..., Any]
) -> None:
    from playwright.sync_api import expect

    from conftest import BROWSER_PASSWORD

    violations = Violations(anon_page)
    admin = user_factory("admin", username="boss")
    admin.set_password(BROWSER_PASSWORD)
    admin.save()
    page = anon_page
    page.goto("/admin/login/")
    violations.assert_none("admin login")
    page.get_by_label("Username").fill("boss")
    page.get_by_label("Password").fill(BROWSER_PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name="Site administration")).to_be_visible()
    # A changelist with its scripts (actions, filters) and the sidebar's toggle.
    page.goto("/admin/auth/user/")
    page.get_by_role("checkbox", name="Select all objects on this page for an action").check()
    expect(page.locator(".action-counter")).to_contain_text("1 of 1 selected")
    page.goto("/admin/axes/accessattempt/")
    expect(page.get_by_role("heading", name="Select access attempt to change")).to_be_visible()
    violations.assert_none("admin")
