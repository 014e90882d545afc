"""The ReasoningTrace contract (REFERENCE §4.1) and its one validation path.

The API, the upload page and `manage.py import_traces` all validate through
`trace_payload_validate` / `trace_payload_validate_json`, so a trace accepted
by one entry point is accepted by all three and stored the same way: a dict
with exactly the five keys, `meta` null when omitted, unknown keys dropped.
"""

from __future__ import annotations

import math
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator

MAX_BATCH = 1000

Version = Annotated[str, Field(min_length=1, max_length=64)]
LongText = Annotated[str, Field(min_length=1, max_length=50_000)]
StepType = Annotated[str, Field(min_length=1, max_length=64)]
StepContent = Annotated[str, Field(min_length=1, max_length=20_000)]


def _no_nul(value: str) -> str:
    # PostgreSQL cannot store U+0000 in text or jsonb; refuse it on every backend alike.
    if "\x00" in value:
        raise ValueError("must not contain NUL (U+0000) characters")
    return value


def _check_json_value(value: Any, depth: int = 0) -> None:
    if depth > 64:
        raise ValueError("is nested too deeply (more than 64 levels)")
    if isinstance(value, str):
        _no_nul(value)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("must not contain NaN or Infinity")
    elif isinstance(value, dict):
        for key, item in value.items():
            _no_nul(key)
            _check_json_value(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _check_json_value(item, depth + 1)


class TraceStep(BaseModel):
    model_config = ConfigDict(extra="ignore")

    i: int = Field(ge=0)
    type: StepType
    content: StepContent

    @field_validator("type", "content")
    @classmethod
    def _text_storable(cls, value: str) -> str:
        return _no_nul(value)


class ReasoningTrace(BaseModel):
    """One reasoning trace as clients send it and as `payload` returns it."""

    model_config = ConfigDict(extra="ignore")

    trace_version: Version
    prompt: LongText
    final_answer: LongText
    steps: list[TraceStep] = Field(min_length=1, max_length=1000)
    meta: dict[str, Any] | None = None

    @field_validator("trace_version", "prompt", "final_answer")
    @classmethod
    def _text_storable(cls, value: str) -> str:
        return _no_nul(value)

    @field_validator("steps")
    @classmethod
    def _unique_indices(cls, steps: list[TraceStep]) -> list[TraceStep]:
        seen: set[int] = set()
        for step in steps:
            if step.i in seen:
                raise ValueError("Step indices must be unique")
            seen.add(step.i)
        return steps

    @field_validator("meta")
    @classmethod
    def _meta_storable(cls, meta: dict[str, Any] | None) -> dict[str, Any] | None:
        if meta is not None:
            _check_json_value(meta)
        return meta


_batch_adapter: TypeAdapter[list[ReasoningTrace]] = TypeAdapter(list[ReasoningTrace])


class TraceInvalid(ValueError):
    """A trace (or batch) failed validation.

    `errors` has the shape of a 422 body's `detail` list (type, loc, msg, ...),
    with `loc` starting at the trace itself; `str()` names every field.
    """

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        self.errors = errors
        super().__init__(errors_describe(errors))

    def with_loc_prefix(self, *prefix: str | int) -> list[dict[str, Any]]:
        return [{**err, "loc": [*prefix, *err["loc"]]} for err in self.errors]


def _plain(value: Any) -> Any:
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return str(value)


def errors_from_pydantic(exc: ValidationError) -> list[dict[str, Any]]:
    """Pydantic's error list made JSON-safe (the original's 422 body shape)."""
    out: list[dict[str, Any]] = []
    for err in exc.errors(include_url=False):
        item: dict[str, Any] = {"type": err["type"], "loc": list(err["loc"]), "msg": err["msg"]}
        if err["type"] != "json_invalid":
            item["input"] = _plain(err.get("input"))
        if "ctx" in err:
            item["ctx"] = _plain(err["ctx"])
        out.append(item)
    return out


def errors_describe(errors: list[dict[str, Any]]) -> str:
    """One line naming each offending field: `steps.1.content: String should have ...`."""
    parts = []
    for err in errors:
        where = ".".join(str(p) for p in err["loc"]) or "trace"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


def _normalise(trace: ReasoningTrace) -> dict[str, Any]:
    # Built by hand rather than model_dump(): the hot path of every create.
    return {
        "trace_version": trace.trace_version,
        "prompt": trace.prompt,
        "final_answer": trace.final_answer,
        "steps": [{"i": s.i, "type": s.type, "content": s.content} for s in trace.steps],
        "meta": trace.meta,
    }


def trace_payload_validate(data: object) -> dict[str, Any]:
    """Validate already-parsed JSON as one trace; return the normalised payload.

    Raises `TraceInvalid` naming the offending fields.
    """
    try:
        trace = ReasoningTrace.model_validate(data)
    except ValidationError as exc:
        raise TraceInvalid(errors_from_pydantic(exc)) from None
    return _normalise(trace)


def trace_payload_validate_json(raw: bytes | str) -> dict[str, Any]:
    """Parse and validate one trace from JSON text (malformed JSON is a `json_invalid` error)."""
    try:
        trace = ReasoningTrace.model_validate_json(raw)
    except ValidationError as exc:
        raise TraceInvalid(errors_from_pydantic(exc)) from None
    return _normalise(trace)


def trace_batch_validate_json(raw: bytes | str) -> list[dict[str, Any]]:
    """Parse and validate a JSON array of traces (errors located by element index)."""
    try:
        traces = _batch_adapter.validate_json(raw)
    except ValidationError as exc:
        raise TraceInvalid(errors_from_pydantic(exc)) from None
    return [_normalise(t) for t in traces]


def reasoning_trace_json_schema() -> dict[str, Any]:
    """JSON Schema of the request body, for the OpenAPI document."""
    return ReasoningTrace.model_json_schema()
