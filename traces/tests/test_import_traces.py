"""manage.py import_traces: streaming, batches, rejected lines, --all-or-nothing."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command

from traces.models import Trace
from traces.services import trace_import
from traces.tests.factories import make_payload


def write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def run(*args: Any) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("import_traces", *map(str, args), "--no-progress", stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


@pytest.mark.django_db
def test_imports_a_good_file(tmp_path: Path) -> None:
    path = write(tmp_path / "t.jsonl", [json.dumps(make_payload(prompt=f"q{n}")) for n in range(7)])
    out, _ = run(path, "--batch-size", 3)
    assert "7 traces imported, 0 lines rejected" in out
    assert sorted(t.payload["prompt"] for t in Trace.objects.all()) == [f"q{n}" for n in range(7)]


@pytest.mark.django_db
def test_bad_lines_are_reported_with_line_numbers_and_exit_non_zero(tmp_path: Path) -> None:
    dup = make_payload()
    dup["steps"][1]["i"] = 0
    lines = [json.dumps(make_payload()), "{nope", "", json.dumps(dup), json.dumps(make_payload())]
    path = write(tmp_path / "t.jsonl", lines)
    err = io.StringIO()
    with pytest.raises(CommandError) as exc:
        call_command("import_traces", str(path), "--no-progress", stderr=err)
    assert exc.value.returncode == 1
    assert "2 traces imported, 2 lines rejected" in str(exc.value)
    report = err.getvalue()
    assert "line 2: trace: Invalid JSON" in report
    assert "line 4: steps: Value error, Step indices must be unique" in report
    assert "line 3" not in report
    assert Trace.objects.count() == 2


@pytest.mark.django_db
def test_all_or_nothing_imports_nothing_when_a_line_is_bad(tmp_path: Path) -> None:
    lines = [json.dumps(make_payload())] * 5 + ['{"prompt": "only"}'] + [json.dumps(make_payload())]
    path = write(tmp_path / "t.jsonl", lines)
    with pytest.raises(CommandError, match="nothing imported"):
        run(path, "--all-or-nothing", "--batch-size", 2)
    assert not Trace.objects.exists()


@pytest.mark.django_db
def test_all_or_nothing_imports_everything_when_all_lines_are_good(tmp_path: Path) -> None:
    path = write(tmp_path / "t.jsonl", [json.dumps(make_payload())] * 5)
    out, _ = run(path, "--all-or-nothing", "--batch-size", 2)
    assert "5 traces imported" in out
    assert Trace.objects.count() == 5


@pytest.mark.django_db
def test_missing_file_and_bad_batch_size_are_errors(tmp_path: Path) -> None:
    with pytest.raises(CommandError, match="no such file"):
        run(tmp_path / "absent.jsonl")
    path = write(tmp_path / "t.jsonl", [json.dumps(make_payload())])
    with pytest.raises(CommandError, match="batch-size"):
        run(path, "--batch-size", 0)


@pytest.mark.django_db
def test_a_line_over_the_size_limit_is_rejected_without_reading_it_whole(
    tmp_path: Path, settings: Any
) -> None:
    settings.TRACE_MAX_BYTES = 1024
    huge = json.dumps(make_payload(prompt="x" * 300_000))
    path = write(tmp_path / "t.jsonl", [huge, json.dumps(make_payload())])
    err = io.StringIO()
    with pytest.raises(CommandError):
        call_command("import_traces", str(path), "--no-progress", stderr=err)
    assert "line 1: line exceeds maximum of 1024 bytes" in err.getvalue()
    assert Trace.objects.count() == 1


@pytest.mark.django_db
def test_progress_bar_goes_to_stderr(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path / "t.jsonl", [json.dumps(make_payload())] * 3)
    call_command("import_traces", str(path), stdout=io.StringIO())
    assert "import_traces" in capsys.readouterr().err


@pytest.mark.django_db
def test_service_keeps_a_bounded_list_of_rejections() -> None:
    stream = io.BytesIO(b"{bad\n" * 50 + (json.dumps(make_payload()) + "\n").encode())
    seen: list[int] = []
    result = trace_import(
        stream=stream,
        max_line_bytes=4096,
        keep_rejections=10,
        on_reject=lambda r: seen.append(r.line),
    )
    assert (result.created, result.rejected, result.lines) == (1, 50, 51)
    assert len(result.rejections) == 10
    assert seen == list(range(1, 51))
    with pytest.raises(ValueError, match="batch_size"):
        trace_import(stream=io.BytesIO(b""), max_line_bytes=10, batch_size=0)
