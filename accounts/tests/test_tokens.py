"""accounts.services (users, tokens), accounts.roles and accounts.backends on the real database."""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AnonymousUser, Group, Permission
from django.db import IntegrityError, connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accounts.models import ApiToken
from accounts.roles import (
    ADMIN,
    LAUNCHER,
    READ_PERMISSIONS,
    ROLE_PERMISSIONS,
    VIEW_TRACES,
    VIEWER,
    WRITE_PERMISSIONS,
    assign_role,
    ensure_roles,
    role_of,
)
from accounts.services import token_issue, token_revoke, token_user, user_create

pytestmark = pytest.mark.django_db

SECRET_SHAPE = re.compile(r"^tnx_[A-Za-z0-9_-]{43}$")


def group_permissions(name: str) -> set[str]:
    return {
        f"{app}.{codename}"
        for app, codename in Group.objects.get(name=name).permissions.values_list(
            "content_type__app_label", "codename"
        )
    }


# --- Tokens ------------------------------------------------------------------------------


def test_token_issue_stores_the_digest_and_prefix_never_the_secret(
    user_factory: Callable[..., Any],
) -> None:
    issued = token_issue(user_factory(), "ci")
    secret = issued.secret
    assert SECRET_SHAPE.match(secret)
    token = ApiToken.objects.get(pk=issued.token.pk)
    assert token.digest == hashlib.sha256(secret.encode()).hexdigest()
    assert token.prefix == secret[:12]
    assert (token.name, token.revoked_at, token.last_used_at) == ("ci", None, None)
    # No column of the stored row holds the secret, or the part of it that is not shown.
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT * FROM {ApiToken._meta.db_table}")  # noqa: S608
        rows = cursor.fetchall()
    assert len(rows) == 1
    stored = " ".join(str(value) for value in rows[0])
    assert secret not in stored
    assert secret[12:] not in stored and secret[12:24] not in stored


def test_every_secret_is_new(user_factory: Callable[..., Any]) -> None:
    user = user_factory()
    secrets = {token_issue(user, f"t{i}").secret for i in range(20)}
    assert len(secrets) == 20
    assert ApiToken.objects.values("digest").distinct().count() == 20


def test_a_live_name_is_unique_per_user_and_a_revoked_token_frees_it(
    user_factory: Callable[..., Any],
) -> None:
    alice, bob = user_factory(), user_factory()
    first = token_issue(alice, "laptop")
    token_issue(bob, "laptop")  # another user's name is theirs
    with pytest.raises(IntegrityError), transaction.atomic():
        token_issue(alice, "laptop")
    assert token_revoke(first.token)
    again = token_issue(alice, "laptop")
    assert token_user(again.secret) == alice
    assert token_user(first.secret) is None
    assert alice.api_tokens.filter(name="laptop").count() == 2


def test_token_revoke_is_idempotent(user_factory: Callable[..., Any]) -> None:
    issued = token_issue(user_factory(), "once")
    stale = ApiToken.objects.get(pk=issued.token.pk)
    assert token_revoke(issued.token) is True
    revoked_at = ApiToken.objects.get(pk=issued.token.pk).revoked_at
    assert revoked_at is not None and issued.token.revoked_at == revoked_at
    assert token_revoke(issued.token) is False
    # A copy read before the revocation does not revoke it again, nor move the time.
    assert token_revoke(stale) is False
    assert ApiToken.objects.get(pk=issued.token.pk).revoked_at == revoked_at
    assert not ApiToken.objects.get(pk=issued.token.pk).is_live


def test_token_user_answers_the_active_user_of_a_live_token(
    user_factory: Callable[..., Any],
) -> None:
    user = user_factory("viewer")
    assert token_user(token_issue(user, "ok").secret) == user


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda s, t, u: "", id="empty"),
        pytest.param(lambda s, t, u: "tnx_", id="prefix-only"),
        pytest.param(lambda s, t, u: s[4:], id="without-prefix"),
        pytest.param(lambda s, t, u: "TNX_" + s[4:], id="prefix-case"),
        pytest.param(lambda s, t, u: s + "x", id="longer"),
        pytest.param(lambda s, t, u: s[:-1], id="shorter"),
        pytest.param(lambda s, t, u: f" {s}", id="leading-space"),
        pytest.param(lambda s, t, u: s + "x" * 300, id="oversized"),
        pytest.param(lambda s, t, u: t.digest, id="the-stored-digest"),
        pytest.param(lambda s, t, u: "tnx_" + t.digest, id="digest-as-secret"),
        pytest.param(lambda s, t, u: t.prefix, id="the-shown-prefix"),
        pytest.param(lambda s, t, u: s[:20] + "\udcff" + s[21:], id="lone-surrogate"),
        pytest.param(lambda s, t, u: s[:20] + "é" + s[21:], id="non-ascii"),
    ],
)
def test_token_user_refuses_anything_but_the_exact_secret(
    user_factory: Callable[..., Any], make: Callable[[str, ApiToken, Any], str]
) -> None:
    user = user_factory()
    issued = token_issue(user, "real")
    assert token_user(make(issued.secret, issued.token, user)) is None
    assert ApiToken.objects.get(pk=issued.token.pk).last_used_at is None


