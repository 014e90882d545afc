from __future__ import annotations

import pytest

from traces.tests.factories import TraceFactory


@pytest.mark.django_db
def test_trace_factory_builds_a_normalised_payload() -> None:
    trace = TraceFactory.create(meta={"source": "exp"}, steps=["a", "b"])
    assert set(trace.payload) == {"trace_version", "prompt", "final_answer", "steps", "meta"}
    assert trace.payload["steps"] == [
        {"i": 0, "type": "reasoning", "content": "a"},
        {"i": 1, "type": "reasoning", "content": "b"},
    ]
    assert trace.payload["meta"] == {"source": "exp"}
    assert TraceFactory.create().payload["meta"] is None
