"""Signing in, creating an API token and signing out, in a real browser."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest

import conftest

if TYPE_CHECKING:
    from playwright.sync_api import ConsoleMessage, Page

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_a_user_signs_in_creates_a_token_sees_it_once_and_signs_out(
    anon_page: Page, user_factory: Callable[..., Any]
) -> None:
    from playwright.sync_api import expect

    page = anon_page
    errors: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        # A script error or a style or script the Content-Security-Policy refused
        # (the browser's own /favicon.ico request may 404).
        if message.type == "error" and not message.text.startswith("Failed to load resource"):
            errors.append(message.text)

    page.on("console", on_console)
    user_factory("viewer", username="vera")

    page.goto("/traces/")
    assert "/accounts/login/?next=/traces/" in page.url
    page.get_by_label("Username").fill("vera")
    page.get_by_label("Password").fill("not the password")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_test_id("login-error")).to_contain_text("correct username and password")

    page.get_by_label("Password").fill(conftest.BROWSER_PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(re.compile(r"/traces/$"))
    expect(page.get_by_test_id("traces:upload-link")).to_have_count(0)

    page.get_by_test_id("nav:profile").click()
    page.wait_for_url(re.compile(r"/accounts/$"))
    expect(page.get_by_test_id("profile:role")).to_have_text("viewer")
    page.get_by_label("Token name").fill("laptop")
    page.get_by_role("button", name="Create token").click()
    secret_box = page.get_by_test_id("token:secret")
    expect(secret_box).to_be_visible()
    secret = secret_box.inner_text().strip()
    assert re.fullmatch(r"tnx_[A-Za-z0-9_-]{43}", secret)
    expect(page.get_by_test_id("token:issued")).to_contain_text("it will not be shown again")

    api = page.request.get("/api/tunix/runs", headers={"Authorization": f"Bearer {secret}"})
    assert api.status == 200

    page.goto("/accounts/")
    expect(page.get_by_test_id("token:secret")).to_have_count(0)
    expect(page.get_by_test_id("token:list")).to_contain_text(secret[:12])
    assert secret not in page.content()

    page.get_by_test_id("nav:signout").click()
    page.wait_for_url(re.compile(r"/accounts/login/$"))
    expect(page.get_by_test_id("nav:signout")).to_have_count(0)
    page.goto("/accounts/")
    assert "/accounts/login/?next=/accounts/" in page.url
    assert errors == []
