"""UTC timestamps rendered as text by PostgreSQL, for the hot reads of traces and runs.

psycopg loads a timestamptz through a Python-level loader per value; the hot
list and detail reads have PostgreSQL render the text instead, and Python only
trims it to what `datetime.isoformat()` would have written.
"""

from __future__ import annotations


def pg_utc_text(column: str) -> str:
    """A select-list item: `column` in UTC as "YYYY-MM-DDTHH:MM:SS.ffffff", named `<column>_text`.

    (Named apart from the column, so that an ORDER BY on the column still means
    the indexed timestamp, not this text.)
    """
    return f"to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US') AS {column}_text"


def iso_utc(text: str, suffix: str) -> str:
    """That text as isoformat() writes it (no fraction when it is zero), then `suffix`."""
    if text.endswith(".000000"):
        text = text[:-7]
    return text + suffix
