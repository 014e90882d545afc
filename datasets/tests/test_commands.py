"""manage.py build_dataset and export_dataset."""

from __future__ import annotations

import json
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from datasets.models import Dataset
from datasets.tests.factories import dataset_with_traces
from traces.tests.factories import TraceFactory

pytestmark = pytest.mark.django_db


def _run(*args: str) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command(*args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_build_dataset_with_filters_and_random_strategy(data_dir: Path) -> None:
    TraceFactory.create_batch(4, meta={"src": "a", "n": 1})
    TraceFactory.create_batch(2, meta={"src": "a", "n": "1"})
    out, err = _run(
        "build_dataset", "cmd set", "v1", "--filter", "src=a", "--filter", "n=1",
        "--strategy", "random", "--seed", "3", "--limit", "3",
    )  # fmt: skip
    dataset = Dataset.objects.get()
    assert dataset.key == "cmd_set-v1"
    assert dataset.filters == {"src": "a", "n": 1}
    assert dataset.trace_count == 3
    assert dataset.seed == 3
    assert out.startswith("Built cmd_set-v1: 3 traces, build ")
    assert "datasets/cmd_set-v1/manifest.json" in out
    assert "building" in err
    assert (data_dir / "datasets/cmd_set-v1/manifest.json").exists()


def test_build_dataset_string_filter_value_in_quotes() -> None:
    TraceFactory.create(meta={"n": "1"})
    TraceFactory.create(meta={"n": 1})
    _run("build_dataset", "q", "v1", "--filter", 'n="1"')
    assert Dataset.objects.get().trace_count == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["..", "v1"], "dataset_name"),
        (["ok", "../../x"], "dataset_version"),
        (["ok", "v1", "--strategy", "random"], "requires a seed"),
        (["ok", "v1", "--limit", "0"], "limit must be between"),
        (["ok", "v1", "--filter", "novalue"], "key=value"),
        (["ok", "v1", "--filter", "=1"], "key=value"),
        (["ok", "v1", "--filter", "a=1", "--filter", "a=2"], "given twice"),
        # A NUL, typed raw or as a JSON escape, in a value or a key (PostgreSQL cannot store it).
        (["ok", "v1", "--filter", "src=a\x00b"], "src must not contain NUL"),
        (["ok", "v1", "--filter", 'src="a\\u0000b"'], "src must not contain NUL"),
        (["ok", "v1", "--filter", 'src={"k": ["\\u0000"]}'], r"src\.k\[0\] must not contain NUL"),
        (["ok", "v1", "--filter", "s\x00rc=1"], "a key must not contain NUL"),
    ],
)
def test_build_dataset_errors(args: list[str], message: str, data_dir: Path) -> None:
    with pytest.raises(CommandError, match=message):
        _run("build_dataset", *args)
    assert not Dataset.objects.exists()
    assert list(data_dir.iterdir()) == []


def test_build_dataset_refuses_an_existing_version() -> None:
    dataset_with_traces(count=1)
    with pytest.raises(CommandError, match="demo-v1 already exists"):
        _run("build_dataset", "demo", "v1")
    assert Dataset.objects.count() == 1


def test_export_dataset_to_stdout_with_a_progress_bar() -> None:
    dataset = dataset_with_traces(count=3)
    out, err = _run("export_dataset", dataset.key, "--format", "tunix_sft")
    lines = out.splitlines()
    assert len(lines) == 3
    assert json.loads(lines[0])["metadata"]["format"] == "tunix_sft"
    assert "exporting demo-v1" in err
    assert "3/3" in err


def test_export_dataset_to_a_file(tmp_path: Path) -> None:
    dataset_with_traces(count=2)
    target = tmp_path / "out" / "demo.jsonl"
    out, err = _run("export_dataset", "demo-v1", "--format", "training_example", "-o", str(target))
    assert out == ""
    assert f"Wrote 2 lines to {target}" in err
    records = [json.loads(line) for line in target.read_text().splitlines()]
    assert all("source_trace_id" in r["metadata"] for r in records)


@pytest.mark.parametrize(
    ("key", "message"),
    [("nope-v1", "Dataset not found: nope-v1"), ("../x", "dataset_key"), ("a\\b", "dataset_key")],
)
def test_export_dataset_errors(key: str, message: str, data_dir: Path) -> None:
    with pytest.raises(CommandError, match=message):
        _run("export_dataset", key)
    assert list(data_dir.iterdir()) == []


def test_export_dataset_refuses_unknown_formats() -> None:
    with pytest.raises(CommandError, match="invalid choice"):
        _run("export_dataset", "demo-v1", "--format", "csv")
