"""End-to-end fixtures: the real launcher (daphne + qcluster + tick loop) against the test database."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.conf import settings
from django.db import connection
from rest_framework.authtoken.models import Token

STOP_TIMEOUT = 30.0
"""How long a stop waits for the launcher before killing it and its children outright."""


def test_database_url() -> str:
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{Path(db['NAME']).resolve()}"
    auth = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
    return f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Launcher:
    """`manage.py serve` on one port, which a test may stop and start again with extra environment.

    The launcher runs in a session of its own; it gives each child (daphne, qcluster, tick) a
    session of its own too, so a signal to the launcher's group reaches only the launcher, which
    then stops its children the way the product does.
    """

    def __init__(self, log_dir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env: dict[str, str] = {}
        self.starts = 0
        self._log_dir = log_dir
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, **env: str) -> str:
        """Start it (extra environment such as FURROW_LEASE_SECONDS="3") and wait for /health."""
        assert self._proc is None, "already started: stop() first"
        self.env = env
        self.starts += 1
        log_path = self._log_dir / f"serve-{self.starts}.log"
        with log_path.open("wb") as log:
            self._proc = subprocess.Popen(
                [
                    sys.executable,
                    str(settings.BASE_DIR / "manage.py"),
                    "serve",
                    "--port",
                    str(self.port),
                ],
                env={
                    **os.environ,
                    "DATABASE_URL": test_database_url(),
                    "FURROW_BROKER_POLL": "0.02",
                    "FURROW_WORKERS": "2",
                    "FURROW_PUBLIC_URL": self.url,
                    # Tests poll the API as fast as they like; the throttles still count (in
                    # Redis when REDIS_URL is set) but never refuse.
                    "FURROW_THROTTLE_USER": "1000000/min",
                    "FURROW_THROTTLE_ANON": "1000000/min",
                    **env,
                },
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        _wait_healthy(self.url, self._proc, log_path)
        return self.url

    def stop(self) -> float:
        """SIGTERM to the launcher's group and wait for everything to end; returns the seconds taken.

        A launcher that does not end within STOP_TIMEOUT is killed with its children's groups, which
        a kill of its own group would miss, leaving a server on the port.
        """
        proc, self._proc = self._proc, None
        if proc is None:
            return 0.0
        began = time.monotonic()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            for child in child_pids(proc.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child, signal.SIGKILL)
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        return time.monotonic() - began

    def restart(self, **env: str) -> str:
        """Stop everything and start again on the same port (with `env`, or the last start's)."""
        self.stop()
        return self.start(**(env or self.env))


def child_pids(pid: int) -> list[int]:
    """Direct children of `pid`, from /proc."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            # The command name may contain spaces and parentheses: fields start after the last ")".
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                found.append(int(stat.parent.name))
    return found


def _wait_healthy(base: str, proc: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"serve exited with {proc.returncode}:\n{log_path.read_text()}")
        try:
            if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"Furrow did not answer /health within 30s:\n{log_path.read_text()}")


@pytest.fixture
def launcher(transactional_db: Any, tmp_path: Path) -> Iterator[Launcher]:
    """A Furrow launcher on a port of its own, not yet started; stopped after the test."""
    launcher = Launcher(tmp_path)
    try:
        yield launcher
    finally:
        launcher.stop()


@pytest.fixture
def furrow(launcher: Launcher) -> str:
    """Base URL of a running Furrow: `manage.py serve` in a process of its own."""
    return launcher.start()


def token_client(base_url: str, user: Any) -> httpx.Client:
    """An httpx client for `user`, authenticated with an API token."""
    token, _ = Token.objects.get_or_create(user=user)
    return httpx.Client(
        base_url=base_url, headers={"Authorization": f"Token {token.key}"}, timeout=10
    )


@pytest.fixture
def client_for(furrow: str) -> Callable[[Any], httpx.Client]:
    """An httpx client for `user`, authenticated with an API token, against the running server."""
    return lambda user: token_client(furrow, user)


@pytest.fixture
def launcher_client_for(launcher: Launcher) -> Callable[[Any], httpx.Client]:
    """Like client_for, against `launcher`'s URL, whether or not it is running yet."""
    return lambda user: token_client(launcher.url, user)
