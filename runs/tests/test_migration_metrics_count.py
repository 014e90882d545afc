"""The migration that adds TunixRun.metrics_count counts the steps of the runs already stored."""

from __future__ import annotations

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from runs.models import RunMode, TunixRun
from runs.tests.factories import RunMetricFactory, TunixRunFactory

BEFORE = ("runs", "0008_resume_and_training")
AFTER = ("runs", "0009_metrics_count")


def _migrate(target: tuple[str, str]) -> None:
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate([target])


@pytest.mark.django_db(transaction=True)
def test_the_stored_runs_get_the_number_of_their_steps() -> None:
    logged = TunixRunFactory.create(mode=RunMode.LOCAL, exit_code=0)
    for step in (10, 20, 30):
        RunMetricFactory.create(run=logged, step=step)
    silent = TunixRunFactory.create()
    try:
        _migrate(BEFORE)
        _migrate(AFTER)
    finally:
        executor = MigrationExecutor(connection)
        executor.loader.build_graph()
        executor.migrate(executor.loader.graph.leaf_nodes())
    counts = dict(TunixRun.objects.values_list("run_id", "metrics_count"))
    assert counts == {logged.run_id: 3, silent.run_id: None}
