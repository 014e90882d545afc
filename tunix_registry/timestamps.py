"""The one way the product writes a moment as text.

Every timestamp is stored aware and in UTC (`USE_TZ`), and written as
ISO-8601 in UTC. Two suffixes are part of the API's contract: traces and
datasets write `Z`, runs write `+00:00` (what `datetime.isoformat()` gives an
aware UTC value). A whole second has no fraction, as `isoformat()` does.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal, overload

from pydantic import PlainSerializer, WithJsonSchema

Suffix = Literal["Z", "+00:00"]


@overload
def utc_iso(moment: datetime, *, suffix: Suffix = "Z") -> str: ...
@overload
def utc_iso(moment: None, *, suffix: Suffix = "Z") -> None: ...


def utc_iso(moment: datetime | None, *, suffix: Suffix = "Z") -> str | None:
    """`moment` in UTC as ISO-8601 ending in `suffix`; None stays None.

    A naive value is taken to be UTC already (SQLite hands back naive UTC
    values through raw cursors).
    """
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    text = moment.astimezone(UTC).replace(tzinfo=None).isoformat()
    return text + suffix


# The field types of a moment in the API's schemas: a datetime, written by utc_iso.
# A run's (and an evaluation's) ends in +00:00 and is documented as a date-time; a
# trace's and a dataset's end in Z and are documented, as they always were, as strings.
RunMoment = Annotated[
    datetime,
    PlainSerializer(lambda moment: utc_iso(moment, suffix="+00:00"), return_type=str),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]
ZuluMoment = Annotated[
    datetime,
    PlainSerializer(lambda moment: utc_iso(moment), return_type=str),
    WithJsonSchema({"type": "string"}),
]
