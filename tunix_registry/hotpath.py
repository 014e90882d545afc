"""A short way in for the four hottest reads of the JSON API.

`GET /api/traces`, `GET /api/traces/{id}`, `GET /api/tunix/runs` and
`GET /api/tunix/runs/{run_id}` are what clients poll. On this project's
2-core machine Django's request cycle alone (request object, nine middleware,
URL resolver, ninja's parameter parsing) costs more CPU than the query and the
JSON together, and caps any Django view near the throughput these reads must
reach (docs/benchmarks.md). `HotReads` wraps the WSGI application: a request
it recognises exactly is answered by the same body functions the ninja
endpoints call (`traces.api.trace_list_body`, `runs.api.run_list_body`, ...),
with the headers the middleware would have added; everything else, and
anything unusual about a recognised request (an unknown id, a value out of
range, a duplicated parameter, a host not in ALLOWED_HOSTS, a database error),
goes to Django untouched, so every error keeps its one implementation there.
`tests/test_hotpath.py` checks both answers are byte for byte the same.

Turn it off with `TUNIX_HOT_READS=false`.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Iterable
from urllib.parse import parse_qsl
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, DatabaseError, connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.http.request import split_domain_port, validate_host

from runs import api as runs_api
from runs.selectors import InvalidCursor
from traces import api as traces_api
from tunix_registry.pagination import DEFAULT_LIMIT, MAX_LIMIT, MAX_OFFSET

logger = logging.getLogger(__name__)

# (content type, body), or None to let Django answer.
Answer = tuple[str, bytes] | None

# The canonical form Django's <uuid> converter accepts (ninja uses it).
_UUID = "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
_TRACE = re.compile(f"/api/traces/({_UUID})")
_RUN = re.compile(f"/api/tunix/runs/({_UUID})")
_RUN_FILTERS = ("status", "dataset_key", "mode", "cursor")
_HOSTS_REMEMBERED = 64


def _query(environ: WSGIEnvironment, allowed: frozenset[str]) -> dict[str, str] | None:
    """The query string as a dict, or None if it has a key twice or one not in `allowed`."""
    raw = environ.get("QUERY_STRING", "")
    if not raw:
        return {}
    try:
        pairs = parse_qsl(raw, keep_blank_values=True, errors="strict")
    except (UnicodeDecodeError, ValueError):
        return None
    found = dict(pairs)
    if len(found) != len(pairs) or not found.keys() <= allowed:
        return None
    return found


def _number(params: dict[str, str], name: str, default: int, low: int, high: int) -> int | None:
    """A parameter that is plain decimal digits within [low, high], else None."""
    text = params.get(name)
    if text is None:
        return default
    if not (text.isascii() and text.isdigit() and len(text) <= 10):
        return None
    value = int(text)
    return value if low <= value <= high else None


def _page(environ: WSGIEnvironment, *filters: str) -> tuple[int, int, dict[str, str]] | None:
    """limit, offset and the other parameters of a list request, or None if any is unusual."""
    params = _query(environ, frozenset({"limit", "offset", *filters}))
    if params is None:
        return None
    limit = _number(params, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    offset = _number(params, "offset", 0, 0, MAX_OFFSET)
    if limit is None or offset is None:
        return None
    return limit, offset, params


def _trace_list(environ: WSGIEnvironment) -> Answer:
    page = _page(environ)
    if page is None:
        return None
    limit, offset, _ = page
    return traces_api.JSON, traces_api.trace_list_body(limit=limit, offset=offset)


def _trace_detail(environ: WSGIEnvironment, key: str) -> Answer:
    if environ.get("QUERY_STRING"):
        return None
    body = traces_api.trace_detail_body(trace_id=uuid.UUID(key))
    return None if body is None else (traces_api.JSON, body)


def _run_list(environ: WSGIEnvironment) -> Answer:
    page = _page(environ, *_RUN_FILTERS)
    if page is None:
        return None
    limit, offset, params = page
    filters = {name: params.get(name) or None for name in _RUN_FILTERS}
    try:
        body = runs_api.run_list_body(limit=limit, offset=offset, **filters)
    except InvalidCursor:
        return None
    return runs_api.JSON, body


def _run_detail(environ: WSGIEnvironment, key: str) -> Answer:
    if environ.get("QUERY_STRING"):
        return None
    body = runs_api.run_detail_body(run_id=uuid.UUID(key))
    return None if body is None else (runs_api.JSON, body)


def _route(environ: WSGIEnvironment) -> Answer:
    path = environ.get("PATH_INFO", "")
    if path == "/api/traces":
        return _trace_list(environ)
    if path == "/api/tunix/runs":
        return _run_list(environ)
    if match := _TRACE.fullmatch(path):
        return _trace_detail(environ, match.group(1))
    if match := _RUN.fullmatch(path):
        return _run_detail(environ, match.group(1))
    return None


def _middleware_headers() -> list[tuple[str, str]]:
    """What SecurityMiddleware and XFrameOptionsMiddleware add to a plain-HTTP API response."""
    headers: list[tuple[str, str]] = []
    if settings.SECURE_CONTENT_TYPE_NOSNIFF:
        headers.append(("X-Content-Type-Options", "nosniff"))
    policy = settings.SECURE_REFERRER_POLICY
    if policy:
        value = policy if isinstance(policy, str) else ",".join(policy)
        headers.append(("Referrer-Policy", value))
    if settings.SECURE_CROSS_ORIGIN_OPENER_POLICY:
        headers.append(("Cross-Origin-Opener-Policy", settings.SECURE_CROSS_ORIGIN_OPENER_POLICY))
    headers.append(("X-Frame-Options", settings.X_FRAME_OPTIONS.upper()))
    return headers


class HotReads:
    """WSGI middleware: answers the hot reads itself, passes every other request on."""

    def __init__(self, app: WSGIApplication) -> None:
        self.app = app
        self.headers = _middleware_headers()
        self.hosts: dict[str, bool] = {}
        # Requests whose answer depends on more than the method, path and query
        # (HTTPS redirects, HSTS, forwarded hosts) are left to Django entirely.
        self.enabled = not (
            settings.SECURE_SSL_REDIRECT
            or settings.SECURE_HSTS_SECONDS
            or settings.USE_X_FORWARDED_HOST
        )

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if self.enabled and environ.get("REQUEST_METHOD") == "GET" and self._host_allowed(environ):
            answer = self._answer(environ)
            if answer is not None:
                content_type, body = answer
                start_response(
                    "200 OK",
                    [
                        ("Content-Type", content_type),
                        *self.headers,
                        ("Content-Length", str(len(body))),
                    ],
                )
                return [body]
        return self.app(environ, start_response)

    def _host_allowed(self, environ: WSGIEnvironment) -> bool:
        """ALLOWED_HOSTS, as HttpRequest.get_host() checks it (a refusal is Django's 400)."""
        host = environ.get("HTTP_HOST")
        if not host:
            return False
        allowed = self.hosts.get(host)
        if allowed is None:
            domain, _ = split_domain_port(host)
            allowed = bool(domain) and validate_host(domain, settings.ALLOWED_HOSTS)
            if len(self.hosts) < _HOSTS_REMEMBERED:
                self.hosts[host] = allowed
        return allowed

    def _answer(self, environ: WSGIEnvironment) -> Answer:
        db = connections[DEFAULT_DB_ALIAS]
        if not _connection_ready(db):
            return None
        try:
            return _route(environ)
        except DatabaseError:
            # Drop the connection and let Django's request cycle, with its
            # health check and reconnect, answer this request.
            logger.warning("hot read failed; answering through Django", exc_info=True)
            if not db.in_atomic_block:
                db.close()
            return None
        except Exception:
            # Django answers it again, and reports whatever goes wrong its own way.
            logger.exception("hot read failed; answering through Django")
            return None
        finally:
            _close_if_obsolete(db)


# Django checks its connection at the start and end of every request it
# handles (signals request_started/finished): a connection past CONN_MAX_AGE
# is closed, one that saw an error is health-checked first. The hot path
# closes obsolete connections the same way, hands a connection in any other
# doubtful state to Django, and skips only the per-request health check (a
# round trip): on a database error it falls back to Django, which reconnects.


def _connection_ready(db: BaseDatabaseWrapper) -> bool:
    """False when Django's request cycle should look at the connection first."""
    if db.connection is None:
        return True
    if db.errors_occurred:
        return False
    if db.in_atomic_block:  # only ever inside a test's transaction
        return True
    if not db.autocommit:
        return False
    _close_if_obsolete(db)
    return True


def _close_if_obsolete(db: BaseDatabaseWrapper) -> None:
    if db.connection is None or db.in_atomic_block:
        return
    if db.close_at is not None and time.monotonic() >= db.close_at:
        db.close()


def hot_reads(app: WSGIApplication) -> WSGIApplication:
    """`app` behind HotReads, unless TUNIX_HOT_READS is off."""
    return HotReads(app) if settings.HOT_READS else app
