"""Sign-in attempts are limited per username and per address (django-axes).

The real login views through the real middleware and authentication backends:
the admin's login and the product's `/accounts/login/`. Limits are the
defaults (5 failures, 15 minutes). See docs/decisions.md#login-limits.
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from axes.models import AccessAttempt, AccessFailureLog
from django.contrib.auth import get_user_model
from django.test import Client, RequestFactory
from django.urls import reverse

from tunix_registry.client_ip import client_ip

pytestmark = pytest.mark.django_db

PASSWORD = "a-long-right-password-for-tests"
ATTACKER = "203.0.113.10"
ELSEWHERE = "198.51.100.20"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def admin_user() -> Any:
    return get_user_model().objects.create_superuser("root", "root@example.com", PASSWORD)


def sign_in(
    client: Client,
    username: str,
    password: str,
    *,
    address: str = ATTACKER,
    url: str = "/admin/login/",
    **extra: Any,
) -> Any:
    return client.post(
        url, {"username": username, "password": password}, REMOTE_ADDR=address, **extra
    )


def is_signed_in(client: Client) -> bool:
    return "_auth_user_id" in client.session


def assert_lockout_page(response: Any) -> None:
    assert response.status_code == 429
    # The login view rendered its form first; axes' middleware answered with this instead.
    assert "accounts/lockout.html" in [t.name for t in response.templates]
    html = response.content.decode()
    assert 'data-testid="lockout"' in html and 'name="password"' not in html
    assert "Too many failed sign-ins" in html
    assert "after\n    5 failed attempts" in html
    assert "Try again in 15 minutes" in html


def test_six_wrong_passwords_lock_the_user_and_then_the_right_one_is_refused(
    admin_user: Any,
) -> None:
    client = Client()
    for _ in range(4):
        response = sign_in(client, "root", "wrong")
        assert response.status_code == 200  # the form again, with its error
        assert "Please enter the correct username and password" in response.content.decode()
    # The fifth failure reaches the limit: that answer is already the lock-out.
    assert_lockout_page(sign_in(client, "root", "wrong"))
    assert_lockout_page(sign_in(client, "root", "wrong"))

    assert_lockout_page(sign_in(client, "root", PASSWORD))
    assert not is_signed_in(client)
    # The account is locked whatever the address.
    other = Client()
    assert_lockout_page(sign_in(other, "root", PASSWORD, address=ELSEWHERE))
    assert not is_signed_in(other)
    assert other.get("/admin/").status_code == 302


def test_one_address_is_limited_across_usernames(admin_user: Any) -> None:
    client = Client()
    for n in range(4):
        assert sign_in(client, f"guess-{n}", "wrong").status_code == 200
    assert_lockout_page(sign_in(client, "guess-4", "wrong"))
    # Even a real account with its right password is refused from that address ...
    assert_lockout_page(sign_in(client, "root", PASSWORD))
    assert not is_signed_in(client)
    # ... but not from another one: only the address was locked.
    other = Client()
    response = sign_in(other, "root", PASSWORD, address=ELSEWHERE)
    assert response.status_code == 302
    assert is_signed_in(other)


def test_a_successful_sign_in_resets_the_count(admin_user: Any) -> None:
    client = Client()
    for _ in range(4):
        assert sign_in(client, "root", "wrong").status_code == 200
    assert sign_in(client, "root", PASSWORD).status_code == 302
    assert not AccessAttempt.objects.filter(username="root").exists()

    fresh = Client()
    for _ in range(4):
        assert sign_in(fresh, "root", "wrong").status_code == 200
    assert sign_in(fresh, "root", PASSWORD).status_code == 302
    assert is_signed_in(fresh)


def test_the_lock_lifts_after_the_cool_off(admin_user: Any) -> None:
    client = Client()
    for _ in range(5):
        sign_in(client, "root", "wrong")
    assert_lockout_page(sign_in(client, "root", PASSWORD))
    # Sixteen minutes later (the attempt row aged, as the clock would age it).
    AccessAttempt.objects.update(
        attempt_time=AccessAttempt.objects.get().attempt_time - timedelta(minutes=16)
    )
    assert sign_in(client, "root", PASSWORD).status_code == 302
    assert is_signed_in(client)


def test_the_admin_lists_the_attempt_and_its_failures(admin_user: Any) -> None:
    attacker = Client()
    for _ in range(5):
        sign_in(attacker, "root", "wrong")
    # Another administrator looks (a sign-in of root itself would reset root's count).
    auditor = get_user_model().objects.create_superuser("auditor", "a@example.com", PASSWORD)
    viewer = Client()
    viewer.force_login(auditor)

    attempts = viewer.get(reverse("admin:axes_accessattempt_changelist"))
    assert attempts.status_code == 200
    html = attempts.content.decode()
    assert ATTACKER in html and "root" in html and "/admin/login/" in html
    locked = viewer.get(reverse("admin:axes_accessattempt_changelist"), {"locked_out": "yes"})
    assert ATTACKER in locked.content.decode()

    failures = viewer.get(reverse("admin:axes_accessfailurelog_changelist"))
    assert failures.status_code == 200
    assert AccessFailureLog.objects.filter(username="root", ip_address=ATTACKER).count() == 5
    assert failures.content.decode().count(ATTACKER) >= 5

    # Deleting the attempt in the admin lifts the lock at once.
    attempt = AccessAttempt.objects.get()
    response = viewer.post(
        reverse("admin:axes_accessattempt_delete", args=[attempt.pk]), {"post": "yes"}
    )
    assert response.status_code == 302
    assert sign_in(attacker, "root", PASSWORD).status_code == 302


def test_the_product_login_page_is_limited_too(admin_user: Any) -> None:
    url = reverse("accounts:login")
    client = Client()
    for _ in range(4):
        assert sign_in(client, "root", "wrong", url=url).status_code == 200
    assert_lockout_page(sign_in(client, "root", "wrong", url=url))
    assert_lockout_page(sign_in(client, "root", PASSWORD, url=url))
    assert not is_signed_in(client)
    # The admin's login shares the count: the account stays locked there.
    assert_lockout_page(sign_in(Client(), "root", PASSWORD, address=ELSEWHERE))


def test_api_tokens_are_not_counted_or_locked(admin_user: Any) -> None:
    """A locked account's API token still works: tokens never pass through authenticate()."""
    from accounts.services import token_issue

    secret = token_issue(admin_user, "ci").secret
    client = Client()
    for _ in range(6):
        sign_in(client, "root", "wrong")
    for _ in range(3):
        response = client.get(
            "/api/tunix/runs", HTTP_AUTHORIZATION=f"Bearer {secret}", REMOTE_ADDR=ATTACKER
        )
        assert response.status_code == 200
    bad = client.get(
        "/api/tunix/runs", HTTP_AUTHORIZATION="Bearer tnx_wrong", REMOTE_ADDR=ELSEWHERE
    )
    assert bad.status_code == 401
    assert AccessAttempt.objects.filter(ip_address=ELSEWHERE).count() == 0


