"""Shared fixtures. Personas: alice (owner, staff), bob (team member), charlie (outsider)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from django.core.cache import caches
from rest_framework.test import APIClient

from flows import services as flow_services
from flows.language.parse import load_document
from flows.models import Workflow
from runs.engine.states import RunStatus
from runs.models import Run, StepRun
from runs.timers import tick
from steps import connectors
from steps.worker import run_attempt
from tests.verify_helpers import assert_verified


@pytest.fixture(autouse=True)
def fast_passwords(settings: Any) -> None:
    # Personas get passwords; the default hasher costs about half a second per user.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def writes_from_the_step_thread(settings: Any) -> None:
    # In-process steps run inside the test's transaction; on SQLite a write from another thread
    # (a heartbeat, a log flush) would wait on that transaction's lock. So in-process, log lines
    # are written when the step ends, by its own thread, and heartbeats do not come; both are
    # tested with real processes (tests/e2e).
    settings.FURROW = {
        **settings.FURROW,
        "HEARTBEAT": 300.0,
        "LOG_FLUSH_SECONDS": 300.0,
        "LOG_BATCH_LINES": 10**9,
    }


@pytest.fixture(autouse=True)
def fresh_throttle_counts(settings: Any) -> None:
    # The API's throttle counts live in the cache. Each test starts with none, in this process's
    # memory even when REDIS_URL is set: clearing a Redis cache would empty the whole database,
    # broker queues included. Ids are reused after a rollback, so counts would carry over.
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
            "LOCATION": "furrow-tests",
        }
    }
    caches["default"].clear()


@pytest.fixture(autouse=True)
def fresh_connectors() -> Any:
    # The connector catalogue is cached per process; rows rolled back with a test must not linger.
    connectors.clear_cache()
    yield
    connectors.clear_cache()


@pytest.fixture
def alice(django_user_model: Any) -> Any:
    return django_user_model.objects.create_user(
        "alice", "alice@example.com", "alice-pw", is_staff=True, is_superuser=True
    )


@pytest.fixture
def bob(django_user_model: Any) -> Any:
    return django_user_model.objects.create_user("bob", "bob@example.com", "bob-pw")


@pytest.fixture
def api(alice: Any) -> APIClient:
    """An API client authenticated as alice."""
    client = APIClient()
    client.force_authenticate(alice)
    return client


@pytest.fixture
def publish() -> Callable[[str | dict], Workflow]:
    """Publish a definition (YAML text or dict) and return its workflow."""

    def _publish(definition: str | dict) -> Workflow:
        doc = load_document(definition) if isinstance(definition, str) else definition
        return flow_services.publish(doc).version.workflow

    return _publish


def drive(run: Run, *, timeout: float = 30.0) -> Run:
    """Run every ready step of `run` in this process, and the timer pass, until the run is final.

    The same code the Django-Q2 task and the tick loop call; only the scheduling is the test's.
    Child runs (subflows) are driven too: every ready step in the database runs.
    """
    deadline = time.monotonic() + timeout
    while True:
        ready = list(StepRun.objects.filter(status="ready").values_list("pk", "attempt"))
        for step_id, attempt in ready:
            run_attempt(step_id, attempt)
        changed = tick()
        run.refresh_from_db()
        if RunStatus(run.status).is_final:
            assert_verified(run)  # the rows agree with the event log (issue 4: verify_run)
            return run
        if time.monotonic() > deadline:
            raise AssertionError(
                f"run still {run.status} after {timeout}s: {list(run.steps.values_list('name', 'status'))}"
            )
        if not ready and not changed:
            time.sleep(0.02)


@pytest.fixture
def run_to_end() -> Callable[..., Run]:
    return drive
