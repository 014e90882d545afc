"""Building, materialising and exporting datasets through the services and selectors."""

from __future__ import annotations

import json
import random
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone

from datasets import selectors, services
from datasets.keys import InvalidDatasetKey
from datasets.models import Dataset, DatasetMember
from datasets.tests.factories import dataset_with_traces
from traces.models import Trace
from traces.tests.factories import TraceFactory

pytestmark = pytest.mark.django_db


def _ids(dataset: Dataset) -> list[uuid.UUID]:
    return list(dataset.members.order_by("position").values_list("trace_id", flat=True))


def _traces(n: int, **kwargs: Any) -> list[Trace]:
    """n traces, one second apart, oldest first."""
    start = timezone.now() - timedelta(days=1)
    return [
        TraceFactory.create(created_at=start + timedelta(seconds=i), **kwargs) for i in range(n)
    ]


def test_latest_takes_the_newest_first_up_to_the_limit() -> None:
    traces = _traces(5)
    dataset = services.dataset_build(name="d", version="v1", limit=3)
    assert _ids(dataset) == [t.id for t in reversed(traces)][:3]
    assert dataset.trace_count == 3
    assert dataset.key == "d-v1"


def test_latest_breaks_timestamp_ties_by_id() -> None:
    moment = timezone.now()
    traces = [TraceFactory.create(created_at=moment) for _ in range(4)]
    dataset = services.dataset_build(name="d", version="v1")
    assert _ids(dataset) == sorted((t.id for t in traces), reverse=True)


def test_random_is_reproducible_from_the_seed_and_uses_a_private_rng() -> None:
    _traces(30)
    random.seed(12345)
    state = random.getstate()
    first = services.dataset_build(
        name="r", version="a", selection_strategy="random", seed=7, limit=10
    )
    assert random.getstate() == state
    again = services.dataset_build(
        name="r", version="b", selection_strategy="random", seed=7, limit=10
    )
    other = services.dataset_build(
        name="r", version="c", selection_strategy="random", seed=8, limit=10
    )
    assert _ids(first) == _ids(again)
    assert _ids(first) != _ids(other)
    assert len(set(_ids(first))) == 10
    assert first.seed == 7
    assert first.selection_strategy == "random"


def test_random_without_a_seed_is_refused() -> None:
    with pytest.raises(ValueError, match="requires a seed"):
        services.dataset_build(name="r", version="v1", selection_strategy="random")
    assert not Dataset.objects.exists()


def test_random_over_fewer_matches_than_the_limit_takes_them_all() -> None:
    traces = _traces(4)
    dataset = services.dataset_build(
        name="r", version="v1", selection_strategy="random", seed=1, limit=50
    )
    assert sorted(_ids(dataset)) == sorted(t.id for t in traces)


def test_rebuilding_a_version_is_refused_and_changes_nothing(data_dir: Path) -> None:
    first = dataset_with_traces(count=2)
    manifest = (data_dir / "datasets/demo-v1/manifest.json").read_text()
    TraceFactory.create_batch(3)
    with pytest.raises(services.DatasetAlreadyExists, match="demo-v1 already exists"):
        services.dataset_build(name="demo", version="v1", limit=10)
    # The same key from another spelling of the name is the same version.
    with pytest.raises(services.DatasetAlreadyExists):
        services.dataset_build(name="demo", version="v1", filters={"x": 1})
    assert Dataset.objects.get().build_id == first.build_id
    assert DatasetMember.objects.count() == 2
    assert (data_dir / "datasets/demo-v1/manifest.json").read_text() == manifest


