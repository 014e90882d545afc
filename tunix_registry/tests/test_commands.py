from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command


@pytest.mark.django_db
def test_ensure_admin_creates_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DJANGO_SUPERUSER_PASSWORD", "s3cret-pass")
    call_command("ensure_admin", "--username", "boss")
    call_command("ensure_admin", "--username", "boss")
    user = User.objects.get(username="boss")
    assert user.is_superuser and user.is_staff
    assert user.check_password("s3cret-pass")
    assert User.objects.count() == 1


@pytest.mark.django_db
def test_ensure_admin_needs_a_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DJANGO_SUPERUSER_PASSWORD", raising=False)
    with pytest.raises(CommandError, match="DJANGO_SUPERUSER_PASSWORD"):
        call_command("ensure_admin")
