"""The comparison page in a real browser: the overlaid chart as chromium lays it out."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

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
