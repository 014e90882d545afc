from __future__ import annotations

import pytest
from django.core.management import call_command

from datasets.models import Dataset
from runs.models import TunixRun
from traces.models import Trace


@pytest.mark.django_db
def test_load_demo_loads_once(capsys: pytest.CaptureFixture[str]) -> None:
    call_command("load_demo")
    assert "demo loaded: 36 traces" in capsys.readouterr().out
    assert Trace.objects.count() == 36
    arithmetic = Dataset.objects.get(key="demo-arithmetic-v1")
    assert arithmetic.trace_count == 24
    conversions = Dataset.objects.get(key="demo-conversions-v1")
    assert conversions.trace_count == 8
    run = TunixRun.objects.get()
    assert run.status == "completed"
    assert run.mode == "dry-run"
    assert "(24 traces sampled)" in run.stdout

    call_command("load_demo")
    assert "already loaded" in capsys.readouterr().out
    assert Trace.objects.count() == 36
    assert TunixRun.objects.count() == 1
