"""manage.py create_user, issue_token, revoke_token, set_role, and ensure_admin's role."""

from __future__ import annotations

import http.client
import io
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.test import Client

from accounts.models import ApiToken
from accounts.roles import role_of
from accounts.services import token_digest, token_issue
from tunix_registry.tests.servers import serve_gunicorn, server_env

User = get_user_model()
PASSWORD = "correct horse battery staple"


def run(*args: str) -> list[str]:
    out = io.StringIO()
    call_command(*args, stdout=out)
    return out.getvalue().splitlines()


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def no_password_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DJANGO_USER_PASSWORD", raising=False)


@pytest.mark.django_db
def test_create_user_takes_the_password_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DJANGO_USER_PASSWORD", PASSWORD)
    lines = run("create_user", "alice", "--role", "viewer", "--email", "alice@example.test")
    assert lines == ["Created viewer 'alice'."]
    alice = User.objects.get(username="alice")
    assert alice.check_password(PASSWORD)
    assert alice.email == "alice@example.test"
    assert role_of(alice) == "viewer"
    assert not alice.is_staff


@pytest.mark.django_db
@pytest.mark.usefixtures("no_password_variable")
def test_create_user_asks_twice_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    prompts: list[str] = []

    def answer(prompt: str) -> str:
        prompts.append(prompt)
        return PASSWORD

    monkeypatch.setattr("getpass.getpass", answer)
    call_command("create_user", "bob", "--role", "admin", stdin=Terminal(), stdout=io.StringIO())
    bob = User.objects.get(username="bob")
    assert prompts == ["Password: ", "Password (again): "]
    assert bob.check_password(PASSWORD)
    assert (role_of(bob), bob.is_staff, bob.is_superuser) == ("admin", True, True)


@pytest.mark.django_db
@pytest.mark.usefixtures("no_password_variable")
@pytest.mark.parametrize(
    ("answers", "message"),
    [([PASSWORD, "something else"], "do not match"), ([""], "empty")],
)
def test_create_user_refuses_a_mistyped_password(
    monkeypatch: pytest.MonkeyPatch, answers: list[str], message: str
) -> None:
    replies = iter(answers)
    monkeypatch.setattr("getpass.getpass", lambda prompt: next(replies))
    with pytest.raises(CommandError, match=message):
        call_command("create_user", "bob", "--role", "viewer", stdin=Terminal())
    assert not User.objects.filter(username="bob").exists()


@pytest.mark.django_db
@pytest.mark.usefixtures("no_password_variable")
def test_create_user_without_a_password_source_is_refused() -> None:
    with pytest.raises(CommandError, match="DJANGO_USER_PASSWORD"):
        call_command("create_user", "carol", "--role", "viewer", stdin=io.StringIO())
    assert not User.objects.filter(username="carol").exists()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("password", "message"),
    [
        ("short1", "too short"),
        ("password123", "too common"),
        ("83920174659", "entirely numeric"),
        ("carol-example", "too similar to the username"),
    ],
)
def test_create_user_runs_the_password_validators(
    monkeypatch: pytest.MonkeyPatch, password: str, message: str
) -> None:
    monkeypatch.setenv("DJANGO_USER_PASSWORD", password)
    with pytest.raises(CommandError, match=f"Password refused: .*{message}"):
        call_command("create_user", "carol-example", "--role", "viewer")
    assert not User.objects.filter(username="carol-example").exists()


@pytest.mark.django_db
@pytest.mark.usefixtures("no_password_variable")
def test_create_user_with_no_password_makes_a_token_only_account() -> None:
    run("create_user", "ci-bot", "--role", "launcher", "--no-password")
    bot = User.objects.get(username="ci-bot")
    assert not bot.has_usable_password()
    assert role_of(bot) == "launcher"


@pytest.mark.django_db
def test_create_user_refuses_an_existing_or_invalid_username(
    monkeypatch: pytest.MonkeyPatch, user_factory: Callable[..., Any]
) -> None:
    monkeypatch.setenv("DJANGO_USER_PASSWORD", PASSWORD)
    existing = user_factory("viewer", username="dave")
    with pytest.raises(CommandError, match="A user 'dave' exists already"):
        call_command("create_user", "dave", "--role", "admin")
    existing.refresh_from_db()
    assert role_of(existing) == "viewer"
    with pytest.raises(CommandError, match="Invalid username"):
        call_command("create_user", "no spaces allowed", "--role", "viewer")


@pytest.mark.django_db
def test_create_user_needs_a_known_role() -> None:
    with pytest.raises(CommandError, match="invalid choice: 'owner'"):
        call_command("create_user", "erin", "--role", "owner")


