"""Deciding approvals and cancelling runs from the admin and from the shell, through the services."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from django.contrib.auth.models import Permission
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from flows.models import WorkflowGrant
from runs import services
from runs.models import Approval, Event, Run, StepRun
from tests.conftest import drive
from tests.integration.test_approvals import RELEASE, advance, status_of

pytestmark = pytest.mark.django_db

SIGN_OFF = {
    "name": "sign-off",
    "steps": {
        "gate": {
            "type": "approval",
            "with": {"approvers": {"users": ["bob"]}, "message": "Ship it?\nIt is Friday."},
        },
        "after": {"type": "noop", "needs": ["gate"]},
    },
}

GATED = {
    "name": "gated",
    "steps": {"deploy": {"type": "noop", "requires_approval": {"approvers": {"users": ["bob"]}}}},
}

APPROVALS = reverse("admin:runs_approval_changelist")
RUNS = reverse("admin:runs_run_changelist")


@pytest.fixture
def waiting(publish: Any) -> Any:
    """Start a run of a definition and run it up to its approval; returns the waiting run."""

    def _waiting(definition: dict[str, Any] = SIGN_OFF) -> Run:
        run = services.start_run(publish(definition), {})
        advance(run)
        return run

    return _waiting


@pytest.fixture
def charlie(django_user_model: Any) -> Any:
    """Staff who may look at approvals in the admin but is not among anyone's approvers."""
    user = django_user_model.objects.create_user("charlie", is_staff=True)
    user.user_permissions.add(
        Permission.objects.get(codename="view_approval"),
        Permission.objects.get(codename="view_run"),
    )
    return user


def admin_action(client: Any, url: str, action: str, objects: list[Any]) -> list[str]:
    """Post a changelist action for `objects`; the messages the admin shows afterwards."""
    response = client.post(
        url, {"action": action, "_selected_action": [obj.pk for obj in objects]}, follow=True
    )
    assert response.status_code == 200
    return [str(message) for message in response.context["messages"]]


# admin


def test_the_approval_list_its_filters_and_the_run_page_render_for_staff(client, alice, waiting):
    run = waiting()
    approval = Approval.objects.get(run=run)
    client.force_login(alice)
    pages = [
        APPROVALS,
        APPROVALS + "?status__exact=pending&kind__exact=approval",
        APPROVALS + "?q=sign-off",
        reverse("admin:runs_approval_change", args=[approval.pk]),
    ]
    for url in pages:
        assert client.get(url).status_code == 200, url
    listing = client.get(APPROVALS).content.decode()
    assert "users: bob" in listing
    assert reverse("admin:runs_run_change", args=[run.pk]) in listing
    run_page = client.get(reverse("admin:runs_run_change", args=[run.pk])).content.decode()
    assert "pending approvals" in run_page.lower()
    assert "Ship it?" in run_page


def test_the_approval_list_costs_the_same_queries_for_one_row_or_many(client, alice, waiting):
    waiting()
    client.force_login(alice)
    with CaptureQueriesContext(connection) as one:
        client.get(APPROVALS)
    for _ in range(3):
        waiting()
    with CaptureQueriesContext(connection) as four:
        assert "4 approvals" in client.get(APPROVALS).content.decode()
    assert len(four) == len(one)


def test_the_approval_form_accepts_no_writes_and_there_is_no_delete(client, alice, waiting):
    approval = Approval.objects.get(run=waiting())
    client.force_login(alice)
    url = reverse("admin:runs_approval_change", args=[approval.pk])
    assert client.post(url, {"status": "decided", "decision": "approve"}).status_code == 403
    assert client.get(url + "delete/").status_code == 403
    approval.refresh_from_db()
    assert approval.status == "pending"


