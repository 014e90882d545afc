"""Offset pagination shared by every list endpoint and page.

The contract of the original: `limit` 1..100 (default 20), `offset` >= 0,
range errors are 422 with a string detail, and the response carries
`{"limit", "offset", "next_offset"}` where next_offset is null on the last
page. Lists fetch `limit + 1` rows to know whether more exist.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from ninja.errors import HttpError

from tunix_registry.schemas import ApiModel

DEFAULT_LIMIT = 20
MAX_LIMIT = 100
# Far beyond any real table; keeps absurd offsets a 422 instead of an
# integer overflow inside the database.
MAX_OFFSET = 1_000_000_000

T = TypeVar("T")


class PaginationOut(ApiModel):
    limit: int
    offset: int
    next_offset: int | None


def check_page(limit: int, offset: int) -> None:
    """Raise a 422 with the original's messages when limit/offset are out of range."""
    if limit < 1 or limit > MAX_LIMIT:
        raise HttpError(422, f"limit must be between 1 and {MAX_LIMIT}")
    if offset < 0:
        raise HttpError(422, "offset must be non-negative")
    if offset > MAX_OFFSET:
        raise HttpError(422, f"offset must be at most {MAX_OFFSET}")


def page_of(rows: Sequence[T], limit: int, offset: int) -> tuple[list[T], dict[str, int | None]]:
    """Split `limit + 1` fetched rows into the page and its pagination object."""
    has_more = len(rows) > limit
    items = list(rows[:limit])
    return items, {
        "limit": limit,
        "offset": offset,
        "next_offset": offset + limit if has_more else None,
    }
