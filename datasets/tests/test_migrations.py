"""The datasets migrations, forwards and backwards, on the database the suite runs on."""

from __future__ import annotations

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from datasets import selectors
from datasets.exports import render_trace
from datasets.models import DatasetMember
from datasets.tests.factories import dataset_with_traces
from traces.models import Trace


def _migrate(target: list[tuple[str, str]] | None) -> None:
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(target or executor.loader.graph.leaf_nodes())


def _exists(query: str, name: str) -> bool:
    with connection.cursor() as cursor:
        cursor.execute(query, [name])
        return bool(cursor.fetchone()[0])


def _table(name: str) -> bool:
    return _exists("SELECT count(*) FROM pg_class WHERE relname = %s", name)


def _trigger(name: str) -> bool:
    return _exists("SELECT count(*) FROM pg_trigger WHERE tgname = %s", name)


def _index(name: str) -> bool:
    return _exists("SELECT count(*) FROM pg_indexes WHERE indexname = %s", name)


@pytest.mark.postgres_only
@pytest.mark.django_db(transaction=True)
def test_0005_drops_the_trigger_kept_counts_and_backwards_recreates_them() -> None:
    if connection.vendor != "postgresql":
        pytest.skip("the trigger-kept counts existed on PostgreSQL only")
    dataset = dataset_with_traces(name="m", count=4)
    Trace.objects.filter(id=dataset.members.get(position=0).trace_id).delete()
    try:
        _migrate([("datasets", "0004_missing_trace_counts")])
        assert _table("datasets_missing")
        assert _trigger("datasets_missing_on_trace_delete")
        assert not _index("dataset_member_trace_idx")
        # Backwards fills the table from the rows as they are: one member's trace is gone.
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT traces FROM datasets_missing WHERE dataset_id = %s", [dataset.pk]
            )
            assert cursor.fetchone() == (1,)
        _migrate([("datasets", "0005_drop_missing_trace_counts")])
        assert not _table("datasets_missing")
        assert not _trigger("datasets_missing_on_trace_delete")
        assert _index("dataset_member_trace_idx")
    finally:
        _migrate(None)
    assert selectors.dataset_trace_count(key="m-v1") == 3


@pytest.mark.django_db(transaction=True)
def test_0006_fills_the_trace_line_of_existing_members_as_the_export_renders_it() -> None:
    dataset = dataset_with_traces(name="lines", count=3, meta={"source": "exp"})
    gone = dataset.members.get(position=2).trace_id
    Trace.objects.filter(id=gone).delete()
    expected = dict(dataset.members.values_list("position", "trace_line"))
    try:
        _migrate([("datasets", "0005_drop_missing_trace_counts")])
        _migrate([("datasets", "0006_member_trace_line")])
    finally:
        _migrate(None)
    filled = dict(
        DatasetMember.objects.filter(dataset_id=dataset.pk).values_list("position", "trace_line")
    )
    assert filled[0] == expected[0] and filled[1] == expected[1]
    assert filled[0].startswith('{"id": "')
    assert filled[2] == ""  # its trace was already gone
    rows = list(
        selectors.trace_export_rows(
            Trace.objects.filter(id=dataset.members.get(position=0).trace_id)
        )
    )
    assert filled[0] == render_trace(*rows[0], dataset.key)
