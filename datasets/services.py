"""Writes of the datasets app: building a dataset and materialising it on disk."""

from __future__ import annotations

import json
import os
import random
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db import IntegrityError, NotSupportedError, connection, transaction
from django.db.models import BooleanField, Expression, QuerySet

from datasets.exports import check_format, render_trace, render_tunix_sft
from datasets.keys import dataset_key_make, dataset_key_validate
from datasets.models import Dataset, DatasetMember, SelectionStrategy
from datasets.selectors import (
    ExportRow,
    dataset_export_lines,
    dataset_get,
    dataset_manifest,
    trace_export_rows,
)
from traces.models import Trace

if TYPE_CHECKING:
    from django.contrib.auth.models import User

LIMIT_MAX = 10_000
NAME_MAX = 128
VERSION_MAX = 64
SESSION_ID_MAX = 128
PARENT_DATASET_ID_MAX = 256
TRAINING_RUN_ID_MAX = 128
SEED_REQUIRED = "Random selection strategy requires a seed for reproducibility"

_PAYLOAD_BATCH = 1000
_MEMBER_BATCH = 1000


class DatasetAlreadyExists(Exception):
    """A dataset with this key was already built; versions are immutable (409)."""

    def __init__(self, key: str) -> None:
        super().__init__(
            f"Dataset {key} already exists; versions are immutable, build a new version instead"
        )
        self.key = key


@dataclass(frozen=True)
class MaterialisedDataset:
    key: str
    manifest_path: Path
    jsonl_path: Path
    trace_count: int


# --- paths -------------------------------------------------------------------


def datasets_root() -> Path:
    return Path(settings.DATA_DIR) / "datasets"


def dataset_dir(key: str) -> Path:
    """DATA_DIR/datasets/<key> for a validated key (never creates anything)."""
    dataset_key_validate(key)
    root = datasets_root()
    path = root / key
    # Defence in depth: a valid key is a single path component inside the root.
    if path.parent != root or path.name != key:
        raise ValueError(f"dataset_key does not name a directory inside the data directory: {key}")
    return path


def manifest_relative_path(key: str) -> str:
    return f"datasets/{dataset_key_validate(key)}/manifest.json"


# --- filters -----------------------------------------------------------------


def _json_type_names(value: Any) -> tuple[str, ...]:
    """SQLite JSON_TYPE names a stored value must have to equal `value` exactly."""
    if isinstance(value, bool):
        return ("true",) if value else ("false",)
    if isinstance(value, int | float):
        return ("integer", "real")
    if isinstance(value, str):
        return ("text",)
    if isinstance(value, list):
        return ("array",)
    return ("object",)


_PAYLOAD = '"traces_trace"."payload"'
_META = f"({_PAYLOAD} -> 'meta')"


def _plain_key(name: str) -> bool:
    return name.isascii() and name.isprintable() and '"' not in name and "\\" not in name


