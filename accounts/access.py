"""Who is asking, and may they: access control of the JSON API and /metrics.

docs/decisions.md#accounts. Identity, in order:

1. `Authorization: Bearer <secret>`: the token's user. A bad or revoked token,
   or one of an inactive or deleted user, is a 401 even if a session exists.
2. The browser session's user. An unsafe method then needs a valid CSRF token
   (403 without), so that another site cannot act with the user's cookie.
3. Nobody: what TUNIX_ANONYMOUS_ACCESS allows (`read`: the viewer's
   permissions, `write`: the launcher's), else a 401.

Then the operation's permission: 403 when the user lacks it. Both checks run
before any handler, so neither answer says whether the resource exists.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.http import HttpRequest, HttpResponse
from ninja.security.base import AuthBase
from ninja.utils import check_csrf

from accounts.roles import READ_PERMISSIONS, WRITE_PERMISSIONS
from accounts.services import token_user
from tunix_registry.rendering import json_response

# The methods that change nothing (as Django's CSRF check counts them).
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
# The value of a 401's WWW-Authenticate header.
CHALLENGE = 'Bearer realm="tunix-registry"'


class AccessDenied(Exception):
    """A 401 (no usable credentials) or a 403 (no permission), with its detail."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def access_denied_response(exc: AccessDenied) -> HttpResponse:
    """The JSON answer to `exc`; a 401 names the scheme to authenticate with."""
    response = json_response({"detail": exc.detail}, exc.status)
    if exc.status == 401:
        response["WWW-Authenticate"] = CHALLENGE
    return response


def _from_another_site(request: HttpRequest) -> bool:
    """True when a browser says this request comes from a page of another site.

    Without credentials there is no CSRF token to check, yet a page elsewhere
    can still send a bodiless POST (`fetch(..., {mode: "no-cors"})`) to a server
    open to anonymous writes. Browsers name the sender (`Sec-Fetch-Site`,
    `Origin`); scripts and curl send neither, so API clients are unaffected.
    """
    if request.headers.get("Sec-Fetch-Site", "").lower() in ("cross-site", "same-site"):
        return True
    origin = request.headers.get("Origin")
    if origin is None:
        return False
    own = f"{request.scheme}://{request.get_host()}"
    return origin != own and origin not in settings.CSRF_TRUSTED_ORIGINS


def anonymous_permissions() -> frozenset[str]:
    mode = settings.TUNIX_ANONYMOUS_ACCESS
    if mode == "write":
        return READ_PERMISSIONS | WRITE_PERMISSIONS
    if mode == "read":
        return READ_PERMISSIONS
    return frozenset()


def identify(request: HttpRequest) -> Any:
    """The user making `request` (AnonymousUser when nobody); AccessDenied(401) if unusable."""
    header = request.headers.get("Authorization")
    if header is not None:
        scheme, _, secret = header.partition(" ")
        user = None
        if scheme.lower() == "bearer":
            user = token_user(secret.strip())
        if user is None:
            raise AccessDenied(401, "Invalid or revoked token")
        return user
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated:
        if request.method not in SAFE_METHODS and check_csrf(request) is not None:
            raise AccessDenied(403, "CSRF check failed")
        return user
    return AnonymousUser()


def require(request: HttpRequest, permission: str) -> Any:
    """The user making `request` if they hold `permission`; else AccessDenied (401 or 403)."""
    user = identify(request)
    if user.is_authenticated:
        if not user.has_perm(permission):
            raise AccessDenied(403, "Permission denied")
        return user
    if permission in anonymous_permissions():
        if request.method not in SAFE_METHODS and _from_another_site(request):
            raise AccessDenied(403, "Cross-site request refused")
        return user
    raise AccessDenied(401, "Authentication required")


def acting_user(request: HttpRequest) -> Any | None:
    """Who acts in this API request (None for an anonymous client)."""
    user = getattr(request, "auth", None)
    if user is None:
        user = getattr(request, "user", None)
    return user if user is not None and user.is_authenticated else None


class Access(AuthBase):
    """The ninja auth of an operation that needs `permission`.

    Answers as a bearer scheme in the OpenAPI document; a browser session is
    accepted as well (see the module docstring).
    """

    openapi_type = "http"
    openapi_scheme = "bearer"

    def __init__(self, permission: str) -> None:
        self.permission = permission
        super().__init__()

    def __call__(self, request: HttpRequest) -> Any:
        # A truthy result: AnonymousUser is an object, so anonymous access passes on.
        return require(request, self.permission)
