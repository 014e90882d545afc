"""The one JSON renderer of the API: one encoder, one content type.

The NinjaAPI renders every handler's return value and every error with
`ApiRenderer`; handlers that build their body themselves (to splice stored
JSON text or to skip a response-model pass on hot reads) encode with
`json_bytes` and answer with `json_response`/`raw_json_response`, so a client
sees the same bytes and the same `Content-Type` whichever path answered.
"""

from __future__ import annotations

import json
from typing import Any

from django.http import HttpRequest, HttpResponse
from ninja.renderers import JSONRenderer
from ninja.responses import NinjaJSONEncoder

CONTENT_TYPE = "application/json; charset=utf-8"
# Compact separators; non-ASCII escaped (\uXXXX) so that any string a client
# sent, lone surrogates included, can be echoed back in an error.
_DUMPS_PARAMS: dict[str, Any] = {"separators": (",", ":")}


def json_text(data: Any) -> str:
    """`data` as the API's JSON text (datetimes, UUIDs, Decimals as ninja encodes them)."""
    return json.dumps(data, cls=NinjaJSONEncoder, **_DUMPS_PARAMS)


def json_bytes(data: Any) -> bytes:
    return json_text(data).encode()


def raw_json_response(body: bytes | str, status: int = 200) -> HttpResponse:
    """A response whose body is already JSON text made with `json_bytes`/`json_text`."""
    return HttpResponse(body, status=status, content_type=CONTENT_TYPE)


def json_response(data: Any, status: int = 200) -> HttpResponse:
    return raw_json_response(json_bytes(data), status)


class ApiRenderer(JSONRenderer):
    media_type = "application/json"
    charset = "utf-8"
    json_dumps_params = _DUMPS_PARAMS

    def render(self, request: HttpRequest, data: Any, *, response_status: int) -> Any:
        return json_text(data)
