"""Checking real API bodies against the schemas the OpenAPI document declares for them.

A small validator for the subset of JSON Schema the API's schemas use ($ref,
anyOf/oneOf, type, properties/required, items), so that every endpoint's
tests can show that what it answers is what it documents.
"""

from __future__ import annotations

from typing import Any

_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "null": (type(None),),
}


def schema_errors(
    value: Any, schema: dict[str, Any], components: dict[str, Any], at: str
) -> list[str]:
    """What in `value` the JSON schema `schema` refuses (the subset the API's schemas use)."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[1]
        return schema_errors(value, components[name], components, at)
    for key in ("anyOf", "oneOf"):
        if key in schema:
            options = [schema_errors(value, option, components, at) for option in schema[key]]
            return [] if any(not found for found in options) else [f"{at}: no {key} option fits"]
    found: list[str] = []
    kind = schema.get("type")
    if kind is not None:
        allowed = _TYPES[kind]
        if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):
            return [f"{at}: {value!r} is not {kind}"]
    if isinstance(value, dict) and "properties" in schema:
        properties = schema["properties"]
        found += [
            f"{at}.{name}: missing" for name in schema.get("required", []) if name not in value
        ]
        if schema.get("additionalProperties") is False or kind == "object":
            found += [f"{at}.{name}: not declared" for name in value if name not in properties]
        for name, item in value.items():
            if name in properties:
                found += schema_errors(item, properties[name], components, f"{at}.{name}")
    if isinstance(value, list) and "items" in schema:
        for n, item in enumerate(value):
            found += schema_errors(item, schema["items"], components, f"{at}[{n}]")
    return found


def assert_fits(openapi: dict[str, Any], path: str, method: str, response: Any) -> None:
    declared = openapi["paths"][path][method]["responses"][str(response.status_code)]
    schema = declared["content"]["application/json"]["schema"]
    body = response.json()
    assert schema_errors(body, schema, openapi["components"]["schemas"], "body") == [], body
