from __future__ import annotations

import pytest
from ninja.errors import HttpError

from tunix_registry.pagination import MAX_OFFSET, check_page, page_of


@pytest.mark.parametrize(
    ("limit", "offset", "message"),
    [
        (0, 0, "limit must be between 1 and 100"),
        (101, 0, "limit must be between 1 and 100"),
        (20, -1, "offset must be non-negative"),
        (20, MAX_OFFSET + 1, "offset must be at most"),
    ],
)
def test_check_page_rejects_out_of_range(limit: int, offset: int, message: str) -> None:
    with pytest.raises(HttpError) as excinfo:
        check_page(limit, offset)
    assert excinfo.value.status_code == 422
    assert message in str(excinfo.value)


def test_page_of_sets_next_offset_only_when_more_rows_exist() -> None:
    items, pagination = page_of([1, 2, 3], limit=2, offset=4)
    assert items == [1, 2]
    assert pagination == {"limit": 2, "offset": 4, "next_offset": 6}
    items, pagination = page_of([1], limit=2, offset=6)
    assert items == [1]
    assert pagination["next_offset"] is None
