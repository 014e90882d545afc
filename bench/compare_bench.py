"""Run comparison benchmark: 8 runs with 5,000 metric points each, on PostgreSQL.

    .venv/bin/python -m bench.compare_bench        # BENCH_SAMPLES=200 by default

Seeds 8 local runs, each with 5,000 logged steps (an eval loss every 100) and a
completed evaluation of 500 items on the same held-out set, scored apart on about
a third of them; VACUUM ANALYZE. Then the server time of the comparison page
(`GET /runs/compare/?runs=...`, the overlaid chart of 40,000 points thinned for
drawing, the configuration diff, the scores and the first 100 disagreements) and of
the same comparison as JSON (`GET /api/tunix/runs/compare`, every point), rendered in
this process through Django's test client: median and p95 wall ms, median CPU ms and
the number of queries. Goal: the page under 150 ms of server time.
"""

from __future__ import annotations

import os
import uuid

from bench import harness

SAMPLES = int(os.environ.get("BENCH_SAMPLES", "200"))

RUNS = 8
STEPS = 5000
ITEMS = 500


def seed() -> list[str]:
    from django.utils import timezone

    from evaluations.models import Evaluation, EvaluationItem
    from runs.metrics import metric_level
    from runs.models import RunMetric
    from runs.tests.factories import TunixRunFactory

    run_ids = []
    metric = "answer_correctness@v1"
    for n in range(RUNS):
        run = TunixRunFactory.create(
            mode="local", exit_code=0, metrics_steps=STEPS, metrics_count=STEPS
        )
        run.config = {**run.config, "learning_rate": 1e-4 * (n + 1), "num_epochs": 2 + n % 3}
        run.save(update_fields=["config"])
        RunMetric.objects.bulk_create(
            [
                RunMetric(
                    run=run,
                    step=step,
                    loss=3.0 / (1 + step / (100 + 10 * n)),
                    eval_loss=(3.2 / (1 + step / 100)) if step % 100 == 0 else None,
                    level=metric_level(step - 1),
                )
                for step in range(1, STEPS + 1)
            ],
            batch_size=2000,
        )
        scores = [float((i + n) % 3 == 0) for i in range(ITEMS)]
        evaluation = Evaluation.objects.create(
            evaluation_id=uuid.uuid4(),
            run=run,
            dataset_key=run.dataset_key,
            held_out=True,
            metrics=[metric],
            generation={"max_new_tokens": 64, "temperature": 0.0, "seed": 0, "batch_size": 8},
            status="completed",
            queue="default",
            created_at=timezone.now(),
            items_total=ITEMS,
            items_done=ITEMS,
            scores={metric: {"mean": sum(scores) / ITEMS, "count": ITEMS}},
        )
        EvaluationItem.objects.bulk_create(
            [
                EvaluationItem(
                    evaluation=evaluation,
                    index=i,
                    prompt=f"<start_of_turn>user\nWhat is {i} + {i}?<end_of_turn>\n"
                    "<start_of_turn>model\n",
                    expected=str(2 * i),
                    prediction=f"Answer: {2 * i if score else i}",
                    scores={metric: score},
                )
                for i, score in enumerate(scores)
            ],
            batch_size=1000,
        )
        run_ids.append(str(run.run_id))
    return run_ids


def main() -> None:
    with harness.postgres():
        run_ids = seed()
        harness.analyze()
        from django.core.management import call_command

        call_command("collectstatic", interactive=False, verbosity=0)
        runs = ",".join(run_ids)
        client = harness.viewer_client()
        print(
            f"\n{RUNS} runs x {STEPS:,} metric points, {ITEMS} evaluation items each; "
            f"server time, {SAMPLES} requests each, in-process\n"
        )
        print("| view | median ms | p95 ms | median CPU ms | queries |\n|---|---|---|---|---|")
        for name, path in [
            ("GET /runs/compare/ (page)", "/runs/compare/"),
            ("GET /runs/compare/?scale=log (page)", "/runs/compare/"),
            ("GET /api/tunix/runs/compare (JSON, every point)", "/api/tunix/runs/compare"),
        ]:
            params = {"runs": runs}
            if "log" in name:
                params["scale"] = "log"
            t = harness.request_times(client, path, params, SAMPLES)
            print(
                f"| {name} | {t.median_ms:.1f} | {t.p95_ms:.1f} | {t.cpu_ms:.1f} "
                f"| {len(t.statements)} |",
                flush=True,
            )
        print(f"\n{harness.machine()}")


if __name__ == "__main__":
    main()
