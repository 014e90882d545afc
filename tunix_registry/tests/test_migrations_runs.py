"""The runs migration that drops the per-hour run counts, forwards and backwards, on PostgreSQL.

`runs_hourcount` and its triggers existed on PostgreSQL only; on SQLite both
directions do nothing, so this runs in the PostgreSQL pass of the suite.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

from runs.models import TunixRun
from runs.tests.factories import TunixRunFactory

pytestmark = pytest.mark.postgres_only

COUNTED = "0002_run_hour_counts"
DROPPED = "0003_drop_run_hour_counts"
TRIGGERS = {f"runs_hourcount_on_{event}" for event in ("insert", "delete", "update", "truncate")}
EXPECTED = (
    "SELECT floor(extract(epoch FROM created_at) / 3600)::bigint, count(*) "
    "FROM runs_tunixrun GROUP BY 1"
)


def _migrate(target: tuple[str, str] | None) -> None:
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate([target] if target else executor.loader.graph.leaf_nodes())


def _fetch(sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return list(cursor.fetchall())


def _state() -> tuple[bool, set[str]]:
    """Whether runs_hourcount exists, and which of its triggers do."""
    table = bool(_fetch("SELECT to_regclass('runs_hourcount') IS NOT NULL")[0][0])
    triggers = {row[0] for row in _fetch("SELECT tgname FROM pg_trigger")} & TRIGGERS
    return table, triggers


def _counts() -> dict[int, int]:
    return dict(_fetch("SELECT hour, runs FROM runs_hourcount"))


def _expected() -> dict[int, int]:
    return dict(_fetch(EXPECTED))


@pytest.mark.django_db(transaction=True)
def test_0003_drops_the_hour_counts_and_backwards_recreates_them_filled() -> None:
    if connection.vendor != "postgresql":
        pytest.skip("the per-hour counts existed on PostgreSQL only")
    now = timezone.now()
    for hours_ago in (0, 0, 1, 5, 5, 5):
        TunixRunFactory.create(started_at=now - timedelta(hours=hours_ago, minutes=1))
    assert _state() == (False, set())
    try:
        # Backwards: the table and its four triggers again, filled from the runs as they are.
        _migrate(("runs", COUNTED))
        assert _state() == (True, TRIGGERS)
        assert _counts() == _expected()
        assert sum(_counts().values()) == 6
        # The recreated triggers keep the counts, as 0002's did.
        with connection.cursor() as cursor:
            cursor.execute(
                "DELETE FROM runs_tunixrun WHERE run_id = %s",
                [TunixRun.objects.order_by("created_at").values_list("pk", flat=True)[0]],
            )
        assert {hour: n for hour, n in _counts().items() if n} == _expected()
        assert sum(_counts().values()) == 5
        # Forwards: both gone, the runs untouched.
        _migrate(("runs", DROPPED))
        assert _state() == (False, set())
        assert TunixRun.objects.count() == 5
    finally:
        _migrate(None)
    assert _state() == (False, set())
    assert TunixRun.objects.count() == 5
