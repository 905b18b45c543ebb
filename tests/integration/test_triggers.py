"""Triggers: cron schedules, webhooks and workflow completions start runs, once each."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from flows import triggers
from flows.models import Trigger, Workflow
from runs.models import Event, Run
from steps.secrets import set_secret

pytestmark = pytest.mark.django_db

REPORT = {
    "name": "report",
    "input": {
        "type": "object",
        "properties": {"at": {"type": "string"}, "ref": {"type": "string"}},
        "required": ["at"],
        "additionalProperties": False,
    },
    "steps": {"say": {"type": "noop"}},
}
DEPLOY = {"name": "deploy", "steps": {"ship": {"type": "noop"}}}


@pytest.fixture
def report(publish) -> Workflow:
    return publish(REPORT)


@pytest.fixture
def deploy(publish) -> Workflow:
    return publish(DEPLOY)


def make(workflow: Workflow, **fields: Any) -> Trigger:
    defaults: dict[str, Any] = {"name": "t", "kind": "cron", "cron": "0 * * * *"}
    return triggers.save_trigger(Trigger(workflow=workflow, **(defaults | fields)), actor="test")


def runs_of(workflow: Workflow) -> list[Run]:
    return list(Run.objects.filter(workflow=workflow).order_by("created_at"))


# The API


def test_a_cron_trigger_is_created_with_its_next_fire_times(api, report):
    response = api.post(
        "/api/v1/triggers",
        {
            "workflow": "report",
            "name": "nightly",
            "kind": "cron",
            "cron": "30 2 * * *",
            "timezone": "Europe/Berlin",
            "input": {"at": "{{ fire_time }}"},
        },
        format="json",
    )
    assert response.status_code == 201, response.content
    body = response.json()
    assert Trigger.objects.get(pk=body["id"]).name == "nightly"
    times = [datetime.fromisoformat(t) for t in body["next_fire_times"]]
    assert len(times) == 5
    assert times == sorted(times)
    assert all(t > timezone.now() for t in times)
    assert {t.astimezone(UTC).minute for t in times} == {30}
    event = Event.objects.get(type="trigger.created")
    assert (event.actor, event.workflow, event.data["trigger"]) == ("user:alice", report, "nightly")


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ({"kind": "cron", "cron": "61 * * * *"}, "cron"),
        ({"kind": "cron", "cron": "0 * * *"}, "cron"),
        ({"kind": "cron", "cron": "0 * * * *", "timezone": "Nowhere/City"}, "timezone"),
        ({"kind": "cron", "cron": "0 * * * *", "missed": "sometimes"}, "missed"),
        ({"kind": "cron", "cron": "0 * * * *", "input": {"at": "{{ fire_time"}}, "input.at"),
        ({"kind": "cron", "cron": "0 * * * *", "input": [1]}, "input"),
        ({"kind": "webhook", "secret": "k"}, "slug"),
        ({"kind": "webhook", "slug": "gh"}, "secret"),
        ({"kind": "workflow"}, "after_workflow"),
        ({"kind": "workflow", "after_workflow": "report", "on_statuses": ["won"]}, "on_statuses"),
        (
            {"kind": "workflow", "after_workflow": "report", "on_statuses": ["succeeded"]},
            "after_workflow",
        ),
        ({"kind": "sometimes"}, "kind"),
        ({"kind": "cron", "cron": "0 * * * *", "colour": "red"}, "colour"),
        ({"kind": "cron", "cron": "0 * * * *", "workflow": "nope"}, "workflow"),
        ({"kind": "cron", "cron": "0 * * * *", "name": "has space"}, "name"),
    ],
)
def test_a_bad_trigger_is_refused_at_its_field_and_nothing_is_stored(api, report, body, path):
    response = api.post(
        "/api/v1/triggers", {"workflow": "report", "name": "t", **body}, format="json"
    )
    assert response.status_code == 400, response.content
    assert path in [e["path"] for e in response.json()["errors"]], response.json()
    assert not Trigger.objects.exists()


def test_a_cycle_of_completion_triggers_is_refused(api, report, deploy):
    make(
        deploy,
        name="after-report",
        kind="workflow",
        after_workflow=report,
        on_statuses=["succeeded"],
    )
    response = api.post(
        "/api/v1/triggers",
        {
            "workflow": "report",
            "name": "loop",
            "kind": "workflow",
            "after_workflow": "deploy",
            "on_statuses": ["failed"],
        },
        format="json",
    )
    assert response.status_code == 400
    assert "cycle" in response.json()["errors"][0]["message"]


def test_webhook_slugs_are_unique(api, report, deploy):
    make(report, name="a", kind="webhook", slug="gh", secret="k")
    response = api.post(
        "/api/v1/triggers",
        {"workflow": "deploy", "name": "b", "kind": "webhook", "slug": "gh", "secret": "k"},
        format="json",
    )
    assert response.status_code == 400
    assert response.json()["errors"][0]["path"] == "slug"


def test_triggers_are_listed_filtered_changed_switched_and_deleted(api, report, deploy):
    cron = make(report, name="hourly")
    make(deploy, name="gh", kind="webhook", slug="gh", secret="k")

    assert [t["name"] for t in api.get("/api/v1/triggers?kind=webhook").json()["results"]] == ["gh"]
    assert [t["name"] for t in api.get("/api/v1/workflows/report/triggers").json()["results"]] == [
        "hourly"
    ]
    assert api.get("/api/v1/triggers?kind=sometimes").status_code == 400

    changed = api.patch(f"/api/v1/triggers/{cron.pk}", {"cron": "*/5 * * * *"}, format="json")
    assert changed.status_code == 200, changed.content
    assert datetime.fromisoformat(changed.json()["next_fire_times"][0]).minute % 5 == 0

    off = api.post(f"/api/v1/triggers/{cron.pk}/disable").json()
    assert (off["enabled"], off["next_fire_times"]) == (False, [])
    assert Trigger.objects.get(pk=cron.pk).next_fire_at is None
    assert api.post(f"/api/v1/triggers/{cron.pk}/enable").json()["enabled"] is True

    assert api.delete(f"/api/v1/triggers/{cron.pk}").status_code == 204
    types = list(Event.objects.filter(type__startswith="trigger.").values_list("type", flat=True))
    assert types == [
        "trigger.created",
        "trigger.created",
        "trigger.changed",
        "trigger.disabled",
        "trigger.enabled",
        "trigger.deleted",
    ]


def test_the_trigger_api_needs_credentials(report):
    assert APIClient().get("/api/v1/triggers").status_code in (401, 403)


# Cron


def test_a_due_schedule_starts_one_run_named_by_its_fire_time(report):
    trigger = make(report, input={"at": "{{ fire_time }}"})
    fire_at = trigger.next_fire_at
    now = fire_at + timedelta(seconds=1)

    assert triggers.fire_due_schedules(now) == 1
    assert triggers.fire_due_schedules(now) == 0  # moved on to the next hour
    (run,) = runs_of(report)
    assert run.input == {"at": fire_at.isoformat()}
    assert run.idempotency_key == f"cron:{trigger.pk}:{fire_at.isoformat()}"
    trigger.refresh_from_db()
    assert trigger.next_fire_at == fire_at + timedelta(hours=1)
    assert (trigger.fires, trigger.last_run_id) == (1, run.pk)


def test_the_same_fire_seen_twice_starts_one_run(report):
    trigger = make(report, input={"at": "{{ fire_time }}"})
    fire_at = trigger.next_fire_at
    triggers.fire_due_schedules(fire_at)
    # Another cluster that read the trigger before the first one moved it on.
    Trigger.objects.filter(pk=trigger.pk).update(next_fire_at=fire_at)
    triggers.fire_due_schedules(fire_at)
    assert len(runs_of(report)) == 1


def test_skip_drops_fires_missed_while_nothing_ran(report):
    trigger = make(report, input={"at": "x"})
    later = trigger.next_fire_at + timedelta(hours=3, minutes=30)
    assert triggers.fire_due_schedules(later) == 0
    assert runs_of(report) == []
    skipped = Event.objects.get(type="trigger.skipped")
    assert skipped.data == {"trigger": "t", "missed_fires": 4, "policy": "skip"}
    trigger.refresh_from_db()
    assert trigger.next_fire_at > later


def test_run_once_fires_once_for_all_it_missed(report):
    trigger = make(report, input={"at": "{{ fire_time }}"}, missed="run_once")
    later = trigger.next_fire_at + timedelta(hours=3, minutes=30)
    assert triggers.fire_due_schedules(later) == 1
    (run,) = runs_of(report)
    assert run.input["at"] == (trigger.next_fire_at + timedelta(hours=3)).isoformat()


def test_a_disabled_schedule_never_fires(report):
    trigger = make(report, input={"at": "x"}, enabled=False)
    assert trigger.next_fire_at is None
    assert triggers.fire_due_schedules(timezone.now() + timedelta(days=2)) == 0


def test_an_input_the_workflow_refuses_is_recorded_and_the_schedule_goes_on(report):
    trigger = make(report, input={"when": "{{ fire_time }}"})  # `at` is required
    fire_at = trigger.next_fire_at
    assert triggers.fire_due_schedules(fire_at) == 0
    failed = Event.objects.get(type="trigger.failed")
    assert "at" in failed.data["error"]
    trigger.refresh_from_db()
    assert trigger.next_fire_at == fire_at + timedelta(hours=1)


# Workflow completion


def test_a_run_ending_starts_its_followers_once(report, deploy, run_to_end):
    triggers.fire_after_runs()  # the cursor starts at the end of the log
    make(
        report,
        name="after-deploy",
        kind="workflow",
        after_workflow=deploy,
        on_statuses=["succeeded"],
        input={"at": "{{ run.id }}", "ref": "{{ run.status }}"},
    )
    make(
        report,
        name="on-failure",
        kind="workflow",
        after_workflow=deploy,
        on_statuses=["failed"],
        input={"at": "x"},
    )
    from runs import services

    upstream = run_to_end(services.start_run(deploy, {}))
    assert upstream.status == "succeeded"

    assert triggers.fire_after_runs() == 1
    assert triggers.fire_after_runs() == 0
    (follower,) = runs_of(report)
    assert follower.input == {"at": str(upstream.pk), "ref": "succeeded"}
    assert follower.idempotency_key.startswith("after:")


# Webhooks


@pytest.fixture
def hook(report) -> Trigger:
    set_secret("gh_key", "s3cret")
    return make(
        report,
        name="gh",
        kind="webhook",
        slug="gh",
        secret="gh_key",
        input={"at": "{{ payload.head_commit.timestamp }}", "ref": "{{ payload.ref }}"},
    )


PAYLOAD = json.dumps({"ref": "main", "head_commit": {"timestamp": "2026-11-22T10:00:00Z"}}).encode()


def signed(body: bytes, key: str = "s3cret") -> str:
    return "sha256=" + hmac.new(key.encode(), body, hashlib.sha256).hexdigest()


def post(client, body: bytes, **headers: str):
    return client.post("/hooks/gh", body, content_type="application/json", headers=headers)


def test_a_signed_delivery_starts_a_run_with_the_mapped_payload(client, hook, report):
    response = post(client, PAYLOAD, **{"X-Furrow-Signature": signed(PAYLOAD)})
    assert response.status_code == 202, response.content
    run = Run.objects.get(pk=response.json()["run"])
    assert run.input == {"at": "2026-11-22T10:00:00Z", "ref": "main"}
    assert run.workflow == report


def test_githubs_signature_header_is_accepted_too(client, hook):
    response = post(client, PAYLOAD, **{"X-Hub-Signature-256": signed(PAYLOAD)})
    assert response.status_code == 202


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"X-Furrow-Signature": signed(PAYLOAD, "wrong")},
        {"X-Furrow-Signature": signed(PAYLOAD + b" ")},
        {"X-Furrow-Signature": "sha256="},
        {"X-Furrow-Token": "s3cret"},  # a token where a signature is required
    ],
)
def test_a_bad_signature_is_401_and_starts_nothing(client, hook, headers):
    response = post(client, PAYLOAD, **headers)
    assert response.status_code == 401
    assert response.json()["message"]
    assert not Run.objects.exists()


def test_a_token_webhook_checks_its_token(client, hook):
    Trigger.objects.filter(pk=hook.pk).update(auth="token")
    assert post(client, PAYLOAD, **{"X-Furrow-Token": "nope"}).status_code == 401
    assert post(client, PAYLOAD, Authorization="Bearer nope").status_code == 401
    assert post(client, PAYLOAD, **{"X-Furrow-Token": "s3cret"}).status_code == 202
    assert post(client, PAYLOAD, Authorization="Bearer s3cret").status_code == 202


def test_the_same_delivery_twice_is_one_run(client, hook):
    headers = {"X-Furrow-Signature": signed(PAYLOAD), "X-GitHub-Delivery": "d-1"}
    first = post(client, PAYLOAD, **headers).json()
    again = post(client, PAYLOAD, **headers).json()
    assert first["run"] == again["run"]
    assert (first["created"], again["created"]) == (True, False)
    assert Run.objects.count() == 1


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        (b"{not json", 400, "JSON"),
        (json.dumps({"ref": "main"}).encode(), 400, "head_commit"),  # the mapping needs it
        (json.dumps({"ref": 1, "head_commit": {"timestamp": "t"}}).encode(), 400, "ref"),
    ],
)
def test_a_payload_that_cannot_make_the_input_is_400_and_starts_nothing(
    client, hook, body, status, words
):
    response = post(client, body, **{"X-Furrow-Signature": signed(body)})
    assert response.status_code == status, response.content
    assert words in json.dumps(response.json())
    assert not Run.objects.exists()


def test_unknown_or_disabled_webhooks_are_404(client, hook):
    assert client.post("/hooks/nope", PAYLOAD, content_type="application/json").status_code == 404
    triggers.set_enabled(hook, False)
    assert post(client, PAYLOAD, **{"X-Furrow-Signature": signed(PAYLOAD)}).status_code == 404


def test_a_webhook_whose_secret_is_gone_is_503(client, hook):
    from steps.secrets import delete_secret

    delete_secret("gh_key")
    assert post(client, PAYLOAD, **{"X-Furrow-Signature": signed(PAYLOAD)}).status_code == 503
    assert not Run.objects.exists()


def test_only_post_reaches_a_webhook(client, hook):
    assert client.get("/hooks/gh").status_code == 405


def test_an_oversized_delivery_is_413(client, hook, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 100
    body = json.dumps({"ref": "x" * 200}).encode()
    assert post(client, body, **{"X-Furrow-Signature": signed(body)}).status_code == 413


# The admin


def test_the_admin_shows_a_bad_schedule_at_its_field(client, alice, report):
    client.force_login(alice)
    page = client.post(
        "/admin/flows/trigger/add/",
        {
            "workflow": report.pk,
            "name": "t",
            "kind": "cron",
            "enabled": "on",
            "input": "{}",
            "cron": "61 * * * *",
            "timezone": "UTC",
            "missed": "skip",
            "auth": "hmac",
            "on_statuses": "[]",
        },
    )
    assert page.status_code == 200
    assert "not a cron expression" in page.content.decode()
    assert not Trigger.objects.exists()


def test_the_admin_adds_and_switches_triggers_through_the_service(client, alice, report):
    client.force_login(alice)
    client.post(
        "/admin/flows/trigger/add/",
        {
            "workflow": report.pk,
            "name": "t",
            "kind": "cron",
            "enabled": "on",
            "input": '{"at": "{{ fire_time }}"}',
            "cron": "0 * * * *",
            "timezone": "UTC",
            "missed": "skip",
            "auth": "hmac",
            "on_statuses": "[]",
        },
    )
    trigger = Trigger.objects.get()
    assert trigger.next_fire_at is not None
    client.post("/admin/flows/trigger/", {"action": "disable", "_selected_action": [trigger.pk]})
    trigger.refresh_from_db()
    assert (trigger.enabled, trigger.next_fire_at) == (False, None)
    listing = client.get("/admin/flows/trigger/").content.decode()
    assert "0 * * * * (UTC)" in listing


@pytest.mark.django_db(transaction=True)
def test_clusters_firing_at_the_same_moment_start_one_run(report):
    from tests.concurrency.test_races import in_threads

    trigger = make(report, input={"at": "{{ fire_time }}"})
    now = trigger.next_fire_at + timedelta(seconds=1)
    in_threads([lambda: triggers.fire_due_schedules(now) for _ in range(4)])
    assert len(runs_of(report)) == 1
    assert Trigger.objects.get(pk=trigger.pk).fires == 1


def test_runs_that_ended_before_the_first_completion_trigger_start_nothing(
    report, deploy, run_to_end
):
    from runs import services
    from runs.models import HookCursor

    earlier = run_to_end(services.start_run(deploy, {}))
    assert triggers.fire_after_runs() == 0
    assert not HookCursor.objects.filter(name=triggers.CURSOR).exists()  # no trigger, no writes

    make(
        report,
        name="after-deploy",
        kind="workflow",
        after_workflow=deploy,
        on_statuses=["succeeded"],
        input={"at": "{{ run.id }}"},
    )
    assert triggers.fire_after_runs() == 0
    later = run_to_end(services.start_run(deploy, {}))
    assert triggers.fire_after_runs() == 1
    assert [r.input["at"] for r in runs_of(report)] == [str(later.pk)]
    assert earlier.pk != later.pk
