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