def test_the_approve_action_decides_as_the_user_and_the_step_moves_on(client, alice, waiting):
    run = waiting()
    approval = Approval.objects.get(run=run)
    client.force_login(alice)

    shown = admin_action(client, APPROVALS, "approve", [approval])

    assert shown == [f"sign-off run {str(run.pk)[:8]} step 'gate': approved."]
    approval.refresh_from_db()
    assert (approval.status, approval.decision) == ("decided", "approve")
    assert (approval.decided_by, approval.comment) == (alice, "decided in the admin")
    assert status_of(run, "gate") == "succeeded"
    assert Event.objects.get(run=run, type="approval.decided").actor == "user:alice"
    assert drive(run).status == "succeeded"


def test_the_reject_action_fails_the_step_and_the_run(client, alice, waiting):
    run = waiting()
    client.force_login(alice)
    shown = admin_action(client, APPROVALS, "reject", list(Approval.objects.filter(run=run)))
    assert shown == [f"sign-off run {str(run.pk)[:8]} step 'gate': rejected."]
    assert status_of(run, "gate") == "failed"
    assert StepRun.objects.get(run=run, name="gate").error == (
        "rejected by alice: decided in the admin"
    )
    assert drive(run).status == "failed"


def test_approving_a_gate_in_the_admin_lets_its_step_run(client, alice, waiting):
    run = waiting(GATED)
    client.force_login(alice)
    admin_action(client, APPROVALS, "approve", list(Approval.objects.filter(run=run)))
    assert status_of(run, "deploy") == "ready"
    assert drive(run).status == "succeeded"


def test_a_staff_user_who_is_not_an_approver_is_told_so_and_nothing_changes(
    client, charlie, waiting
):
    run = waiting()
    WorkflowGrant.objects.create(workflow=run.workflow, user=charlie, role="view")  # sees it
    client.force_login(charlie)
    before = Event.objects.count()

    shown = admin_action(client, APPROVALS, "approve", list(Approval.objects.filter(run=run)))

    assert shown == [
        f"sign-off run {str(run.pk)[:8]} step 'gate': "
        "you are not one of the approvers of step 'gate'"
    ]
    assert Approval.objects.get(run=run).status == "pending"
    assert status_of(run, "gate") == "waiting"
    assert Event.objects.count() == before


def test_an_approval_with_a_form_is_skipped_by_the_bulk_approve_but_others_are_decided(
    client, alice, waiting
):
    with_form, plain = waiting(RELEASE), waiting()
    client.force_login(alice)

    shown = admin_action(client, APPROVALS, "approve", list(Approval.objects.all()))

    assert f"sign-off run {str(plain.pk)[:8]} step 'gate': approved." in shown
    [skipped] = [message for message in shown if "release" in message]
    assert "skipped, its form needs answers" in skipped
    assert Approval.objects.get(run=with_form).status == "pending"
    assert status_of(with_form, "gate") == "waiting"
    assert status_of(plain, "gate") == "succeeded"


def test_an_approval_that_was_already_decided_is_left_alone(client, alice, bob, waiting):
    run = waiting()
    services.decide(run, "gate", "reject", user=bob)
    client.force_login(alice)
    shown = admin_action(client, APPROVALS, "approve", list(Approval.objects.filter(run=run)))
    assert shown == [f"sign-off run {str(run.pk)[:8]} step 'gate': already decided, left alone."]
    assert Approval.objects.get(run=run).decision == "reject"


def test_the_cancel_action_cancels_waiting_runs_and_names_those_that_had_ended(
    client, alice, waiting, publish
):
    open_run = waiting()
    quick = publish({"name": "quick", "steps": {"a": {"type": "noop"}}})
    ended = drive(services.start_run(quick, {}))
    client.force_login(alice)
    assert 'value="cancel"' in client.get(RUNS).content.decode()

    shown = admin_action(client, RUNS, "cancel", [open_run, ended])

    assert shown == [
        "Cancelled 1 run(s).",
        f"Already ended, left alone: quick run {str(ended.pk)[:8]} (succeeded).",
    ]
    open_run.refresh_from_db()
    assert (open_run.status, open_run.error) == ("cancelled", "cancelled in the admin")
    assert Event.objects.get(run=open_run, type="run.cancelled").actor == "user:alice"
    assert Approval.objects.get(run=open_run).status == "dropped"
    ended.refresh_from_db()
    assert ended.status == "succeeded"


