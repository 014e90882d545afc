"""manage.py create_user USERNAME --role ROLE: a new user with one role.

The password comes from DJANGO_USER_PASSWORD, else is asked twice on the
terminal; it is never an argument (it would land in the shell history and in
`ps`). Django's password validators apply. `--no-password` makes an account
that cannot sign in on pages, only use API tokens.
"""

from __future__ import annotations

import getpass
import os
import sys
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import IntegrityError

from accounts.roles import ROLES
from accounts.services import user_create

PASSWORD_VARIABLE = "DJANGO_USER_PASSWORD"  # noqa: S105 (the variable's name)


class Command(BaseCommand):
    help = (
        "Create a user with a role. The password comes from DJANGO_USER_PASSWORD, "
        "else it is asked on the terminal; --no-password for an API-token-only account."
    )

    # call_command(..., stdin=...) in tests, as Django's createsuperuser.
    stealth_options = ("stdin",)

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--role", choices=ROLES, required=True)
        parser.add_argument("--email", default="")
        parser.add_argument(
            "--no-password",
            action="store_true",
            help="no password: the account cannot sign in on pages, only use API tokens",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        username: str = options["username"]
        email: str = options["email"]
        user_model = get_user_model()
        try:
            user_model._meta.get_field("username").run_validators(username)
        except ValidationError as exc:
            raise CommandError(f"Invalid username: {' '.join(exc.messages)}") from None
        if user_model.objects.filter(username=username).exists():
            raise CommandError(f"A user '{username}' exists already.")
        password = None
        if not options["no_password"]:
            password = self._password(options.get("stdin", sys.stdin))
            try:
                validate_password(password, user_model(username=username, email=email))
            except ValidationError as exc:
                raise CommandError("Password refused: " + " ".join(exc.messages)) from None
        try:
            user = user_create(username, password=password, role=options["role"], email=email)
        except IntegrityError:
            raise CommandError(f"A user '{username}' exists already.") from None
        self.stdout.write(self.style.SUCCESS(f"Created {options['role']} '{user.username}'."))

    def _password(self, stdin: Any) -> str:
        password = os.environ.get(PASSWORD_VARIABLE, "")
        if password:
            return password
        if not (hasattr(stdin, "isatty") and stdin.isatty()):
            raise CommandError(
                f"No password: set {PASSWORD_VARIABLE}, run on a terminal to be asked, "
                "or pass --no-password for an API-token-only account."
            )
        password = getpass.getpass("Password: ")
        if not password:
            raise CommandError("The password is empty.")
        if getpass.getpass("Password (again): ") != password:
            raise CommandError("The passwords do not match.")
        return password
