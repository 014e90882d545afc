"""Response shapes every app of the API shares (docs/decisions.md#api-errors)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class ApiModel(BaseModel):
    """The base of the API's request and response schemas.

    A plain pydantic model that reads objects by attribute and dicts by key
    (`from_attributes`), validated by pydantic-core alone. ninja's own `Schema`
    wraps every object it validates in a getter that resolves each field in
    Python (resolvers, related managers, callables), about 10 µs per object: a
    tenth of a batch create's time and of a list's. Only a schema with
    `resolve_*` methods derives from ninja's `Schema` instead.
    """

    model_config = ConfigDict(from_attributes=True)


class ValidationErrorItem(ApiModel):
    """One thing wrong with a request: `loc` is `["body", <field>, ...]`,
    `["query", <param>]` or `["path", <param>]`."""

    type: str
    loc: list[str | int]
    msg: str


class ErrorOut(ApiModel):
    """The body of every error under /api/: a message, or the list of what failed validation."""

    detail: str | list[ValidationErrorItem]
