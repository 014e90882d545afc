"""Synthetic reasoning traces for the traces benchmarks (deterministic by seed)."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

WORDS = [
    *("add", "subtract", "multiply", "divide", "check", "carry", "the", "result", "first"),
    *("then", "verify", "number", "sum", "total", "because", "therefore", "convert", "scale"),
    *("answer", "step", "compute", "parse", "reason"),
]
STEP_TYPES = ("parse", "compute", "check")


def payloads(count: int, *, seed: int = 7) -> Iterator[dict[str, Any]]:
    """`count` valid traces of 3 to 8 steps, each step 40 to 200 characters."""
    rng = random.Random(seed)
    for n in range(count):
        steps = []
        for i in range(rng.randint(3, 8)):
            text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 30)))
            steps.append({"i": i, "type": rng.choice(STEP_TYPES), "content": text})
        yield {
            "trace_version": "1.0",
            "prompt": f"Question {n}: what is {n} + {n * 3}? Show your work.",
            "final_answer": str(n * 4),
            "steps": steps,
            "meta": {"source": "bench", "n": n} if n % 2 else None,
        }


def write_jsonl(path: Path, count: int, *, seed: int = 7) -> int:
    """Write `count` traces to `path`, one per line; returns the file size in bytes."""
    with path.open("w", encoding="utf-8") as out:
        for payload in payloads(count, seed=seed):
            out.write(json.dumps(payload))
            out.write("\n")
    return path.stat().st_size
