"""`manage.py import_traces FILE.jsonl [--batch-size N] [--all-or-nothing] [--as USERNAME]`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from traces.services import Rejection, trace_import
from tunix_registry.actors import command_user


class Command(BaseCommand):
    help = (
        "Import reasoning traces from a JSONL file (one trace per line), validating each line "
        "with the API's schema. Rejected lines are reported with their line number and reason; "
        "the command exits with status 1 if any line was rejected. By default the good lines "
        "are imported; with --all-or-nothing nothing is imported when any line is bad."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", type=Path, help="JSONL file of traces ('-' for stdin)")
        parser.add_argument(
            "--batch-size",
            type=int,
            default=2000,
            help="traces per INSERT and per commit (default 2000)",
        )
        parser.add_argument(
            "--all-or-nothing",
            action="store_true",
            help="import nothing if any line is rejected",
        )
        parser.add_argument(
            "--no-progress", action="store_true", help="do not show the progress bar"
        )
        parser.add_argument(
            "--as",
            dest="as_user",
            default=None,
            metavar="USERNAME",
            help="credit the traces to this (active) user (default: no creator)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        path: Path = options["file"]
        batch_size: int = options["batch_size"]
        if batch_size < 1:
            raise CommandError("--batch-size must be at least 1")
        created_by = command_user(options["as_user"])
        if str(path) == "-":
            stream = sys.stdin.buffer
            total = None
        else:
            if not path.is_file():
                raise CommandError(f"{path}: no such file")
            stream = path.open("rb")
            total = path.stat().st_size

        def report(rejection: Rejection) -> None:
            with tqdm.external_write_mode(file=sys.stderr):
                self.stderr.write(f"line {rejection.line}: {rejection.reason}")

        with (
            stream,
            tqdm(
                total=total,
                unit="B",
                unit_scale=True,
                desc="import_traces",
                file=sys.stderr,
                disable=options["no_progress"],
            ) as bar,
        ):
            result = trace_import(
                stream=stream,
                batch_size=batch_size,
                all_or_nothing=options["all_or_nothing"],
                max_line_bytes=settings.TRACE_MAX_BYTES,
                on_reject=report,
                on_progress=bar.update,
                created_by=created_by,
            )
        summary = f"{result.created} traces imported, {result.rejected} lines rejected"
        if result.discarded:
            summary += " (--all-or-nothing: nothing imported)"
        if result.rejected:
            raise CommandError(summary, returncode=1)
        self.stdout.write(summary)
