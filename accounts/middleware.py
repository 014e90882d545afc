"""Pages need a signed-in user (docs/decisions.md#accounts)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.contrib.auth.middleware import LoginRequiredMiddleware
from django.http import HttpRequest, HttpResponseBase

# These answer for themselves: the API and /metrics with a JSON 401/403
# (accounts.access), static files are public.
_OWN_ACCESS = ("/api/", "/metrics")


class LoginRequiredOutsideApiMiddleware(LoginRequiredMiddleware):
    """Django's LoginRequiredMiddleware for every page; views opt out with
    `login_not_required` (the login page does)."""

    def process_view(
        self,
        request: HttpRequest,
        view_func: Callable[..., Any],
        view_args: tuple[Any, ...],
        view_kwargs: dict[str, Any],
    ) -> HttpResponseBase | None:
        path = request.path_info
        if path.startswith(_OWN_ACCESS) or path.startswith("/" + settings.STATIC_URL.lstrip("/")):
            return None
        return super().process_view(request, view_func, view_args, view_kwargs)
