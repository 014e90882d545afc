"""manage.py revoke_token USERNAME --name NAME: revoke a user's live token (the row stays)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounts.management.users import user_named
from accounts.selectors import live_token
from accounts.services import token_revoke


class Command(BaseCommand):
    help = (
        "Revoke a user's live API token by name; servers refuse it within "
        "TUNIX_TOKEN_CACHE_SECONDS (2 by default)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--name", required=True)

    def handle(self, *args: Any, **options: Any) -> None:
        user = user_named(options["username"])
        name: str = options["name"].strip()
        token = live_token(user, name)
        if token is None or not token_revoke(token):
            raise CommandError(f"User '{user.username}' has no live token named '{name}'.")
        self.stdout.write(
            f"Revoked token '{name}' of {user.username} ({token.prefix}…); servers refuse it "
            f"within {settings.TUNIX_TOKEN_CACHE_SECONDS} s."
        )
