"""Field types shared by every request schema of the API and by the forms.

PostgreSQL cannot store U+0000 in text or jsonb, so a NUL character anywhere in
a request would fail inside the database (a 500) after work had started. Every
string a client sends is declared with one of the types below instead of a bare
`str`: validation refuses the NUL with a 422 naming the field, before any
service runs, and the OpenAPI schema says so (`pattern`).

- `Text`: a string without NUL. Add lengths with `Annotated[Text, Field(...)]`.
- `JsonObject`: a free-form JSON object (filters, trace `meta`) whose keys and
  nested strings carry no NUL and whose numbers are finite.
- `Flag`, `Integer` and `Number`: a JSON boolean, integer or number and nothing
  else: `false` is not an integer, `0` is not a boolean, `"1"` is not a number.
- `documented(...)`: a schema that only documents what a handler enforces itself
  (query ranges answered with their own messages, dataset keys).
- `Queue`: the `queue` of a launch or an evaluation, null or one of TUNIX_QUEUES.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Union

from django.conf import settings
from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    GetJsonSchemaHandler,
    StrictBool,
    StrictFloat,
    TypeAdapter,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, PydanticCustomError
from typing_extensions import TypeAliasType

from tunix_registry.pagination import MAX_LIMIT, MAX_OFFSET

NO_NUL_PATTERN = r"^[^\x00]*$"
NO_NUL_MESSAGE = "must not contain NUL (U+0000) characters"
# A dataset key: letters, digits, "_", "." and "-", never two dots in a row.
DATASET_KEY_PATTERN = r"^(\.?[A-Za-z0-9_-])*\.?$"
# A dataset name or version: the same, plus the spaces and "/" that become "_" in its key.
DATASET_PART_PATTERN = r"^(\.?[A-Za-z0-9_ /-])*\.?$"


def text_check(value: str) -> str:
    """`value` unchanged, or ValueError when it holds a NUL character (for non-pydantic callers)."""
    if "\x00" in value:
        raise ValueError(NO_NUL_MESSAGE)
    return value


# The pattern is a native pydantic constraint: it combines with min/max lengths
# and is published in the JSON schema as is. The API words its error as
# NO_NUL_MESSAGE (tunix_registry.api).
Text = Annotated[str, Field(pattern=NO_NUL_PATTERN)]


def _not_bool_or_text(value: Any) -> Any:
    if isinstance(value, bool | str | bytes):
        raise PydanticCustomError("int_type", "Input should be a valid integer")
    return value


Flag = StrictBool
# JSON Schema counts 3.0 as an integer, so it is one here too; `true` and "3" are not.
# Bounds added after the validator reach pydantic's JSON schema under their
# pydantic names, `ge`; tunix_registry.api spells them `minimum` in the document.
Integer = Annotated[int, BeforeValidator(_not_bool_or_text)]
Number = StrictFloat  # an integer is a number too; a boolean or a string is not

_JsonFloat = Annotated[float, Field(allow_inf_nan=False)]


class _JsonDict:
    """JSON schema of an object whose keys are `Text`: `propertyNames` (not patternProperties)."""

    def __get_pydantic_json_schema__(
        self, schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        json_schema = handler(schema)
        patterns = json_schema.pop("patternProperties", {})
        for pattern, value in patterns.items():
            json_schema["propertyNames"] = {"pattern": pattern}
            json_schema["additionalProperties"] = value
        return json_schema


# Documents a JSON value whose strings (keys included) carry no NUL and whose
# numbers are finite. Recursive: the OpenAPI document holds it once, as the
# component "JsonValue".
JsonValue = TypeAliasType(  # type: ignore[misc]
    "JsonValue",
    Union[  # noqa: UP007 (a recursive alias needs the Union spelling)
        Text,
        bool,
        int,
        _JsonFloat,
        list["JsonValue"],  # type: ignore[misc]
        Annotated[dict[Text, "JsonValue"], _JsonDict()],  # type: ignore[misc]
        None,
    ],
)
_JSON_OBJECT_CORE = TypeAdapter(Annotated[dict[Text, JsonValue], _JsonDict()]).core_schema
MAX_JSON_DEPTH = 64


def _json_walk(value: Any, where: str, depth: int) -> None:
    if depth > MAX_JSON_DEPTH:
        raise ValueError(f"{where} is nested too deeply (more than {MAX_JSON_DEPTH} levels)")
    if isinstance(value, str):
        if "\x00" in value:
            raise ValueError(f"{where} {NO_NUL_MESSAGE}")
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{where} must not be NaN or Infinity")
    elif isinstance(value, dict):
        for key, item in value.items():
            if "\x00" in key:
                raise ValueError(f"{where}: a key {NO_NUL_MESSAGE}")
            _json_walk(item, f"{where}.{key}", depth + 1)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _json_walk(item, f"{where}[{index}]", depth + 1)


def json_object_check(value: dict[str, Any]) -> dict[str, Any]:
    """`value` unchanged, or ValueError naming the first key path PostgreSQL cannot store."""
    for key, item in value.items():
        if "\x00" in key:
            raise ValueError(f"a key {NO_NUL_MESSAGE}")
        _json_walk(item, key, 1)
    return value


class _JsonObjectSchema:
    def __get_pydantic_json_schema__(
        self, schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return handler(_JSON_OBJECT_CORE)


JsonObject = Annotated[dict[str, Any], AfterValidator(json_object_check), _JsonObjectSchema()]


def documented(**json_schema: Any) -> Any:
    """Field metadata that documents a constraint in the OpenAPI schema without enforcing it.

    For values a handler checks itself with its own message (`limit`, `offset`,
    dataset keys): the schema then says exactly what the handler accepts.
    """
    return Field(json_schema_extra=json_schema)


# Pagination query parameters: checked by pagination.check_page with the
# original's string messages; the schema documents the same ranges.
PageLimit = Annotated[int, documented(minimum=1, maximum=MAX_LIMIT)]
PageOffset = Annotated[int, documented(minimum=0, maximum=MAX_OFFSET)]


# The OpenAPI schema of a `JsonObject`, for request bodies documented by hand
# (the API always publishes the "JsonValue" component it refers to).
JSON_VALUE_COMPONENT = TypeAdapter(JsonValue).json_schema(
    ref_template="#/components/schemas/{model}"
)["$defs"]["JsonValue"]
JSON_OBJECT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "propertyNames": {"pattern": NO_NUL_PATTERN},
    "additionalProperties": {"$ref": "#/components/schemas/JsonValue"},
}


def queue_unknown(queue: str) -> str:
    """What a request naming a queue outside TUNIX_QUEUES is told."""
    return f"Unknown queue {queue!r}; one of: {', '.join(settings.TUNIX_QUEUES)}"


def queue_check(queue: str | None) -> str | None:
    """`queue` unchanged when null or one of TUNIX_QUEUES; ValueError naming them otherwise."""
    if queue is not None and queue not in settings.TUNIX_QUEUES:
        raise ValueError(queue_unknown(queue))
    return queue


def _queue_enum(schema: dict[str, Any]) -> None:
    """Publish the configured queues as the `queue` field's enum (null stays allowed)."""
    for option in schema.get("anyOf", [schema]):
        if option.get("type") == "string":
            option["enum"] = list(settings.TUNIX_QUEUES)


# A worker queue (null: TUNIX_DEFAULT_QUEUE), checked against TUNIX_QUEUES when the
# request is validated (a 422 naming the field) and published as the string's enum.
Queue = Annotated[
    Text | None,
    Field(min_length=1, max_length=64, json_schema_extra=_queue_enum),
    AfterValidator(queue_check),
]