class MetaEquals(Expression):
    """The condition "trace's meta[name] equals value exactly" (null: missing or null).

    Exact means JSON equality: 1 != "1", true != 1, true != "true", arrays and
    objects compared whole. Django's key lookups cannot say this on SQLite
    (`payload__meta__k=True` also matches "true"; `contains` is not supported
    there), so each database gets its own SQL through Django's per-backend
    compile methods; user values are always bound parameters.
    datasets/tests/test_filters.py compares both with the plain definition
    evaluated in Python.
    """

    output_field = BooleanField()
    conditional = True

    def __init__(self, name: str, value: Any) -> None:
        super().__init__(output_field=BooleanField())
        self.name = name
        self.value = value

    def as_sql(self, compiler: Any, connection: Any, **extra: Any) -> tuple[str, list[Any]]:
        raise NotSupportedError("meta filters run on PostgreSQL and SQLite")

    def as_postgresql(self, compiler: Any, connection: Any, **extra: Any) -> tuple[str, list[Any]]:
        name, value = self.name, self.value
        if value is None:
            return f"(({_META} -> %s) IS NULL OR ({_META} -> %s) = 'null'::jsonb)", [name, name]
        # Containment is what the GIN index of migration 0002 serves; it is
        # looser than equality for arrays and objects, hence the second test.
        return (
            f"({_META} @> %s::jsonb AND ({_META} -> %s) = %s::jsonb)",
            [json.dumps({name: value}), name, json.dumps(value)],
        )

    def as_sqlite(self, compiler: Any, connection: Any, **extra: Any) -> tuple[str, list[Any]]:
        name, value = self.name, self.value
        types = _json_type_names(value) if value is not None else ()
        placeholders = ", ".join(["%s"] * len(types))
        if not _plain_key(name):
            # A JSON path must spell a key as the stored text does (escaped or
            # not, depending on who wrote it) and cannot name some keys at all;
            # compare decoded keys among meta's members instead.
            member = f"SELECT 1 FROM json_each({_PAYLOAD}, '$.meta') AS m WHERE m.key = %s"  # noqa: S608
            if value is None:
                return f"NOT EXISTS ({member} AND m.type != 'null')", [name]
            return (
                f"EXISTS ({member} AND m.type IN ({placeholders}) "
                "AND m.value = JSON_EXTRACT(%s, '$'))",
                [name, *types, json.dumps(value)],
            )
        # SQLite matches path labels against the stored text, which Django
        # writes with json.dumps' default escaping; quote the key the same way.
        path = "$.meta." + json.dumps(name)
        if value is None:
            return (
                f"(JSON_TYPE({_PAYLOAD}, %s) IS NULL OR JSON_TYPE({_PAYLOAD}, %s) = 'null')",
                [path, path],
            )
        return (
            f"(JSON_TYPE({_PAYLOAD}, %s) IN ({placeholders}) "
            f"AND JSON_EXTRACT({_PAYLOAD}, %s) = JSON_EXTRACT(%s, '$'))",
            [path, *types, path, json.dumps(value)],
        )


def traces_matching(filters: dict[str, Any]) -> QuerySet[Trace]:
    """Traces whose `meta` matches every filter exactly (JSON equality, so 1 != "1").

    A filter value null matches traces lacking the key or holding null; a null
    `meta` counts as {}. Runs in the database over all traces.
    """
    return Trace.objects.filter(*[MetaEquals(name, value) for name, value in filters.items()])


# --- build -------------------------------------------------------------------


def _check_length(field: str, value: str | None, maximum: int, *, required: bool = False) -> None:
    if value is None:
        if required:
            raise ValueError(f"{field} is required")
        return
    if required and not value:
        raise ValueError(f"{field} must not be empty")
    if len(value) > maximum:
        raise ValueError(f"{field} must be at most {maximum} characters")


def _check_build_args(
    *,
    name: str,
    version: str,
    filters: dict[str, Any],
    limit: int,
    selection_strategy: str,
    seed: int | None,
    session_id: str | None,
    parent_dataset_id: str | None,
    training_run_id: str | None,
) -> None:
    _check_length("dataset_name", name, NAME_MAX, required=True)
    _check_length("dataset_version", version, VERSION_MAX, required=True)
    _check_length("session_id", session_id, SESSION_ID_MAX)
    _check_length("parent_dataset_id", parent_dataset_id, PARENT_DATASET_ID_MAX)
    _check_length("training_run_id", training_run_id, TRAINING_RUN_ID_MAX)
    if not isinstance(filters, dict) or not all(isinstance(k, str) for k in filters):
        raise ValueError("filters must be an object of meta keys to JSON values")
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= LIMIT_MAX:
        raise ValueError(f"limit must be between 1 and {LIMIT_MAX}")
    if selection_strategy not in SelectionStrategy.values:
        raise ValueError("selection_strategy must be 'latest' or 'random'")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise ValueError("seed must be an integer")
    if seed is not None and not -(2**63) <= seed < 2**63:
        raise ValueError("seed must fit in 64 bits")


