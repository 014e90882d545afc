"""HTTP caching of the API's reads (docs/decisions.md#immutable-resources).

Two kinds of read, two rules:

- **Immutable resources** (a trace, a built dataset version, a finished run)
  never change once they exist, so their ETag is derived from their identity
  alone (`strong_etag("run", run_id, "final")`) and a conditional request can
  be answered before anything is read: `not_modified(request, etag,
  exists=...)` returns a 304 when `If-None-Match` names that ETag and the
  resource still exists (the only query: an existence check on the primary
  key, since a trace can be deleted); otherwise the handler reads as usual and
  `mark_immutable(response, etag)` puts the ETag and a long-lived, private
  `Cache-Control` on ninja's response.
- **Permanent resources** (a finished run: immutable and never deleted,
  docs/decisions.md#no-delete-patch-retry) get `permanent_etag(...)`, their
  identity signed with SECRET_KEY: only this server can have issued it, and it
  issues it only for the finished resource, so a request naming it proves the
  client holds the resource as it is for good, and `not_modified(request, etag,
  exists=None)` answers 304 without any query.
- **Everything else** (lists, live runs) is marked `mark_revalidate(response)`:
  `Cache-Control: no-cache`, so clients keep a copy but ask first.
  `django.middleware.http.ConditionalGetMiddleware` (in settings.MIDDLEWARE)
  gives such a response the ETag of its body and answers a matching
  `If-None-Match` with a 304, so a polling client downloads nothing when
  nothing changed.

In a ninja handler, declare a parameter `response: HttpResponse` to receive
the response ninja will send; headers set on it are kept.
"""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse, HttpResponseBase, HttpResponseNotModified
from django.utils.cache import patch_cache_control
from django.utils.crypto import salted_hmac
from django.utils.http import parse_etags, quote_etag

# Bumped whenever the representation of a resource changes, so that copies
# kept by clients and proxies under the old ETags are not served for the new form.
REPRESENTATION_VERSION = "2"
# A year: the longest lifetime RFC 9111 suggests for content that never changes.
IMMUTABLE_MAX_AGE = 365 * 24 * 3600


def strong_etag(*parts: object) -> str:
    """A strong ETag (quoted) naming one immutable representation, e.g. ("trace", id)."""
    return quote_etag(".".join([REPRESENTATION_VERSION, *(str(part) for part in parts)]))


_PERMANENT_SALT = "tunix_registry.http_cache.permanent_etag"


def permanent_etag(*parts: object) -> str:
    """A strong ETag for a resource that never changes and is never deleted, signed.

    The signature (HMAC-SHA256 with SECRET_KEY) makes it unforgeable, so that a
    match alone proves the resource exists (`not_modified(..., exists=None)`).
    A new SECRET_KEY only costs clients one full answer each.
    """
    identity = ".".join([REPRESENTATION_VERSION, *(str(part) for part in parts)])
    signature = salted_hmac(_PERMANENT_SALT, identity, algorithm="sha256").hexdigest()[:32]
    return quote_etag(f"{identity}.{signature}")


def _matches(request: HttpRequest, etag: str) -> bool:
    """Whether `If-None-Match` names `etag` (the weak comparison RFC 9110 asks for it)."""
    header = request.headers.get("If-None-Match")
    if not header:
        return False
    tags = parse_etags(header)
    if tags == ["*"]:
        return True
    bare = etag.removeprefix("W/")
    return any(tag.removeprefix("W/") == bare for tag in tags)


def mark_immutable(response: HttpResponseBase, etag: str) -> None:
    """The ETag and Cache-Control of a representation that never changes.

    `private`: the answer went to a client that authenticated, so only that
    client's own cache may keep it, never a shared one (a proxy or CDN would
    otherwise hand it to anyone: docs/decisions.md#accounts).
    """
    response.headers["ETag"] = etag
    patch_cache_control(response, private=True, max_age=IMMUTABLE_MAX_AGE, immutable=True)


def mark_revalidate(response: HttpResponseBase) -> None:
    """Clients may keep a copy but must revalidate it (ETag added by ConditionalGetMiddleware)."""
    patch_cache_control(response, no_cache=True)


def not_modified(
    request: HttpRequest, etag: str, *, exists: Callable[[], bool] | None
) -> HttpResponse | None:
    """A 304 for an immutable resource the client already has, or None to answer in full.

    `exists` is called only when `If-None-Match` matches; when it says the
    resource is gone, None lets the handler answer as it would (a 404). Pass
    None only with a `permanent_etag`, whose match is proof enough.
    """
    if request.method not in ("GET", "HEAD") or not _matches(request, etag):
        return None
    if exists is not None and not exists():
        return None
    response = HttpResponseNotModified()
    mark_immutable(response, etag)
    return response
