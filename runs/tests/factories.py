"""Test data for the run registry, shared with the pages' and trainer's tests.

`TunixRunFactory` makes finished dry-runs by default; pass `status`, `mode`,
`stdout`... to shape one. Rows made here bypass the services on purpose (tests of
reads need many runs fast); tests of launching go through `run_start`.
"""

from __future__ import annotations

import socket
from datetime import timedelta
from typing import Any

import factory
from django.utils import timezone

from runs.models import RunEvent, RunMetric, RunMode, RunStatus, TunixRun


class TunixRunFactory(factory.django.DjangoModelFactory[TunixRun]):
    class Meta:
        model = TunixRun

    dataset_key = "demo-v1"
    model_id = "tiny-qwen3"
    mode = RunMode.DRY_RUN
    status = RunStatus.COMPLETED
    exit_code = None
    started_at = factory.LazyFunction(timezone.now)
    created_at = factory.LazyAttribute(lambda run: run.started_at)
    completed_at = factory.LazyAttribute(
        lambda run: (
            run.started_at + timedelta(seconds=1.5)
            if run.status not in (RunStatus.RUNNING, RunStatus.PENDING)
            else None
        )
    )
    duration_seconds = factory.LazyAttribute(lambda run: 1.5 if run.completed_at else None)
    output_dir = factory.LazyAttribute(lambda run: "outputs/factory")
    config = factory.LazyAttribute(
        lambda run: {
            "dataset_key": run.dataset_key,
            "model_id": run.model_id,
            "output_dir": None,
            "dry_run": run.mode == RunMode.DRY_RUN,
            "learning_rate": 2e-5,
            "num_epochs": 3,
            "batch_size": 8,
            "max_seq_length": 2048,
        }
    )
    message = "Dry-run validation successful"
    supervisor_host = factory.LazyFunction(lambda: socket.gethostname()[:255])
    supervisor_pid = None


class RunEventFactory(factory.django.DjangoModelFactory[RunEvent]):
    class Meta:
        model = RunEvent

    run = factory.SubFactory(TunixRunFactory)
    from_status = RunStatus.RUNNING
    to_status = RunStatus.COMPLETED
    reason = "factory"


class RunMetricFactory(factory.django.DjangoModelFactory[RunMetric]):
    class Meta:
        model = RunMetric

    run = factory.SubFactory(TunixRunFactory, mode=RunMode.LOCAL, exit_code=0)
    step = factory.Sequence(lambda n: (n + 1) * 10)
    loss = factory.Sequence(lambda n: 3.0 / (n + 1))
    eval_loss = None
    tokens_per_second = 1000.0
    elapsed_seconds = factory.Sequence(lambda n: float(n + 1))


def runs_at(count: int, **fields: Any) -> list[TunixRun]:
    """`count` runs one second apart, the last created newest."""
    start = timezone.now() - timedelta(seconds=count)
    return [
        TunixRunFactory.create(started_at=start + timedelta(seconds=i), **fields)
        for i in range(count)
    ]
