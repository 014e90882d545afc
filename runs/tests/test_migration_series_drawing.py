"""The migration that adds TunixRun.metrics_count and RunMetric.level fills both in for the
runs already stored."""

from __future__ import annotations

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from runs.metrics import FIRST_LEVEL
from runs.models import RunMetric, RunMode, TunixRun
from runs.tests.factories import RunMetricFactory, TunixRunFactory

BEFORE = ("runs", "0008_resume_and_training")
AFTER = ("runs", "0009_series_drawing")


def _migrate(target: tuple[str, str]) -> None:
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate([target])


@pytest.mark.django_db(transaction=True)
def test_the_stored_runs_get_the_number_of_their_steps_and_each_step_its_level() -> None:
    logged = TunixRunFactory.create(mode=RunMode.LOCAL, exit_code=0)
    for step in (50, 10, 40, 20, 30):  # stored out of order: levels follow the steps
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
    assert counts == {logged.run_id: 5, silent.run_id: None}
    levels = dict(RunMetric.objects.filter(run=logged).values_list("step", "level"))
    assert levels == {10: FIRST_LEVEL, 20: 0, 30: 1, 40: 0, 50: 2}
