"""Smoke test in a real browser: the layout renders and the API docs open."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_home_shows_navigation_and_api_docs_open(page: Page) -> None:
    from playwright.sync_api import expect

    page.goto("/")
    nav = page.get_by_test_id("nav")
    expect(nav).to_be_visible()
    for label in ("Runs", "Datasets", "Traces", "API docs"):
        expect(nav.get_by_role("link", name=label)).to_be_visible()
    # The admin link is for staff only; the page is a launcher's.
    expect(nav.get_by_role("link", name="Admin")).to_have_count(0)
    # htmx came from our own static files and initialised.
    assert page.evaluate("typeof window.htmx") == "object"
    nav.get_by_role("link", name="API docs").click()
    expect(page).to_have_url(re.compile(r"/api/docs$"))
    expect(page.locator("body")).to_contain_text("Tunix Registry API")
