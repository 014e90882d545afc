"""`manage.py reap_runs`: finish runs whose process is gone or whose lease expired, once.

Every worker (`manage.py run_worker`) runs the same reaper in its loop; this
command is for an installation without a running worker, or after a crash.
scripts/run.sh calls it before starting the server.
"""

from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand

from runs.services import run_reap
from tunix_registry.actors import REAPER


class Command(BaseCommand):
    help = (
        "Finish runs left executing by a dead process (server restart, killed worker) or whose "
        "heartbeat is older than the lease, kill their orphaned trainers, record outcomes a "
        "failed database write left behind, and queue again runs whose task was taken but "
        "never claimed. Every worker does the same in its loop."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument(
            "--host-gone",
            action="append",
            default=[],
            metavar="HOST",
            help="also fail the running runs of HOST, a machine that is gone for good "
            "(repeatable); its processes cannot be checked from here",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        reaped = run_reap(hosts_gone=options["host_gone"], actor=REAPER)
        for run_id in reaped:
            self.stdout.write(f"reaped {run_id}")
        self.stdout.write(f"{len(reaped)} run(s) reaped")
        from evaluations.services import evaluation_reap

        evaluations = evaluation_reap()
        for evaluation_id in evaluations:
            self.stdout.write(f"reaped evaluation {evaluation_id}")
        if evaluations:
            self.stdout.write(f"{len(evaluations)} evaluation(s) reaped")
