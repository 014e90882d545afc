"""manage.py issue_token USERNAME --name NAME: a new API token; its secret is the last line.

    token=$(manage.py issue_token alice --name ci | tail -1)

The secret is shown this once; only its digest is stored
(docs/decisions.md#api-tokens).
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import IntegrityError

from accounts.management.users import user_named
from accounts.models import ApiToken
from accounts.selectors import live_token
from accounts.services import token_issue

NAME_MAX = ApiToken._meta.get_field("name").max_length or 100


class Command(BaseCommand):
    help = "Issue an API token to an active user; prints its secret (once) as the last line."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--name", required=True, help="unique among the user's live tokens")

    def handle(self, *args: Any, **options: Any) -> None:
        name: str = options["name"].strip()
        if not name or len(name) > NAME_MAX:
            raise CommandError(f"A token name is 1 to {NAME_MAX} characters.")
        user = user_named(options["username"], active=True)
        duplicate = (
            f"User '{user.username}' already has a live token named '{name}': revoke it "
            f"(manage.py revoke_token {user.username} --name {name}) or choose another name."
        )
        if live_token(user, name) is not None:
            raise CommandError(duplicate)
        try:
            issued = token_issue(user, name)
        except IntegrityError:
            raise CommandError(duplicate) from None
        self.stdout.write(
            f"Token '{name}' of {user.username} ({issued.token.prefix}…), shown once:"
        )
        self.stdout.write(issued.secret)
