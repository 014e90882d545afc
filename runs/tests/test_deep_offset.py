"""Deep offsets on PostgreSQL skip whole hours using runs_hourcount, and land on the same rows."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection

from runs.models import TunixRun
from runs.selectors import DEEP_OFFSET, run_list, run_list_json
from runs.tests.factories import TunixRunFactory

pytestmark = [pytest.mark.postgres_only, pytest.mark.django_db]


@pytest.fixture(autouse=True)
def _postgresql_only() -> None:
    if connection.vendor != "postgresql":
        pytest.skip("runs_hourcount exists on PostgreSQL only")


def _hour_counts() -> dict[int, int]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT hour, runs FROM runs_hourcount WHERE runs <> 0")
        return dict(cursor.fetchall())


def _expected_counts() -> dict[int, int]:
    counts: dict[int, int] = {}
    for created in TunixRun.objects.values_list("created_at", flat=True):
        hour = int(created.timestamp() // 3600)
        counts[hour] = counts.get(hour, 0) + 1
    return counts


def _assert_pages_agree(offsets: list[int], limit: int = 7) -> None:
    for offset in offsets:
        plain = run_list(limit=limit, offset=offset)  # the ORM: OFFSET over the index
        counted = run_list_json(limit=limit, offset=offset)
        assert [str(r.run_id) for r in plain.items] == [r["run_id"] for r in counted.items], offset
        assert plain.pagination == counted.pagination, offset


@pytest.fixture
def spread() -> list[TunixRun]:
    """Runs over a dozen hours, unevenly, with ties on created_at and whole hours."""
    rng = random.Random(7)
    base = datetime(2026, 3, 1, tzinfo=UTC)
    runs: list[TunixRun] = []
    for hour in range(12):
        for _ in range(rng.choice([0, 1, 9, 40, 75])):
            moment = base + timedelta(hours=hour, seconds=rng.randrange(3600))
            runs.append(TunixRunFactory.build(started_at=moment, created_at=moment))
    edge = base + timedelta(hours=5)  # exactly on an hour boundary, twice
    runs += [TunixRunFactory.build(started_at=edge, created_at=edge) for _ in range(2)]
    return TunixRun.objects.bulk_create(runs)


def test_counts_follow_inserts_deletes_and_redating(spread: list[TunixRun]) -> None:
    assert _hour_counts() == _expected_counts()
    TunixRun.objects.filter(run_id__in=[r.run_id for r in spread[::5]]).delete()
    assert _hour_counts() == _expected_counts()
    TunixRun.objects.filter(run_id__in=[r.run_id for r in spread[1::7]]).update(
        created_at=datetime(2026, 2, 1, 12, 30, tzinfo=UTC)
    )
    assert _hour_counts() == _expected_counts()
    TunixRun.objects.filter(run_id=spread[2].run_id).update(status="failed")  # moves nothing
    assert _hour_counts() == _expected_counts()


def test_deep_pages_match_the_plain_offset_scan(spread: list[TunixRun]) -> None:
    total = len(spread)
    assert total > DEEP_OFFSET + 50
    offsets = [DEEP_OFFSET, DEEP_OFFSET + 1, total - 8, total - 7, total - 1, total, total + 5]
    offsets += list(range(DEEP_OFFSET, total, 13))
    _assert_pages_agree(offsets)
    _assert_pages_agree([DEEP_OFFSET + 3], limit=100)
    # after rows leave some hours and move to an older one
    TunixRun.objects.filter(run_id__in=[r.run_id for r in spread[::3]]).delete()
    TunixRun.objects.filter(run_id__in=[r.run_id for r in spread[1::4]]).update(
        created_at=datetime(2026, 2, 1, tzinfo=UTC)
    )
    _assert_pages_agree(list(range(DEEP_OFFSET, len(spread), 11)))


@pytest.mark.django_db(transaction=True)
def test_truncate_empties_the_counts() -> None:
    TunixRunFactory.create_batch(3)
    assert sum(_hour_counts().values()) == 3
    with connection.cursor() as cursor:
        cursor.execute(f"TRUNCATE {TunixRun._meta.db_table} CASCADE")
    assert _hour_counts() == {}
