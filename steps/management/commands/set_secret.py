"""Create, change, delete or list secrets from a shell.

The value is read from stdin (or a named environment variable), never from the command line,
where shell history and `ps` would keep it.
"""

from __future__ import annotations

import getpass
import os
import sys
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.views.decorators.debug import sensitive_variables

from steps.models import Secret
from steps.secrets import SecretError, delete_secret, rotate_keys, set_secret


class Command(BaseCommand):
    help = (
        "Set the secret NAME to the value read from stdin (prompted without echo on a terminal; "
        "one trailing newline is dropped), or from --from-env VAR. --delete removes it, --list "
        "prints every name, --rotate re-encrypts all with the first FURROW_SECRETS_KEY."
    )
    stealth_options = ("stdin",)

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("name", nargs="?", metavar="NAME")
        parser.add_argument("--description", help="Set the description too.")
        parser.add_argument("--from-env", metavar="VAR", help="Read the value from $VAR.")
        action = parser.add_mutually_exclusive_group()
        action.add_argument("--delete", action="store_true", help="Delete the secret NAME.")
        action.add_argument("--list", action="store_true", help="Print secret names only.")
        action.add_argument("--rotate", action="store_true", help="Re-encrypt every secret.")

    @sensitive_variables("value")
    def handle(self, *args: Any, **options: Any) -> None:
        name = options["name"]
        if options["list"] or options["rotate"]:
            if name:
                raise CommandError("--list and --rotate take no NAME")
            return self.list_names() if options["list"] else self.rotate()
        if not name:
            raise CommandError("NAME is required")
        if options["delete"]:
            return self.delete(name)
        value = self.read_value(name, options)
        existed = Secret.objects.filter(name=name).exists()
        try:
            set_secret(name, value, description=options["description"])
        except ValidationError as exc:
            raise CommandError("; ".join(exc.messages)) from None
        self.stdout.write(f"secret '{name}' {'updated' if existed else 'created'}")

    @sensitive_variables("value")
    def read_value(self, name: str, options: dict[str, Any]) -> str:
        if options["from_env"]:
            value = os.environ.get(options["from_env"])
            if not value:
                raise CommandError(f"${options['from_env']} is not set or empty")
            return value
        stdin = options.get("stdin") or sys.stdin
        if stdin.isatty():
            return getpass.getpass(f"Value for {name}: ")
        value = stdin.read()
        # `echo x | ...` and files end with a newline that is not part of the secret.
        return value.removesuffix("\n").removesuffix("\r")

    def delete(self, name: str) -> None:
        try:
            delete_secret(name)
        except Secret.DoesNotExist:
            raise CommandError(f"unknown secret '{name}'") from None
        self.stdout.write(f"secret '{name}' deleted")

    def list_names(self) -> None:
        for name in Secret.objects.order_by("name").values_list("name", flat=True):
            self.stdout.write(name)

    def rotate(self) -> None:
        try:
            count = rotate_keys()
        except SecretError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"re-encrypted {count} secrets with the first key")
