"""`manage.py reap_runs`: fail runs left `running` by a process that is gone.

scripts/run.sh calls it before starting the server; run it after any crash.
"""

from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand

from runs.services import run_reap


class Command(BaseCommand):
    help = (
        "Mark runs left `running` by a dead process (server restart, killed worker) as failed, "
        "kill their orphaned trainers, and record outcomes a failed database write left behind."
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
        reaped = run_reap(hosts_gone=options["host_gone"])
        for run_id in reaped:
            self.stdout.write(f"reaped {run_id}")
        self.stdout.write(f"{len(reaped)} run(s) reaped")
