"""The comparison page in a real browser: the overlaid chart as chromium lays it out."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlsplit

import pytest

from runs.models import RunMode
from runs.tests.factories import RunMetricFactory, TunixRunFactory

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_compare_page_overlays_one_curve_per_run_with_a_legend(page: Page) -> None:
    from playwright.sync_api import expect

    runs = []
    for n, scale in enumerate((3.0, 2.5, 4.0)):
        run = TunixRunFactory.create(
            mode=RunMode.LOCAL, exit_code=0, metrics_steps=50, final_loss=scale / 5
        )
        for step in range(1, 6 + n):
            RunMetricFactory.create(run=run, step=step * 10, loss=scale / step)
        runs.append(run)

    page.goto(f"/runs/compare/?runs={','.join(str(run.run_id) for run in runs)}")
    chart = page.get_by_test_id("compare:chart")
    expect(chart).to_be_visible()
    lines = chart.locator("svg polyline")
    expect(lines).to_have_count(3)
    # Each curve is drawn in its own colour, on the page's stylesheet.
    colours = {lines.nth(i).evaluate("el => getComputedStyle(el).stroke") for i in range(3)}
    assert len(colours) == 3
    box = chart.locator("svg").bounding_box()
    assert box is not None and box["width"] > 300
    legend = page.get_by_test_id("compare:legend").locator("li")
    expect(legend).to_have_count(3)
    for i, run in enumerate(runs):
        expect(legend.nth(i)).to_contain_text(f"Run {i + 1} {str(run.run_id)[:8]}")

    page.get_by_test_id("compare:scale").click()
    expect(page).to_have_url(re.compile(r"scale=log"))
    expect(page.get_by_test_id("compare:chart").locator("svg polyline")).to_have_count(3)


def test_ticking_history_rows_opens_their_comparison(page: Page) -> None:
    from playwright.sync_api import expect

    runs = []
    for n, rate in enumerate((0.001, 0.003, 0.001)):
        run = TunixRunFactory.create(mode=RunMode.LOCAL, exit_code=0, metrics_steps=20)
        run.config = {**run.config, "learning_rate": rate}
        run.save(update_fields=["config"])
        for step in range(1, 5):
            RunMetricFactory.create(run=run, step=step * 5, loss=(3 - n * 0.5) / step)
        runs.append(run)
    ticked = runs[:2]

    page.goto("/?history=1")
    for run in ticked:
        page.get_by_test_id(f"tunix:compare-{run.run_id}").check()
    page.get_by_test_id("tunix:compare-btn").click()
    expect(page).to_have_url(re.compile(r"/runs/compare/\?runs="))
    shown = parse_qs(urlsplit(page.url).query)["runs"][0].split(",")
    # In the history's order (newest first).
    assert sorted(shown) == sorted(str(run.run_id) for run in ticked)
    expect(page.get_by_test_id("compare:chart").locator("svg polyline")).to_have_count(2)
    # Only the learning rate differs between the two, and only its row is highlighted.
    highlighted = page.locator("[data-testid='compare:config'] tr.differs")
    expect(highlighted).to_have_count(1)
    expect(highlighted.first).to_have_attribute("data-key", "learning_rate")