def test_token_user_refuses_revoked_tokens_and_inactive_or_deleted_users(
    user_factory: Callable[..., Any],
) -> None:
    # Each token is looked up once first, so that its answer is in the
    # process's cache: the change must be seen all the same.
    revoked = token_issue(user_factory(), "revoked")
    assert token_user(revoked.secret) is not None
    token_revoke(revoked.token)
    assert token_user(revoked.secret) is None

    dormant_user = user_factory()
    dormant = token_issue(dormant_user, "dormant")
    assert token_user(dormant.secret) == dormant_user
    dormant_user.is_active = False
    dormant_user.save(update_fields=["is_active"])
    assert token_user(dormant.secret) is None
    # Active again: the same token works again (it was never revoked).
    dormant_user.is_active = True
    dormant_user.save(update_fields=["is_active"])
    assert token_user(dormant.secret) == dormant_user

    gone_user = user_factory()
    gone = token_issue(gone_user, "gone")
    assert token_user(gone.secret) == gone_user
    gone_user.delete()
    assert not ApiToken.objects.filter(pk=gone.token.pk).exists()
    assert token_user(gone.secret) is None


def test_an_inactive_users_token_is_refused_before_its_use_is_noted(
    user_factory: Callable[..., Any],
) -> None:
    user = user_factory(is_active=False)
    issued = token_issue(user, "dormant")
    assert token_user(issued.secret) is None
    assert ApiToken.objects.get(pk=issued.token.pk).last_used_at is None


def test_a_token_in_use_is_answered_from_memory_with_its_permissions(
    user_factory: Callable[..., Any], settings: Any
) -> None:
    settings.TUNIX_TOKEN_TOUCH_SECONDS = 3600
    issued = token_issue(user_factory(VIEWER), "fast")
    with CaptureQueriesContext(connection) as first:
        token_user(issued.secret)
    with CaptureQueriesContext(connection) as later:
        user = token_user(issued.secret)
        assert user is not None
        assert user.username
        assert user.has_perm(VIEW_TRACES)
        assert not user.has_perm("traces.add_trace")
    # The lookup (the user joined in), the user's permissions, noting the first use.
    assert len(first) == 3
    assert len(later) == 0
    # Each lookup hands out its own user object: one request's changes stay its own.
    assert token_user(issued.secret) is not user

    settings.TUNIX_TOKEN_CACHE_SECONDS = 0
    with CaptureQueriesContext(connection) as uncached:
        assert token_user(issued.secret) == user
    assert len(uncached) == 2


def test_a_role_changed_in_this_process_applies_to_the_next_lookup(
    user_factory: Callable[..., Any],
) -> None:
    user = user_factory(VIEWER)
    issued = token_issue(user, "promoted")

    def may_launch() -> bool:
        found = token_user(issued.secret)
        assert found is not None
        return bool(found.has_perm("runs.add_tunixrun"))

    assert not may_launch()
    assign_role(user, LAUNCHER)
    assert may_launch()
    Group.objects.get(name=LAUNCHER).permissions.remove(
        Permission.objects.get(content_type__app_label="runs", codename="add_tunixrun")
    )
    assert not may_launch()


def test_a_revocation_made_by_another_process_is_seen_within_the_cache_lifetime(
    user_factory: Callable[..., Any], settings: Any
) -> None:
    """Another server process revokes through the database; this one learns of it on expiry."""
    settings.TUNIX_TOKEN_CACHE_SECONDS = 1
    issued = token_issue(user_factory(), "elsewhere")
    assert token_user(issued.secret) is not None
    # As another process would: a write this process sends no signal for.
    ApiToken.objects.filter(pk=issued.token.pk).update(revoked_at=timezone.now())
    assert token_user(issued.secret) is not None  # still within the lifetime
    time.sleep(1.2)
    assert token_user(issued.secret) is None


# --- Users and roles ---------------------------------------------------------------------


def test_user_create_with_a_role_and_without_a_password() -> None:
    user = user_create("robot", password=None, role=VIEWER, email="r@example.test")
    assert (user.username, user.email) == ("robot", "r@example.test")
    assert not user.has_usable_password()
    assert role_of(user) == VIEWER
    with pytest.raises(ValueError, match="role must be one of"):
        user_create("nobody", password="x", role="superhero")
    # All or nothing: the refused role left no user behind.
    assert not get_user_model().objects.filter(username="nobody").exists()


