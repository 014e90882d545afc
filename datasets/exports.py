"""Record shapes of the three export formats (REFERENCE §5.3), byte for byte.

Each renderer takes one trace's columns and returns one JSON line ending in
"\\n": compact `json.dumps` (default separators, non-ASCII escaped), keys in
the documented order, the trace's `meta` merged last into `metadata`.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

FORMATS = ("trace", "tunix_sft", "training_example")

# Namespace of the deterministic `training_example` ids: uuid5(namespace, "<key>:<trace id>").
TRAINING_EXAMPLE_NAMESPACE = uuid.UUID("7c1f3c2e-5a57-4d0e-9a52-3f1d7c1b6e21")

_dumps = json.dumps


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
        "Reasoning:\n" + "".join(f"{k}. {c}\n" for k, c in enumerate(steps, 1)) if steps else ""
    )
    return (
        "<start_of_turn>user\n"
        + user
        + "<end_of_turn>\n<start_of_turn>model\n"
        + reasoning
        + "Answer: "
        + final_answer
        + "<end_of_turn>"
    )


def _contents(payload: dict[str, Any]) -> list[str]:
    return [step["content"] for step in payload.get("steps") or ()]


def _meta(payload: dict[str, Any]) -> dict[str, Any]:
    meta = payload.get("meta")
    return meta if isinstance(meta, dict) else {}


def render_trace(
    trace_id: uuid.UUID, created_at: datetime, trace_version: str, payload: dict[str, Any], key: str
) -> str:
    record = {
        "id": str(trace_id),
        "prompts": payload["prompt"],
        "trace_steps": _contents(payload),
        "final_answer": payload["final_answer"],
        "metadata": {
            "created_at": created_at.isoformat(),
            "trace_version": trace_version,
            **_meta(payload),
        },
    }
    return _dumps(record) + "\n"


def render_tunix_sft(
    trace_id: uuid.UUID, created_at: datetime, trace_version: str, payload: dict[str, Any], key: str
) -> str:
    record = {
        "id": str(trace_id),
        "prompts": gemma_prompt(payload["prompt"], _contents(payload), payload["final_answer"]),
        "final_answer": payload["final_answer"],
        "metadata": {
            "created_at": created_at.isoformat(),
            "trace_version": trace_version,
            "format": "tunix_sft",
            **_meta(payload),
        },
    }
    return _dumps(record) + "\n"


def training_example_id(key: str, trace_id: uuid.UUID) -> uuid.UUID:
    """Deterministic id of a trace's training example within dataset `key` ("" for none)."""
    return uuid.uuid5(TRAINING_EXAMPLE_NAMESPACE, f"{key}:{trace_id}")


def render_training_example(
    trace_id: uuid.UUID, created_at: datetime, trace_version: str, payload: dict[str, Any], key: str
) -> str:
    contents = _contents(payload)
    lines = ["Reasoning:"] if contents else []
    lines.extend(f"{k}. {c}" for k, c in enumerate(contents, 1))
    lines.append(f"Answer: {payload['final_answer']}")
    record = {
        "id": str(training_example_id(key, trace_id)),
        "prompt": f"{payload['prompt']}\n\nPlease show your reasoning steps.",
        "response": "\n".join(lines),
        "metadata": {
            "source_trace_id": str(trace_id),
            "created_at": created_at.isoformat(),
            "trace_version": trace_version,
            **_meta(payload),
        },
    }
    return _dumps(record) + "\n"


Renderer = Callable[[uuid.UUID, datetime, str, dict[str, Any], str], str]

RENDERERS: dict[str, Renderer] = {
    "trace": render_trace,
    "tunix_sft": render_tunix_sft,
    "training_example": render_training_example,
}
