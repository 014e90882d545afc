"""GET /api/health answers 200 healthy, and 503 when the database is unreachable."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection
from django.test import Client


def test_health_is_healthy(client: Client, db: None) -> None:
    response = client.get("/api/health")
    assert response.status_code == 200
    assert response.json() == {"status": "healthy"}


@pytest.fixture
def unreachable_database(tmp_path: Path) -> Iterator[None]:
    """Point the live connection at a database that cannot be opened."""
    original = dict(connection.settings_dict)
    # Django never closes an in-memory SQLite database (closing destroys it),
    # so set the open handle aside and let the next query open the bad path.
    saved_handle = connection.connection
    connection.connection = None
    if connection.vendor == "sqlite":
        connection.settings_dict["NAME"] = str(tmp_path / "missing-dir" / "db.sqlite3")
    else:
        connection.settings_dict["HOST"] = "127.0.0.1"
        connection.settings_dict["PORT"] = "1"
    try:
        yield
    finally:
        if connection.connection is not None:
            connection.close()
        connection.settings_dict.clear()
        connection.settings_dict.update(original)
        connection.connection = saved_handle


@pytest.mark.django_db(transaction=True)
def test_health_is_unhealthy_when_database_is_down(
    client: Client, unreachable_database: None
) -> None:
    response = client.get("/api/health")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unhealthy"
    assert "database" in body["detail"]


def test_openapi_schema_and_docs_are_served(client: Client, db: None) -> None:
    schema = client.get("/api/openapi.json")
    assert schema.status_code == 200
    assert "/api/health" in schema.json()["paths"]
    docs = client.get("/api/docs")
    assert docs.status_code == 200
    assert b"openapi.json" in docs.content


@pytest.mark.postgres_only
@pytest.mark.django_db
def test_postgresql_prepares_statements_that_repeat() -> None:
    """Server-side binding is on: a read repeated on one connection becomes a prepared statement."""
    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL prepared statements")
    from traces.models import Trace

    for _ in range(settings.DATABASES["default"]["OPTIONS"]["prepare_threshold"] + 1):
        list(Trace.objects.filter(trace_version="prepared-probe"))
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement FROM pg_prepared_statements")
        statements = [row[0] for row in cursor.fetchall()]
    # The value is a bound parameter ($1), not spliced into the statement text.
    assert any('"traces_trace"."trace_version" = $1' in s for s in statements), statements
