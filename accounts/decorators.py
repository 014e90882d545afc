"""Permission checks for page views (docs/decisions.md#accounts).

A page action that writes needs its permission; a user without it gets
Django's 403 page (templates/403.html), whether they open the form or post it.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

from django.contrib.auth.decorators import permission_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest

from accounts.access import SAFE_METHODS

View = TypeVar("View", bound=Callable[..., Any])


def action_permission(permission: str) -> Callable[[View], View]:
    """The whole view is an action (its form page and its POST): 403 without `permission`."""
    return permission_required(permission, raise_exception=True)


def require_permission(request: HttpRequest, permission: str) -> None:
    """Raise PermissionDenied (the 403 page) unless the request's user has `permission`."""
    if not request.user.has_perm(permission):
        raise PermissionDenied


def write_permission(permission: str) -> Callable[[View], View]:
    """Reads of the view for everyone who may see the page; writes (POST...) need `permission`."""

    def decorator(view: View) -> View:
        @wraps(view)
        def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
            if request.method not in SAFE_METHODS:
                require_permission(request, permission)
            return view(request, *args, **kwargs)

        return wrapped  # type: ignore[return-value]

    return decorator
