"""What the account commands share: finding the named user, or a clear error."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import CommandError


def user_named(username: str, *, active: bool = False) -> Any:
    """The user called `username`; CommandError when there is none (or, with `active`, inactive)."""
    user = get_user_model().objects.filter(username=username).first()
    if user is None:
        raise CommandError(f"There is no user '{username}'.")
    if active and not user.is_active:
        raise CommandError(f"User '{username}' is inactive.")
    return user
