"""The three roles, as Django groups with Django permissions (docs/decisions.md#accounts).

- viewer: reads everything;
- launcher: also creates traces and scores, builds datasets, launches and cancels runs;
- admin: the admin group, and a staff superuser (the admin site, users and tokens).
"""

from __future__ import annotations

from typing import Any

from django.apps import apps
from django.contrib.auth.models import Group, Permission
from django.db import transaction
from django.db.models import Q

VIEW_TRACES = "traces.view_trace"
VIEW_DATASETS = "datasets.view_dataset"
VIEW_RUNS = "runs.view_tunixrun"
ADD_TRACES = "traces.add_trace"
BUILD_DATASETS = "datasets.add_dataset"
LAUNCH_RUNS = "runs.add_tunixrun"
CANCEL_RUNS = "runs.cancel_tunixrun"

VIEWER = "viewer"
LAUNCHER = "launcher"
ADMIN = "admin"
ROLES = (VIEWER, LAUNCHER, ADMIN)

READ_PERMISSIONS = frozenset({VIEW_TRACES, VIEW_DATASETS, VIEW_RUNS})
WRITE_PERMISSIONS = frozenset({ADD_TRACES, BUILD_DATASETS, LAUNCH_RUNS, CANCEL_RUNS})

ROLE_PERMISSIONS: dict[str, frozenset[str]] = {
    VIEWER: READ_PERMISSIONS,
    LAUNCHER: READ_PERMISSIONS | WRITE_PERMISSIONS,
    ADMIN: READ_PERMISSIONS | WRITE_PERMISSIONS,
}


def _permissions(names: frozenset[str]) -> list[Permission]:
    query = Q()
    for name in names:
        app_label, codename = name.split(".", 1)
        query |= Q(content_type__app_label=app_label, codename=codename)
    found = list(Permission.objects.filter(query).select_related("content_type"))
    missing = names - {f"{p.content_type.app_label}.{p.codename}" for p in found}
    if missing:
        raise LookupError(f"permissions not in the database: {', '.join(sorted(missing))}")
    return found


def ensure_roles() -> dict[str, Group]:
    """Create the role groups and set exactly their permissions (idempotent)."""
    groups = {}
    with transaction.atomic():
        for role, names in ROLE_PERMISSIONS.items():
            group, _ = Group.objects.get_or_create(name=role)
            group.permissions.set(_permissions(names))
            groups[role] = group
    return groups


def ensure_roles_after_migrate(sender: Any, *, app_config: Any, **kwargs: Any) -> None:
    # post_migrate is sent once per installed app, in order, each after its
    # permissions were created: after the last app's, every permission exists.
    if app_config is list(apps.get_app_configs())[-1]:
        ensure_roles()


def assign_role(user: Any, role: str) -> None:
    """Make `role` the user's one role: its group, and staff/superuser for admin only."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    groups = ensure_roles()
    with transaction.atomic():
        user.is_staff = user.is_superuser = role == ADMIN
        user.save(update_fields=["is_staff", "is_superuser"])
        user.groups.remove(*[g for name, g in groups.items() if name != role])
        user.groups.add(groups[role])


def role_of(user: Any) -> str | None:
    """The user's role: admin for a superuser, else the strongest role group."""
    if not user.is_authenticated:
        return None
    if getattr(user, "is_superuser", False):
        return ADMIN
    names = set(user.groups.values_list("name", flat=True))
    for role in (ADMIN, LAUNCHER, VIEWER):
        if role in names:
            return role
    return None
