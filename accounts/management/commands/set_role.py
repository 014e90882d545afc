"""manage.py set_role USERNAME --role ROLE: make ROLE the user's one role."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from accounts.management.users import user_named
from accounts.roles import ROLES, assign_role


class Command(BaseCommand):
    help = "Give a user exactly one role (admin also makes them staff and superuser)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--role", choices=ROLES, required=True)

    def handle(self, *args: Any, **options: Any) -> None:
        user = user_named(options["username"])
        assign_role(user, options["role"])
        self.stdout.write(f"{user.username} is now {options['role']}.")
