"""The supervisor's parts on their own: log chunks and the cap, decoding, metrics, artifacts."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from runs.artifacts import InvalidArtifactName, artifact_file, artifact_name_check, artifacts_scan
from runs.logs import LogShipper, marker_text, run_metrics_store, utf8_split
from runs.metrics import MetricsReader, metrics_parse
from runs.models import RunLogChunk
from runs.supervisor import _LogReader
from runs.tests.factories import TunixRunFactory


def chunks(run: Any) -> list[tuple[int, str, str]]:
    return list(
        RunLogChunk.objects.filter(run=run).order_by("seq").values_list("seq", "stream", "chunk")
    )


def test_utf8_split_never_cuts_a_character() -> None:
    assert utf8_split("aé", 2) == ("a", "é")
    assert utf8_split("aé", 3) == ("aé", "")
    assert utf8_split("€€", 4) == ("€", "€")


@pytest.mark.django_db
def test_output_under_the_cap_is_stored_whole_in_order() -> None:
    run = TunixRunFactory.create(status="running")
    shipper = LogShipper(run_id=run.run_id, max_bytes=4096)
    shipper.store([("stdout", "one\n"), ("stderr", "warn\n")])
    shipper.store([("stdout", "two\n")])
    assert chunks(run) == [(1, "stdout", "one\n"), (2, "stderr", "warn\n"), (3, "stdout", "two\n")]
    assert shipper.left_out == 0


@pytest.mark.django_db
def test_past_the_cap_the_head_and_tail_stay_with_a_marker_counting_the_gap() -> None:
    run = TunixRunFactory.create(status="running")
    shipper = LogShipper(run_id=run.run_id, max_bytes=8192)  # 4096 head, 4096 tail
    written = 0
    for index in range(100):
        line = f"{index:04d}" + "é" * 48 + "\n"  # 101 bytes
        shipper.store([("stdout", line)])
        written += len(line.encode())
    stored = chunks(run)
    marker = [c for c in stored if c[1] == "marker"]
    assert len(marker) == 1
    head = [c for c in stored if c[0] < marker[0][0]]
    tail = [c for c in stored if c[0] > marker[0][0]]
    head_bytes = sum(len(c[2].encode()) for c in head)
    tail_bytes = sum(len(c[2].encode()) for c in tail)
    assert 4096 - 1 <= head_bytes <= 4096
    assert 4096 - 2 * 256 <= tail_bytes <= 4096
    assert shipper.left_out == written - head_bytes - tail_bytes
    assert marker[0][2] == marker_text(shipper.left_out)
    text = "".join(c[2] for c in tail)
    assert text.endswith("0099" + "é" * 48 + "\n")


@pytest.mark.django_db
def test_a_marker_is_only_written_once_something_is_left_out() -> None:
    run = TunixRunFactory.create(status="running")
    shipper = LogShipper(run_id=run.run_id, max_bytes=4096)
    shipper.store([("stdout", "a" * 2048)])
    shipper.store([("stdout", "b" * 100)])
    assert [c[1] for c in chunks(run)] == ["stdout", "stdout"]
    shipper.store([("stdout", "c" * 3000)])
    streams = [c[1] for c in chunks(run)]
    assert streams[0] == "stdout" and streams[1] == "marker"
    assert shipper.left_out > 0


@pytest.mark.django_db
def test_storing_again_after_a_failure_writes_the_same_rows() -> None:
    run = TunixRunFactory.create(status="running")
    shipper = LogShipper(run_id=run.run_id, max_bytes=4096)
    shipper.store([("stdout", "x\n")])
    # A retried write (its commit was not seen) inserts nothing twice.
    RunLogChunk.objects.filter(run=run).delete()
    shipper._state.seq = 0
    shipper.store([("stdout", "x\n")])
    shipper._state.seq = 0
    shipper.store([("stdout", "x\n")])
    assert chunks(run) == [(1, "stdout", "x\n")]


def test_the_log_reader_decodes_across_reads_without_splitting_characters(tmp_path: Path) -> None:
    path = tmp_path / "stdout.log"
    data = "aé€😀b".encode()
    reader = _LogReader(path, "stdout")
    with path.open("wb") as handle:
        texts = []
        for byte in data:
            handle.write(bytes([byte]))
            handle.flush()
            texts.append(reader.read(1024)[0])
    assert "".join(texts) + reader.finish() == "aé€😀b"
    assert all("\ufffd" not in t for t in texts)


def test_the_log_reader_skips_ahead_and_resyncs_on_a_character(tmp_path: Path) -> None:
    path = tmp_path / "stdout.log"
    path.write_bytes("é".encode() * 100)
    reader = _LogReader(path, "stdout")
    skipped = reader.skip(keep=11)  # lands inside a character
    text, dropped = reader.read(1024)
    assert text == "é" * 5
    assert skipped + dropped + len(text.encode()) == 200


def test_the_metrics_reader_takes_complete_lines_as_they_come(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    reader = MetricsReader(path, run_id=None)  # type: ignore[arg-type]
    assert reader.read() == []  # no file yet
    with path.open("w") as handle:
        handle.write(json.dumps({"step": 1, "loss": 2.0}) + "\n" + '{"step": 2, "lo')
        handle.flush()
        assert [r["step"] for r in reader.read()] == [1]
        handle.write('ss": 1.5}\nnot json\n')
        handle.flush()
        assert [r["step"] for r in reader.read()] == [2]
        handle.write(json.dumps({"step": 1, "loss": 9.0}))  # no newline yet
        handle.flush()
        assert reader.read() == []
        assert [r["loss"] for r in reader.read(final=True)] == [9.0]
    assert [(r["step"], r["loss"]) for r in reader.rows()] == [(1, 9.0), (2, 1.5)]
    assert metrics_parse(path, run_id=None) == reader.rows()  # type: ignore[arg-type]


@pytest.mark.django_db
def test_live_metrics_update_the_summary_of_an_executing_run_only() -> None:
    row: dict[str, Any] = {"step": 5, "loss": 1.0, "eval_loss": 0.5, "tokens_per_second": 10.0}
    row["elapsed_seconds"] = None
    running = TunixRunFactory.create(status="running")
    run_metrics_store(run_id=running.run_id, rows=[row], series=[row])
    run_metrics_store(run_id=running.run_id, rows=[row], series=[row])  # again: no conflict
    running.refresh_from_db()
    assert (running.metrics_steps, running.final_loss, running.best_eval_loss) == (5, 1.0, 0.5)
    finished = TunixRunFactory.create(status="completed")
    run_metrics_store(run_id=finished.run_id, rows=[row], series=[row])
    finished.refresh_from_db()
    assert finished.metrics_steps is None


def test_artifacts_are_the_regular_files_directly_in_the_directory(tmp_path: Path) -> None:
    (tmp_path / "b.bin").write_bytes(b"bytes")
    (tmp_path / "a.txt").write_text("")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.txt").write_text("deep")
    (tmp_path / "link").symlink_to(tmp_path / "b.bin")
    assert artifacts_scan(tmp_path) == [
        {"name": "a.txt", "size": 0, "sha256": hashlib.sha256(b"").hexdigest()},
        {"name": "b.bin", "size": 5, "sha256": hashlib.sha256(b"bytes").hexdigest()},
    ]
    assert artifacts_scan(tmp_path, with_hashes=False)[1] == {
        "name": "b.bin",
        "size": 5,
        "sha256": None,
    }
    assert artifacts_scan(tmp_path / "missing") == []


@pytest.mark.parametrize("name", ["", ".", "..", "../x", "a/b", "/etc/passwd", "a\0b", "a\\b"])
def test_artifact_names_that_are_not_bare_file_names_are_refused(name: str) -> None:
    with pytest.raises(InvalidArtifactName):
        artifact_name_check(name)


@pytest.mark.django_db
def test_an_artifact_file_is_a_regular_file_of_the_output_directory(data_dir: Path) -> None:
    run = TunixRunFactory.create(output_dir="outputs/exp")
    directory = data_dir / "outputs" / "exp"
    directory.mkdir(parents=True)
    (directory / "model.bin").write_bytes(b"w")
    (directory / "sub").mkdir()
    (data_dir / "secret").write_text("s")
    (directory / "escape").symlink_to(data_dir / "secret")
    assert artifact_file(run=run, name="model.bin") == directory / "model.bin"
    assert artifact_file(run=run, name="sub") is None
    assert artifact_file(run=run, name="escape") is None
    assert artifact_file(run=run, name="missing") is None
    with pytest.raises(InvalidArtifactName):
        artifact_file(run=run, name="../secret")
