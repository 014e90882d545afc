"""The ReasoningTrace contract and its one validation path.

The API, the upload page and `manage.py import_traces` all validate through
the functions below, so a trace accepted by one entry point is accepted by all
three and stored the same way: a dict with exactly the five keys, `meta` null
when omitted, unknown keys dropped.

The schema is a TypedDict validated by pydantic-core, which hands back plain
dicts (no model objects to convert) and serialises them back to JSON text in
Rust: the import of 100,000 traces and the batch endpoint spend most of their
time here. Two checks need Python: no NaN/Infinity (or overflowing number) in
`meta`, and no U+0000 in any string (PostgreSQL cannot store it). The second
runs only when the raw JSON contains an escaped NUL: otherwise it cannot fail.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, NotRequired

from pydantic import AfterValidator, Field, TypeAdapter, ValidationError

# pydantic needs typing_extensions' TypedDict on Python < 3.12.
from typing_extensions import TypedDict

from tunix_registry.fields import JSON_OBJECT_SCHEMA, NO_NUL_PATTERN, Integer

MAX_BATCH = 1000
NO_NUL = "must not contain NUL (U+0000) characters"


def _unique_indices(steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    if len({step["i"] for step in steps}) != len(steps):
        raise ValueError("Step indices must be unique")
    return steps


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError(NO_NUL)
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


def _meta_storable(meta: dict[str, Any] | None) -> dict[str, Any] | None:
    if meta is not None:
        _check_json_value(meta)
    return meta


def _text(min_length: int, max_length: int, *, checked: bool) -> Any:
    if checked:
        return Annotated[
            str, Field(min_length=min_length, max_length=max_length), AfterValidator(_no_nul)
        ]
    return Annotated[str, Field(min_length=min_length, max_length=max_length)]


def _build(checked: bool) -> tuple[TypeAdapter[Any], TypeAdapter[Any]]:
    """The trace schema, with (`checked`) or without the Python-side storability checks."""

    class TraceStep(TypedDict):
        i: Annotated[Integer, Field(ge=0)]  # `false` is not an index
        type: _text(1, 64, checked=checked)  # type: ignore[valid-type]
        content: _text(1, 20_000, checked=checked)  # type: ignore[valid-type]

    meta_type: Any = Annotated[dict[str, Any] | None, AfterValidator(_meta_storable)]

    class ReasoningTrace(TypedDict):
        trace_version: _text(1, 64, checked=checked)  # type: ignore[valid-type]
        prompt: _text(1, 50_000, checked=checked)  # type: ignore[valid-type]
        final_answer: _text(1, 50_000, checked=checked)  # type: ignore[valid-type]
        steps: Annotated[
            list[TraceStep], Field(min_length=1, max_length=1000), AfterValidator(_unique_indices)
        ]
        meta: NotRequired[meta_type]

    return TypeAdapter(ReasoningTrace), TypeAdapter(list[ReasoningTrace])


_fast_one, _fast_many = _build(checked=False)
_checked_one, _checked_many = _build(checked=True)

# JSON text can only carry U+0000 as this escape (raw control characters are
# rejected by the parser), so without it the NUL checks cannot fail.
_NUL_ESCAPE = b"\\u0000"


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


def trace_payload_validate(data: object) -> dict[str, Any]:
    """Validate already-parsed JSON as one trace; return the normalised payload.

    Raises `TraceInvalid` naming the offending fields.
    """
    try:
        payload: dict[str, Any] = _checked_one.validate_python(data)
    except ValidationError as exc:
        raise TraceInvalid(errors_from_pydantic(exc)) from None
    payload.setdefault("meta", None)
    return payload


def _validate_json(raw: bytes | str, fast: TypeAdapter[Any], checked: TypeAdapter[Any]) -> Any:
    data = raw.encode() if isinstance(raw, str) else raw
    adapter = checked if _NUL_ESCAPE in data else fast
    try:
        return adapter.validate_json(data)
    except ValidationError as exc:
        raise TraceInvalid(errors_from_pydantic(exc)) from None


def trace_payload_validate_json(raw: bytes | str) -> dict[str, Any]:
    """Parse and validate one trace from JSON text (malformed JSON is a `json_invalid` error)."""
    payload: dict[str, Any] = _validate_json(raw, _fast_one, _checked_one)
    payload.setdefault("meta", None)
    return payload


def trace_batch_validate_json(raw: bytes | str) -> list[dict[str, Any]]:
    """Parse and validate a JSON array of traces (errors located by element index)."""
    payloads: list[dict[str, Any]] = _validate_json(raw, _fast_many, _checked_many)
    for payload in payloads:
        payload.setdefault("meta", None)
    return payloads


def trace_payload_dump(payload: dict[str, Any]) -> str:
    """A normalised payload as compact JSON text (what the database stores)."""
    return str(_fast_one.dump_json(payload).decode())


def reasoning_trace_json_schema() -> dict[str, Any]:
    """JSON Schema of the request body for the OpenAPI document, `$defs` inlined.

    (A `#/$defs/...` reference would be resolved against the whole OpenAPI
    document, where it does not exist.)
    """
    schema = dict(_fast_one.json_schema())
    defs = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):
                return inline(defs[ref.removeprefix("#/$defs/")])
            return {k: inline(v) for k, v in node.items()}
        if isinstance(node, list):
            return [inline(v) for v in node]
        return node

    result: dict[str, Any] = inline(schema)
    # Say what validation enforces beyond the types: no NUL in any string
    # (tunix_registry.fields), and `meta` is a JSON object of the same kind.
    _document_no_nul(result)
    result["properties"]["meta"] = {"anyOf": [JSON_OBJECT_SCHEMA, {"type": "null"}]}
    return result


def _document_no_nul(node: Any) -> None:
    if isinstance(node, dict):
        if node.get("type") == "string":
            node["pattern"] = NO_NUL_PATTERN
        for value in node.values():
            _document_no_nul(value)
    elif isinstance(node, list):
        for value in node:
            _document_no_nul(value)
