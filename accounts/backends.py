"""Django's model backend with a user's permissions read in one query."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.models import Permission
from django.db.models import Q


class RoleBackend(ModelBackend):
    """ModelBackend whose permission set comes from a single query.

    Django's own backend reads a user's direct permissions and their groups'
    permissions in two queries; every API request checks one permission, so
    this joins both. The set is kept on the user object, which a token's user
    carries from accounts.services.token_user's cache.
    """

    def get_all_permissions(self, user_obj: Any, obj: Any = None) -> set[str]:
        if not user_obj.is_active or user_obj.is_anonymous or obj is not None:
            return set()
        if not hasattr(user_obj, "_perm_cache"):
            if user_obj.is_superuser:
                rows = Permission.objects.all()
            else:
                rows = Permission.objects.filter(Q(user=user_obj) | Q(group__user=user_obj))
            user_obj._perm_cache = {
                f"{app}.{codename}"
                for app, codename in rows.values_list("content_type__app_label", "codename")
            }
        return set(user_obj._perm_cache)