def test_staff_who_may_only_view_runs_cannot_cancel_them(client, charlie, waiting):
    run = waiting()
    client.force_login(charlie)
    assert 'value="cancel"' not in client.get(RUNS).content.decode()
    assert admin_action(client, RUNS, "cancel", [run]) == []
    run.refresh_from_db()
    assert run.status == "running"


# commands


def command(*args: Any) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def failing_command(*args: Any) -> CommandError:
    with pytest.raises(CommandError) as excinfo:
        call_command(*args, stdout=io.StringIO())
    return excinfo.value


def test_approvals_lists_the_pending_ones_as_a_table(waiting, bob):
    run, decided = waiting(), waiting(GATED)
    services.decide(decided, "deploy", "approve", user=bob)

    lines = command("approvals").splitlines()

    assert lines[0].split() == [
        "RUN",
        "WORKFLOW",
        "STEP",
        "KIND",
        "MESSAGE",
        "APPROVERS",
        "EXPIRES",
    ]
    assert len(lines) == 2
    assert lines[1].split("  ")[0] == str(run.pk)
    assert "sign-off" in lines[1]
    assert "Ship it?" in lines[1]
    assert "It is Friday" not in lines[1]  # the first line of the message only
    assert "users: bob" in lines[1]
    assert lines[1].endswith("never")


def test_approvals_all_adds_decided_ones_with_their_outcome_and_run_filters(waiting, bob):
    run, decided = waiting(), waiting(GATED)
    services.decide(decided, "deploy", "approve", user=bob)

    every = command("approvals", "--all").splitlines()
    assert every[0].split()[-1] == "STATUS"
    assert len(every) == 3
    assert any(line.endswith("decided: approve by bob") for line in every)
    only = command("approvals", "--all", "--run", str(run.pk)).splitlines()
    assert [line.split("  ")[0] for line in only[1:]] == [str(run.pk)]


def test_approvals_json_is_the_apis_approval_list(waiting, api):
    run = waiting()
    data = json.loads(command("approvals", "--json"))
    assert data == api.get("/api/v1/approvals", {"status": "pending"}).json()["results"]
    assert [(a["run"], a["step"], a["status"]) for a in data] == [(str(run.pk), "gate", "pending")]


def test_approvals_says_when_there_are_none_and_refuses_an_unknown_run():
    assert command("approvals") == "no pending approvals\n"
    assert json.loads(command("approvals", "--json")) == []
    missing = "00000000-0000-0000-0000-000000000000"
    assert str(failing_command("approvals", "--run", missing)) == f"no run with id {missing}"


def test_approve_decides_as_the_named_user_and_says_where_the_step_is(waiting, bob):
    run = waiting()

    out = command("approve", str(run.pk), "gate", "--as", "bob", "--comment", "ship it")

    assert out == f"approved step 'gate' of run {run.pk}; the step is now succeeded\n"
    gate = StepRun.objects.get(run=run, name="gate")
    assert gate.output == {"decision": "approve", "by": "bob", "comment": "ship it", "data": None}
    assert Event.objects.get(run=run, type="approval.decided").actor == "user:bob"


def test_approve_reject_fails_the_step(waiting, bob):
    run = waiting()
    out = command("approve", str(run.pk), "gate", "--as", "bob", "--reject", "--comment", "no")
    assert out == f"rejected step 'gate' of run {run.pk}; the step is now failed\n"
    assert StepRun.objects.get(run=run, name="gate").error == "rejected by bob: no"


def test_approve_passes_the_form_answers_as_the_data(waiting, bob):
    run = waiting(RELEASE)
    command("approve", str(run.pk), "gate", "--as", "bob", "--data", '{"ticket": "OPS-7"}')
    assert StepRun.objects.get(run=run, name="gate").output["data"] == {"ticket": "OPS-7"}
    assert drive(run).status == "succeeded"


