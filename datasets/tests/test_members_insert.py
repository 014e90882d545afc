"""A build's members: both stored lines rendered by the export renderers, COPY equal to the ORM."""

from __future__ import annotations

import pytest
from django.db import connection

from datasets import selectors, services
from datasets.exports import render_trace, render_tunix_sft
from datasets.models import Dataset, DatasetMember
from datasets.tests.factories import dataset_with_traces
from traces.models import Trace
from traces.tests.factories import TraceFactory

pytestmark = pytest.mark.django_db

_FIELDS = ("position", "trace_id", "trace_line", "sft_line")


def _stored(dataset: Dataset) -> list[tuple[object, ...]]:
    return list(dataset.members.order_by("position").values_list(*_FIELDS))


def test_members_store_the_lines_the_renderers_write() -> None:
    dataset = dataset_with_traces(count=3, meta={"source": "exp", "note": "é"})
    rows = {
        row[0]: row
        for row in selectors.trace_export_rows(
            Trace.objects.filter(id__in=dataset.members.values("trace_id"))
        )
    }
    for _position, trace_id, trace_line, sft_line in _stored(dataset):
        row = rows[str(trace_id)]
        assert trace_line == render_trace(*row, dataset.key)
        assert sft_line == render_tunix_sft(*row, dataset.key)


def test_copy_inserts_exactly_what_bulk_create_inserts() -> None:
    if connection.vendor != "postgresql":
        pytest.skip("COPY is PostgreSQL's")
    TraceFactory.create_batch(4, meta={"k": [1, {"x": None}]})
    selected = services._select({}, 10, "latest", None)
    by_copy = Dataset.objects.create(key="c-v1", name="c", version="v1", trace_count=4)
    by_orm = Dataset.objects.create(key="o-v1", name="o", version="v1", trace_count=4)
    services.members_copy(services._members(by_copy, selected))
    services.members_bulk_create(services._members(by_orm, selected))
    copied, created = _stored(by_copy), _stored(by_orm)
    assert len(copied) == 4
    # The stored formats do not print the dataset key, so the rows are equal.
    assert copied == created
    assert DatasetMember.objects.count() == 8
