"""Middleware for the API's URL space (/api/) and lean request handling there.

`ApiMiddleware` (first in settings.MIDDLEWARE) makes three promises for every
request under /api/, whatever answers it:

- a body larger than DATA_UPLOAD_MAX_MEMORY_SIZE is a JSON 413, refused from
  its Content-Length before anything reads it;
- a chunked body (Transfer-Encoding: chunked, no Content-Length) is read here
  once, bounded by the same limit, and handed on as an ordinary body with its
  length, so every endpoint, and each endpoint's own smaller limit, sees it
  (Django alone would read such a body as empty);
- an error answered by Django rather than by the API (an unknown path, a
  method the path does not allow, an exception outside a handler) is JSON
  `{"detail": ...}` too, never an HTML page.

The other classes are Django's own middleware that /api/ does not need,
skipped for it (subclasses, so that checks such as the admin's still find
them): the API keeps sessions, authentication and CSRF for browser sessions,
and drops flash messages, the X-Frame-Options header (JSON is never framed)
and htmx details: about 11 µs of Django's own code per request, measured in
isolation (the messages middleware alone is 9 µs), for 2 µs of skipping.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from django.conf import settings
from django.contrib.messages.middleware import MessageMiddleware
from django.http import HttpRequest, HttpResponse, HttpResponseBase
from django.middleware.clickjacking import XFrameOptionsMiddleware
from django_htmx.middleware import HtmxMiddleware

from accounts.access import SAFE_METHODS
from tunix_registry.rendering import json_response

API_PREFIX = "/api/"
_READ_CHUNK = 64 * 1024

logger = logging.getLogger(__name__)


def is_api(request: HttpRequest) -> bool:
    return request.path_info.startswith(API_PREFIX)


def too_large(limit: int) -> HttpResponse:
    return json_response({"detail": f"Payload size exceeds maximum of {limit} bytes"}, 413)


class ApiMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        if not is_api(request):
            return self.get_response(request)
        response = (
            self._media_type_refused(request)
            or self._read_body(request)
            or self.get_response(request)
        )
        return self._as_json(response)

    def _media_type_refused(self, request: HttpRequest) -> HttpResponse | None:
        """A 415 unless a request that can change state sends JSON, or no body at all.

        A web page on another site can send a form (urlencoded, multipart or
        text/plain) to any address without asking first, but not JSON: refusing
        everything else closes that path before authentication is even tried
        (docs/decisions.md#accounts).
        """
        if request.method in SAFE_METHODS:
            return None
        content_type = request.META.get("CONTENT_TYPE", "")
        media_type = content_type.split(";", 1)[0].strip().lower()
        if media_type == "application/json" or (
            media_type.startswith("application/") and media_type.endswith("+json")
        ):
            return None
        if not media_type:
            length = (request.META.get("CONTENT_LENGTH") or "").strip()
            chunked = "chunked" in request.META.get("HTTP_TRANSFER_ENCODING", "").lower()
            if not chunked and length in ("", "0"):
                return None
        return json_response(
            {"detail": "Unsupported media type: request bodies must be application/json"}, 415
        )

    def _read_body(self, request: HttpRequest) -> HttpResponse | None:
        """Refuse an oversized body, or materialise a chunked one; None to go on."""
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        raw_length = (request.META.get("CONTENT_LENGTH") or "").strip()
        if raw_length:
            try:
                length = int(raw_length)
            except ValueError:
                length = -1
            if length < 0:
                return json_response({"detail": "Invalid Content-Length header"}, 400)
            if limit is not None and length > limit:
                return too_large(limit)
            return None
        if "chunked" not in request.META.get("HTTP_TRANSFER_ENCODING", "").lower():
            return None
        stream = request.META["wsgi.input"]
        parts: list[bytes] = []
        size = 0
        while limit is None or size <= limit:
            want = _READ_CHUNK if limit is None else min(_READ_CHUNK, limit + 1 - size)
            chunk = stream.read(want)
            if not chunk:
                break
            parts.append(chunk)
            size += len(chunk)
        if limit is not None and size > limit:
            return too_large(limit)
        body = b"".join(parts)
        # From here on the request is an ordinary one with a known length.
        request._body = body
        request._stream = io.BytesIO(body)
        request.META["CONTENT_LENGTH"] = str(len(body))
        return None

    def _as_json(self, response: HttpResponseBase) -> HttpResponseBase:
        if response.status_code < 400 or response.get("Content-Type", "").startswith(
            "application/json"
        ):
            return response
        try:
            reason = HTTPStatus(response.status_code).phrase
        except ValueError:
            reason = "Error"
        replaced = json_response({"detail": reason}, response.status_code)
        for header in ("Allow", "Retry-After"):
            if header in response:
                replaced[header] = response[header]
        return replaced


class MessageOutsideApiMiddleware(MessageMiddleware):
    """Django's flash messages, for pages only."""

    def process_request(self, request: HttpRequest) -> None:
        if not is_api(request):
            super().process_request(request)

    def process_response(self, request: HttpRequest, response: HttpResponse) -> HttpResponse:
        if is_api(request):
            return response
        return super().process_response(request, response)


class XFrameOptionsOutsideApiMiddleware(XFrameOptionsMiddleware):
    """X-Frame-Options: DENY on pages; JSON is never rendered in a frame."""

    def process_response(self, request: HttpRequest, response: HttpResponse) -> HttpResponse:
        if is_api(request):
            return response
        return super().process_response(request, response)


class HtmxOutsideApiMiddleware(HtmxMiddleware):
    """`request.htmx` on pages; the API never serves htmx fragments."""

    def __call__(self, request: HttpRequest) -> Any:
        if is_api(request):
            return self.get_response(request)
        return super().__call__(request)
