"""Schemathesis against /api/v1/schema/: as a superuser, every operation answers without a 5xx
and as the schema describes it.

Each operation gets a few generated requests (MAX_EXAMPLES), against a little real data; about
half of them use the seeded objects' names and ids in the path, so they get past the 404s.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import schemathesis
from django.core import signals
from django.db import close_old_connections
from django.utils import timezone
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from rest_framework.authtoken.models import Token
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from flows import services as flow_services
from flows import triggers, workflow_templates
from flows.models import Trigger, WorkflowTemplate
from orchestrator.wsgi import application
from runs import services
from runs.models import DeadLetter, Event, HookDelivery, HookEndpoint, HookStatus
from steps import secrets, workers
from steps.models import CircuitBreaker, TargetHealth
from steps.resilience_rules import connector_target_key

pytestmark = pytest.mark.django_db

# Bounded for CI (about half a minute on 2 cores); FURROW_FUZZ_EXAMPLES=200 digs deeper.
MAX_EXAMPLES = int(os.environ.get("FURROW_FUZZ_EXAMPLES", "20"))

DEMO = {
    "name": "demo",
    "input": {
        "type": "object",
        "properties": {"who": {"type": "string"}},
    },
    "steps": {"hello": {"type": "noop"}, "bye": {"type": "noop", "needs": ["hello"]}},
}


@contextmanager
def connection_kept_open() -> Iterator[None]:
    """Django's test client does the same: at the end of a request, `close_old_connections`
    would close the connection that holds the test's transaction."""
    for signal in (signals.request_started, signals.request_finished):
        signal.disconnect(close_old_connections)
    try:
        yield
    finally:
        for signal in (signals.request_started, signals.request_finished):
            signal.connect(close_old_connections)


# Loaded from the real WSGI application when this module is collected; no database is needed.
# The event streams are plain Django views and not in the schema, so nothing here streams.
with connection_kept_open():
    schema = schemathesis.openapi.from_wsgi("/api/v1/schema/", application)


@pytest.fixture(autouse=True)
def _wsgi_keeps_the_test_connection() -> Iterator[None]:
    with connection_kept_open():
        yield


@pytest.fixture
def token(django_user_model: Any) -> str:
    root = django_user_model.objects.create_superuser("root", "root@example.com", "root-pw")
    return Token.objects.create(user=root).key


@pytest.fixture
def seeded(token: str) -> dict[str, dict[str, Any]]:
    """Real objects, and the path parameters that reach them, by path prefix."""
    workflow = flow_services.publish(DEMO).version.workflow
    run = services.start_run(workflow, {"who": "world"}, actor="user:root")
    secrets.set_secret("API_KEY", "s3cret", description="for the fuzzer")
    hook = HookEndpoint.objects.create(name="ops", url="https://hooks.example.com/furrow")
    event = Event.objects.filter(run=run).first()
    delivery = HookDelivery.objects.create(
        endpoint=hook, event=event, status=HookStatus.FAILED, next_attempt_at=timezone.now()
    )
    trigger = triggers.save_trigger(
        Trigger(workflow=workflow, name="nightly", kind=Trigger.Kind.CRON, cron="0 3 * * *")
    )
    letter = DeadLetter.objects.create(
        run=run, step_run=run.steps.get(name="bye"), attempts=3, error="gave up"
    )
    target = connector_target_key("ai_router")
    CircuitBreaker.objects.create(key=target, state="open", failures=5, opened_at=timezone.now())
    TargetHealth.objects.create(
        key=target, url="https://ai.example.com/health", status="unhealthy", error="HTTP 503"
    )
    workers.register("special@box", host="box", pid=100, queues=["special"], capacity=2)
    template = workflow_templates.save_template(
        WorkflowTemplate(
            name="greeter",
            parameters={
                "type": "object",
                "properties": {"who": {"type": "string", "default": "x"}},
            },
            body="steps: {hello: {type: noop, with: {greeting: hi ((who))}}}",
        )
    )
    return {
        "/api/v1/templates/": {"name": template.name},
        "/api/v1/workflows/": {"name": workflow.name, "number": 1},
        "/api/v1/runs/": {"id": str(run.pk), "step": "hello"},
        "/api/v1/secrets/": {"name": "API_KEY"},
        "/api/v1/hooks/": {"name": hook.name, "id": delivery.pk},
        "/api/v1/triggers/": {"id": trigger.pk},
        "/api/v1/step-types/": {"type_name": "noop"},
        "/api/v1/connectors/": {"name": "ai_router"},
        "/api/v1/dead-letters/": {"id": letter.pk},
        "/api/v1/circuit-breakers/": {"key": target},
        "/api/v1/health/": {"key": target},
        "/api/v1/workers/": {"name": "special@box"},
    }


def _aim_at_seeded_objects(case: Any, seeded: dict[str, dict[str, Any]]) -> None:
    for prefix, values in seeded.items():
        if case.operation.path.startswith(prefix):
            for name in set(case.path_parameters or {}) & set(values):
                case.path_parameters[name] = values[name]


@schema.parametrize()
@schema.given(use_seeded=st.booleans())
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,  # the same requests on every CI run; FURROW_FUZZ_EXAMPLES changes them
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
        HealthCheck.function_scoped_fixture,  # the seeded data is meant to outlive an example
    ],
    database=None,
)
def test_every_operation_answers_without_a_server_error_and_as_described(
    case: Any, use_seeded: bool, seeded: dict[str, dict[str, Any]], token: str
) -> None:
    if use_seeded:
        _aim_at_seeded_objects(case, seeded)
    case.call_and_validate(
        headers={"Authorization": f"Token {token}"},
        checks=[not_a_server_error, response_schema_conformance],
    )
