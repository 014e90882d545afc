"""manage.py export_dataset KEY --format F [-o FILE]: the export as JSONL, with a progress bar."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO, cast

from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from datasets import selectors, services
from datasets.exports import FORMATS
from datasets.keys import InvalidDatasetKey


class Command(BaseCommand):
    help = "Export a dataset as JSONL (to stdout, or atomically to a file with -o)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("key")
        parser.add_argument("--format", choices=FORMATS, default="trace", dest="fmt")
        parser.add_argument("-o", "--output", type=Path, default=None)

    def handle(self, *args: Any, **options: Any) -> None:
        key: str = options["key"]
        try:
            lines = selectors.dataset_export_lines(key=key, fmt=options["fmt"])
            dataset = selectors.dataset_get(key=key)
        except InvalidDatasetKey as exc:
            raise CommandError(str(exc)) from None
        except LookupError as exc:
            raise CommandError(str(exc).strip("'\"")) from None
        assert dataset is not None
        progress = tqdm(
            total=dataset.trace_count,
            desc=f"exporting {key}",
            unit="trace",
            file=cast(TextIO, self.stderr._out),
        )

        def counted() -> Iterator[str]:
            for line in lines:
                progress.update(1)
                yield line

        with progress:
            output: Path | None = options["output"]
            if output is None:
                for line in counted():
                    self.stdout.write(line, ending="")
                return
            written = services.write_lines_atomically(output, counted())
        self.stderr.write(f"Wrote {written} lines to {output}")
