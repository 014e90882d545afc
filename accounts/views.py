"""The signed-in user's own page: their role and their API tokens."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from accounts import selectors
from accounts.roles import role_of


def profile(request: HttpRequest) -> HttpResponse:
    context = {"role": role_of(request.user), "tokens": selectors.user_tokens(request.user)}
    return render(request, "accounts/profile.html", context)
