"""Reads of accounts."""

from __future__ import annotations

from typing import Any

from django.db.models import F, QuerySet

from accounts.models import ApiToken


def user_tokens(user: Any) -> QuerySet[ApiToken]:
    """The user's tokens, live first then revoked, newest first."""
    return ApiToken.objects.filter(user=user).order_by(
        F("revoked_at").desc(nulls_first=True), "-created_at", "-id"
    )


def live_token(user: Any, name: str) -> ApiToken | None:
    """The user's live token called `name` (live names are unique per user), or None."""
    return ApiToken.objects.filter(user=user, name=name, revoked_at__isnull=True).first()