def test_filters_use_exact_json_equality() -> None:
    one = TraceFactory.create(meta={"k": 1})
    TraceFactory.create(meta={"k": "1"})
    yes_alone = TraceFactory.create(meta={"k": True})
    TraceFactory.create(meta={"k": 2})
    one_float = TraceFactory.create(meta={"k": 1.0})
    string = TraceFactory.create(meta={"k": "1", "lang": "fr"})
    yes = TraceFactory.create(meta={"k": True, "lang": "fr"})
    assert set(_ids(services.dataset_build(name="f", version="int", filters={"k": 1}))) == {
        one.id,
        one_float.id,
    }
    by_string = services.dataset_build(name="f", version="str", filters={"k": "1", "lang": "fr"})
    assert _ids(by_string) == [string.id]
    by_bool = services.dataset_build(name="f", version="bool", filters={"k": True})
    assert set(_ids(by_bool)) == {yes.id, yes_alone.id}


def test_filters_on_nested_values_compare_whole_values() -> None:
    tags = TraceFactory.create(meta={"tags": ["a", "b"], "cfg": {"x": 1}})
    TraceFactory.create(meta={"tags": ["a", "b", "c"], "cfg": {"x": 1, "y": 2}})
    dataset = services.dataset_build(
        name="n", version="v1", filters={"tags": ["a", "b"], "cfg": {"x": 1}}
    )
    assert _ids(dataset) == [tags.id]


def test_null_meta_counts_as_empty_and_null_filters_match_missing_keys() -> None:
    null_meta = TraceFactory.create(meta=None)
    missing = TraceFactory.create(meta={"other": 1})
    explicit_null = TraceFactory.create(meta={"k": None})
    has_value = TraceFactory.create(meta={"k": "x"})
    by_value = services.dataset_build(name="m", version="v1", filters={"k": "x"})
    assert _ids(by_value) == [has_value.id]
    by_null = services.dataset_build(name="m", version="v2", filters={"k": None})
    assert set(_ids(by_null)) == {null_meta.id, missing.id, explicit_null.id}
    unfiltered = services.dataset_build(name="m", version="v3", filters={})
    assert unfiltered.trace_count == 4


def test_filters_run_over_all_traces_not_only_the_newest() -> None:
    old = _traces(1, meta={"src": "old"})[0]
    TraceFactory.create_batch(25, meta={"src": "new"})
    dataset = services.dataset_build(name="o", version="v1", filters={"src": "old"}, limit=1)
    assert _ids(dataset) == [old.id]


def test_filter_keys_with_odd_characters_are_plain_data() -> None:
    odd = TraceFactory.create(
        meta={"a.b": 1, "0": "zero", "ключ": "значение", "q'x": 2, 'say "hi"': True}
    )
    other = TraceFactory.create(meta={"a": {"b": 1}, "0": "zero", "back\\slash": None})
    filters = {"a.b": 1, "0": "zero", "ключ": "значение", "q'x": 2, 'say "hi"': True}
    assert _ids(services.dataset_build(name="q", version="v1", filters=filters)) == [odd.id]
    by_null = services.dataset_build(name="q", version="v2", filters={'say "hi"': None})
    assert _ids(by_null) == [other.id]
    by_null = services.dataset_build(name="q", version="v3", filters={"back\\slash": None})
    assert set(_ids(by_null)) == {odd.id, other.id}


def test_stats_follow_the_manifest_contract() -> None:
    TraceFactory.create(prompt="abc", final_answer="de", steps=["x"])
    TraceFactory.create(prompt="a", final_answer="b", steps=["xy", "z", "w"])
    dataset = services.dataset_build(name="s", version="v1")
    assert dataset.stats == {
        "trace_count": 2,
        "avg_step_count": 2.0,
        "min_step_count": 1,
        "max_step_count": 3,
        "avg_total_chars": (6 + 6) / 2,
    }
    empty = services.dataset_build(name="s", version="v2", filters={"none": 1})
    assert empty.trace_count == 0
    assert empty.stats == {
        "trace_count": 0,
        "avg_step_count": 0.0,
        "min_step_count": 0,
        "max_step_count": 0,
        "avg_total_chars": 0.0,
    }


