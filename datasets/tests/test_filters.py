"""Meta filters in SQL (MetaEquals, one spelling per database) against their plain definition."""

from __future__ import annotations

from typing import Any

import pytest

from datasets.services import traces_matching
from traces.models import Trace
from traces.tests.factories import TraceFactory

pytestmark = pytest.mark.django_db

METAS: list[dict[str, Any] | None] = [
    None,
    {},
    {"k": True},
    {"k": False},
    {"k": "true"},
    {"k": 1},
    {"k": 1.5},
    {"k": "1"},
    {"k": None},
    {"k": [1, 2]},
    {"k": [2, 1]},
    {"k": {"x": 1}},
    {"k": {"x": 1, "y": 2}},
    {"k": "x", "other": 1},
    {"other": 1},
    {"a.b": 1, 'say "hi"': True, "ключ": "значение"},
]

FILTERS: list[dict[str, Any]] = [
    {"k": True},
    {"k": False},
    {"k": "true"},
    {"k": 1},
    {"k": 1.0},
    {"k": 1.5},
    {"k": "1"},
    {"k": None},
    {"k": [1, 2]},
    {"k": {"x": 1}},
    {"k": "x", "other": 1},
    {"k": None, "other": 1},
    {"other": None},
    {"a.b": 1},
    {'say "hi"': True},
    {"ключ": "значение"},
    {"ключ": None},
    {},
]


def json_equal(a: Any, b: Any) -> bool:
    """Equality of two JSON values: booleans are not numbers, 1 equals 1.0, containers whole."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    return bool(a == b)


def matches(meta: dict[str, Any] | None, filters: dict[str, Any]) -> bool:
    """The plain definition: every filter key equal in meta; null means missing or null."""
    meta = meta or {}
    for name, value in filters.items():
        if value is None:
            if meta.get(name) is not None:
                return False
        elif name not in meta or not json_equal(meta[name], value):
            return False
    return True


@pytest.mark.parametrize("filters", FILTERS, ids=[repr(f) for f in FILTERS])
def test_sql_filters_select_what_the_plain_definition_selects(filters: dict[str, Any]) -> None:
    traces = {TraceFactory.create(meta=meta).id: meta for meta in METAS}
    expected = {trace_id for trace_id, meta in traces.items() if matches(meta, filters)}
    selected = set(traces_matching(filters).values_list("id", flat=True))
    assert selected == expected
    assert Trace.objects.count() == len(METAS)


def test_the_plain_definition_tells_booleans_strings_and_numbers_apart() -> None:
    assert matches({"k": True}, {"k": True})
    assert not matches({"k": True}, {"k": 1})
    assert not matches({"k": "true"}, {"k": True})
    assert matches({"k": 1}, {"k": 1.0})
    assert not matches({"k": [2, 1]}, {"k": [1, 2]})
    assert matches(None, {"k": None})
