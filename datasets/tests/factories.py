"""Test helpers for datasets, shared with the runs app's tests."""

from __future__ import annotations

from typing import Any

from datasets.models import Dataset
from datasets.services import dataset_build
from traces.tests.factories import TraceFactory


def dataset_with_traces(
    *,
    name: str = "demo",
    version: str = "v1",
    count: int = 3,
    meta: dict[str, Any] | None = None,
    **build_args: Any,
) -> Dataset:
    """Create `count` traces (with `meta`) and build a dataset of them through dataset_build.

    With the default `latest` strategy the dataset holds the traces newest first.
    Extra keyword arguments go to dataset_build (filters, limit, selection_strategy, seed, ...).
    """
    TraceFactory.create_batch(count, meta=meta)
    build_args.setdefault("limit", max(count, 1))
    return dataset_build(name=name, version=version, **build_args)