def test_stats_are_not_rounded() -> None:
    TraceFactory.create(prompt="a", final_answer="b", steps=["c"])
    TraceFactory.create(prompt="a", final_answer="b", steps=["c"])
    TraceFactory.create(prompt="a", final_answer="b", steps=["c", "d"])
    stats = services.dataset_build(name="s", version="v1").stats
    assert stats["avg_step_count"] == 4 / 3
    assert stats["avg_total_chars"] == 10 / 3


def test_build_writes_the_manifest_relative_to_the_data_dir(data_dir: Path) -> None:
    dataset = dataset_with_traces(
        count=2, meta={"src": "é"}, session_id="s1", parent_dataset_id="p-v0", training_run_id="r"
    )
    assert services.manifest_relative_path(dataset.key) == "datasets/demo-v1/manifest.json"
    text = (data_dir / "datasets/demo-v1/manifest.json").read_text(encoding="utf-8")
    manifest = json.loads(text)
    assert manifest == selectors.dataset_manifest(dataset=dataset)
    assert '"src": "é"' not in text  # filters are empty; meta is not part of the manifest
    assert text.startswith('{\n  "dataset_key": "demo-v1",\n  "build_id": ')
    assert list(manifest) == [
        "dataset_key",
        "build_id",
        "dataset_name",
        "dataset_version",
        "dataset_schema_version",
        "created_at",
        "filters",
        "selection_strategy",
        "seed",
        "trace_ids",
        "trace_count",
        "stats",
        "session_id",
        "parent_dataset_id",
        "training_run_id",
    ]
    assert manifest["created_at"].endswith("Z")
    assert manifest["trace_ids"] == [str(i) for i in _ids(dataset)]
    assert manifest["session_id"] == "s1"
    assert manifest["parent_dataset_id"] == "p-v0"
    assert manifest["dataset_schema_version"] == "1.0"


def test_manifest_keeps_non_ascii_text(data_dir: Path) -> None:
    TraceFactory.create(meta={"src": "données"})
    dataset = services.dataset_build(name="d", version="v1", filters={"src": "données"})
    assert dataset.trace_count == 1
    text = (data_dir / "datasets/d-v1/manifest.json").read_text(encoding="utf-8")
    assert '"filters": {\n    "src": "données"\n  }' in text


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"limit": 0}, "limit must be between 1 and 10000"),
        ({"limit": 10_001}, "limit must be between 1 and 10000"),
        ({"selection_strategy": "oldest"}, "selection_strategy"),
        ({"session_id": "x" * 129}, "session_id must be at most 128"),
        ({"parent_dataset_id": "x" * 257}, "parent_dataset_id must be at most 256"),
        ({"training_run_id": "x" * 129}, "training_run_id must be at most 128"),
        ({"name": ""}, "dataset_name must not be empty"),
        ({"version": "v" * 65}, "dataset_version must be at most 64"),
        ({"filters": ["k"]}, "filters must be an object"),
        ({"seed": "7"}, "seed must be an integer"),
        ({"seed": 2**64}, "seed must fit in 64 bits"),
    ],
)
def test_bad_arguments_are_refused_naming_the_field(args: dict[str, Any], message: str) -> None:
    build: dict[str, Any] = {"name": "b", "version": "v1", **args}
    with pytest.raises(ValueError, match=message):
        services.dataset_build(**build)
    assert not Dataset.objects.exists()


@pytest.mark.parametrize(("name", "version"), [("..", "v1"), ("a\\b", "v1"), ("x", "../..")])
def test_invalid_keys_are_refused_without_touching_the_filesystem(
    data_dir: Path, name: str, version: str
) -> None:
    TraceFactory.create()
    with pytest.raises(InvalidDatasetKey):
        services.dataset_build(name=name, version=version)
    assert list(data_dir.iterdir()) == []
    assert not Dataset.objects.exists()


