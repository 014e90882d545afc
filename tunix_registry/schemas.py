"""Response shapes every app of the API shares (docs/decisions.md#api-errors)."""

from __future__ import annotations

from ninja import Schema


class ValidationErrorItem(Schema):
    """One thing wrong with a request: `loc` is `["body", <field>, ...]`,
    `["query", <param>]` or `["path", <param>]`."""

    type: str
    loc: list[str | int]
    msg: str


class ErrorOut(Schema):
    """The body of every error under /api/: a message, or the list of what failed validation."""

    detail: str | list[ValidationErrorItem]
