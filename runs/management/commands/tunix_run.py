"""`manage.py tunix_run DATASET_KEY MODEL_ID [--local] ...`: launch a run and print its outcome."""

from __future__ import annotations

import threading
from argparse import ArgumentParser
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from pydantic import ValidationError
from tqdm import tqdm

from runs.execution import run_execute
from runs.models import RunMode, RunStatus
from runs.schemas import TunixRunRequest
from runs.services import InvalidRunRequest, TunixRuntimeUnavailable, run_start

EXCERPT_LINES = 20


def _tail(text: str, lines: int = EXCERPT_LINES) -> str:
    kept = text.rstrip("\n").splitlines()[-lines:]
    return "\n".join(kept)


class _Progress(threading.Thread):
    """Shows the newest line the trainer printed, while a local run executes (stderr)."""

    def __init__(self, run_dir: Path) -> None:
        super().__init__(daemon=True)
        self.stop = threading.Event()
        self.stdout_log = run_dir / "stdout.log"

    def run(self) -> None:
        bar = tqdm(total=None, desc="running", unit="s", bar_format="{desc} [{elapsed}]")
        try:
            while not self.stop.wait(0.5):
                line = self._last_line(self.stdout_log)
                bar.set_description_str(f"running: {line[:80]}" if line else "running")
                bar.refresh()
        finally:
            bar.close()

    @staticmethod
    def _last_line(path: Path) -> str:
        try:
            with path.open("rb") as handle:
                handle.seek(0, 2)
                size = handle.tell()
                handle.seek(max(0, size - 4096))
                chunk = handle.read().decode("utf-8", errors="replace")
        except OSError:
            return ""
        lines = [line for line in chunk.splitlines() if line.strip()]
        return lines[-1].strip() if lines else ""


class Command(BaseCommand):
    help = (
        "Launch a Tunix run (a dry-run unless --local) through the same service as the API, "
        "wait for it and print its outcome. Exits 0 when the run completed."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("dataset_key")
        parser.add_argument("model_id")
        parser.add_argument(
            "--local", action="store_true", help="execute the trainer (default: dry-run)"
        )
        parser.add_argument("--output-dir", dest="output_dir", default=None)
        parser.add_argument("--learning-rate", dest="learning_rate", type=float, default=2e-5)
        parser.add_argument("--epochs", dest="num_epochs", type=int, default=3)
        parser.add_argument("--batch-size", dest="batch_size", type=int, default=8)
        parser.add_argument("--max-seq-length", dest="max_seq_length", type=int, default=2048)

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            request = TunixRunRequest(
                dataset_key=options["dataset_key"],
                model_id=options["model_id"],
                output_dir=options["output_dir"],
                dry_run=not options["local"],
                learning_rate=options["learning_rate"],
                num_epochs=options["num_epochs"],
                batch_size=options["batch_size"],
                max_seq_length=options["max_seq_length"],
            )
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
            )
            raise CommandError(f"invalid run request: {problems}") from None

        try:
            started = run_start(request=request)
        except TunixRuntimeUnavailable as exc:
            raise CommandError(str(exc)) from None
        except InvalidRunRequest as exc:
            raise CommandError(f"invalid {exc.field}: {exc}") from None
        local = started.run.mode == RunMode.LOCAL
        progress = _Progress(started.directory) if local and options["verbosity"] >= 1 else None
        if progress:
            progress.start()
        try:
            run = run_execute(started=started)
        finally:
            if progress:
                progress.stop.set()
                progress.join()

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
        if local:
            self.stdout.write(f"logs: {started.directory}")
        if run.status != RunStatus.COMPLETED:
            raise CommandError(f"run {run.run_id} ended {run.status}", returncode=1)
