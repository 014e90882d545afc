"""Two to eight runs side by side: the one read behind the API, the page and the command.

`run_compare` returns the runs in the order asked for, each with its metrics
summary, its `training` record and its loss series, and the configuration as a
diff (`ConfigRow` per flattened key), and their evaluations side by side
(evaluations.comparison). Three queries whatever the number of runs: the runs
(with their launchers' usernames), every metric row of them, their completed
evaluations; a fourth reads the items when two or more were evaluated alike.
`run_ids_parse` reads the comma-separated list the API, the page and the
command are given.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from django.db.models import Case, IntegerField, Q, Value, When

from runs.metrics import series_level
from runs.models import RunMetric, TunixRun
from tunix_registry.actors import with_username

MIN_RUNS = 2
MAX_RUNS = 8
# A piece of a run list that is not an id is quoted in the error up to this length.
QUOTED_MAX = 40
# Columns a comparison never reads.
COMPARE_DEFERRED = ("stdout", "stderr", "artifacts", "message")


class InvalidComparison(ValueError):
    """A list of run ids that cannot be compared: malformed, too short, too long, repeated."""


class RunsNotFound(LookupError):
    """Some of the runs asked for do not exist (`run_ids`, in the order given)."""

    def __init__(self, run_ids: Sequence[uuid.UUID]) -> None:
        self.run_ids = list(run_ids)
        super().__init__(f"Run not found: {', '.join(str(run_id) for run_id in self.run_ids)}")


class MetricPoint(NamedTuple):
    """One logged step of a compared run (a tuple: a drawing reads thousands)."""

    step: int
    loss: float
    eval_loss: float | None


@dataclass(frozen=True)
class ComparedRun:
    """One run of a comparison: what identifies it, its summaries and its loss series."""

    run_id: uuid.UUID
    status: str
    mode: str
    model_id: str
    dataset_key: str
    launched_by: str | None
    started_at: datetime
    # TunixRun.metrics_summary: steps, final_loss, best_eval_loss, tokens_per_second.
    metrics: dict[str, float | int | None] | None
    # TunixRun.training: what the trainer reported (runs.schemas.RunTrainingOut).
    training: dict[str, Any] | None
    series: list[MetricPoint]

    @property
    def final_loss(self) -> float | None:
        return None if self.metrics is None else _float(self.metrics.get("final_loss"))

    @property
    def best_eval_loss(self) -> float | None:
        return None if self.metrics is None else _float(self.metrics.get("best_eval_loss"))

    @property
    def tokens_per_second(self) -> float | None:
        """The trainer's figure when it reported one, else the mean of the logged steps."""
        reported = _float((self.training or {}).get("tokens_per_second"))
        if reported is not None:
            return reported
        return None if self.metrics is None else _float(self.metrics.get("tokens_per_second"))

    @property
    def trainable_parameters(self) -> int | None:
        return _int((self.training or {}).get("trainable_parameters"))

    @property
    def parameters(self) -> int | None:
        return _int((self.training or {}).get("parameters"))


@dataclass(frozen=True)
class ConfigRow:
    """One flattened configuration key: each run's value (None when absent) and whether
    they differ."""

    key: str
    values: list[Any]
    differs: bool


@dataclass(frozen=True)
class Comparison:
    runs: list[ComparedRun]
    config: list[ConfigRow]
    # The runs' evaluation scores and the items they disagree on
    # (evaluations.comparison.EvaluationComparison); None when none was evaluated.
    evaluations: Any = None

    @property
    def differing(self) -> list[ConfigRow]:
        return [row for row in self.config if row.differs]


def run_ids_parse(text: str) -> list[uuid.UUID]:
    """The run ids of a comma-separated list (spaces and empty pieces ignored).

    Raises InvalidComparison for a piece that is not a UUID; the count and
    repetitions are checked by `run_compare`.
    """
    ids = []
    for piece in text.split(","):
        piece = piece.strip()
        if not piece:
            continue
        try:
            ids.append(uuid.UUID(piece))
        except ValueError:
            quoted = piece if len(piece) <= QUOTED_MAX else piece[:QUOTED_MAX] + "…"
            raise InvalidComparison(f"Not a run id: {quoted!r}") from None
    return ids


def run_ids_check(run_ids: Sequence[uuid.UUID]) -> None:
    """Raise InvalidComparison unless `run_ids` names MIN_RUNS..MAX_RUNS distinct runs."""
    if len(run_ids) < MIN_RUNS:
        raise InvalidComparison(
            f"Too few runs to compare: {len(run_ids)} given, at least {MIN_RUNS} needed"
        )
    if len(run_ids) > MAX_RUNS:
        raise InvalidComparison(
            f"Too many runs to compare: {len(run_ids)} given, at most {MAX_RUNS}"
        )
    seen: set[uuid.UUID] = set()
    repeated = []
    for run_id in run_ids:
        if run_id in seen and run_id not in repeated:
            repeated.append(run_id)
        seen.add(run_id)
    if repeated:
        raise InvalidComparison(
            f"Runs named more than once: {', '.join(str(run_id) for run_id in repeated)}"
        )


