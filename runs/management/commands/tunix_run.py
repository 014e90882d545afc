"""`manage.py tunix_run DATASET_KEY MODEL_ID [--local [--wait]] ...`: launch a run.

A dry-run executes here and its outcome is printed. A local run is queued for a
worker (`manage.py run_worker`, on this machine or another) and the command
prints its id and `pending`; `--wait` follows it to its end with a progress line
and prints the outcome. `--lora-*`, `--checkpoint-every` and `--resume-from`
fill the request's `lora`, `checkpoint_every_n_steps` and `resume_from`
(docs/training.md).
"""

from __future__ import annotations

import time
import uuid
from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from pydantic import ValidationError
from tqdm import tqdm

from runs.execution import run_execute
from runs.models import TERMINAL_STATUSES, RunMode, RunStatus, TunixRun
from runs.processes import host_name
from runs.schemas import TunixRunRequest
from runs.selectors import (
    run_directory,
    run_get,
    run_log_tail,
    run_queue_position,
    workers_live,
)
from runs.services import (
    InvalidRunRequest,
    QueueUnavailable,
    TunixRuntimeUnavailable,
    run_enqueue,
    run_start,
)
from tunix_registry.actors import command_actor

EXCERPT_LINES = 20
# Seconds between two looks at a followed run.
POLL_SECONDS = 1.0
# The flag of each request field, for the errors that name one.
FLAGS = {
    "output_dir": "--output-dir",
    "learning_rate": "--learning-rate",
    "num_epochs": "--epochs",
    "batch_size": "--batch-size",
    "max_seq_length": "--max-seq-length",
    "queue": "--queue",
    "lora": "--lora-rank",
    "lora.rank": "--lora-rank",
    "lora.alpha": "--lora-alpha",
    "lora.dropout": "--lora-dropout",
    "lora.target_modules": "--lora-targets",
    "lora.export": "--lora-export",
    "checkpoint_every_n_steps": "--checkpoint-every",
    "resume_from": "--resume-from",
}
# The LoRA options besides the rank: (option dest, LoraRequest field).
LORA_OPTIONS = (
    ("lora_alpha", "alpha"),
    ("lora_dropout", "dropout"),
    ("lora_targets", "target_modules"),
    ("lora_export", "export"),
)


def _named(field: str) -> str:
    """A request field with its flag: `--lora-targets (lora.target_modules)`."""
    flag = FLAGS.get(field)
    return f"{flag} ({field})" if flag else field


def _targets(value: str) -> list[str]:
    """`--lora-targets q_proj,v_proj` as a list (blank items dropped)."""
    return [name.strip() for name in value.split(",") if name.strip()]


def _lora(options: dict[str, Any]) -> dict[str, Any] | None:
    """The request's `lora` object from the --lora-* flags; None without --lora-rank."""
    given = {field: options[dest] for dest, field in LORA_OPTIONS if options[dest] is not None}
    if options["lora_rank"] is None:
        if given:
            flags = ", ".join(FLAGS[f"lora.{field}"] for field in given)
            raise CommandError(f"{flags} need --lora-rank (without it the run trains every weight)")
        return None
    return {"rank": options["lora_rank"], **given}


def _tail(text: str, lines: int = EXCERPT_LINES) -> str:
    kept = text.rstrip("\n").splitlines()[-lines:]
    return "\n".join(kept)


def _last_line(run_id: uuid.UUID) -> str:
    """The newest non-empty line of the run's stored output."""
    for chunk in reversed(run_log_tail(run_id=run_id, max_chunks=4)):
        lines = [line.strip() for line in chunk.chunk.splitlines() if line.strip()]
        if lines:
            return lines[-1]
    return ""


