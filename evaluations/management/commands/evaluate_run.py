"""`manage.py evaluate_run RUN_ID [--dataset KEY] [--baseline] [--wait] ...`: evaluate a run.

Queues an evaluation of the run's trained model (or, with `--baseline`, of its base
model) on the run's held-out split or a named dataset, for a worker (`manage.py
run_worker`); prints its id. `--wait` follows it with a progress bar over its items
and prints its scores (docs/evaluation.md).
"""

from __future__ import annotations

import time
import uuid
from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from pydantic import ValidationError
from tqdm import tqdm

from evaluations import selectors, services
from evaluations.models import Evaluation
from evaluations.schemas import DEFAULT_METRICS, HELD_OUT, EvaluationRequest, GenerationIn
from tunix_registry.actors import command_actor

POLL_SECONDS = 1.0
FLAGS = {
    "dataset": "--dataset",
    "metrics": "--metric",
    "max_new_tokens": "--max-new-tokens",
    "temperature": "--temperature",
    "seed": "--seed",
    "batch_size": "--batch-size",
    "queue": "--queue",
}


class Command(BaseCommand):
    help = "Queue an evaluation of a run for a worker; --wait follows it to its scores."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("run_id", type=uuid.UUID, help="the run to evaluate")
        parser.add_argument(
            "--dataset",
            default=HELD_OUT,
            help="a dataset key, or `held_out` (default): what the run's trainer held out "
            "of its own dataset",
        )
        parser.add_argument(
            "--baseline",
            action="store_true",
            help="evaluate the run's base model (its model_id) instead of what it trained",
        )
        parser.add_argument(
            "--metric",
            action="append",
            dest="metrics",
            metavar="NAME",
            help=f"a metric with its version, repeatable (default: {', '.join(DEFAULT_METRICS)})",
        )
        parser.add_argument("--max-new-tokens", type=int, default=64, help="1..4096 (64)")
        parser.add_argument(
            "--temperature", type=float, default=0.0, help="0 is greedy decoding (0)"
        )
        parser.add_argument("--seed", type=int, default=0, help="sampling seed (0)")
        parser.add_argument(
            "--batch-size", type=int, default=8, help="prompts per generation call (8)"
        )
        parser.add_argument(
            "--queue", default=None, help="the worker queue (default: TUNIX_DEFAULT_QUEUE)"
        )
        parser.add_argument(
            "--wait", action="store_true", help="follow it to its end and print its scores"
        )
        parser.add_argument(
            "--as",
            dest="as_user",
            default=None,
            metavar="USERNAME",
            help="launch as this (active) user, recorded as its launcher",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        actor = command_actor(options["as_user"])
        try:
            request = EvaluationRequest(
                dataset=options["dataset"],
                baseline=options["baseline"],
                metrics=options["metrics"] or list(DEFAULT_METRICS),
                generation=GenerationIn(
                    max_new_tokens=options["max_new_tokens"],
                    temperature=options["temperature"],
                    seed=options["seed"],
                    batch_size=options["batch_size"],
                ),
                queue=options["queue"],
            )
        except ValidationError as exc:
            error = exc.errors()[0]
            where = ".".join(str(part) for part in error["loc"] if isinstance(part, str))
            flag = FLAGS.get(where, FLAGS.get(where.split(".")[0], where))
            raise CommandError(f"{flag}: {error['msg']}") from None
        try:
            evaluation = services.evaluation_enqueue(
                run_id=options["run_id"], request=request, actor=actor
            )
        except (services.EvaluationRunNotFound, services.RunNotEvaluable) as exc:
            raise CommandError(str(exc)) from None
        except services.InvalidEvaluationRequest as exc:
            raise CommandError(f"{FLAGS.get(exc.field, exc.field)}: {exc}") from None
        except services.EvaluationQueueUnavailable as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(
            f"evaluation {evaluation.evaluation_id}: pending on queue {evaluation.queue}"
        )
        if not options["wait"]:
            return
        try:
            done = self._follow(evaluation.evaluation_id, show=options["verbosity"] >= 1)
        except KeyboardInterrupt:
            raise CommandError(
                f"stopped following evaluation {evaluation.evaluation_id}; it goes on",
                returncode=130,
            ) from None
        self._outcome(done)

    def _follow(self, evaluation_id: uuid.UUID, *, show: bool) -> Evaluation:
        bar = tqdm(total=None, desc="pending", unit="item") if show else None
        try:
            while True:
                evaluation = selectors.evaluation_get(evaluation_id=evaluation_id)
                if evaluation is None:
                    raise CommandError(f"evaluation {evaluation_id} is gone from the registry")
                if evaluation.is_terminal:
                    return evaluation
                if bar is not None:
                    bar.set_description_str(evaluation.status)
                    if evaluation.items_total is not None:
                        bar.total = evaluation.items_total
                    bar.n = evaluation.items_done
                    bar.refresh()
                time.sleep(POLL_SECONDS)
        finally:
            if bar is not None:
                bar.close()

    def _outcome(self, evaluation: Evaluation) -> None:
        self.stdout.write(f"evaluation {evaluation.evaluation_id}: {evaluation.status}")
        self.stdout.write(f"message: {evaluation.message}")
        for name, score in (evaluation.scores or {}).items():
            mean = score.get("mean")
            shown = "-" if mean is None else f"{mean:.4f}"
            interval = (
                f" (95% CI {score['ci_low']:.4f}..{score['ci_high']:.4f})"
                if score.get("ci_low") is not None and score.get("ci_high") is not None
                else ""
            )
            self.stdout.write(f"{name}: {shown} over {score.get('count', 0)} items{interval}")
        if evaluation.stderr and not evaluation.scores:
            self.stdout.write(f"--- stderr ---\n{evaluation.stderr}")
        if evaluation.status != "completed":
            raise CommandError(f"evaluation {evaluation.status}: {evaluation.message}")
