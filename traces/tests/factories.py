"""factory-boy factories for traces (shared by the datasets and runs tests too)."""

from __future__ import annotations

from typing import Any

import factory

from traces.models import Score, Trace


def make_payload(
    *,
    prompt: str = "What is 2+2?",
    final_answer: str = "4",
    steps: list[str] | None = None,
    meta: dict[str, Any] | None = None,
    trace_version: str = "1.0",
) -> dict[str, Any]:
    """A normalised trace payload: exactly the five keys, `meta` null when absent."""
    contents = steps if steps is not None else ["Add 2 and 2", "Verify"]
    return {
        "trace_version": trace_version,
        "prompt": prompt,
        "final_answer": final_answer,
        "steps": [{"i": i, "type": "reasoning", "content": c} for i, c in enumerate(contents)],
        "meta": meta,
    }


class TraceFactory(factory.django.DjangoModelFactory[Trace]):
    class Meta:
        model = Trace

    class Params:
        prompt = factory.Sequence(lambda n: f"Question {n}: what is {n} + {n}?")
        final_answer = factory.Sequence(lambda n: str(2 * n))
        steps = ["Read the question", "Add the numbers", "Check the sum"]
        meta: dict[str, Any] | None = None

    trace_version = "1.0"
    payload = factory.LazyAttribute(
        lambda o: make_payload(
            prompt=o.prompt,
            final_answer=o.final_answer,
            steps=list(o.steps),
            meta=o.meta,
            trace_version=o.trace_version,
        )
    )


class ScoreFactory(factory.django.DjangoModelFactory[Score]):
    class Meta:
        model = Score

    trace = factory.SubFactory(TraceFactory)
    criteria = "baseline"
    score = 50.0
    details = None