def test_ensure_roles_is_idempotent_and_exact() -> None:
    groups = ensure_roles()
    ids = {name: group.pk for name, group in groups.items()}
    again = ensure_roles()
    assert {name: group.pk for name, group in again.items()} == ids
    assert Group.objects.filter(name__in=ROLE_PERMISSIONS).count() == 3
    for role, names in ROLE_PERMISSIONS.items():
        assert group_permissions(role) == set(names)
    assert group_permissions(VIEWER) == READ_PERMISSIONS
    assert group_permissions(LAUNCHER) == READ_PERMISSIONS | WRITE_PERMISSIONS


def test_ensure_roles_removes_a_permission_someone_added_to_a_role() -> None:
    ensure_roles()
    viewer = Group.objects.get(name=VIEWER)
    extra = Permission.objects.get(content_type__app_label="traces", codename="add_trace")
    viewer.permissions.add(extra)
    viewer.permissions.remove(Permission.objects.get(codename="view_tunixrun"))
    assert "traces.add_trace" in group_permissions(VIEWER)
    ensure_roles()
    assert group_permissions(VIEWER) == READ_PERMISSIONS


def test_assign_role_switches_group_and_staff_flags(user_factory: Callable[..., Any]) -> None:
    user = user_factory(LAUNCHER)

    def current() -> tuple[set[str], bool, bool]:
        fresh = get_user_model().objects.get(pk=user.pk)
        names = set(fresh.groups.values_list("name", flat=True))
        return names, fresh.is_staff, fresh.is_superuser

    assert current() == ({LAUNCHER}, False, False)
    assign_role(user, ADMIN)
    assert current() == ({ADMIN}, True, True)
    assign_role(user, VIEWER)
    assert current() == ({VIEWER}, False, False)
    # A group that is not a role is left alone.
    user.groups.add(Group.objects.create(name="auditors"))
    assign_role(user, LAUNCHER)
    assert current() == ({LAUNCHER, "auditors"}, False, False)
    with pytest.raises(ValueError):
        assign_role(user, "root")
    assert current() == ({LAUNCHER, "auditors"}, False, False)


def test_role_of(user_factory: Callable[..., Any]) -> None:
    assert role_of(AnonymousUser()) is None
    assert role_of(user_factory("")) is None
    assert role_of(user_factory(VIEWER)) == VIEWER
    assert role_of(user_factory(LAUNCHER)) == LAUNCHER
    assert role_of(user_factory(ADMIN)) == ADMIN
    superuser = user_factory("", is_superuser=True)
    assert role_of(superuser) == ADMIN
    both = user_factory(VIEWER)
    both.groups.add(Group.objects.get(name=LAUNCHER))
    assert role_of(both) == LAUNCHER


# --- RoleBackend -------------------------------------------------------------------------


def fresh(user: Any) -> Any:
    """The user as a new request loads it: no permission cache yet."""
    return get_user_model().objects.get(pk=user.pk)


def test_group_and_direct_permissions_are_read_in_one_query(
    user_factory: Callable[..., Any],
) -> None:
    user = user_factory(VIEWER)
    direct = Permission.objects.get(content_type__app_label="runs", codename="cancel_tunixrun")
    user.user_permissions.add(direct)
    loaded = fresh(user)
    with CaptureQueriesContext(connection) as queries:
        permissions = loaded.get_all_permissions()
    assert len(queries) == 1
    assert permissions == READ_PERMISSIONS | {"runs.cancel_tunixrun"}
    # The set is kept for the request: checks after the first ask nothing.
    with CaptureQueriesContext(connection) as later:
        assert loaded.has_perm(VIEW_TRACES)
        assert loaded.has_perm("runs.cancel_tunixrun")
        assert not loaded.has_perm("traces.add_trace")
    assert len(later) == 0


def test_an_inactive_user_has_no_permissions(user_factory: Callable[..., Any]) -> None:
    user = user_factory(LAUNCHER)
    user.is_active = False
    user.save(update_fields=["is_active"])
    loaded = fresh(user)
    with CaptureQueriesContext(connection) as queries:
        assert loaded.get_all_permissions() == set()
        assert not loaded.has_perm(VIEW_TRACES)
    assert len(queries) == 0


def test_a_superuser_has_every_permission_and_object_permissions_are_none(
    user_factory: Callable[..., Any],
) -> None:
    admin = fresh(user_factory(ADMIN))
    with CaptureQueriesContext(connection) as queries:
        permissions = admin.get_all_permissions()
    assert len(queries) == 1
    assert permissions >= READ_PERMISSIONS | WRITE_PERMISSIONS
    assert len(permissions) == Permission.objects.count()
    viewer = fresh(user_factory(VIEWER))
    assert viewer.get_all_permissions(obj=object()) == set()
    assert not viewer.has_perm(VIEW_TRACES, obj=object())


def test_a_user_without_a_role_has_no_permissions(user_factory: Callable[..., Any]) -> None:
    assert fresh(user_factory("")).get_all_permissions() == set()
