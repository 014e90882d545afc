"""Record shapes of the three export formats, byte for byte as the original API wrote them.

Each renderer takes one trace's columns (id and created_at already as text:
the id hyphenated, created_at as Python's `isoformat()` of the UTC time, see
datasets.selectors.export_row) and returns one JSON line ending in
"\\n": compact `json.dumps` (default separators, non-ASCII escaped), keys in
the documented order, the trace's `meta` merged last into `metadata`. The
`trace` and `tunix_sft` lines are rendered when a dataset is built and stored
on its members (datasets.services.dataset_build); `training_example` lines on
each export.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

FORMATS = ("trace", "tunix_sft", "training_example")

# Namespace of the deterministic `training_example` ids: uuid5(namespace, "<key>:<trace id>").
TRAINING_EXAMPLE_NAMESPACE = uuid.UUID("7c1f3c2e-5a57-4d0e-9a52-3f1d7c1b6e21")

_dumps = json.dumps
# The C string encoder json.dumps itself uses for str values with ensure_ascii.
_str: Callable[[str], str] = json.encoder.encode_basestring_ascii


def check_format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)} (got {fmt!r})")
    return fmt


def gemma_prompt(
    prompt: str, steps: list[str], final_answer: str, system: str | None = None
) -> str:
    """The Gemma chat rendering of a trace (no system role: a system text is prepended)."""
    user = f"{system}\n\n{prompt}" if system else prompt
    reasoning = (
        "Reasoning:\n" + "".join([f"{k}. {c}\n" for k, c in enumerate(steps, 1)]) if steps else ""
    )
    return (
        f"<start_of_turn>user\n{user}<end_of_turn>\n<start_of_turn>model\n"
        f"{reasoning}Answer: {final_answer}<end_of_turn>"
    )


def _contents(payload: dict[str, Any]) -> list[str]:
    return [step["content"] for step in payload.get("steps") or ()]


def _meta(payload: dict[str, Any]) -> dict[str, Any]:
    meta = payload.get("meta")
    return meta if isinstance(meta, dict) else {}


def _metadata(standard: str, standard_keys: tuple[str, ...], meta: dict[str, Any]) -> str:
    """The encoding of {**standard, **meta}, where `standard` is the encoded standard
    keys without the closing brace.

    When meta overrides none of the standard keys, the merged object is the
    standard keys followed by meta's keys in order, so its encoding is the two
    encodings joined; otherwise (an override keeps the key's first position)
    the dict is merged and encoded as a whole.
    """
    if not meta:
        return standard + "}"
    if any(k in meta for k in standard_keys):
        return _dumps({**json.loads(standard + "}"), **meta})
    return standard + ", " + _dumps(meta)[1:]


# The records are assembled from encoded pieces: byte-identical to json.dumps
# of the documented dicts (default separators, ensure_ascii), about twice as fast.
def render_trace(
    trace_id: str, created_at: str, trace_version: str, payload: dict[str, Any], key: str
) -> str:
    metadata = _metadata(
        f'{{"created_at": "{created_at}", "trace_version": {_str(trace_version)}',
        ("created_at", "trace_version"),
        _meta(payload),
    )
    return (
        f'{{"id": "{trace_id}", "prompts": {_str(payload["prompt"])}, '
        f'"trace_steps": {_dumps(_contents(payload))}, '
        f'"final_answer": {_str(payload["final_answer"])}, "metadata": {metadata}}}\n'
    )


def render_tunix_sft(
    trace_id: str, created_at: str, trace_version: str, payload: dict[str, Any], key: str
) -> str:
    final_answer = payload["final_answer"]
    prompts = gemma_prompt(payload["prompt"], _contents(payload), final_answer)
    metadata = _metadata(
        f'{{"created_at": "{created_at}", "trace_version": {_str(trace_version)}, '
        '"format": "tunix_sft"',
        ("created_at", "trace_version", "format"),
        _meta(payload),
    )
    return (
        f'{{"id": "{trace_id}", "prompts": {_str(prompts)}, '
        f'"final_answer": {_str(final_answer)}, "metadata": {metadata}}}\n'
    )


def training_example_id(key: str, trace_id: uuid.UUID | str) -> uuid.UUID:
    """Deterministic id of a trace's training example within dataset `key` ("" for none)."""
    return uuid.uuid5(TRAINING_EXAMPLE_NAMESPACE, f"{key}:{trace_id}")


def render_training_example(
    trace_id: str, created_at: str, trace_version: str, payload: dict[str, Any], key: str
) -> str:
    contents = _contents(payload)
    lines = ["Reasoning:"] if contents else []
    lines.extend([f"{k}. {c}" for k, c in enumerate(contents, 1)])
    lines.append(f"Answer: {payload['final_answer']}")
    metadata = _metadata(
        f'{{"source_trace_id": "{trace_id}", "created_at": "{created_at}", '
        f'"trace_version": {_str(trace_version)}',
        ("source_trace_id", "created_at", "trace_version"),
        _meta(payload),
    )
    prompt = f"{payload['prompt']}\n\nPlease show your reasoning steps."
    return (
        f'{{"id": "{training_example_id(key, trace_id)}", "prompt": {_str(prompt)}, '
        f'"response": {_str(chr(10).join(lines))}, "metadata": {metadata}}}\n'
    )


Renderer = Callable[[str, str, str, dict[str, Any], str], str]

RENDERERS: dict[str, Renderer] = {
    "trace": render_trace,
    "tunix_sft": render_tunix_sft,
    "training_example": render_training_example,
}
