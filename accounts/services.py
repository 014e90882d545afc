"""Writes of accounts: users with a role, and API tokens (docs/decisions.md#api-tokens)."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.db import transaction
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone

from accounts.models import ApiToken
from accounts.roles import assign_role

TOKEN_PREFIX = "tnx_"  # noqa: S105 (a marker, not a secret)
_PREFIX_SHOWN = 12


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
    if changed:
        token.revoked_at = now
    return bool(changed)


def token_user(secret: str, *, permission: str | None = None) -> Any | None:
    """The active user a live token belongs to, or None; notes when the token was used.

    One indexed lookup by digest, the user joined in; with `permission`, the
    same query also answers whether the user holds it (through a group or
    directly), and the answer is kept on the user, so that `has_perm` of that
    permission asks nothing more (accounts.backends.RoleBackend). The
    last-used time is written at most once per TUNIX_TOKEN_TOUCH_SECONDS, so
    that reads stay reads.
    """
    if not secret.startswith(TOKEN_PREFIX) or len(secret) > 200:
        return None
    tokens = ApiToken.objects.select_related("user").filter(
        digest=token_digest(secret), revoked_at__isnull=True
    )
    if permission is not None:
        app_label, codename = permission.split(".", 1)
        held = Permission.objects.filter(
            Q(user=OuterRef("user_id")) | Q(group__user=OuterRef("user_id")),
            content_type__app_label=app_label,
            codename=codename,
        )
        tokens = tokens.annotate(holds_permission=Exists(held))
    token = tokens.first()
    if token is None or not token.user.is_active:
        return None
    user = token.user
    if permission is not None:
        user._known_permissions = {permission: token.holds_permission}  # type: ignore[attr-defined]
    now = timezone.now()
    touch = timedelta(seconds=settings.TUNIX_TOKEN_TOUCH_SECONDS)
    if token.last_used_at is None or now - token.last_used_at >= touch:
        ApiToken.objects.filter(pk=token.pk).filter(
            Q(last_used_at__isnull=True) | Q(last_used_at__lt=now - touch)
        ).update(last_used_at=now)
    return user
