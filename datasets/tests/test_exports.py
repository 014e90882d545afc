"""The three export formats, byte for byte, as snapshot strings."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from datasets.exports import (
    check_format,
    gemma_prompt,
    render_trace,
    render_training_example,
    render_tunix_sft,
    training_example_id,
)
from traces.tests.factories import make_payload

TRACE_ID = uuid.UUID("11111111-2222-3333-4444-555555555555")
CREATED = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
TID = str(TRACE_ID)
ISO = CREATED.isoformat()
PAYLOAD = make_payload(
    prompt="What is 2+2?",
    final_answer="4",
    steps=["Add 2 and 2", "Verify"],
    meta={"source": "exp", "k": 1},
)


def test_tunix_sft_line_matches_the_verified_example() -> None:
    line = render_tunix_sft(TID, ISO, "1.0", PAYLOAD, "demo-v1")
    assert line == (
        '{"id": "11111111-2222-3333-4444-555555555555", "prompts": "<start_of_turn>user\\n'
        "What is 2+2?<end_of_turn>\\n<start_of_turn>model\\nReasoning:\\n1. Add 2 and 2\\n"
        '2. Verify\\nAnswer: 4<end_of_turn>", "final_answer": "4", "metadata": '
        '{"created_at": "2026-01-02T03:04:05.678901+00:00", "trace_version": "1.0", '
        '"format": "tunix_sft", "source": "exp", "k": 1}}\n'
    )


def test_trace_line() -> None:
    line = render_trace(TID, ISO, "1.0", PAYLOAD, "demo-v1")
    assert line == (
        '{"id": "11111111-2222-3333-4444-555555555555", "prompts": "What is 2+2?", '
        '"trace_steps": ["Add 2 and 2", "Verify"], "final_answer": "4", "metadata": '
        '{"created_at": "2026-01-02T03:04:05.678901+00:00", "trace_version": "1.0", '
        '"source": "exp", "k": 1}}\n'
    )


def test_training_example_line_has_a_deterministic_id() -> None:
    line = render_training_example(TID, ISO, "1.0", PAYLOAD, "demo-v1")
    example_id = uuid.uuid5(
        uuid.UUID("7c1f3c2e-5a57-4d0e-9a52-3f1d7c1b6e21"), f"demo-v1:{TRACE_ID}"
    )
    assert line == (
        f'{{"id": "{example_id}", "prompt": "What is 2+2?\\n\\nPlease show your reasoning steps.", '
        '"response": "Reasoning:\\n1. Add 2 and 2\\n2. Verify\\nAnswer: 4", "metadata": '
        '{"source_trace_id": "11111111-2222-3333-4444-555555555555", '
        '"created_at": "2026-01-02T03:04:05.678901+00:00", "trace_version": "1.0", '
        '"source": "exp", "k": 1}}\n'
    )
    assert render_training_example(TID, ISO, "1.0", PAYLOAD, "demo-v1") == line
    assert training_example_id("demo-v2", TRACE_ID) != example_id


def test_meta_is_merged_last_and_overrides_standard_keys() -> None:
    payload = make_payload(meta={"format": "mine", "trace_version": "x"})
    line = render_tunix_sft(TID, ISO, "1.0", payload, "k")
    assert line.endswith(
        '"metadata": {"created_at": "2026-01-02T03:04:05.678901+00:00", '
        '"trace_version": "x", "format": "mine"}}\n'
    )


def test_non_ascii_is_escaped_and_null_meta_adds_nothing() -> None:
    payload = make_payload(prompt="Combien font 2+2 ? 日本", final_answer="quatre ✓", steps=["é"])
    line = render_trace(TID, ISO, "1.0", payload, "k")
    assert line == (
        '{"id": "11111111-2222-3333-4444-555555555555", '
        '"prompts": "Combien font 2+2 ? \\u65e5\\u672c", "trace_steps": ["\\u00e9"], '
        '"final_answer": "quatre \\u2713", "metadata": '
        '{"created_at": "2026-01-02T03:04:05.678901+00:00", "trace_version": "1.0"}}\n'
    )
    assert line.isascii()


def test_gemma_prompt_with_a_system_instruction_and_without_steps() -> None:
    assert gemma_prompt("Q", [], "A", system="Be brief") == (
        "<start_of_turn>user\nBe brief\n\nQ<end_of_turn>\n"
        "<start_of_turn>model\nAnswer: A<end_of_turn>"
    )


def test_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="format"):
        check_format("csv")


@pytest.mark.parametrize(
    "meta",
    [
        None,
        {},
        {"a": 1.5, "b": [1, "x", None], "c": {"d": True}},
        {"created_at": "mine", "z": "é"},
        {"source_trace_id": "x", "format": 3},
    ],
)
def test_assembled_lines_equal_json_dumps_of_the_documented_dicts(meta: Any) -> None:
    payload = make_payload(prompt='Say "hi"\n\t<é>', final_answer="\\ok\u2028", meta=meta)
    base = {"created_at": CREATED.isoformat(), "trace_version": "1.0"}
    extra = meta or {}
    steps = [s["content"] for s in payload["steps"]]
    expected_trace = {
        "id": str(TRACE_ID),
        "prompts": payload["prompt"],
        "trace_steps": steps,
        "final_answer": payload["final_answer"],
        "metadata": {**base, **extra},
    }
    assert render_trace(TID, ISO, "1.0", payload, "k") == json.dumps(expected_trace) + "\n"
    expected_sft = {
        "id": str(TRACE_ID),
        "prompts": gemma_prompt(payload["prompt"], steps, payload["final_answer"]),
        "final_answer": payload["final_answer"],
        "metadata": {**base, "format": "tunix_sft", **extra},
    }
    assert render_tunix_sft(TID, ISO, "1.0", payload, "k") == json.dumps(expected_sft) + "\n"
    line = json.loads(render_training_example(TID, ISO, "1.0", payload, "k"))
    assert line["metadata"] == {"source_trace_id": str(TRACE_ID), **base, **extra}
    assert render_training_example(TID, ISO, "1.0", payload, "k") == json.dumps(line) + "\n"
