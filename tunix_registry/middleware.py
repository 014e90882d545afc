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

`StaticPolicyCSPMiddleware` is django-csp's middleware with its header built
once per process instead of twice per response, since this project's policy
is the same for every response.

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
from functools import cache
from http import HTTPStatus
from typing import Any

from csp.constants import HEADER, HEADER_REPORT_ONLY
from csp.middleware import CheckableLazyObject, CSPMiddleware
from csp.utils import build_policy
from django.conf import settings
from django.contrib.messages.middleware import MessageMiddleware
from django.dispatch import receiver
from django.http import HttpRequest, HttpResponse, HttpResponseBase
from django.middleware.clickjacking import XFrameOptionsMiddleware
from django.test.signals import setting_changed
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


# What a view or decorator of django-csp leaves on a response or request to
# change the policy for it (csp.decorators, `request.csp_nonce`).
_PER_RESPONSE_POLICY = (
    "_csp_config", "_csp_update", "_csp_replace",
    "_csp_config_ro", "_csp_update_ro", "_csp_replace_ro",
)  # fmt: skip


# Each header django-csp writes: its settings and the attribute that exempts a response.
_POLICY_HEADERS = (
    (HEADER, "CONTENT_SECURITY_POLICY", "_csp_exempt"),
    (HEADER_REPORT_ONLY, "CONTENT_SECURITY_POLICY_REPORT_ONLY", "_csp_exempt_ro"),
)


@cache
def _static_policies() -> tuple[tuple[str, tuple[str, ...]], ...]:
    """Per entry of _POLICY_HEADERS: its header value and the URL prefixes it leaves out."""
    return tuple(
        (
            build_policy(report_only=header == HEADER_REPORT_ONLY),
            tuple((getattr(settings, setting, None) or {}).get("EXCLUDE_URL_PREFIXES") or ()),
        )
        for header, setting, _ in _POLICY_HEADERS
    )


@receiver(setting_changed)
def _forget_policies(*, setting: str, **_: Any) -> None:
    if setting.startswith("CONTENT_SECURITY_POLICY"):
        _static_policies.cache_clear()


class StaticPolicyCSPMiddleware(CSPMiddleware):
    """django-csp's middleware with the settings' policy built once, not per response.

    Building the header from the settings costs about 0.15 ms, twice per response
    (the policy and its report-only twin): a fifth of a cheap API answer such as a
    304. A response whose view changed its policy, or a request that used a
    nonce, is handled by django-csp itself, exactly as before.
    """

    def process_response(
        self, request: HttpRequest, response: HttpResponseBase
    ) -> HttpResponseBase:
        if (
            settings.DEBUG
            or getattr(request, "_csp_nonce", None) is not None
            or any(hasattr(response, name) for name in _PER_RESPONSE_POLICY)
        ):
            return super().process_response(request, response)
        path = request.path_info
        for (header, _, exempt), (value, prefixes) in zip(
            _POLICY_HEADERS, _static_policies(), strict=True
        ):
            if (
                value
                and header not in response
                and not getattr(response, exempt, False)
                and not path.startswith(prefixes)
            ):
                response[header] = value
        # As django-csp does: a nonce asked for after the header is written is an error.
        request.csp_nonce = CheckableLazyObject(self._csp_nonce_post_response)  # type: ignore[attr-defined]
        return response
