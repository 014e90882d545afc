"""The text layer of the API's keyset page cursors.

A cursor is the page's position as plain text ("created_at|id", an item index),
urlsafe base64 with its padding stripped, so that it travels in a query string as
is. Each list reads and writes its own position; this module only packs and
unpacks the text.
"""

from __future__ import annotations

import base64
import binascii

INVALID_CURSOR_MESSAGE = "cursor is not a valid page cursor"


class InvalidCursor(ValueError):
    """A page cursor this server did not issue (HTTP 422)."""


def cursor_pack(raw: str) -> str:
    """The cursor carrying `raw`: urlsafe base64 without "=" padding."""
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def cursor_unpack(cursor: str) -> str:
    """The text `cursor_pack` packed into `cursor`; InvalidCursor when it is not one."""
    try:
        return base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidCursor(INVALID_CURSOR_MESSAGE) from None