def test_materialise_writes_manifest_and_tunix_sft_jsonl(data_dir: Path) -> None:
    dataset = dataset_with_traces(count=3, meta={"src": "m"})
    result = services.dataset_materialise(key=dataset.key)
    assert result == services.MaterialisedDataset(
        key="demo-v1",
        manifest_path=data_dir / "datasets/demo-v1/manifest.json",
        jsonl_path=data_dir / "datasets/demo-v1/demo-v1.jsonl",
        trace_count=3,
    )
    body = result.jsonl_path.read_text()
    assert body == "".join(selectors.dataset_export_lines(key="demo-v1", fmt="tunix_sft"))
    assert body.count("\n") == 3
    assert sorted(p.name for p in result.jsonl_path.parent.iterdir()) == [
        "demo-v1.jsonl",
        "manifest.json",
    ]


def test_materialise_refuses_unknown_and_invalid_keys_without_creating_directories(
    data_dir: Path,
) -> None:
    with pytest.raises(LookupError, match="Dataset not found: nope-v1"):
        services.dataset_materialise(key="nope-v1")
    for key in ("..", "../x", "a/../../b"):
        with pytest.raises(InvalidDatasetKey):
            services.dataset_materialise(key=key)
    assert list(data_dir.iterdir()) == []


def test_write_jsonl_streams_any_format_into_a_new_path(tmp_path: Path) -> None:
    dataset = dataset_with_traces(count=4)
    target = tmp_path / "out/deeper/export.jsonl"
    assert services.dataset_write_jsonl(key=dataset.key, path=target, fmt="trace") == 4
    lines = target.read_text().splitlines()
    assert [json.loads(line)["id"] for line in lines] == [str(i) for i in _ids(dataset)]
    assert [p.name for p in target.parent.iterdir()] == ["export.jsonl"]
    with pytest.raises(ValueError, match="format"):
        services.dataset_write_jsonl(key=dataset.key, path=target, fmt="csv")
    with pytest.raises(LookupError):
        services.dataset_write_jsonl(key="nope-v1", path=target)


def test_deleted_traces_are_skipped_but_the_dataset_is_unchanged() -> None:
    dataset = dataset_with_traces(count=3)
    ids = _ids(dataset)
    Trace.objects.filter(id=ids[1]).delete()
    lines = list(selectors.dataset_export_lines(key=dataset.key, fmt="trace"))
    assert [json.loads(line)["id"] for line in lines] == [str(ids[0]), str(ids[2])]
    assert selectors.dataset_trace_count(key=dataset.key) == 2
    assert _ids(dataset) == ids
    dataset.refresh_from_db()
    assert dataset.trace_count == 3
    assert selectors.dataset_manifest(dataset=dataset)["trace_ids"] == [str(i) for i in ids]


def test_trace_count_of_an_unknown_dataset_is_zero() -> None:
    assert selectors.dataset_trace_count(key="nope-v1") == 0
    with pytest.raises(InvalidDatasetKey):
        selectors.dataset_trace_count(key="../x")


def test_export_lines_check_their_arguments_when_called() -> None:
    dataset_with_traces(count=1)
    with pytest.raises(ValueError, match="format"):
        selectors.dataset_export_lines(key="demo-v1", fmt="xml")
    with pytest.raises(LookupError):
        selectors.dataset_export_lines(key="nope-v1")
    with pytest.raises(InvalidDatasetKey):
        selectors.dataset_export_lines(key="..")


def test_training_example_exports_are_identical_twice() -> None:
    dataset = dataset_with_traces(count=3)
    first = list(selectors.dataset_export_lines(key=dataset.key, fmt="training_example"))
    assert first == list(selectors.dataset_export_lines(key=dataset.key, fmt="training_example"))
    record = json.loads(first[0])
    assert "show your reasoning steps" in record["prompt"]
    assert record["metadata"]["source_trace_id"] == str(_ids(dataset)[0])


