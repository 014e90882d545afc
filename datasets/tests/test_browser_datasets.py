"""In a real browser: build a dataset through the form (htmx), see errors, open its page."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from traces.tests.factories import TraceFactory

if TYPE_CHECKING:
    from playwright.sync_api import Page


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_build_a_dataset_in_the_browser_then_open_it(page: Page) -> None:
    from playwright.sync_api import expect

    TraceFactory.create_batch(3, meta={"src": "browser"}, prompt="Kept <b>question</b>")
    TraceFactory.create(meta={"src": "other"}, prompt="Left out")

    page.goto("/datasets/")
    expect(page.get_by_text("No datasets yet")).to_be_visible()
    page.get_by_role("link", name="Build a dataset").first.click()

    # A random build without a seed: the error appears next to the seed field, in place.
    page.get_by_label("Name").fill("browser set")
    page.get_by_label("Version").fill("v1")
    page.get_by_label("Strategy").select_option("random")
    page.get_by_label("Key 1").fill("src")
    page.get_by_label("Value 1").fill("browser")
    page.get_by_role("button", name="Build").click()
    expect(page.locator("#seed-errors")).to_contain_text("requires a seed")
    expect(page.get_by_label("Key 1")).to_have_value("src")

    page.get_by_label("Seed").fill("42")
    page.get_by_role("button", name="Build").click()
    result = page.get_by_test_id("build-result")
    expect(result).to_contain_text("browser_set-v1")
    expect(result).to_contain_text("3 traces")
    assert page.url.endswith("/datasets/build/")

    result.get_by_role("link", name="browser_set-v1").click()
    expect(page.get_by_role("heading", name="Dataset browser_set-v1")).to_be_visible()
    rows = page.get_by_test_id("dataset-traces").locator("tbody tr")
    expect(rows).to_have_count(3)
    expect(rows.first).to_contain_text("Kept <b>question</b>")
    expect(page.get_by_role("link", name="tunix_sft")).to_have_attribute(
        "href", "/api/datasets/browser_set-v1/export.jsonl?format=tunix_sft"
    )
    with page.expect_download() as download_info:
        page.get_by_role("link", name="tunix_sft").click()
    body = Path(download_info.value.path()).read_text(encoding="utf-8")
    assert body.count("\n") == 3
    assert "<start_of_turn>user" in body
