"""The one trace schema shared by the API, the upload page and import_traces."""

from __future__ import annotations

import json
from typing import Any

import pytest

from traces.schemas import (
    TraceInvalid,
    trace_batch_validate_json,
    trace_payload_dump,
    trace_payload_validate,
    trace_payload_validate_json,
)
from traces.tests.factories import make_payload


def fields_of(exc: pytest.ExceptionInfo[TraceInvalid]) -> list[list[Any]]:
    return [err["loc"] for err in exc.value.errors]


def test_normalises_to_exactly_five_keys_and_drops_unknown_keys() -> None:
    raw = make_payload()
    del raw["meta"]
    raw["extra"] = 1
    raw["steps"][0]["colour"] = "red"
    payload = trace_payload_validate(raw)
    assert list(payload) == ["trace_version", "prompt", "final_answer", "steps", "meta"]
    assert payload["meta"] is None
    assert set(payload["steps"][0]) == {"i", "type", "content"}
    assert trace_payload_validate_json(json.dumps(raw)) == payload


def test_dump_is_compact_json_of_the_normalised_payload() -> None:
    payload = trace_payload_validate(make_payload(meta={"tags": ["a", "é"]}))
    assert json.loads(trace_payload_dump(payload)) == payload


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("trace_version", ""),
        ("trace_version", "v" * 65),
        ("prompt", ""),
        ("prompt", "p" * 50_001),
        ("final_answer", ""),
        ("final_answer", "a" * 50_001),
        ("steps", []),
        ("meta", "not an object"),
    ],
)
def test_lengths_and_types_name_the_field(field: str, value: object) -> None:
    raw = make_payload()
    raw[field] = value
    with pytest.raises(TraceInvalid) as exc:
        trace_payload_validate_json(json.dumps(raw))
    assert [field] in fields_of(exc) or any(loc[0] == field for loc in fields_of(exc))
    assert field in str(exc.value)


def test_upper_limits_are_inclusive_and_counted_in_characters() -> None:
    raw = make_payload(prompt="é" * 50_000, final_answer="a" * 50_000)
    raw["trace_version"] = "v" * 64
    raw["steps"] = [{"i": i, "type": "t" * 64, "content": "c"} for i in range(1000)]
    raw["steps"][0]["content"] = "ü" * 20_000
    payload = trace_payload_validate_json(json.dumps(raw))
    assert len(payload["steps"]) == 1000


def test_step_limits() -> None:
    raw = make_payload()
    raw["steps"] = [{"i": i, "type": "t", "content": "c"} for i in range(1001)]
    with pytest.raises(TraceInvalid, match="steps"):
        trace_payload_validate_json(json.dumps(raw))
    raw["steps"] = [{"i": -1, "type": "t", "content": "c"}]
    with pytest.raises(TraceInvalid, match=r"steps\.0\.i"):
        trace_payload_validate_json(json.dumps(raw))
    raw["steps"] = [{"i": 0, "type": "t", "content": "c" * 20_001}]
    with pytest.raises(TraceInvalid, match=r"steps\.0\.content"):
        trace_payload_validate_json(json.dumps(raw))
    raw["steps"] = [{"i": 0, "content": "c"}]
    with pytest.raises(TraceInvalid, match=r"steps\.0\.type: Field required"):
        trace_payload_validate_json(json.dumps(raw))


def test_duplicate_step_indices_are_refused_but_order_and_gaps_are_kept() -> None:
    raw = make_payload()
    raw["steps"] = [{"i": 5, "type": "a", "content": "x"}, {"i": 5, "type": "b", "content": "y"}]
    with pytest.raises(TraceInvalid) as exc:
        trace_payload_validate_json(json.dumps(raw))
    assert exc.value.errors[0]["loc"] == ["steps"]
    assert exc.value.errors[0]["msg"] == "Value error, Step indices must be unique"
    raw["steps"][1]["i"] = 2
    assert [s["i"] for s in trace_payload_validate_json(json.dumps(raw))["steps"]] == [5, 2]


@pytest.mark.parametrize(
    "text",
    [
        '{"trace_version":"1","prompt":"a\\u0000b","final_answer":"x",'
        '"steps":[{"i":0,"type":"t","content":"c"}]}',
        '{"trace_version":"1","prompt":"p","final_answer":"x",'
        '"steps":[{"i":0,"type":"t","content":"c\\u0000"}]}',
        '{"trace_version":"1","prompt":"p","final_answer":"x",'
        '"steps":[{"i":0,"type":"t","content":"c"}],"meta":{"k\\u0000":1}}',
    ],
)
def test_nul_characters_are_refused_because_postgresql_cannot_store_them(text: str) -> None:
    with pytest.raises(TraceInvalid, match="NUL"):
        trace_payload_validate_json(text)


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e400"])
def test_non_finite_numbers_in_meta_are_refused(number: str) -> None:
    text = (
        '{"trace_version":"1","prompt":"p","final_answer":"x",'
        '"steps":[{"i":0,"type":"t","content":"c"}],"meta":{"deep":[{"x":' + number + "}]}}"
    )
    with pytest.raises(TraceInvalid, match="meta: Value error, must not contain NaN or Infinity"):
        trace_payload_validate_json(text)


def test_malformed_json_is_a_json_invalid_error() -> None:
    with pytest.raises(TraceInvalid) as exc:
        trace_payload_validate_json(b"{not json")
    assert exc.value.errors[0]["type"] == "json_invalid"
    assert "input" not in exc.value.errors[0]


def test_batch_errors_are_located_by_element() -> None:
    good, bad = make_payload(), make_payload()
    del bad["prompt"]
    with pytest.raises(TraceInvalid) as exc:
        trace_batch_validate_json(json.dumps([good, bad]))
    assert exc.value.errors[0]["loc"] == [1, "prompt"]
    assert trace_batch_validate_json(json.dumps([good, good]))[1]["meta"] is None


def test_python_objects_validate_with_every_check() -> None:
    with pytest.raises(TraceInvalid, match="NUL"):
        trace_payload_validate(make_payload(prompt="a\x00"))
    with pytest.raises(TraceInvalid, match="Input should be a valid dictionary"):
        trace_payload_validate([1, 2])
