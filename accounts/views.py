"""The signed-in user's own page: their role and their API tokens.

Anyone signed in (a viewer too) creates and revokes tokens for themselves: a
token acts with its user's role, no more. A new token's secret is shown once,
in the answer to the POST that created it (never in a URL or the session, and
not cached); afterwards only its prefix identifies it. Tokens of other users
are managed in the admin.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib import messages
from django.db import IntegrityError, transaction
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.cache import add_never_cache_headers
from django.views.decorators.http import require_GET, require_POST

from accounts import selectors, services
from accounts.forms import TokenCreateForm
from accounts.roles import role_of

PROFILE_TEMPLATE = "accounts/profile.html"


def _render_profile(
    request: HttpRequest, *, form: TokenCreateForm, status: int = 200, **context: Any
) -> HttpResponse:
    context.update(
        {
            "role": role_of(request.user),
            "tokens": selectors.user_tokens(request.user),
            "form": form,
        }
    )
    return render(request, PROFILE_TEMPLATE, context, status=status)


@require_GET
def profile(request: HttpRequest) -> HttpResponse:
    return _render_profile(request, form=TokenCreateForm(user=request.user))


@require_POST
def token_create(request: HttpRequest) -> HttpResponse:
    """Issue a token and show its secret, once, in this answer."""
    form = TokenCreateForm(request.POST, user=request.user)
    issued = None
    if form.is_valid():
        try:
            with transaction.atomic():
                issued = services.token_issue(request.user, form.cleaned_data["name"])
        except IntegrityError:
            # The same name was taken by a concurrent request since the form checked it.
            form.add_error("name", "You already have a live token with this name.")
    if issued is None:
        return _render_profile(request, form=form, status=422)
    response = _render_profile(
        request, form=TokenCreateForm(user=request.user), issued=issued, status=201
    )
    add_never_cache_headers(response)
    return response


@require_POST
def token_revoke(request: HttpRequest, token_id: int) -> HttpResponse:
    """Revoke one of the user's own tokens (another user's token is a 404)."""
    token = selectors.user_tokens(request.user).filter(pk=token_id).first()
    if token is None:
        raise Http404("You have no token with this id")
    if services.token_revoke(token):
        messages.success(
            request,
            f"Token “{token.name}” revoked: servers refuse it within "
            f"{settings.TUNIX_TOKEN_CACHE_SECONDS} s.",
        )
    else:
        messages.info(request, f"Token “{token.name}” was already revoked.")
    return redirect("accounts:profile")
