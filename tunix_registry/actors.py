"""Who did what: the user behind a write, and the actor named on a run's events.

Runs record `launched_by`, datasets and traces `created_by` (a user, null for an
anonymous client and for rows older than the column); every run event names its
actor as short text (`user:alice`, `worker:<id>@<host>`, `reaper`, `command`,
`anonymous`), readable whatever becomes of the user (docs/decisions.md#who-did-what).
Services take an `Actor`; API handlers build it from `accounts.access.acting_user`,
pages from `request.user`, commands from `--as USERNAME`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from django.db.models import F, Model, QuerySet

from accounts.management.users import user_named

if TYPE_CHECKING:
    from django.contrib.auth.models import User

M = TypeVar("M", bound=Model)

# The longest actor text a RunEvent holds (a username is at most 150 characters).
ACTOR_MAX_LENGTH = 255


@dataclass(frozen=True)
class Actor:
    """Who writes a run event, and the user (if any) a new row is credited to."""

    label: str
    user: User | None = None

    @classmethod
    def of(cls, user: Any) -> Actor:
        """The actor for a request's user: `user:<name>`, or ANONYMOUS when not signed in."""
        signed_in = user_or_none(user)
        if signed_in is None:
            return ANONYMOUS
        return cls(f"user:{signed_in.get_username()}", signed_in)

    @classmethod
    def worker(cls, worker_id: str, host: str) -> Actor:
        return cls(f"worker:{worker_id}@{host}"[:ACTOR_MAX_LENGTH])


def user_or_none(user: Any) -> User | None:
    """A signed-in user as itself; None for None or an AnonymousUser (a page's `request.user`)."""
    if user is None or not getattr(user, "is_authenticated", False):
        return None
    return user


ANONYMOUS = Actor("anonymous")
REAPER = Actor("reaper")
# A management command run without `--as USERNAME`.
COMMAND = Actor("command")


def command_user(username: str | None) -> User | None:
    """The active user a command acts as (`--as USERNAME`), None without one.

    Raises CommandError for an unknown or deactivated user: a command never
    credits its work to someone who cannot sign in.
    """
    return user_named(username, active=True) if username else None


def command_actor(username: str | None) -> Actor:
    """`Actor.of` the `--as` user, else COMMAND."""
    user = command_user(username)
    return COMMAND if user is None else Actor.of(user)


def with_username(qs: QuerySet[M], field: str) -> QuerySet[M]:
    """`qs` with `<field>_username` annotated: the user's name joined into the same query,
    as `username_of` reads it."""
    return qs.annotate(**{f"{field}_username": F(f"{field}__username")})


def username_of(row: Any, field: str) -> str | None:
    """The username behind `row.<field>` (a user foreign key), or None.

    Selectors annotate lists with `<field>_username` (one joined query); a row
    without the annotation reads its user (cached when the service set it).
    """
    annotated = row.__dict__.get(f"{field}_username", ...)
    if annotated is not ...:
        return annotated
    if getattr(row, f"{field}_id") is None:
        return None
    return getattr(row, field).get_username()
