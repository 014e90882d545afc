"""manage.py build_dataset NAME VERSION [--filter k=v ...] [--strategy latest|random --seed N]
[--limit N]: build a dataset version from the stored traces.
"""

from __future__ import annotations

from typing import Any, TextIO, cast

from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from datasets import services
from datasets.forms import parse_filter_value
from tunix_registry.actors import command_user
from tunix_registry.fields import json_object_check


def parse_filter(text: str) -> tuple[str, Any]:
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise CommandError(f"--filter must look like key=value (got {text!r})")
    value = parse_filter_value(raw)
    try:
        # PostgreSQL cannot store a NUL, typed raw or as a JSON escape ("\u0000").
        json_object_check({key: value})
    except ValueError as exc:
        raise CommandError(f"--filter {key!r}: {exc}") from None
    return key, value


class Command(BaseCommand):
    help = (
        "Build an immutable dataset version from the stored traces. Filter values are read "
        "as JSON when they parse (1, true, null, '\"1\"'), else as text."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name")
        parser.add_argument("version")
        parser.add_argument(
            "--filter",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="keep traces whose meta KEY equals VALUE exactly (repeatable)",
        )
        parser.add_argument("--strategy", choices=["latest", "random"], default="latest")
        parser.add_argument("--seed", type=int, default=None)
        parser.add_argument("--limit", type=int, default=100)
        parser.add_argument(
            "--as",
            dest="as_user",
            default=None,
            metavar="USERNAME",
            help="credit the dataset to this (active) user (default: no creator)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        created_by = command_user(options["as_user"])
        filters: dict[str, Any] = {}
        for text in options["filter"]:
            key, value = parse_filter(text)
            if key in filters:
                raise CommandError(f"--filter {key} given twice")
            filters[key] = value
        with tqdm(
            total=1, desc="building", unit="dataset", file=cast(TextIO, self.stderr._out)
        ) as progress:
            try:
                dataset = services.dataset_build(
                    name=options["name"],
                    version=options["version"],
                    filters=filters,
                    limit=options["limit"],
                    selection_strategy=options["strategy"],
                    seed=options["seed"],
                    created_by=created_by,
                )
            except services.DatasetAlreadyExists as exc:
                raise CommandError(str(exc)) from None
            except ValueError as exc:  # InvalidDatasetKey included
                raise CommandError(str(exc)) from None
            progress.update(1)
        self.stdout.write(
            f"Built {dataset.key}: {dataset.trace_count} traces, build {dataset.build_id}, "
            f"manifest {services.manifest_relative_path(dataset.key)}"
        )
