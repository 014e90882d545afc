"""Schemathesis hooks for scripts/fuzz.sh.

JSON Schema cannot say that the step indices of a trace are unique (the API
answers a 422 "Step indices must be unique"), so generated traces with repeated
indices are left out rather than reported as valid requests refused. The same
goes for the run registry's `cursor`: an opaque token that only the server
hands out (in `next_cursor`), so a generated one is rightly a 422.
"""

from __future__ import annotations

from typing import Any

import schemathesis


def _repeats_a_step_index(trace: Any) -> bool:
    if not isinstance(trace, dict) or not isinstance(trace.get("steps"), list):
        return False
    indices = [s.get("i") for s in trace["steps"] if isinstance(s, dict)]
    hashable = [i for i in indices if isinstance(i, int | float | str)]
    return len(set(hashable)) != len(hashable)


@schemathesis.hook
def filter_body(ctx: Any, body: Any) -> bool:
    traces = body if isinstance(body, list) else [body]
    return not any(_repeats_a_step_index(trace) for trace in traces)


@schemathesis.hook
def filter_query(ctx: Any, query: Any) -> bool:
    return not (isinstance(query, dict) and query.get("cursor"))
