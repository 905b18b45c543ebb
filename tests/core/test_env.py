"""DATABASE_URL and the environment readers (orchestrator/env.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from orchestrator.env import database_from_url, env_bool

BASE = Path(__file__).resolve().parents[2]


def test_postgres_keeps_connections_in_workers_and_pools_them_in_the_web_process(tmp_path):
    url = "postgres://me:s%40cret@db.example:5433/furrow?sslmode=require"
    worker = database_from_url(url, tmp_path / "x.sqlite3")
    web = database_from_url(url, tmp_path / "x.sqlite3", web=True, pool_size=7)

    assert (worker["NAME"], worker["USER"], worker["PASSWORD"]) == ("furrow", "me", "s@cret")
    assert (worker["HOST"], worker["PORT"]) == ("db.example", "5433")
    assert worker["CONN_MAX_AGE"] == 300
    assert worker["OPTIONS"] == {"sslmode": "require"}
    assert web["CONN_MAX_AGE"] == 0  # Django refuses a pool with persistent connections
    assert web["OPTIONS"] == {
        "sslmode": "require",
        "pool": {"min_size": 1, "max_size": 7, "timeout": 30},
    }


def test_sqlite_is_the_default_and_never_pooled(tmp_path):
    db = database_from_url("", tmp_path / "default.sqlite3", web=True)
    assert db["ENGINE"] == "django.db.backends.sqlite3"
    assert db["NAME"] == str(tmp_path / "default.sqlite3")
    assert "pool" not in db["OPTIONS"]


def test_an_unknown_scheme_is_refused(tmp_path):
    with pytest.raises(ImproperlyConfigured, match="mysql"):
        database_from_url("mysql://x/y", tmp_path / "x.sqlite3")


def test_a_boolean_that_is_not_one_is_refused(monkeypatch):
    monkeypatch.setenv("FURROW_X", "maybe")
    with pytest.raises(ImproperlyConfigured, match="FURROW_X"):
        env_bool("FURROW_X")


def test_the_web_flag_does_not_leak_into_processes_started_after_loading_the_asgi_app():
    # The worker and timer processes that `serve` starts inherit the environment; a pool set up
    # for them by mistake hangs after qcluster forks.
    env = {k: v for k, v in os.environ.items() if k != "FURROW_WEB_PROCESS"}
    code = (
        "import os; from orchestrator import asgi; from django.conf import settings;"
        "print(settings.DATABASES['default'].get('CONN_MAX_AGE'), 'FURROW_WEB_PROCESS' in os.environ)"
    )
    env["DATABASE_URL"] = "postgres://nobody@127.0.0.1:1/none"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=BASE, env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == ["0", "False"]
