"""A small demo data set: reasoning traces, two datasets and a dry-run.

Deterministic (same traces every time) and idempotent: `load_demo` does
nothing when the demo dataset already exists. Everything goes through the
apps' own services, exactly as the API would.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

DEMO_NAME = "demo-arithmetic"
DEMO_VERSION = "v1"
DEMO_CONVERSIONS = "demo-conversions"


def _arithmetic(n: int) -> dict[str, Any]:
    a, b = 3 + n * 7 % 41, 2 + n * 5 % 29
    total = a + b
    return {
        "trace_version": "1.0",
        "prompt": f"A crate holds {a} apples and another holds {b}. How many apples in all?",
        "final_answer": str(total),
        "steps": [
            {"i": 0, "type": "parse", "content": f"The crates hold {a} and {b} apples."},
            {"i": 1, "type": "compute", "content": f"Add them: {a} + {b} = {total}."},
            {"i": 2, "type": "check", "content": f"Check: {total} - {b} = {a}, so it holds."},
        ],
        "meta": {"source": "demo", "topic": "arithmetic", "difficulty": "easy"},
    }


def _conversion(n: int) -> dict[str, Any]:
    fahrenheit = 32 + 9 * n
    celsius = 5 * n
    return {
        "trace_version": "1.0",
        "prompt": f"Convert {fahrenheit}°F to Celsius.",
        "final_answer": f"{celsius}°C",
        "steps": [
            {"i": 0, "type": "recall", "content": "C = (F - 32) × 5/9."},
            {"i": 1, "type": "compute", "content": f"{fahrenheit} - 32 = {fahrenheit - 32}."},
            {"i": 2, "type": "compute", "content": f"{fahrenheit - 32} × 5/9 = {celsius}."},
            {"i": 3, "type": "check", "content": f"{celsius} × 9/5 + 32 = {fahrenheit}."},
        ],
        # Some demo traces carry no meta at all: filters treat that as {}.
        "meta": {"source": "demo", "topic": "conversion"} if n % 4 else None,
    }


def demo_payloads() -> Iterator[dict[str, Any]]:
    for n in range(24):
        yield _arithmetic(n)
    for n in range(12):
        yield _conversion(n)


@dataclass(frozen=True)
class DemoResult:
    loaded: bool
    traces: int = 0
    datasets: tuple[str, ...] = ()
    run_status: str | None = None


def demo_load() -> DemoResult:
    from datasets.keys import dataset_key_make
    from datasets.selectors import dataset_get
    from datasets.services import dataset_build
    from runs.execution import run_execute
    from runs.schemas import TunixRunRequest
    from runs.services import run_start
    from traces.schemas import trace_payload_validate
    from traces.services import trace_create_batch
    from tunix_registry.actors import COMMAND

    demo_key = dataset_key_make(DEMO_NAME, DEMO_VERSION)
    if dataset_get(key=demo_key) is not None:
        return DemoResult(loaded=False)
    created = trace_create_batch(payloads=[trace_payload_validate(p) for p in demo_payloads()])
    arithmetic = dataset_build(
        name=DEMO_NAME, version=DEMO_VERSION, filters={"topic": "arithmetic"}, limit=100
    )
    conversions = dataset_build(
        name=DEMO_CONVERSIONS,
        version=DEMO_VERSION,
        filters={"topic": "conversion"},
        selection_strategy="random",
        seed=42,
        limit=8,
    )
    started = run_start(
        request=TunixRunRequest(dataset_key=arithmetic.key, model_id="tiny-qwen3", dry_run=True),
        actor=COMMAND,
    )
    run = run_execute(started=started)
    return DemoResult(
        loaded=True,
        traces=len(created),
        datasets=(arithmetic.key, conversions.key),
        run_status=run.status,
    )
