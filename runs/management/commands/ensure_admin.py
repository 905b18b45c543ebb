"""Make sure an admin account exists, for a first start without an interactive prompt."""

from __future__ import annotations

import secrets
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import IntegrityError, transaction


class Command(BaseCommand):
    help = (
        "Create a superuser with a generated password if it does not exist, and print the "
        "password once. An existing user is left alone; its password is never printed."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--username", default="admin", help="Default: admin.")
        parser.add_argument("--email", default="admin@localhost", help="Default: admin@localhost.")

    def handle(self, *args: Any, **options: Any) -> None:
        username, email = options["username"], options["email"]
        password = secrets.token_urlsafe(12)
        if not self.create(username, email, password):
            self.stdout.write(
                f"Admin user '{username}' exists (its password was shown when it was created; "
                f"reset it with `python manage.py changepassword {username}`)"
            )
            return
        self.stdout.write(
            f"Created admin user '{username}' with password: {password} — it is shown only now; "
            f"change it with `python manage.py changepassword {username}`"
        )

    def create(self, username: str, email: str, password: str) -> bool:
        """Create the superuser; False when a user of that name exists (also if one just appeared)."""
        user_model = get_user_model()
        name = {user_model.USERNAME_FIELD: username}
        if user_model._default_manager.filter(**name).exists():
            return False
        try:
            with transaction.atomic():
                user_model._default_manager.create_superuser(  # type: ignore[attr-defined]
                    **name, email=email, password=password
                )
        except IntegrityError:
            return False  # another process created it between our check and our insert
        return True
