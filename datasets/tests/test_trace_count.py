"""A dataset's count of existing traces (what a dry-run reports) and the migration behind it."""

from __future__ import annotations

import uuid

import pytest

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
        assert selectors.dataset_trace_count(dataset=dataset) == _joined(dataset), dataset.key


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
