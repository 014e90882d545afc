"""The launch form's Advanced group in a browser: it opens, and a LoRA dry-run shows its LoRA."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from datasets.tests.factories import dataset_with_traces
from runs.models import TunixRun

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_advanced_opens_and_a_lora_dry_run_shows_its_lora_on_the_run_page(page: Page) -> None:
    from playwright.sync_api import expect

    dataset_with_traces(name="demo", version="v1", count=3)
    page.goto("/")
    rank = page.get_by_label("LoRA rank")
    expect(rank).to_be_hidden()  # the Advanced group starts closed
    page.get_by_test_id("tunix:advanced").locator("summary").click()
    expect(rank).to_be_visible()

    page.get_by_label("Dataset", exact=True).fill("demo-v1")
    rank.fill("4")
    page.get_by_label("v_proj").check()
    page.get_by_label("q_proj").check()
    page.get_by_test_id("tunix:run-btn").click()
    expect(page.get_by_test_id("tunix:run-status")).to_have_text("completed")

    page.get_by_test_id("tunix:run-id").click()
    run = TunixRun.objects.get()
    page.wait_for_url(f"**/runs/{run.run_id}/")
    expect(page.get_by_test_id("run:lora-rank")).to_have_text("4")
    expect(page.get_by_test_id("run:lora-modules")).to_have_text("q_proj, v_proj")
    expect(page.get_by_test_id("run:lora-export")).to_have_text("merged")
    assert run.lora is not None and run.lora["target_modules"] == ["q_proj", "v_proj"]
