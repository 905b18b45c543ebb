"""Strict readers for settings that come from environment variables.

Each helper refuses a value it cannot understand instead of guessing: "False" is not true,
"10s" is not an integer.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlsplit

from cryptography.fernet import Fernet
from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def env_str(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool = False) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ImproperlyConfigured(
        f"{name}={raw!r} is not a boolean (use 1/0, true/false, yes/no, on/off)"
    )


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not an integer") from None


def env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not a number") from None


_PERIODS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_rate(text: str) -> tuple[int, int] | None:
    """`"1200/min"` as (1200 requests, 60 seconds); `"off"` as None (no limit).

    The period is DRF's: its first letter counts (s, m, h, d: `sec`, `minute` and `hour` work too).
    Raises ValueError for anything else.
    """
    value = text.strip().lower()
    if value == "off":
        return None
    count, _, period = value.partition("/")
    if not count.isdigit() or int(count) < 1 or period[:1] not in _PERIODS:
        raise ValueError(f"{text!r} is not a rate such as 1200/min, or off")
    return int(count), _PERIODS[period[:1]]


def env_rate(name: str, default: str) -> str:
    """A request rate such as `1200/min`, or `off`; anything else is refused at startup."""
    raw = os.environ.get(name, "").strip() or default
    try:
        parse_rate(raw)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name}: {exc}") from None
    return raw


def env_list(name: str, default: list[str]) -> list[str]:
    raw = os.environ.get(name)
    if raw is None:
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]


def database_from_url(
    url: str, sqlite_default: Path, *, web: bool = False, pool_size: int = 16
) -> dict:
    """Django DATABASES['default'] for a `DATABASE_URL` (sqlite:///path or postgres://...).

    `web` is the daphne process. Under ASGI every request runs its queries on a thread of its
    own, so a persistent connection per thread would mean one server connection per open stream
    and a hundred watchers would exhaust PostgreSQL; the web process borrows from a bounded pool
    instead (Django's advice for ASGI), and waits for a free connection rather than failing.
    """
    if not url:
        return sqlite_settings(sqlite_default)
    parts = urlsplit(url)
    if parts.scheme == "sqlite":
        path = unquote(parts.path)
        # sqlite:///relative.db -> "/relative.db"; sqlite:////abs.db -> "//abs.db"
        path = path[1:] if path.startswith("//") else path.lstrip("/") or str(sqlite_default)
        return sqlite_settings(Path(path))
    if parts.scheme in {"postgres", "postgresql", "pgsql"}:
        options: dict = dict(parse_qsl(parts.query))
        if web:
            options["pool"] = {"min_size": 1, "max_size": pool_size, "timeout": 30}
        return {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": unquote(parts.path.lstrip("/")) or "postgres",
            "USER": unquote(parts.username or ""),
            "PASSWORD": unquote(parts.password or ""),
            "HOST": parts.hostname or "",
            "PORT": str(parts.port or ""),
            # Django-Q2 closes old connections around every dequeue; a short-lived connection
            # per task cost 6x throughput (DESIGN.md, Stack notes), so keep them.
            "CONN_MAX_AGE": 0 if web else 300,
            "CONN_HEALTH_CHECKS": not web,
            "OPTIONS": options,
        }
    raise ImproperlyConfigured(
        f"DATABASE_URL scheme {parts.scheme!r} is not supported (sqlite, postgres)"
    )


def sqlite_settings(path: Path) -> dict:
    path.parent.mkdir(parents=True, exist_ok=True)
    return {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": str(path),
        "CONN_MAX_AGE": None,
        "OPTIONS": {
            # IMMEDIATE takes the write lock at BEGIN, so two processes never both read and then
            # fail to upgrade to a writer ("database is locked"); WAL lets readers go on meanwhile.
            "transaction_mode": "IMMEDIATE",
            "timeout": 20,
            "init_command": (
                "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA busy_timeout=20000;"
            ),
        },
        "TEST": {"NAME": str(path.with_name(path.stem + "-test.sqlite3"))},
    }


def secret_key(var_dir: Path) -> str:
    """SECRET_KEY from the environment, else one generated once and kept under var/."""
    key = os.environ.get("SECRET_KEY")
    if key:
        return key
    path = var_dir / "secret_key"
    if path.exists():
        return path.read_text().strip()
    var_dir.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(50)
    path.write_text(key)
    path.chmod(0o600)
    return key


def secrets_keys(var_dir: Path) -> list[str]:
    """Fernet keys for secrets at rest: `FURROW_SECRETS_KEY` (comma-separated, the first encrypts,
    all decrypt), else one generated once into var/secrets.key.

    Raises ImproperlyConfigured for a key that is not a Fernet key, at startup rather than at the
    first secret a step reads. The message names the key by position, never by value.
    """
    raw = os.environ.get("FURROW_SECRETS_KEY", "")
    if raw.strip():
        return _fernet_keys(raw.split(","), "FURROW_SECRETS_KEY")
    path = var_dir / "secrets.key"
    if path.exists():
        return _fernet_keys([path.read_text()], str(path))
    var_dir.mkdir(parents=True, exist_ok=True)
    key = Fernet.generate_key().decode()
    # Created 0600 from the start: a chmod after writing would leave a moment when others can read it.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process made it first; use theirs
        return _fernet_keys([path.read_text()], str(path))
    with os.fdopen(fd, "w") as file:
        file.write(key)
    return [key]


def _fernet_keys(items: list[str], source: str) -> list[str]:
    keys = [item.strip() for item in items]
    for position, key in enumerate(keys, start=1):
        try:
            Fernet(key)
        except ValueError:
            raise ImproperlyConfigured(
                f"{source}: key #{position} is not a valid Fernet key (32 url-safe base64-encoded "
                "bytes; make one with `python -c 'from cryptography.fernet import Fernet; "
                "print(Fernet.generate_key().decode())'`)"
            ) from None
    return keys