@pytest.mark.django_db
def test_issue_token_prints_the_secret_alone_on_the_last_line(
    user_factory: Callable[..., Any],
) -> None:
    alice = user_factory("viewer", username="alice")
    lines = run("issue_token", "alice", "--name", "ci")
    secret = lines[-1]
    token = ApiToken.objects.get(user=alice, name="ci")
    assert token.digest == token_digest(secret)
    assert secret.startswith("tnx_") and len(secret) == 47
    assert "alice" in lines[0] and token.prefix in lines[0] and secret not in lines[0]
    response = Client().get("/api/tunix/runs", HTTP_AUTHORIZATION=f"Bearer {secret}")
    assert response.status_code == 200


@pytest.mark.django_db
def test_issue_token_refuses_an_unknown_or_inactive_user(
    user_factory: Callable[..., Any],
) -> None:
    with pytest.raises(CommandError, match="There is no user 'ghost'"):
        call_command("issue_token", "ghost", "--name", "ci")
    user_factory("launcher", username="gone", is_active=False)
    with pytest.raises(CommandError, match="User 'gone' is inactive"):
        call_command("issue_token", "gone", "--name", "ci")
    assert not ApiToken.objects.exists()


@pytest.mark.django_db
def test_issue_token_refuses_a_duplicate_live_name(user_factory: Callable[..., Any]) -> None:
    alice = user_factory("launcher", username="alice")
    first = token_issue(alice, "ci")
    with pytest.raises(CommandError, match="already has a live token named 'ci'"):
        call_command("issue_token", "alice", "--name", "ci")
    assert ApiToken.objects.filter(user=alice).count() == 1
    with pytest.raises(CommandError, match="1 to 100 characters"):
        call_command("issue_token", "alice", "--name", " ")
    run("revoke_token", "alice", "--name", "ci")
    run("issue_token", "alice", "--name", "ci")
    names = list(ApiToken.objects.filter(user=alice).values_list("name", "revoked_at"))
    assert len(names) == 2 and {n for n, _ in names} == {"ci"}
    first.token.refresh_from_db()
    assert first.token.revoked_at is not None


@pytest.mark.django_db
def test_revoke_token_refuses_the_next_request(user_factory: Callable[..., Any]) -> None:
    alice = user_factory("viewer", username="alice")
    secret = token_issue(alice, "laptop").secret
    lines = run("revoke_token", "alice", "--name", "laptop")
    assert lines == [
        f"Revoked token 'laptop' of alice ({secret[:12]}…); servers refuse it within 2 s."
    ]
    response = Client().get("/api/tunix/runs", HTTP_AUTHORIZATION=f"Bearer {secret}")
    assert response.status_code == 401
    with pytest.raises(CommandError, match="no live token named 'laptop'"):
        call_command("revoke_token", "alice", "--name", "laptop")
    with pytest.raises(CommandError, match="There is no user 'ghost'"):
        call_command("revoke_token", "ghost", "--name", "laptop")


@pytest.mark.django_db
def test_set_role_replaces_the_role(user_factory: Callable[..., Any]) -> None:
    frank = user_factory("admin", username="frank")
    assert run("set_role", "frank", "--role", "viewer") == ["frank is now viewer."]
    frank.refresh_from_db()
    assert (role_of(frank), frank.is_staff, frank.is_superuser) == ("viewer", False, False)
    assert list(frank.groups.values_list("name", flat=True)) == ["viewer"]
    with pytest.raises(CommandError, match="There is no user 'ghost'"):
        call_command("set_role", "ghost", "--role", "viewer")


@pytest.mark.django_db
def test_ensure_admin_puts_the_admin_in_the_admin_role(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DJANGO_SUPERUSER_PASSWORD", PASSWORD)
    call_command("ensure_admin", "--username", "boss", stdout=io.StringIO())
    boss = User.objects.get(username="boss")
    assert list(boss.groups.values_list("name", flat=True)) == ["admin"]
    assert role_of(boss) == "admin"


def test_a_token_issued_by_the_command_authenticates_on_gunicorn(tmp_path: Path) -> None:
    # The commands as an operator runs them, on a fresh migrated SQLite, and
    # the captured last line used against the server as deployed.
    env = server_env(tmp_path / "data", DJANGO_USER_PASSWORD=PASSWORD)
    env.pop("TUNIX_ANONYMOUS_ACCESS", None)

    def manage(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=Path(settings.BASE_DIR), env=env, capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        return done.stdout

    manage("migrate", "--verbosity", "0")
    manage("create_user", "alice", "--role", "launcher")
    secret = manage("issue_token", "alice", "--name", "ci").splitlines()[-1]

    with serve_gunicorn(env) as server:

        def get(path: str, token: str | None) -> int:
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
            try:
                conn.request("GET", path, headers=headers)
                return conn.getresponse().status
            finally:
                conn.close()

        assert get("/api/tunix/runs", secret) == 200
        assert get("/api/tunix/runs", None) == 401
        manage("revoke_token", "alice", "--name", "ci")
        # The server processes learn of it when their cached lookup expires.
        deadline = time.monotonic() + settings.TUNIX_TOKEN_CACHE_SECONDS + 3
        while get("/api/tunix/runs", secret) != 401:
            assert time.monotonic() < deadline, "the revoked token is still accepted"
            time.sleep(0.2)
