"""The supervisor's count of the items an engine has written, read as the file grows."""

from __future__ import annotations

from pathlib import Path

from evaluations.execution import _LineCounter


def test_complete_lines_are_counted_once_and_a_partial_one_when_it_ends(tmp_path: Path) -> None:
    path = tmp_path / "items.jsonl"
    counter = _LineCounter(path)
    assert counter.count() == 0  # no file yet
    path.write_bytes(b'{"index": 0}\n{"index": 1}\n{"ind')
    assert counter.count() == 2
    assert counter.count() == 2  # nothing new
    with path.open("ab") as handle:
        handle.write(b'ex": 2}\n{"index": 3}\n')
    assert counter.count() == 4
    assert counter.offset == path.stat().st_size
