"""Admin pages for a logged-in superuser: traces searchable, scores read-only."""

from __future__ import annotations

import pytest
from django.test import Client

from traces.tests.factories import ScoreFactory, TraceFactory


@pytest.mark.django_db
def test_trace_changelist_shows_preview_and_searches_by_prompt(admin_client: Client) -> None:
    TraceFactory.create(prompt="Find the capybara " + "z" * 200)
    TraceFactory.create(prompt="Something else")
    html = admin_client.get("/admin/traces/trace/").content.decode()
    assert "Find the capybara" in html and "z" * 200 not in html
    html = admin_client.get("/admin/traces/trace/?q=capybara").content.decode()
    assert "Find the capybara" in html and "Something else" not in html


@pytest.mark.django_db
def test_trace_change_page_and_date_hierarchy(admin_client: Client) -> None:
    trace = TraceFactory.create()
    assert admin_client.get(f"/admin/traces/trace/{trace.id}/change/").status_code == 200
    year = trace.created_at.year
    assert admin_client.get(f"/admin/traces/trace/?created_at__year={year}").status_code == 200


@pytest.mark.django_db
def test_scores_are_read_only(admin_client: Client) -> None:
    score = ScoreFactory.create()
    assert admin_client.get("/admin/traces/score/").status_code == 200
    assert admin_client.get(f"/admin/traces/score/{score.id}/change/").status_code == 200
    assert admin_client.get("/admin/traces/score/add/").status_code == 403
    response = admin_client.post(f"/admin/traces/score/{score.id}/delete/", {"post": "yes"})
    assert response.status_code == 403
