"""Fixtures shared by every app's tests.

- Each test gets its own data directory (run logs, datasets, checkpoints),
  so nothing a test writes lands in ./var.
- Browser tests (`@pytest.mark.browser`) get a Playwright page driving the
  system chromium against pytest-django's live server. Playwright never
  downloads a browser of its own here.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(autouse=True)
def _isolated_data_dir(settings: Any, tmp_path: Path) -> Path:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    settings.DATA_DIR = data_dir
    # The default model roots follow the data directory, as they do in production.
    settings.TUNIX_MODEL_ROOTS = [(data_dir / name).resolve() for name in ("models", "outputs")]
    return data_dir


@pytest.fixture(autouse=True)
def _no_remembered_tokens() -> None:
    """Each test starts with an empty token cache: its database is rolled back behind it."""
    from accounts.services import tokens_forget

    tokens_forget()


@pytest.fixture
def data_dir(_isolated_data_dir: Path) -> Path:
    return _isolated_data_dir


@pytest.fixture
def user_factory(db: None) -> Callable[..., Any]:
    """`user_factory(role="viewer")`: a new user with that role (a launcher by default)."""
    from accounts.tests.factories import UserFactory

    def make(role: str = "launcher", **fields: Any) -> Any:
        return UserFactory(role=role, **fields)

    return make


@pytest.fixture
def token_for(db: None) -> Callable[[Any], str]:
    """`token_for(user)`: the plain secret of a new API token of `user`."""
    from accounts.services import token_issue

    counter = iter(range(1_000_000))

    def issue(user: Any, name: str | None = None) -> str:
        return token_issue(user, name or f"test-{next(counter)}").secret

    return issue


@pytest.fixture
def bearer(token_for: Callable[[Any], str]) -> Callable[[Any], dict[str, str]]:
    """`bearer(user)`: test-client headers that authenticate as `user` with a token."""

    def headers(user: Any) -> dict[str, str]:
        return {"HTTP_AUTHORIZATION": f"Bearer {token_for(user)}"}

    return headers


@pytest.fixture
def launcher(user_factory: Callable[..., Any]) -> Any:
    """The user the `client` fixture is signed in as."""
    return user_factory("launcher", username="launcher")


@pytest.fixture
def client(launcher: Any) -> Any:
    """A test client signed in as a launcher (may read, create, launch and cancel)."""
    from django.test import Client

    signed_in = Client()
    signed_in.force_login(launcher)
    return signed_in


@pytest.fixture
def anon_client() -> Any:
    """A test client without credentials."""
    from django.test import Client

    return Client()


@pytest.fixture
def openapi(anon_client: Any) -> dict[str, Any]:
    """The API's OpenAPI document as the server publishes it."""
    document: dict[str, Any] = anon_client.get("/api/openapi.json").json()
    return document


def chromium_executable() -> str | None:
    for candidate in (os.environ.get("CHROMIUM_PATH"), "chromium", "chromium-browser"):
        if candidate and (path := shutil.which(candidate)):
            return path
    return None


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    executable = chromium_executable()
    if executable is None:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium is not installed; browser tests may not be skipped in CI")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    # Playwright's sync API runs an event loop in this thread; the ORM calls
    # that tests make to set up data are still synchronous and safe here.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield instance
        instance.close()


BROWSER_PASSWORD = "correct horse battery staple"


def sign_in(page: Page, username: str, password: str = BROWSER_PASSWORD) -> None:
    """Sign in through the login page, as a person would."""
    page.goto("/accounts/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(lambda url: "/accounts/login/" not in url)


@pytest.fixture
def anon_page(browser: Browser, live_server: Any) -> Iterator[Page]:
    """A browser page on the live server, signed in as nobody."""
    context = browser.new_context(base_url=live_server.url, viewport={"width": 1280, "height": 900})
    context.set_default_timeout(15_000)
    page = context.new_page()
    yield page
    context.close()


@pytest.fixture
def page(anon_page: Page, user_factory: Callable[..., Any]) -> Page:
    """A browser page on the live server, signed in as a launcher through the login page."""
    user = user_factory("launcher", username="browser-launcher")
    sign_in(anon_page, user.username)
    return anon_page
