"""`manage.py compare_runs <id> <id> [...]`: 2 to 8 runs side by side, as a terminal table.

One column per run (headed by the start of its id, listed in full above the
table); rows for what identifies it, each configuration key whose values differ
(every key with `--all`), and the figures that rank runs. The read is
runs.compare.run_compare, as for `GET /api/tunix/runs/compare` and the page.
"""

from __future__ import annotations

from argparse import ArgumentParser
from collections.abc import Sequence
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from runs.compare import (
    MAX_RUNS,
    MIN_RUNS,
    Comparison,
    InvalidComparison,
    RunsNotFound,
    run_compare,
    run_ids_parse,
)
from runs.templatetags.run_pages import config_cell, loss

# A cell longer than this is cut, with an ellipsis.
CELL_MAX = 28
# Characters of a run id heading its column.
SHORT_ID = 8


def _cell(value: str) -> str:
    value = " ".join(value.split())
    return value if len(value) <= CELL_MAX else value[: CELL_MAX - 1] + "…"


def _number(value: float | int | None, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def table_rows(comparison: Comparison, *, every_key: bool) -> list[tuple[str, list[str]]]:
    """The table's rows: a label and one cell per run."""
    runs = comparison.runs
    rows: list[tuple[str, list[str]]] = [
        ("status", [run.status for run in runs]),
        ("mode", [run.mode for run in runs]),
        ("model", [run.model_id for run in runs]),
        ("dataset", [run.dataset_key for run in runs]),
    ]
    for row in comparison.config if every_key else comparison.differing:
        marker = "≠ " if row.differs and every_key else ""
        rows.append((f"{marker}{row.key}", [config_cell(value) for value in row.values]))
    rows += [
        ("final loss", [loss(run.final_loss) for run in runs]),
        ("best eval loss", [loss(run.best_eval_loss) for run in runs]),
        ("tokens/s", [_number(run.tokens_per_second, ".1f") for run in runs]),
        ("trainable parameters", [_number(run.trainable_parameters, ",d") for run in runs]),
    ]
    evaluations = comparison.evaluations
    if evaluations is not None:
        # Each score on the items most of the runs were evaluated on, with its delta to run 1.
        for score in evaluations.scores:
            cells = []
            for i, (mean, delta) in enumerate(score.cells):
                text = _number(mean, ".3f")
                if i and delta is not None:
                    text += f" ({delta:+.3f})"
                cells.append(text)
            rows.append((score.metric, cells))
        label = f"items scored apart ({evaluations.metric})"
        rows.append((label, [str(evaluations.disagreement_count)] + [""] * (len(runs) - 1)))
    return [(label, [_cell(value) for value in cells]) for label, cells in rows]


def render_table(headers: Sequence[str], rows: Sequence[tuple[str, Sequence[str]]]) -> str:
    label_width = max(len(label) for label, _ in rows)
    widths = [
        max(len(headers[i]), *(len(cells[i]) for _, cells in rows)) for i in range(len(headers))
    ]

    def line(label: str, cells: Sequence[str]) -> str:
        padded = [cell.ljust(width) for cell, width in zip(cells, widths, strict=True)]
        return "  ".join([label.ljust(label_width), *padded]).rstrip()

    rule = "  ".join(["-" * label_width, *("-" * width for width in widths)])
    return "\n".join([line("", headers), rule, *(line(label, cells) for label, cells in rows)])


class Command(BaseCommand):
    help = (
        f"Compare {MIN_RUNS} to {MAX_RUNS} runs side by side: status, model, dataset, the "
        "configuration keys whose values differ (every key with --all), final and best eval "
        "loss, tokens per second and trainable parameters."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument(
            "run_ids", nargs="+", metavar="RUN_ID", help="the runs, in the order of the columns"
        )
        parser.add_argument(
            "--all",
            action="store_true",
            dest="every_key",
            help="show every configuration key, not only those whose values differ",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            run_ids = run_ids_parse(",".join(options["run_ids"]))
            comparison = run_compare(run_ids=run_ids)
        except (InvalidComparison, RunsNotFound) as exc:
            raise CommandError(str(exc)) from None
        for number, run in enumerate(comparison.runs, start=1):
            self.stdout.write(f"run {number}: {run.run_id}")
        self.stdout.write("")
        headers = [
            f"{number} {str(run.run_id)[:SHORT_ID]}"
            for number, run in enumerate(comparison.runs, start=1)
        ]
        self.stdout.write(
            render_table(headers, table_rows(comparison, every_key=options["every_key"]))
        )
        differing, total = len(comparison.differing), len(comparison.config)
        note = "" if options["every_key"] else " (--all shows every key)"
        self.stdout.write(f"\n{differing} of {total} configuration keys differ{note}")
