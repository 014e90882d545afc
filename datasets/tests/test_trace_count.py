"""A dataset's count of existing traces (what a dry-run reports) and the migration behind it."""

from __future__ import annotations

import uuid

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from datasets import selectors
from datasets.models import Dataset, DatasetMember
from datasets.services import dataset_build
from traces.models import Trace
from traces.tests.factories import TraceFactory


def _joined(dataset: Dataset) -> int:
    """The plain join: members of the dataset whose trace row exists."""
    return (
        DatasetMember.objects.filter(dataset=dataset)
        .filter(trace_id__in=Trace.objects.values("id"))
        .count()
    )


def _assert_counts_agree() -> None:
    datasets = list(Dataset.objects.all())
    assert datasets
    for dataset in datasets:
        assert selectors.dataset_trace_count(key=dataset.key) == _joined(dataset), dataset.key


@pytest.mark.django_db
def test_counts_follow_deletes_of_shared_traces() -> None:
    traces = TraceFactory.create_batch(12)
    dataset_build(name="all", version="v1", limit=12)
    dataset_build(name="some", version="v1", limit=5)
    dataset_build(name="random", version="v1", limit=7, selection_strategy="random", seed=3)
    _assert_counts_agree()
    Trace.objects.filter(id=traces[-1].id).delete()  # newest: in every dataset
    _assert_counts_agree()
    Trace.objects.filter(id__in=[t.id for t in traces[:6]]).delete()  # one statement, many
    _assert_counts_agree()
    assert selectors.dataset_trace_count(key="all-v1") == 5
    assert selectors.dataset_trace_count(key="some-v1") == 4


@pytest.mark.django_db
def test_a_member_whose_trace_is_already_gone_is_not_counted() -> None:
    TraceFactory.create()
    dataset = dataset_build(name="one", version="v1", limit=1)
    DatasetMember.objects.create(dataset=dataset, position=1, trace_id=uuid.uuid4())
    Dataset.objects.filter(pk=dataset.pk).update(trace_count=2)
    _assert_counts_agree()
    assert selectors.dataset_trace_count(key="one-v1") == 1


@pytest.mark.django_db
def test_an_unknown_dataset_counts_zero() -> None:
    TraceFactory.create()
    dataset_build(name="known", version="v1", limit=1)
    assert selectors.dataset_trace_count(key="unknown-v1") == 0


@pytest.mark.django_db
def test_the_count_is_the_dataset_id_then_one_count(django_assert_num_queries: object) -> None:
    TraceFactory.create_batch(3)
    dataset_build(name="q", version="v1", limit=3)
    with django_assert_num_queries(2):  # type: ignore[operator]
        assert selectors.dataset_trace_count(key="q-v1") == 3


def _objects(kind: str, name: str) -> bool:
    queries = {
        "table": "SELECT count(*) FROM pg_class WHERE relname = %s",
        "trigger": "SELECT count(*) FROM pg_trigger WHERE tgname = %s",
        "index": "SELECT count(*) FROM pg_indexes WHERE indexname = %s",
    }
    with connection.cursor() as cursor:
        cursor.execute(queries[kind], [name])
        return bool(cursor.fetchone()[0])


@pytest.mark.postgres_only
@pytest.mark.django_db(transaction=True)
def test_migration_drops_the_trigger_kept_counts_and_backwards_recreates_them() -> None:
    if connection.vendor != "postgresql":
        pytest.skip("the trigger-kept counts existed on PostgreSQL only")
    before = [("datasets", "0004_missing_trace_counts")]
    after = [("datasets", "0005_drop_missing_trace_counts")]
    TraceFactory.create_batch(4)
    dataset = dataset_build(name="m", version="v1", limit=4)
    gone = dataset.members.get(position=0).trace_id
    Trace.objects.filter(id=gone).delete()
    try:
        executor = MigrationExecutor(connection)
        executor.migrate(before)
        assert _objects("table", "datasets_missing")
        assert _objects("trigger", "datasets_missing_on_trace_delete")
        assert not _objects("index", "dataset_member_trace_idx")
        # Backwards fills the table from the rows as they are: one member's trace is gone.
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT traces FROM datasets_missing WHERE dataset_id = %s", [dataset.pk]
            )
            assert cursor.fetchone() == (1,)
        executor = MigrationExecutor(connection)
        executor.migrate(after)
        assert not _objects("table", "datasets_missing")
        assert not _objects("trigger", "datasets_missing_on_trace_delete")
        assert _objects("index", "dataset_member_trace_idx")
    finally:
        executor = MigrationExecutor(connection)
        executor.loader.build_graph()
        executor.migrate(executor.loader.graph.leaf_nodes())
    assert selectors.dataset_trace_count(key="m-v1") == 3
