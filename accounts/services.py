"""Writes of accounts: users with a role, and API tokens (docs/decisions.md#api-tokens)."""

from __future__ import annotations

import functools
import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.cache import caches
from django.db import DEFAULT_DB_ALIAS, transaction
from django.db.models import Q
from django.utils import timezone

from accounts.models import ApiToken
from accounts.roles import assign_role

TOKEN_PREFIX = "tnx_"  # noqa: S105 (a marker, not a secret)
_PREFIX_SHOWN = 12
# The cache (settings.CACHES) of tokens looked up: local to each process.
TOKEN_CACHE = "tokens"  # noqa: S105 (a cache alias, not a secret)


class _FoundToken(NamedTuple):
    """What a lookup found, as plain values: cheap to copy in and out of the cache."""

    token_id: int
    last_used_at: datetime | None
    # The user's concrete field values, in the order _user_model() names them.
    user_row: tuple[Any, ...]
    permissions: frozenset[str]

    def user(self) -> Any:
        """A new user object for one request, its permission set already known."""
        model, fields = _user_model()
        user = model.from_db(DEFAULT_DB_ALIAS, fields, self.user_row)
        user._perm_cache = set(self.permissions)
        return user


@functools.cache
def _user_model() -> tuple[Any, tuple[str, ...]]:
    """The user model and the names of its concrete fields (fixed once apps are loaded)."""
    model = get_user_model()
    return model, tuple(field.attname for field in model._meta.concrete_fields)


def token_digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True)
class IssuedToken:
    token: ApiToken
    # The plain secret: shown once, never stored.
    secret: str


def user_create(username: str, *, password: str | None, role: str, email: str = "") -> Any:
    """A new user with `role`; without a password the account cannot sign in on pages."""
    user_model = get_user_model()
    with transaction.atomic():
        user = user_model.objects.create_user(username=username, email=email, password=password)
        assign_role(user, role)
    return user


def token_issue(user: Any, name: str) -> IssuedToken:
    """A new live token for `user` named `name` (unique among the user's live tokens)."""
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken.objects.create(
        user=user, name=name, digest=token_digest(secret), prefix=secret[:_PREFIX_SHOWN]
    )
    return IssuedToken(token=token, secret=secret)


def token_revoke(token: ApiToken) -> bool:
    """Revoke a live token; False when it was revoked already."""
    now = timezone.now()
    changed = ApiToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(revoked_at=now)
    caches[TOKEN_CACHE].delete(token.digest)
    if changed:
        token.revoked_at = now
    return bool(changed)


def token_user(secret: str) -> Any | None:
    """The active user a live token belongs to, or None; notes when the token was used.

    One indexed lookup by digest with the user joined in, then the user's
    permissions in one more query (accounts.backends.RoleBackend), so that
    every `has_perm` of the request is answered from memory. What was found is
    kept in this process for TUNIX_TOKEN_CACHE_SECONDS and then looked up again
    (docs/decisions.md#api-tokens); a revocation or a change of users, groups or
    permissions made in this process forgets it at once. The last-used time is
    written at most once per TUNIX_TOKEN_TOUCH_SECONDS, so that reads stay reads.
    """
    if not secret.startswith(TOKEN_PREFIX) or len(secret) > 200:
        return None
    digest = token_digest(secret)
    lifetime = settings.TUNIX_TOKEN_CACHE_SECONDS
    cache = caches[TOKEN_CACHE]
    found: _FoundToken | None = cache.get(digest) if lifetime else None
    # Whether the cache must be told what was found: a new lookup, or a new last use.
    changed = found is None
    if found is None:
        token = (
            ApiToken.objects.select_related("user")
            .filter(digest=digest, revoked_at__isnull=True)
            .first()
        )
        if token is None or not token.user.is_active:
            return None
        user = token.user
        found = _FoundToken(
            token.pk,
            token.last_used_at,
            tuple(getattr(user, name) for name in _user_model()[1]),
            # In one query (accounts.backends.RoleBackend).
            frozenset(user.get_all_permissions()),
        )
    now = timezone.now()
    touch = timedelta(seconds=settings.TUNIX_TOKEN_TOUCH_SECONDS)
    if found.last_used_at is None or now - found.last_used_at >= touch:
        ApiToken.objects.filter(pk=found.token_id).filter(
            Q(last_used_at__isnull=True) | Q(last_used_at__lt=now - touch)
        ).update(last_used_at=now)
        found = found._replace(last_used_at=now)
        changed = True
    if changed and lifetime:
        cache.set(digest, found, lifetime)
    return found.user()


def tokens_forget(**_: Any) -> None:
    """Forget every token this process has looked up (a signal receiver as well)."""
    caches[TOKEN_CACHE].clear()
