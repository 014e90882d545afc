"""Helpers for tests that meet authentication on the way."""

from __future__ import annotations

from typing import Any

_AUTH_TABLES = ("django_session", "auth_user", "auth_permission", "accounts_apitoken", "axes_")


def app_queries(captured: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The captured queries minus those of authentication (session, user, token, permissions),
    for tests that count what an endpoint itself asks of the database."""
    return [
        q
        for q in captured
        if not any(f'"{t}' in q["sql"] or f" {t}" in q["sql"] for t in _AUTH_TABLES)
    ]
