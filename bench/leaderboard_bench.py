"""Server time of the leaderboard over 10,000 evaluations: the selector and the page.

    .venv/bin/python -m bench.leaderboard_bench [--evaluations 10000] [--repeat 21]

Seeds a throwaway PostgreSQL (bench.harness) with runs and their completed evaluations:
per run, evaluations on two datasets (one of them held out), some repeated, and a baseline
of each, scored with both metrics; then analyses. In this process it times, `--repeat`
times each, after a warm-up:

- the selector `evaluations.leaderboard.leaderboard` (first page of 20, no filter; one
  dataset; one model; the other metric; the 51st page) and the filter form's choices;
- `GET /leaderboard/` through Django's test client as a signed-in viewer (the whole
  request: middleware, session, permissions, the rows, the template);
- `GET /api/tunix/leaderboard` the same way.

It prints the median and the spread in milliseconds, and the EXPLAIN (ANALYZE) of the
ranked query. The goal is a median under 100 ms for the page.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench import harness

GOAL_MS = 100.0
METRICS = ("answer_correctness@v1", "exact_match@v1")
MODELS = ("tiny-qwen3", "qwen3-0.6b", "gemma-2b", "llama-3.2-1b")
DATASETS = ("gsm8k-v1", "arith-v2")


def _score(rng: random.Random) -> dict[str, float | int]:
    mean = rng.random()
    return {"mean": mean, "count": 200, "ci_low": max(mean - 0.05, 0.0), "ci_high": mean + 0.05}


def seed(evaluations: int) -> None:
    """About `evaluations` rows: per run 4 trained-model evaluations and 1 baseline."""
    from evaluations.models import Evaluation, EvaluationStatus
    from runs.models import RunMode, RunStatus, TunixRun

    rng = random.Random(7)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    per_run = 5
    runs = []
    for index in range(evaluations // per_run):
        lora = {"rank": rng.choice((4, 8, 16))} if index % 2 else None
        runs.append(
            TunixRun(
                run_id=uuid.uuid4(),
                dataset_key=DATASETS[index % 2],
                model_id=MODELS[index % len(MODELS)],
                mode=RunMode.LOCAL,
                status=RunStatus.COMPLETED,
                output_dir=f"outputs/bench-{index}",
                started_at=start + timedelta(minutes=index),
                created_at=start + timedelta(minutes=index),
                config={
                    "learning_rate": rng.choice((1e-5, 2e-5, 5e-5)),
                    "num_epochs": rng.choice((1, 2, 3)),
                    "batch_size": rng.choice((4, 8, 16)),
                    "lora": lora,
                },
            )
        )
    TunixRun.objects.bulk_create(runs, batch_size=1000)
    rows = []
    for run in runs:
        plan = [
            (DATASETS[0], True, False),
            (DATASETS[0], True, False),
            (DATASETS[1], False, False),
            (DATASETS[1], False, False),
            (DATASETS[0], True, True),
        ]
        for offset, (key, held_out, baseline) in enumerate(plan):
            rows.append(
                Evaluation(
                    run=run,
                    baseline=baseline,
                    dataset_key=key,
                    held_out=held_out,
                    metrics=list(METRICS),
                    generation={"max_new_tokens": 64, "temperature": 0.0, "seed": 0},
                    status=EvaluationStatus.COMPLETED,
                    queue="default",
                    created_at=run.started_at + timedelta(hours=1, minutes=offset),
                    scores={name: _score(rng) for name in METRICS},
                    items_done=200,
                    items_total=200,
                )
            )
    Evaluation.objects.bulk_create(rows, batch_size=1000)


def timed(call: Callable[[], Any], repeat: int) -> list[float]:
    call()  # warm: connections, caches, compiled templates
    figures = []
    for _ in range(repeat):
        started = time.perf_counter()
        call()
        figures.append((time.perf_counter() - started) * 1000)
    return figures


def line(name: str, figures: list[float], goal: float | None = None) -> str:
    median = statistics.median(figures)
    verdict = "" if goal is None else ("  ok" if median < goal else f"  OVER {goal:.0f} ms")
    return (
        f"{name:<44} median {median:7.2f} ms   min {min(figures):7.2f}   "
        f"max {max(figures):7.2f}{verdict}"
    )


def machine() -> str:
    """Where the figures were taken: the CPUs, PostgreSQL and the load at the start."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        version = cursor.fetchone()[0]
    load = Path("/proc/loadavg").read_text().split()[0]
    return f"{os.cpu_count()} CPUs, PostgreSQL {version} on loopback, load average {load}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--evaluations", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=21)
    args = parser.parse_args()
    with harness.postgres():
        from django.test import Client

        from accounts.tests.factories import UserFactory
        from evaluations.leaderboard import leaderboard, leaderboard_choices
        from evaluations.models import Evaluation

        seed(args.evaluations)
        harness.analyze()
        print(machine())
        print(f"{Evaluation.objects.count()} evaluations of {args.evaluations // 5} runs\n")

        def get(path: str) -> Callable[[], Any]:
            client = Client(HTTP_HOST="localhost")
            client.force_login(UserFactory.create(role="viewer"))

            def call() -> Any:
                response = client.get(path)
                assert response.status_code == 200, (path, response.status_code)
                return response

            return call

        reads: list[tuple[str, Callable[[], Any], float | None]] = [
            ("selector: first page", lambda: leaderboard(), GOAL_MS),
            ("selector: one dataset", lambda: leaderboard(dataset_key=DATASETS[0]), GOAL_MS),
            ("selector: one model", lambda: leaderboard(model_id=MODELS[0]), GOAL_MS),
            ("selector: exact_match@v1", lambda: leaderboard(metric=METRICS[1]), GOAL_MS),
            ("selector: offset 1000", lambda: leaderboard(offset=1000), GOAL_MS),
            ("the filter form's choices", leaderboard_choices, None),
            ("GET /leaderboard/", get("/leaderboard/"), GOAL_MS),
            (
                "GET /leaderboard/?dataset_key=…&model_id=…",
                get(f"/leaderboard/?dataset_key={DATASETS[1]}&model_id={MODELS[1]}"),
                GOAL_MS,
            ),
            ("GET /api/tunix/leaderboard", get("/api/tunix/leaderboard"), GOAL_MS),
        ]
        for name, call, goal in reads:
            print(line(name, timed(call, args.repeat), goal))

        from django.db import connection
        from django.test.utils import CaptureQueriesContext

        with CaptureQueriesContext(connection) as captured:
            leaderboard()
        print(f"\nThe selector's {len(captured.captured_queries)} statements; the ranked one:")
        print(harness.explain(captured.captured_queries[0]["sql"]))


if __name__ == "__main__":
    main()
