"""In a real browser: upload a trace through the page, find it in the list, score it."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pytest

from traces.tests.factories import make_payload

if TYPE_CHECKING:
    from playwright.sync_api import FilePayload, Page


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_upload_a_trace_then_see_it_listed_and_score_it(page: Page) -> None:
    from playwright.sync_api import expect

    page.goto("/traces/")
    page.get_by_role("link", name="Upload traces").click()
    payload = make_payload(prompt="Browser-uploaded question", steps=["x" * 10])
    page.get_by_label("Trace JSON").fill(json.dumps(payload))
    page.get_by_role("button", name="Upload").click()
    result = page.get_by_test_id("upload-result")
    expect(result).to_contain_text("Created trace")

    page.get_by_role("navigation", name="Main").get_by_role("link", name="Traces").click()
    link = page.get_by_role("link", name="Browser-uploaded question")
    expect(link).to_be_visible()
    link.click()

    expect(page.get_by_text("Not scored yet.")).to_be_visible()
    page.get_by_role("button", name="Score").click()
    expect(page.get_by_test_id("score-breakdown")).to_contain_text("6.00")
    # Swapped in by htmx: still the same page, no navigation.
    assert page.url.endswith("/")
    assert "#score" not in page.url


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_upload_a_jsonl_file_with_a_bad_line(page: Page) -> None:
    from playwright.sync_api import expect

    page.goto("/traces/upload/")
    content = json.dumps(make_payload()) + "\n{broken\n"
    file: FilePayload = {
        "name": "t.jsonl",
        "mimeType": "application/jsonl",
        "buffer": content.encode(),
    }
    page.get_by_label("or a .jsonl file").set_input_files(files=[file])
    page.get_by_role("button", name="Upload").click()
    expect(page.get_by_test_id("upload-result")).to_contain_text("1 trace created, 1 line rejected")
    expect(page.get_by_test_id("rejections")).to_contain_text("Invalid JSON")