def test_approve_of_a_gate_lets_the_step_run(waiting, bob):
    run = waiting(GATED)
    out = command("approve", str(run.pk), "deploy", "--as", "bob")
    assert out.endswith("the step is now ready\n")


def test_approve_lists_each_problem_with_the_form_and_leaves_it_pending(waiting, bob):
    run = waiting(RELEASE)
    error = failing_command(
        "approve", str(run.pk), "gate", "--as", "bob", "--data", '{"ticket": "nope", "n": 1}'
    )
    assert error.returncode == 1
    lines = str(error).splitlines()
    assert lines[0] == "the data does not fit the form of step 'gate':"
    assert lines[1].startswith("  data.ticket: 'nope' does not match")
    assert Approval.objects.get(run=run).status == "pending"
    assert str(failing_command("approve", str(run.pk), "gate", "--as", "bob")).splitlines()[1] == (
        "  data: 'ticket' is a required property"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--as", "charlie"], "'charlie' is not one of the approvers of step 'gate'"),
        (["--as", "nobody"], "no user named 'nobody'"),
        (["--as", "bob", "--data", "{nope"], "--data: "),
    ],
)
def test_approve_refuses_and_changes_nothing(waiting, bob, charlie, args, message):
    run = waiting()
    error = failing_command("approve", str(run.pk), "gate", *args)
    assert error.returncode == 1
    assert str(error).startswith(message)
    assert Approval.objects.get(run=run).status == "pending"
    assert not Event.objects.filter(run=run, type="approval.decided").exists()


def test_approve_of_a_decided_or_unknown_step_or_run_is_an_error(waiting, bob):
    run = waiting()
    command("approve", str(run.pk), "gate", "--as", "bob")
    assert str(failing_command("approve", str(run.pk), "gate", "--as", "bob")) == (
        f"step 'gate' of run {run.pk} has no pending approval"
    )
    assert "has no pending approval" in str(
        failing_command("approve", str(run.pk), "after", "--as", "bob")
    )
    missing = "00000000-0000-0000-0000-000000000000"
    assert str(failing_command("approve", missing, "gate", "--as", "bob")) == (
        f"no run with id {missing}"
    )
    assert str(failing_command("approve", "nope", "gate", "--as", "bob")) == (
        "'nope' is not a run id (a UUID)"
    )


def test_cancel_run_cancels_as_the_named_user_with_the_reason(waiting, alice):
    run = waiting()
    out = command("cancel_run", str(run.pk), "--reason", "wrong branch", "--as", "alice")
    assert out == f"run {run.pk} cancelled\n"
    run.refresh_from_db()
    assert (run.status, run.error) == ("cancelled", "wrong branch")
    event = Event.objects.get(run=run, type="run.cancelled")
    assert (event.actor, event.data) == ("user:alice", {"reason": "wrong branch"})
    assert status_of(run, "gate") == "cancelled"


def test_cancel_run_without_as_is_the_cli(waiting):
    run = waiting()
    command("cancel_run", str(run.pk))
    assert Event.objects.get(run=run, type="run.cancelled").actor == "cli"


def test_cancel_run_refuses_an_ended_run_an_unknown_user_and_an_unknown_run(waiting):
    run = waiting()
    error = failing_command("cancel_run", str(run.pk), "--as", "nobody")
    assert str(error) == "no user named 'nobody'"
    run.refresh_from_db()
    assert run.status == "running"
    command("cancel_run", str(run.pk))
    error = failing_command("cancel_run", str(run.pk))
    assert (error.returncode, str(error)) == (1, f"run {run.pk} already ended (cancelled)")
    missing = "00000000-0000-0000-0000-000000000000"
    assert str(failing_command("cancel_run", missing)) == f"no run with id {missing}"