# --- The address behind proxies ----------------------------------------------


def test_without_a_trusted_proxy_x_forwarded_for_is_ignored(admin_user: Any) -> None:
    client = Client()
    for n in range(5):
        # Each try claims another address; all are counted against the real peer.
        sign_in(client, "root", "wrong", address=ATTACKER, HTTP_X_FORWARDED_FOR=f"192.0.2.{n}")
    assert set(AccessAttempt.objects.values_list("ip_address", flat=True)) == {ATTACKER}
    assert_lockout_page(sign_in(client, "someone-else", "x", HTTP_X_FORWARDED_FOR="192.0.2.99"))


def test_behind_one_proxy_each_client_address_is_counted_on_its_own(
    admin_user: Any, settings: Any
) -> None:
    settings.TUNIX_TRUSTED_PROXY_COUNT = 1
    proxy = "127.0.0.1"
    client = Client()
    for _ in range(5):
        # The client's own "spoofed" entry is left of the one the proxy appended.
        sign_in(
            client,
            f"guess-{_}",
            "wrong",
            address=proxy,
            HTTP_X_FORWARDED_FOR=f"1.2.3.4, {ATTACKER}",
        )
    assert set(AccessAttempt.objects.values_list("ip_address", flat=True)) == {ATTACKER}
    # Another client behind the same proxy is not locked out with the attacker.
    other = Client()
    response = sign_in(other, "root", PASSWORD, address=proxy, HTTP_X_FORWARDED_FOR=ELSEWHERE)
    assert response.status_code == 302
    assert_lockout_page(
        sign_in(Client(), "root", PASSWORD, address=proxy, HTTP_X_FORWARDED_FOR=ATTACKER)
    )


@pytest.mark.parametrize(
    ("hops", "forwarded", "expected"),
    [
        (0, "192.0.2.1", "10.0.0.1"),
        (1, None, "10.0.0.1"),
        (1, "192.0.2.1", "192.0.2.1"),
        (1, " 192.0.2.9 , 192.0.2.1 ", "192.0.2.1"),
        (2, "192.0.2.9, 192.0.2.1, 10.0.0.2", "192.0.2.1"),
        (2, "192.0.2.1", "10.0.0.1"),  # shorter than two proxies would make it
        (1, "not-an-address", "10.0.0.1"),
        (1, "2001:db8::1", "2001:db8::1"),
    ],
)
def test_client_ip(settings: Any, hops: int, forwarded: str | None, expected: str) -> None:
    settings.TUNIX_TRUSTED_PROXY_COUNT = hops
    extra: dict[str, Any] = {} if forwarded is None else {"HTTP_X_FORWARDED_FOR": forwarded}
    request = RequestFactory().get("/", REMOTE_ADDR="10.0.0.1", **extra)
    assert client_ip(request) == expected


# --- Settings from the environment ---------------------------------------------


def settings_in(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    code = (
        "import django; django.setup(); from django.conf import settings as s; "
        "print(s.AXES_FAILURE_LIMIT, int(s.AXES_COOLOFF_TIME.total_seconds()), "
        "s.TUNIX_TRUSTED_PROXY_COUNT)"
    )
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={
            "PATH": os.environ.get("PATH", os.defpath),
            "DJANGO_SETTINGS_MODULE": "tunix_registry.settings_test",
            "TUNIX_REGISTRY_DATA_DIR": str(tmp_path),
            **env,
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_limits_come_from_the_environment(tmp_path: Path) -> None:
    assert settings_in(tmp_path).stdout.split() == ["5", "900", "0"]
    configured = settings_in(
        tmp_path,
        TUNIX_LOGIN_FAILURE_LIMIT="3",
        TUNIX_LOGIN_COOLOFF_MINUTES="2",
        DJANGO_SECURE_PROXY_SSL_HEADER="true",
    )
    assert configured.stdout.split() == ["3", "120", "1"]
    explicit = settings_in(
        tmp_path, DJANGO_SECURE_PROXY_SSL_HEADER="true", TUNIX_TRUSTED_PROXY_COUNT="0"
    )
    assert explicit.stdout.split() == ["5", "900", "0"]
    bad = settings_in(tmp_path, TUNIX_LOGIN_FAILURE_LIMIT="0")
    assert bad.returncode != 0
    assert "TUNIX_LOGIN_FAILURE_LIMIT must be between 1 and 1000" in bad.stderr
