"""Helpers for tests that meet authentication on the way."""

from __future__ import annotations

import re
from typing import Any

_AUTH_TABLES = ("django_session", "auth_", "accounts_apitoken", "axes_")
# The table a statement reads or writes first: its own, not one it joins.
_TARGET = re.compile(r'\b(?:FROM|UPDATE|INTO)\s+"?([A-Za-z0-9_]+)"?', re.IGNORECASE)


def app_queries(captured: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The captured queries minus those of authentication (session, user, token, permissions),
    for tests that count what an endpoint itself asks of the database.

    A query of the endpoint that joins the user table (who launched a run) stays counted.
    """
    kept = []
    for query in captured:
        target = _TARGET.search(query["sql"])
        if target is None or not target.group(1).startswith(_AUTH_TABLES):
            kept.append(query)
    return kept
