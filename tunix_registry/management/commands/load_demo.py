"""Load the demo data set once (traces, two datasets, a dry-run)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from tunix_registry.demo import demo_load


class Command(BaseCommand):
    help = "Load a small demo data set (idempotent: does nothing when it is already there)."

    def handle(self, *args: Any, **options: Any) -> None:
        result = demo_load()
        if not result.loaded:
            self.stdout.write("demo data already loaded")
            return
        self.stdout.write(
            self.style.SUCCESS(
                f"demo loaded: {result.traces} traces, datasets {', '.join(result.datasets)}, "
                f"a dry-run ({result.run_status})"
            )
        )