def test_export_streams_more_than_one_chunk_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(selectors, "EXPORT_CHUNK_SIZE", 2)
    dataset = dataset_with_traces(count=5)
    lines = list(selectors.dataset_export_lines(key=dataset.key))
    assert [json.loads(line)["id"] for line in lines] == [str(i) for i in _ids(dataset)]


def test_traces_export_lines_keep_list_order_and_duplicates(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(selectors, "EXPORT_CHUNK_SIZE", 2)
    a, b = TraceFactory.create_batch(2)
    ids = [b.id, uuid.uuid4(), a.id, b.id, b.id]
    lines = list(selectors.traces_export_lines(trace_ids=ids))
    assert [json.loads(line)["id"] for line in lines] == [
        str(b.id),
        str(a.id),
        str(b.id),
        str(b.id),
    ]
    assert all("<start_of_turn>" in json.loads(line)["prompts"] for line in lines)
    with pytest.raises(ValueError, match="format"):
        selectors.traces_export_lines(trace_ids=ids, fmt="nope")


def test_dataset_get_validates_the_key() -> None:
    dataset = dataset_with_traces(count=1)
    assert selectors.dataset_get(key="demo-v1") == dataset
    assert selectors.dataset_get(key="demo-v2") is None
    with pytest.raises(InvalidDatasetKey):
        selectors.dataset_get(key="demo/v1")


def test_export_timestamps_and_ids_are_printed_like_python_does() -> None:
    from datetime import UTC, datetime

    whole = TraceFactory.create(created_at=datetime(2025, 3, 4, 5, 6, 7, tzinfo=UTC))
    fraction = TraceFactory.create(created_at=datetime(2025, 3, 4, 5, 6, 7, 120, tzinfo=UTC))
    dataset = services.dataset_build(name="t", version="v1")
    for fmt in ("trace", "tunix_sft", "training_example"):
        lines = list(selectors.dataset_export_lines(key=dataset.key, fmt=fmt))
        stamps = [json.loads(line)["metadata"]["created_at"] for line in lines]
        assert stamps == ["2025-03-04T05:06:07.000120+00:00", "2025-03-04T05:06:07+00:00"]
        assert stamps == [fraction.created_at.isoformat(), whole.created_at.isoformat()]
    ids = [json.loads(line)["id"] for line in selectors.dataset_export_lines(key=dataset.key)]
    assert ids == [str(fraction.id), str(whole.id)]
    by_id = selectors.traces_export_lines(trace_ids=[whole.id], fmt="trace")
    assert json.loads(next(by_id))["metadata"]["created_at"] == "2025-03-04T05:06:07+00:00"


def test_stored_tunix_sft_lines_equal_lines_rendered_from_the_traces() -> None:
    dataset = dataset_with_traces(count=4, meta={"src": "é", "format": "override"})
    TraceFactory.create(meta={"n": 1.5})
    ids = _ids(dataset)
    stored = list(selectors.dataset_export_lines(key=dataset.key, fmt="tunix_sft"))
    live = list(selectors.traces_export_lines(trace_ids=ids, fmt="tunix_sft"))
    assert stored == live
    Trace.objects.filter(id=ids[0]).delete()
    assert list(selectors.dataset_export_lines(key=dataset.key, fmt="tunix_sft")) == live[1:]


def test_filters_match_traces_stored_by_the_traces_app() -> None:
    from traces.services import trace_create
    from traces.tests.factories import make_payload

    created = trace_create(payload=make_payload(meta={"clé": "valeur", "n": [1, 2]}))
    TraceFactory.create(meta={"clé": "autre"})
    dataset = services.dataset_build(name="api", version="v1", filters={"clé": "valeur"})
    assert _ids(dataset) == [created.id]
    by_list = services.dataset_build(name="api", version="v2", filters={"n": [1, 2]})
    assert _ids(by_list) == [created.id]