def _select(
    filters: dict[str, Any], limit: int, strategy: str, seed: int | None
) -> list[ExportRow]:
    """(id, created_at, trace_version, payload) of the selected traces, in selection order.

    `latest` is one ordered query; `random` orders the matching ids, samples
    them, then reads the chosen rows by id in batches.
    """
    ordered = traces_matching(filters).order_by("-created_at", "-id")
    if strategy == SelectionStrategy.LATEST:
        return list(trace_export_rows(ordered[:limit]))
    # random: a private RNG over the deterministic (newest first) candidate order.
    ids = list(ordered.values_list("id", flat=True))
    chosen = random.Random(seed).sample(ids, min(len(ids), limit))  # noqa: S311 - not crypto
    rows: dict[str, ExportRow] = {}
    for start in range(0, len(chosen), _PAYLOAD_BATCH):
        batch = chosen[start : start + _PAYLOAD_BATCH]
        for row in trace_export_rows(Trace.objects.filter(id__in=batch)):
            rows[row[0]] = row
    return [rows[str(trace_id)] for trace_id in chosen]


def _members(dataset: Dataset, selected: list[ExportRow]) -> Iterator[DatasetMember]:
    """The members of a new dataset, with their `trace` and `tunix_sft` lines rendered now."""
    for position, row in enumerate(selected):
        yield DatasetMember(
            dataset=dataset,
            position=position,
            trace_id=row[0],
            trace_line=render_trace(*row, dataset.key),
            sft_line=render_tunix_sft(*row, dataset.key),
        )


_MEMBER_COLUMNS = ("dataset_id", "position", "trace_id", "trace_line", "sft_line")


def members_copy(members: Iterable[DatasetMember]) -> None:
    """Insert members with PostgreSQL's COPY (what `members_bulk_create` does, faster).

    The ORM has no COPY. On PostgreSQL, a 10,000-trace build inserts its members
    in 0.36 to 0.53 s with COPY and in 1.46 to 1.53 s with bulk_create (about
    2 MB of quoted JSON lines per 1,000 rows); bench/datasets_bench.py measures
    both.
    """
    table = connection.ops.quote_name(DatasetMember._meta.db_table)
    columns = ", ".join(_MEMBER_COLUMNS)
    with (
        connection.cursor() as cursor,
        cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy,
    ):
        for member in members:
            copy.write_row(tuple(getattr(member, column) for column in _MEMBER_COLUMNS))


def members_bulk_create(members: Iterable[DatasetMember]) -> None:
    DatasetMember.objects.bulk_create(members, batch_size=_MEMBER_BATCH)


def _members_insert(dataset: Dataset, selected: list[ExportRow]) -> None:
    # The only vendor branch of the build: see members_copy for the figures.
    if connection.vendor == "postgresql":
        members_copy(_members(dataset, selected))
    else:
        members_bulk_create(_members(dataset, selected))


