"""`manage.py run_worker [--queues default,gpu]`: execute queued runs on this machine.

See `runs.worker` for what the worker does and how it stops, and
docs/operations.md for running several on several machines.
"""

from __future__ import annotations

import logging
import math
from argparse import ArgumentParser, ArgumentTypeError
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from runs.services import QUEUE_NAME_MAX_LENGTH
from runs.worker import WORKER_ID_MAX_LENGTH, RunWorker, default_worker_id


def _interval(value: str) -> float:
    number = float(value)
    if not math.isfinite(number) or number < 0:
        raise ArgumentTypeError("must be a finite number of seconds, 0 or more")
    return number


def _worker_id(value: str) -> str:
    if not value or len(value) > WORKER_ID_MAX_LENGTH:
        raise ArgumentTypeError(f"must be 1 to {WORKER_ID_MAX_LENGTH} characters")
    return value


def _max_tasks(value: str) -> int:
    number = int(value)
    if number <= 0:
        raise ArgumentTypeError("must be greater than zero")
    return number


def queues_parse(value: str) -> list[str]:
    """The queues a worker takes: a comma-separated subset of TUNIX_QUEUES, or `*` for all."""
    if value.strip() == "*":
        return list(settings.TUNIX_QUEUES)
    queues = list(dict.fromkeys(q.strip() for q in value.split(",") if q.strip()))
    unknown = [q for q in queues if q not in settings.TUNIX_QUEUES]
    if not queues or unknown:
        raise CommandError(
            f"unknown queue(s) {', '.join(unknown) or repr(value)}; "
            f"TUNIX_QUEUES is {','.join(settings.TUNIX_QUEUES)}"
        )
    too_long = [q for q in queues if len(q) > QUEUE_NAME_MAX_LENGTH]
    if too_long:
        raise CommandError(f"queue names are at most {QUEUE_NAME_MAX_LENGTH} characters")
    return queues


class Command(BaseCommand):
    help = (
        "Execute queued runs on this machine: take tasks from the named queues, claim and "
        "execute their runs, keep a worker row and heartbeat, and reap runs whose worker died. "
        "SIGTERM/SIGINT stop it (the current run is stopped and recorded), SIGUSR1 lets the "
        "current run finish first."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument(
            "--queues",
            default=None,
            help="comma-separated queues to take, each one of TUNIX_QUEUES, or '*' for all "
            "(default: TUNIX_DEFAULT_QUEUE)",
        )
        parser.add_argument(
            "--worker-id",
            type=_worker_id,
            default=None,
            help="this worker's id, unique across all workers (default: host-pid-random)",
        )
        parser.add_argument(
            "--interval",
            type=_interval,
            default=1.0,
            help="seconds between two looks at an empty queue (default: 1)",
        )
        parser.add_argument("--batch", action="store_true", help="exit once the queues are empty")
        parser.add_argument(
            "--max-tasks", type=_max_tasks, default=None, help="exit after this many tasks"
        )
        parser.add_argument(
            "--no-startup-delay",
            action="store_false",
            dest="startup_delay",
            help="start at once (default: a random delay under 1 s, against thundering herds)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        queues = queues_parse(options["queues"] or settings.TUNIX_DEFAULT_QUEUE)
        verbosity = options["verbosity"]
        # The engine's own per-task lines repeat ours; keep them for -v 2.
        engine_level = logging.DEBUG if verbosity >= 2 else logging.WARNING
        for name in ("django_tasks", "django_tasks_db"):
            logging.getLogger(name).setLevel(engine_level)

        def out(line: str) -> None:
            if verbosity >= 1:
                self.stdout.write(line)
                self.stdout.flush()

        worker = RunWorker(
            queues=queues,
            worker_id=options["worker_id"] or default_worker_id(),
            interval=options["interval"],
            batch=options["batch"],
            max_tasks=options["max_tasks"],
            startup_delay=options["startup_delay"],
            out=out,
        )
        worker.configure_signals()
        worker.run()
