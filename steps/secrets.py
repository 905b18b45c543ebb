"""Secrets: the one place that encrypts, decrypts, audits and masks secret values.

Values are Fernet tokens at rest (`Secret.ciphertext`), encrypted with the first key of
`settings.FURROW_SECRETS_KEYS` and decrypted with any of them, so a key is rotated by putting the
new one first and calling `rotate_keys()` before dropping the old one. Every create, update and
delete appends an audit `Event` naming the secret, never its value.

Steps read values through `SecretsView` (the template context's `secrets`), which decrypts only
what a template asks for and remembers it in `.used`; a `Masker` built from those values then
replaces them with `***` in everything the step leaves behind (logs, output, errors).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping
from functools import lru_cache
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.db import transaction
from django.views.decorators.debug import sensitive_variables

from runs.models import Event
from steps.models import Secret, validate_secret_name

MASK = "***"
MAX_VALUE_BYTES = 64 * 1024


class SecretError(Exception):
    """A stored secret cannot be used (it does not decrypt with the configured keys)."""


# Writing
#
# sensitive_variables: Django's error reports (the DEBUG page, mails to ADMINS) show each frame's
# locals; these functions hold a plaintext value in theirs.


@sensitive_variables("value")
def validate_secret_value(value: Any) -> None:
    """Raises ValidationError unless `value` is a non-blank string of at most 64 KB (UTF-8).

    A blank value is refused because masking it would replace every space in every log.
    """
    if not isinstance(value, str):
        raise ValidationError("a secret value must be a string")
    if not value.strip():
        raise ValidationError("a secret value cannot be empty or only whitespace")
    if len(value.encode()) > MAX_VALUE_BYTES:
        raise ValidationError(f"a secret value can be at most {MAX_VALUE_BYTES} bytes (UTF-8)")


@sensitive_variables("value")
def set_secret(
    name: str, value: str, *, user: Any = None, description: str | None = None
) -> Secret:
    """Create the secret `name` or replace its value (and its description, unless None).

    Raises ValidationError for a bad name or value. Appends `secret.created` or `secret.updated`.
    """
    validate_secret_name(name)
    validate_secret_value(value)
    return _save(name, value, description, user, create=True)


@sensitive_variables("value")
def update_secret(
    name: str, *, value: str | None = None, description: str | None = None, user: Any = None
) -> Secret:
    """Change an existing secret's value and/or description; None keeps the current one.

    Raises Secret.DoesNotExist, or ValidationError for a bad value. Appends `secret.updated`.
    """
    if value is not None:
        validate_secret_value(value)
    return _save(name, value, description, user, create=False)


@sensitive_variables("value")
def _save(
    name: str, value: str | None, description: str | None, user: Any, *, create: bool
) -> Secret:
    with transaction.atomic():
        # Locked, so two updates at once cannot interleave their value and description.
        secret = Secret.objects.select_for_update().filter(name=name).first()
        created = secret is None
        if secret is None:
            if not create:
                raise Secret.DoesNotExist(f"unknown secret '{name}'")
            secret = Secret(name=name)
        if value is not None:
            secret.ciphertext = encrypt(value)
        if description is not None:
            secret.description = description
        secret.updated_by = user if getattr(user, "is_authenticated", False) else None
        secret.save()
        _audit("secret.created" if created else "secret.updated", name, user)
    return secret


def delete_secret(name: str, *, user: Any = None) -> None:
    """Delete the secret `name`. Raises Secret.DoesNotExist. Appends `secret.deleted`."""
    with transaction.atomic():
        deleted, _ = Secret.objects.filter(name=name).delete()
        if not deleted:
            raise Secret.DoesNotExist(f"unknown secret '{name}'")
        _audit("secret.deleted", name, user)


def rotate_keys() -> int:
    """Re-encrypt every secret with the first configured key; returns how many were rewritten.

    After this, keys other than the first can be removed from FURROW_SECRETS_KEY. Raises
    SecretError (and changes nothing) if some secret decrypts with none of the keys.
    """
    fernet = _fernet(tuple(settings.FURROW_SECRETS_KEYS))
    with transaction.atomic():
        secrets = list(Secret.objects.select_for_update().only("pk", "name", "ciphertext"))
        for secret in secrets:
            try:
                secret.ciphertext = fernet.rotate(secret.ciphertext.encode()).decode()
            except InvalidToken:
                raise _undecryptable(secret.name) from None
        # Only the ciphertext: the value, and so updated_at and updated_by, did not change.
        Secret.objects.bulk_update(secrets, ["ciphertext"], batch_size=500)
    return len(secrets)


def _audit(type_: str, name: str, user: Any) -> None:
    actor = f"user:{user.get_username()}" if getattr(user, "is_authenticated", False) else "cli"
    Event.objects.create(type=type_, actor=actor, data={"name": name})


# Reading


@sensitive_variables("value")
def encrypt(value: str) -> str:
    return _fernet(tuple(settings.FURROW_SECRETS_KEYS)).encrypt(value.encode()).decode()


def decrypt(secret: Secret) -> str:
    """The plaintext of `secret`. Raises SecretError if no configured key decrypts it."""
    try:
        return _fernet(tuple(settings.FURROW_SECRETS_KEYS)).decrypt(secret.ciphertext).decode()
    except InvalidToken:
        raise _undecryptable(secret.name) from None


def _undecryptable(name: str) -> SecretError:
    return SecretError(
        f"secret '{name}' cannot be decrypted with the configured FURROW_SECRETS_KEY"
    )


@lru_cache(maxsize=8)
def _fernet(keys: tuple[str, ...]) -> MultiFernet:
    # Keyed on the keys themselves, so override_settings in tests (and a reload) takes effect.
    if not keys:
        raise ImproperlyConfigured("FURROW_SECRETS_KEYS is empty; set FURROW_SECRETS_KEY")
    try:
        return MultiFernet([Fernet(key) for key in keys])
    except ValueError:
        raise ImproperlyConfigured(
            "FURROW_SECRETS_KEYS holds a key that is not a Fernet key"
        ) from None


def get_values(names: Iterable[str]) -> dict[str, str]:
    """Plaintexts of the named secrets that exist, in one query. Raises SecretError."""
    wanted = set(names)
    if not wanted:
        return {}
    found = Secret.objects.filter(name__in=wanted).only("name", "ciphertext")
    return {secret.name: decrypt(secret) for secret in found}


class SecretsView(Mapping[str, str]):
    """`secrets` in a step's template context: decrypts a value the first time it is read.

    A name that does not exist raises KeyError("unknown secret 'X'"). Jinja turns any lookup
    error into an undefined, and StrictUndefined then reports it in its own words ("... has no
    attribute 'X'"), so after a failed render a caller can look at `.missing` to say which secret
    it was. A value that does not decrypt raises SecretError, which Jinja lets through.

    `.used` maps each name that was read to its value: what the step's Masker must hide.
    A secret named like a Mapping method (keys, items, values, get) or `used`/`missing` is read
    as `secrets['keys']`; the dotted form finds the method first.
    """

    def __init__(self) -> None:
        self.used: dict[str, str] = {}
        self.missing: list[str] = []
        self._names: list[str] | None = None

    @sensitive_variables("value")
    def __getitem__(self, name: str) -> str:
        if name not in self.used:
            value = get_values([name]).get(name)
            if value is None:
                if name not in self.missing:
                    self.missing.append(name)
                raise KeyError(f"unknown secret '{name}'")
            self.used[name] = value
        return self.used[name]

    def __contains__(self, name: object) -> bool:
        # Without decrypting: Mapping's default would read the value.
        return name in self.used or name in self._all_names()

    def __iter__(self) -> Iterator[str]:
        return iter(self._all_names())

    def __len__(self) -> int:
        return len(self._all_names())

    def __repr__(self) -> str:
        return f"<SecretsView used={sorted(self.used)}>"  # names only: a repr ends up in logs

    def _all_names(self) -> list[str]:
        if self._names is None:
            self._names = list(Secret.objects.order_by("name").values_list("name", flat=True))
        return self._names


# Masking


class Masker:
    """Replaces every secret value with `***` in text and in JSON-like values.

    Built once per step attempt from the values it read. Besides each value it hides the value's
    JSON-escaped form (how it appears inside printed JSON) and each non-blank line of a multi-line
    value (logs arrive line by line, so a PEM key never appears whole in one line). Longer
    patterns are tried first, so a secret that contains another is hidden entirely. Values
    shorter than 4 characters are masked too: a short secret over-masks ordinary text, and that
    is better than leaking it.
    """

    def __init__(self, secrets: Iterable[str]) -> None:
        patterns = {variant for value in secrets if value for variant in _variants(value)}
        ordered = sorted(patterns, key=lambda p: (-len(p), p))
        # One alternation, longest first: at each position the regex takes the first (longest)
        # pattern that matches, in a single pass over the text.
        self._pattern = re.compile("|".join(map(re.escape, ordered))) if ordered else None

    def __bool__(self) -> bool:
        return self._pattern is not None

    def text(self, text: str) -> str:
        if self._pattern is None:
            return text
        return self._pattern.sub(MASK, text)

    def value(self, value: Any) -> Any:
        """A copy of `value` with secrets masked in every string and dict key.

        Numbers whose digits hold a secret become masked strings (better over-mask than leak);
        other numbers, booleans and None are returned as they are.
        """
        if self._pattern is None:
            return value
        return self._walk(value)

    def _walk(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {self._walk(key): self._walk(item) for key, item in value.items()}
        if isinstance(value, list | tuple):
            return type(value)(self._walk(item) for item in value)
        if isinstance(value, int | float) and not isinstance(value, bool):
            masked = self.text(str(value))
            return value if MASK not in masked else masked
        return value


def _variants(value: str) -> set[str]:
    variants = {value, json.dumps(value, ensure_ascii=False)[1:-1]}
    variants.update(line for line in value.splitlines() if line.strip())
    return {variant for variant in variants if variant}


def mask(value: Any, secrets: Iterable[str]) -> Any:
    """A copy of the JSON-like `value` with every secret value replaced by `***` (see Masker)."""
    return Masker(secrets).value(value)
