"""Fixtures of the runs tests: the Tunix runtime present or absent, and a fake trainer.

"Installed" and "not installed" are configuration, not mocks: the runtime check
looks for settings.TUNIX_RUNTIME_MODULE, so pointing it at a module that exists
(`json`) or does not makes the real check answer either way, and the trainer is
a real subprocess (runs/tests/fake_trainer.py).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

FAKE_TRAINER = Path(__file__).with_name("fake_trainer.py")


@pytest.fixture
def tunix_missing(settings: Any) -> None:
    settings.TUNIX_RUNTIME_MODULE = "tunix_registry_no_such_runtime_module"


@pytest.fixture
def fake_trainer(settings: Any) -> Path:
    settings.TUNIX_RUNTIME_MODULE = "json"
    settings.TUNIX_TRAINER_COMMAND = [sys.executable, str(FAKE_TRAINER)]
    settings.TUNIX_RUN_TIMEOUT_SECONDS = 30
    return FAKE_TRAINER


@pytest.fixture
def fault_harness(transactional_db: None, tmp_path: Path, settings: Any) -> Any:
    """Worker and web subprocesses on the test database (runs/tests/faults.py); PostgreSQL only.

    The database pytest-django created is committed to (transactional) and reached
    by the subprocesses through its name in DATABASE_URL; SQLite's test database
    lives in this process's memory, so there the test is skipped. Afterwards every
    process started is stopped, and a trainer left alive fails the test.
    """
    from django.db import connection

    from runs.tests.faults import Harness, database_url

    if connection.vendor != "postgresql":
        pytest.skip("worker subprocesses share a PostgreSQL database (set DATABASE_URL)")
    settings.TUNIX_QUEUES = ["default", "faults-idle"]
    settings.TASKS = {"default": {**settings.TASKS["default"], "QUEUES": settings.TUNIX_QUEUES}}
    harness = Harness(root=tmp_path, database_url=database_url(connection.settings_dict))
    yield harness
    left = harness.close()
    assert not left, f"trainer processes outlived the test (killed now): {left}"