def run_compare(*, run_ids: list[uuid.UUID], max_points: int | None = None) -> Comparison:
    """The runs `run_ids` side by side, in that order.

    Raises InvalidComparison for fewer than MIN_RUNS, more than MAX_RUNS or a
    repeated id (checked before any query), RunsNotFound listing the ids that
    match no run.
    """
    run_ids_check(run_ids)
    rows = with_username(TunixRun.objects.filter(run_id__in=run_ids), "launched_by").defer(
        *COMPARE_DEFERRED
    )
    by_id = {run.run_id: run for run in rows}
    missing = [run_id for run_id in run_ids if run_id not in by_id]
    if missing:
        raise RunsNotFound(missing)
    from evaluations.comparison import evaluation_comparison

    series = _series(run_ids, by_id, max_points)
    runs = [by_id[run_id] for run_id in run_ids]
    return Comparison(
        evaluations=evaluation_comparison(run_ids),
        runs=[
            ComparedRun(
                run_id=run.run_id,
                status=run.status,
                mode=run.mode,
                model_id=run.model_id,
                dataset_key=run.dataset_key,
                launched_by=run.launched_by_name,
                started_at=run.started_at,
                metrics=run.metrics_summary,
                training=run.training if isinstance(run.training, dict) else None,
                series=series.get(run.run_id, []),
            )
            for run in runs
        ],
        config=config_diff([run.config if isinstance(run.config, dict) else {} for run in runs]),
    )


def config_flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A configuration with nested objects spread into dotted keys (`lora.rank`).

    Lists and other values stay as they are; an empty object is kept as a value.
    """
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(config_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def config_diff(configs: Sequence[Mapping[str, Any]]) -> list[ConfigRow]:
    """The union of the flattened keys of `configs`, sorted, each run's value per key.

    A key absent from a run is None there (as null). A key that is null or absent
    in every run and the parent of nested keys of another (`lora` of a full-weight
    run beside `lora.rank` of a LoRA run) is left out: its nested rows say it.
    """
    flats = [config_flatten(config) for config in configs]
    keys = sorted({key for flat in flats for key in flat})
    rows = []
    for key in keys:
        values = [flat.get(key) for flat in flats]
        if all(value is None for value in values) and _is_parent(key, keys):
            continue
        rows.append(ConfigRow(key=key, values=values, differs=not _all_equal(values)))
    return rows


def _is_parent(key: str, keys: Iterable[str]) -> bool:
    prefix = f"{key}."
    return any(other.startswith(prefix) for other in keys)


def _all_equal(values: Sequence[Any]) -> bool:
    # JSON equality: true is not 1, and 1 equals 1.0 (both are the number 1).
    first = values[0]
    return all(_same(first, value) for value in values[1:])


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def _series(
    run_ids: Sequence[uuid.UUID],
    runs: Mapping[uuid.UUID, TunixRun],
    max_points: int | None = None,
) -> dict[uuid.UUID, list[MetricPoint]]:
    """Every run's logged steps, by step: one query for all of them.

    With `max_points`, a run with more steps than that (its stored `metrics_count`)
    is read at a level (RunMetric.level): its first step and every 2**L-th after it,
    L the smallest that fits, plus its last step (`metrics_steps`). The database
    finds those rows by runmetric_run_level_idx, so a drawing reads a few thousand
    rows whatever the length of the runs.
    """
    rows = RunMetric.objects.filter(run_id__in=run_ids)
    if max_points is not None:
        levels = {
            run_id: series_level(runs[run_id].metrics_count, max_points) for run_id in run_ids
        }
        if any(levels.values()):
            kept = Q()
            for level in set(levels.values()):
                ids = [run_id for run_id, its in levels.items() if its == level]
                kept |= Q(run_id__in=ids, level__gte=level)
            for run_id, level in levels.items():
                if level:  # a thinned run keeps its last step too
                    kept |= Q(run_id=run_id, step=runs[run_id].metrics_steps)
            rows = rows.filter(kept)
    # Each row names its run by its position in `run_ids` (a CASE on the rows read), not by
    # its id: a UUID made and hashed per row cost more than the rest of the read.
    position = Case(
        *(When(run_id=run_id, then=Value(i)) for i, run_id in enumerate(run_ids)),
        output_field=IntegerField(),
    )
    by_position: list[list[MetricPoint]] = [[] for _ in run_ids]
    for index, step, loss, eval_loss in (
        rows.annotate(position=position)
        .order_by("position", "step")
        .values_list("position", "step", "loss", "eval_loss")
    ):
        by_position[index].append(MetricPoint(step, loss, eval_loss))
    return {run_id: points for run_id, points in zip(run_ids, by_position, strict=True) if points}


def _float(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