def dataset_stats(payloads: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Manifest stats: counts of steps and characters (prompt + answer + step contents)."""
    count = 0
    step_total = 0
    char_total = 0
    step_min: int | None = None
    step_max = 0
    for payload in payloads:
        steps = payload.get("steps") or []
        n = len(steps)
        chars = len(payload.get("prompt", "")) + len(payload.get("final_answer", ""))
        chars += sum(len(step.get("content", "")) for step in steps)
        count += 1
        step_total += n
        char_total += chars
        step_min = n if step_min is None else min(step_min, n)
        step_max = max(step_max, n)
    if count == 0:
        return {
            "trace_count": 0,
            "avg_step_count": 0.0,
            "min_step_count": 0,
            "max_step_count": 0,
            "avg_total_chars": 0.0,
        }
    return {
        "trace_count": count,
        "avg_step_count": step_total / count,
        "min_step_count": step_min,
        "max_step_count": step_max,
        "avg_total_chars": char_total / count,
    }


def dataset_build(
    *,
    name: str,
    version: str,
    filters: dict[str, Any] | None = None,
    limit: int = 100,
    selection_strategy: str = "latest",
    seed: int | None = None,
    session_id: str | None = None,
    parent_dataset_id: str | None = None,
    training_run_id: str | None = None,
    created_by: User | None = None,
) -> Dataset:
    """Select traces, store the dataset and its ordered members, write its manifest.json.

    The dataset is credited to `created_by` (None: anonymous, or a command
    without `--as`; docs/decisions.md#who-did-what).

    Raises ValueError (message names the field; SEED_REQUIRED for a random build
    without a seed), InvalidDatasetKey, or DatasetAlreadyExists (nothing changes).
    """
    filters = {} if filters is None else filters
    if selection_strategy == SelectionStrategy.RANDOM and seed is None:
        raise ValueError(SEED_REQUIRED)
    _check_build_args(
        name=name,
        version=version,
        filters=filters,
        limit=limit,
        selection_strategy=selection_strategy,
        seed=seed,
        session_id=session_id,
        parent_dataset_id=parent_dataset_id,
        training_run_id=training_run_id,
    )
    key = dataset_key_make(name, version)
    if Dataset.objects.filter(key=key).exists():
        raise DatasetAlreadyExists(key)

    selected = _select(filters, limit, selection_strategy, seed)
    stats = dataset_stats(row[3] for row in selected)
    try:
        with transaction.atomic():
            dataset = Dataset.objects.create(
                key=key,
                name=name,
                version=version,
                filters=filters,
                selection_strategy=selection_strategy,
                seed=seed,
                trace_count=len(selected),
                stats=stats,
                session_id=session_id,
                parent_dataset_id=parent_dataset_id,
                training_run_id=training_run_id,
                created_by=created_by,
            )
            _members_insert(dataset, selected)
    except IntegrityError:
        # Someone built the same key between our check and our insert.
        if Dataset.objects.filter(key=key).exists():
            raise DatasetAlreadyExists(key) from None
        raise
    _write_manifest(dataset, [row[0] for row in selected])
    return dataset


# --- manifest and materialisation ----------------------------------------------


def _atomic_write(path: Path, chunks: Iterable[str]) -> int:
    """Write `chunks` to a temporary file beside `path`, then rename it over `path`.

    Returns the number of chunks written.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    tmp = Path(tmp_name)
    count = 0
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
            for chunk in chunks:
                handle.write(chunk)
                count += 1
            handle.flush()
            os.fsync(handle.fileno())
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return count


def _write_manifest(dataset: Dataset, trace_ids: list[str] | None = None) -> Path:
    path = dataset_dir(dataset.key) / "manifest.json"
    text = json.dumps(
        dataset_manifest(dataset=dataset, trace_ids=trace_ids), indent=2, ensure_ascii=False
    )
    _atomic_write(path, [text + "\n"])
    return path


def dataset_materialise(*, key: str) -> MaterialisedDataset:
    """Write DATA_DIR/datasets/<key>/manifest.json and <key>.jsonl (tunix_sft), atomically.

    Raises InvalidDatasetKey for an invalid key and LookupError for an unknown dataset.
    """
    dataset = dataset_get(key=key)
    if dataset is None:
        raise LookupError(f"Dataset not found: {key}")
    manifest_path = _write_manifest(dataset)
    jsonl_path = dataset_dir(key) / f"{key}.jsonl"
    count = dataset_write_jsonl(key=key, path=jsonl_path, fmt="tunix_sft")
    return MaterialisedDataset(
        key=key, manifest_path=manifest_path, jsonl_path=jsonl_path, trace_count=count
    )


def lines_grouped(lines: Iterator[str], size: int = 1 << 16) -> Iterator[str]:
    """Join lines into chunks of about `size` characters (fewer writes than one per line)."""
    buffer: list[str] = []
    held = 0
    for line in lines:
        buffer.append(line)
        held += len(line)
        if held >= size:
            yield "".join(buffer)
            buffer, held = [], 0
    if buffer:
        yield "".join(buffer)


def dataset_write_jsonl(*, key: str, path: Path, fmt: str = "tunix_sft") -> int:
    """Stream the dataset's export in `fmt` into `path` (parents created); return the line count.

    Raises ValueError for an unknown format, InvalidDatasetKey, LookupError for an unknown dataset.
    """
    check_format(fmt)
    return write_lines_atomically(Path(path), dataset_export_lines(key=key, fmt=fmt))


def write_lines_atomically(path: Path, lines: Iterable[str]) -> int:
    """Write `lines` to `path` through a temporary file and a rename; return how many."""
    count = 0

    def counted() -> Iterator[str]:
        nonlocal count
        for line in lines:
            count += 1
            yield line

    _atomic_write(path, lines_grouped(counted()))
    return count
