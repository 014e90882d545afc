"""Create the local admin account if it does not exist (password from the environment)."""

from __future__ import annotations

import os
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounts.roles import ADMIN, assign_role


class Command(BaseCommand):
    help = "Create a superuser once; the password comes from DJANGO_SUPERUSER_PASSWORD."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--username", default="admin")
        parser.add_argument("--email", default="admin@localhost")

    def handle(self, *args: Any, **options: Any) -> None:
        password = os.environ.get("DJANGO_SUPERUSER_PASSWORD", "")
        if not password:
            raise CommandError("DJANGO_SUPERUSER_PASSWORD must be set")
        user_model = get_user_model()
        username = options["username"]
        if user_model.objects.filter(username=username).exists():
            self.stdout.write(f"admin account '{username}' already exists")
            return
        user = user_model.objects.create_superuser(username, options["email"], password)
        assign_role(user, ADMIN)
        self.stdout.write(self.style.SUCCESS(f"created admin account '{username}'"))
