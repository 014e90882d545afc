"""PostgreSQL keeps a dataset's count of existing traces by triggers; it must equal the join."""

from __future__ import annotations

import uuid

import pytest
from django.db import connection

from datasets import selectors
from datasets.models import Dataset, DatasetMember
from datasets.services import dataset_build
from traces.models import Trace
from traces.tests.factories import TraceFactory

pytestmark = pytest.mark.postgres_only


@pytest.fixture(autouse=True)
def _postgresql_only() -> None:
    if connection.vendor != "postgresql":
        pytest.skip("datasets_missing exists on PostgreSQL only")


def _joined(dataset: Dataset) -> int:
    return Trace.objects.filter(dataset_memberships__dataset=dataset).count()


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


@pytest.mark.django_db
def test_a_member_whose_trace_is_already_gone_is_counted_at_insert() -> None:
    TraceFactory.create()
    dataset = dataset_build(name="one", version="v1", limit=1)
    DatasetMember.objects.create(dataset=dataset, position=1, trace_id=uuid.uuid4())
    Dataset.objects.filter(pk=dataset.pk).update(trace_count=2)
    _assert_counts_agree()
    assert selectors.dataset_trace_count(key="one-v1") == 1


@pytest.mark.django_db(transaction=True)
def test_truncating_traces_leaves_every_dataset_empty_and_removing_datasets_forgets_them() -> None:
    TraceFactory.create_batch(3)
    dataset_build(name="t", version="v1", limit=3)
    with connection.cursor() as cursor:
        cursor.execute(f"TRUNCATE {Trace._meta.db_table} CASCADE")
    _assert_counts_agree()
    assert selectors.dataset_trace_count(key="t-v1") == 0
    Dataset.objects.all().delete()
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM datasets_missing")
        assert cursor.fetchone()[0] == 0