def _progress(run: TunixRun) -> str:
    """One line: status (queue position or workers while pending), steps and loss, last line."""
    parts = [str(run.status)]
    if run.status == RunStatus.PENDING:
        position = run_queue_position(run=run)
        live = sum(1 for w in workers_live() if run.queue in w.queues)
        parts.append(f"#{position} on {run.queue}, {live} worker(s) taking it")
    elif run.worker_id:
        parts.append(f"on {run.worker_id}")
    if run.metrics_steps is not None:
        loss = f", loss {run.final_loss:.4g}" if run.final_loss is not None else ""
        parts.append(f"step {run.metrics_steps}{loss}")
    line = _last_line(run.run_id) if run.status != RunStatus.PENDING else ""
    if line:
        parts.append(line[:60])
    return " | ".join(parts)


class Command(BaseCommand):
    help = (
        "Launch a Tunix run through the same services as the API. A dry-run (the default) "
        "executes here and its outcome is printed; --local queues the run for a worker "
        "(prints its id and `pending`), and --wait follows it to its end. Exits 0 when the "
        "run completed (or, without --wait, was queued)."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("dataset_key")
        parser.add_argument("model_id")
        parser.add_argument(
            "--local",
            action="store_true",
            help="train: queue the run for a worker (default: dry-run, executed here)",
        )
        parser.add_argument(
            "--wait",
            action="store_true",
            help="with --local: follow the run to its end with a progress line, print its "
            "outcome (Ctrl-C stops following, not the run)",
        )
        parser.add_argument(
            "--queue",
            default=None,
            help="with --local: the worker queue, one of TUNIX_QUEUES "
            "(default: TUNIX_DEFAULT_QUEUE)",
        )
        parser.add_argument(
            "--as",
            dest="as_user",
            default=None,
            metavar="USERNAME",
            help="launch as this (active) user, recorded as the run's launcher "
            "(default: no launcher, events name `command`)",
        )
        parser.add_argument("--output-dir", dest="output_dir", default=None)
        parser.add_argument("--learning-rate", dest="learning_rate", type=float, default=2e-5)
        parser.add_argument("--epochs", dest="num_epochs", type=int, default=3)
        parser.add_argument("--batch-size", dest="batch_size", type=int, default=8)
        parser.add_argument("--max-seq-length", dest="max_seq_length", type=int, default=2048)
        parser.add_argument(
            "--lora-rank",
            dest="lora_rank",
            type=int,
            default=None,
            metavar="R",
            help="train a LoRA adapter of this rank (1-256) instead of every weight "
            "(default: full-weight training)",
        )
        parser.add_argument(
            "--lora-alpha",
            dest="lora_alpha",
            type=float,
            default=None,
            metavar="A",
            help="with --lora-rank: the LoRA scaling alpha, above 0 and at most 1024 (default 16)",
        )
        parser.add_argument(
            "--lora-dropout",
            dest="lora_dropout",
            type=float,
            default=None,
            metavar="P",
            help="with --lora-rank: dropout on the adapter's input, 0 to below 1 (default 0)",
        )
        parser.add_argument(
            "--lora-targets",
            dest="lora_targets",
            type=_targets,
            default=None,
            metavar="MODULES",
            help="with --lora-rank: comma-separated modules to adapt, e.g. q_proj,v_proj "
            "(default: every module of the model's family)",
        )
        parser.add_argument(
            "--lora-export",
            dest="lora_export",
            choices=("merged", "adapter"),
            default=None,
            help="with --lora-rank: export the adapter folded into the base weights (merged, "
            "the default) or the adapter alone",
        )
        parser.add_argument(
            "--checkpoint-every",
            dest="checkpoint_every_n_steps",
            type=int,
            default=None,
            metavar="N",
            help="save a checkpoint every N training steps, 1-1000000 "
            "(default: a third of the run's steps)",
        )
        parser.add_argument(
            "--resume-from",
            dest="resume_from",
            default=None,
            metavar="RUN_ID",
            help="continue from the last checkpoint of this finished local run "
            "(same model and LoRA shape)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        local = options["local"]
        if not local and (options["wait"] or options["queue"]):
            raise CommandError("--wait and --queue go with --local (a dry-run executes here)")
        actor = command_actor(options["as_user"])
        lora = _lora(options)
        try:
            request = TunixRunRequest.model_validate(
                {
                    "dataset_key": options["dataset_key"],
                    "model_id": options["model_id"],
                    "output_dir": options["output_dir"],
                    "dry_run": not local,
                    "learning_rate": options["learning_rate"],
                    "num_epochs": options["num_epochs"],
                    "batch_size": options["batch_size"],
                    "max_seq_length": options["max_seq_length"],
                    "queue": options["queue"],
                    "lora": lora,
                    "checkpoint_every_n_steps": options["checkpoint_every_n_steps"],
                    "resume_from": options["resume_from"],
                }
            )
        except ValidationError as exc:
            problems = "; ".join(
                f"{_named('.'.join(str(p) for p in err['loc'][:2]))}: {err['msg']}"
                for err in exc.errors()
            )
            raise CommandError(f"invalid run request: {problems}") from None

        if not local:
            try:
                started = run_start(request=request, actor=actor)
            except TunixRuntimeUnavailable as exc:
                raise CommandError(str(exc)) from None
            except InvalidRunRequest as exc:
                raise CommandError(f"invalid {_named(exc.field)}: {exc}") from None
            self._outcome(run_execute(started=started))
            return

        try:
            queued = run_enqueue(request=request, actor=actor, queue=request.queue)
        except InvalidRunRequest as exc:
            raise CommandError(f"invalid {_named(exc.field)}: {exc}") from None
        except QueueUnavailable as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"run {queued.run_id}: pending (local) on queue {queued.queue}")
        if not options["wait"]:
            self.stdout.write(
                f"follow it on its page /runs/{queued.run_id}/ or with "
                f"GET /api/tunix/runs/{queued.run_id}/status"
            )
            return
        try:
            run = self._follow(queued.run_id, show=options["verbosity"] >= 1)
        except KeyboardInterrupt:
            raise CommandError(
                f"stopped following run {queued.run_id}; it goes on (cancel it with "
                f"POST /api/tunix/runs/{queued.run_id}/cancel)",
                returncode=130,
            ) from None
        self._outcome(run)

    def _follow(self, run_id: uuid.UUID, *, show: bool) -> TunixRun:
        """Poll the run until it ends, with a progress line on stderr; the ended run."""
        bar = tqdm(total=None, desc="pending", bar_format="{desc} [{elapsed}]") if show else None
        try:
            while True:
                run = run_get(run_id=run_id)
                if run is None:
                    raise CommandError(f"run {run_id} is gone from the registry")
                if run.status in TERMINAL_STATUSES:
                    return run
                if bar is not None:
                    bar.set_description_str(_progress(run))
                    bar.refresh()
                time.sleep(POLL_SECONDS)
        finally:
            if bar is not None:
                bar.close()

    def _outcome(self, run: TunixRun) -> None:
        duration = f"{run.duration_seconds:.2f}s" if run.duration_seconds is not None else "-"
        self.stdout.write(f"run {run.run_id}: {run.status} ({run.mode}) in {duration}")
        self.stdout.write(f"message: {run.message}")
        if run.exit_code is not None:
            self.stdout.write(f"exit code: {run.exit_code}")
        if run.metrics_steps is not None:
            self.stdout.write(
                f"metrics: {run.metrics_steps} steps, final loss {run.final_loss}, "
                f"best eval loss {run.best_eval_loss}, {run.tokens_per_second} tokens/s"
            )
        if run.stdout:
            self.stdout.write(f"--- stdout (last {EXCERPT_LINES} lines) ---\n{_tail(run.stdout)}")
        if run.stderr:
            self.stdout.write(f"--- stderr (last {EXCERPT_LINES} lines) ---\n{_tail(run.stderr)}")
        if run.mode == RunMode.LOCAL:
            directory = run_directory(run_id=run.run_id)
            if run.host == host_name() and directory.is_dir():
                self.stdout.write(f"logs: {directory}")
            else:
                self.stdout.write(
                    f"logs: GET /api/tunix/runs/{run.run_id}/logs (files on {run.host or '-'})"
                )
        if run.status != RunStatus.COMPLETED:
            raise CommandError(f"run {run.run_id} ended {run.status}", returncode=1)
