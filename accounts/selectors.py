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
