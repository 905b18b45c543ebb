"""Run control from the admin and from the shell: pause, resume and rerun runs, pause and resume
workflows, requeue and discard dead letters, and start runs with an idempotency key or a priority.
Every state is made with the services; every change goes through them."""

from __future__ import annotations

import html
import io
import json
from typing import Any

import pytest
from django.contrib.auth.models import Permission
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from flows.models import Workflow
from runs import recovery, services
from runs.models import DeadLetter, Event, Run, StepRun
from tests.conftest import drive
from tests.integration.test_approval_admin_and_commands import admin_action as post_action
from tests.integration.test_approval_admin_and_commands import command, failing_command

pytestmark = pytest.mark.django_db

DEAD = {"name": "d", "steps": {"x": {"type": "shell", "run": "exit 1", "dead_letter": True}}}
"""A run of it fails at once and leaves one open dead letter for step x."""

WAITS = {"name": "waits", "steps": {"gate": {"type": "approval"}, "after": {"type": "noop"}}}
"""A run of it keeps running until someone decides (nobody does here)."""

RUNS = reverse("admin:runs_run_changelist")
WORKFLOWS = reverse("admin:flows_workflow_changelist")
LETTERS = reverse("admin:runs_deadletter_changelist")
MISSING = "00000000-0000-0000-0000-000000000000"


@pytest.fixture
def dead_run(publish: Any) -> Any:
    """Start and drive runs of DEAD; each returns failed, with its dead letter."""
    workflow = None

    def _dead_run() -> Run:
        nonlocal workflow
        workflow = workflow or publish(DEAD)
        return drive(services.start_run(workflow, {}))

    return _dead_run


@pytest.fixture
def running(publish: Any) -> Any:
    """Start runs of WAITS; each stays running."""
    workflow = None

    def _running() -> Run:
        nonlocal workflow
        workflow = workflow or publish(WAITS)
        return services.start_run(workflow, {})

    return _running


@pytest.fixture
def charlie(django_user_model: Any) -> Any:
    """Staff who may look at runs, workflows and dead letters but change nothing."""
    user = django_user_model.objects.create_user("charlie", is_staff=True)
    user.user_permissions.add(
        *Permission.objects.filter(codename__in=["view_run", "view_workflow", "view_deadletter"])
    )
    return user


def admin_action(client: Any, url: str, action: str, objects: list[Any]) -> list[str]:
    """The messages an admin action shows, as the reader sees them (they may carry links)."""
    return [html.unescape(message) for message in post_action(client, url, action, objects)]


def short(run: Run) -> str:
    return str(run.pk)[:8]


def status(obj: Any) -> str:
    obj.refresh_from_db()
    return obj.status


# admin: runs


def test_the_run_list_shows_priority_and_links_a_rerun_to_the_run_it_reran(client, alice, dead_run):
    old = dead_run()
    new = recovery.rerun(old)
    client.force_login(alice)

    listing = client.get(RUNS).content.decode()

    assert "priority" in listing.lower()
    assert f"<a href='{reverse('admin:runs_run_change', args=[old.pk])}'>{short(old)}</a>" in (
        listing
    )
    for wanted in ("queued", "paused"):
        assert f"?status__exact={wanted}" in listing
        assert client.get(RUNS + f"?status__exact={wanted}").status_code == 200
    page = client.get(reverse("admin:runs_run_change", args=[new.pk])).content.decode()
    assert reverse("admin:runs_run_change", args=[old.pk]) in page


def test_the_pause_action_pauses_a_running_run_and_gives_the_refusal_for_an_ended_one(
    client, alice, running, dead_run
):
    going, ended = running(), dead_run()
    client.force_login(alice)

    shown = admin_action(client, RUNS, "pause", [going, ended])

    assert sorted(shown) == sorted(
        [
            f"waits run {short(going)}: paused; its running steps finish, nothing new starts.",
            f"d run {short(ended)}: run {ended.pk} is failed, not running",
        ]
    )
    assert (status(going), status(ended)) == ("paused", "failed")
    assert Event.objects.get(run=going, type="run.paused").actor == "user:alice"


def test_the_resume_action_resumes_a_paused_run_and_refuses_a_running_one(client, alice, running):
    paused, going = running(), running()
    services.pause_run(paused)
    client.force_login(alice)

    shown = admin_action(client, RUNS, "resume", [paused, going])

    assert sorted(shown) == sorted(
        [
            f"waits run {short(paused)}: resumed.",
            f"waits run {short(going)}: run {going.pk} is running, not paused",
        ]
    )
    assert (status(paused), status(going)) == ("running", "running")
    assert Event.objects.get(run=paused, type="run.resumed").actor == "user:alice"


def test_the_rerun_action_starts_a_linked_run_from_the_failed_steps_and_refuses_a_running_one(
    client, alice, dead_run, running
):
    failed, going = dead_run(), running()
    client.force_login(alice)

    shown = admin_action(client, RUNS, "rerun", [failed, going])

    new = Run.objects.get(rerun_of=failed)
    link = f"<a href='{reverse('admin:runs_run_change', args=[new.pk])}'>{short(new)}</a>"
    assert sorted(shown) == sorted(
        [
            f"d run {short(failed)}: rerun as {link} (running).",
            f"waits run {short(going)}: run {going.pk} is running; only an ended run can be rerun",
        ]
    )
    assert (new.source, new.created_by) == ("rerun", alice)
    assert list(new.steps.values_list("name", "status")) == [("x", "ready")]
    assert status(failed) == "failed"  # history is not rewritten
    assert not Run.objects.filter(rerun_of=going).exists()


def test_staff_who_may_only_view_runs_get_no_run_control_actions(client, charlie, running):
    run = running()
    client.force_login(charlie)
    listing = client.get(RUNS).content.decode()
    for action in ("cancel", "pause", "resume", "rerun"):
        assert f'value="{action}"' not in listing
    assert admin_action(client, RUNS, "pause", [run]) == []
    assert status(run) == "running"


# admin: workflows


def test_the_workflow_pause_action_pauses_and_refuses_a_workflow_already_paused(
    client, alice, publish
):
    free, held = publish({"name": "free", "steps": {"a": {"type": "noop"}}}), publish(DEAD)
    services.pause_workflow(held)
    client.force_login(alice)

    shown = admin_action(client, WORKFLOWS, "pause", [free, held])

    assert shown == [
        "d: workflow 'd' is already paused",
        "free: paused; new runs queue until it is resumed.",
    ]
    free.refresh_from_db()
    assert free.paused
    assert Event.objects.get(workflow=free, type="workflow.paused").actor == "user:alice"
    assert status(services.start_run(free, {})) == "queued"


def test_the_workflow_resume_action_starts_queued_runs_and_refuses_a_workflow_not_paused(
    client, alice, publish
):
    held, free = publish(WAITS), publish(DEAD)
    services.pause_workflow(held)
    queued = services.start_run(held, {})
    client.force_login(alice)

    shown = admin_action(client, WORKFLOWS, "resume", [free, held])

    assert shown == ["d: workflow 'd' is not paused", "waits: resumed; 1 queued run(s) started."]
    held.refresh_from_db()
    assert not held.paused
    assert status(queued) == "running"


def test_the_workflow_list_shows_and_filters_paused_but_the_form_cannot_change_it(
    client, alice, publish
):
    held, _ = publish(WAITS), publish(DEAD)
    services.pause_workflow(held)
    client.force_login(alice)

    listing = client.get(WORKFLOWS + "?paused__exact=1").content.decode()

    assert "waits" in listing
    assert ">d<" not in listing
    url = reverse("admin:flows_workflow_change", args=[held.pk])
    form = {"description": "new words", "paused": "", "versions-TOTAL_FORMS": "0"}
    grants = {"grants-TOTAL_FORMS": "0", "grants-INITIAL_FORMS": "0"}
    response = client.post(url, {**form, "versions-INITIAL_FORMS": "0", **grants})
    assert response.status_code == 302  # saved: the description is editable, `paused` is not
    held.refresh_from_db()
    assert (held.paused, held.description) == (True, "new words")


def test_staff_without_the_change_workflow_permission_get_no_workflow_actions(
    client, charlie, publish
):
    workflow = publish(WAITS)
    client.force_login(charlie)
    listing = client.get(WORKFLOWS).content.decode()
    assert 'value="pause"' not in listing
    # Django refuses an action it did not offer ("No action selected.", when others are offered).
    assert admin_action(client, WORKFLOWS, "pause", [workflow]) in ([], ["No action selected."])
    workflow.refresh_from_db()
    assert not workflow.paused


# admin: dead letters


def test_the_dead_letter_list_its_filters_search_and_page_render_with_error_and_config(
    client, alice, dead_run
):
    run = dead_run()
    letter = DeadLetter.objects.get(run=run)
    client.force_login(alice)
    for url in [
        LETTERS + "?status__exact=open",
        LETTERS + "?q=x",
        LETTERS + f"?q={run.pk}",
        LETTERS + "?q=d",
    ]:
        response = client.get(url)
        assert response.status_code == 200, url
        assert "1 dead letter" in response.content.decode(), url
    assert "0 dead letters" in client.get(LETTERS + "?status__exact=requeued").content.decode()

    listing = client.get(LETTERS).content.decode()
    assert reverse("admin:runs_run_change", args=[run.pk]) in listing
    page = client.get(reverse("admin:runs_deadletter_change", args=[letter.pk])).content.decode()
    assert f"<pre class='furrow-log'>{letter.error}</pre>" in page
    assert "&quot;run&quot;: &quot;exit 1&quot;" in page  # the rendered config, as JSON


def test_the_dead_letter_list_costs_the_same_queries_for_one_row_or_many(client, alice, dead_run):
    dead_run()
    client.force_login(alice)
    with CaptureQueriesContext(connection) as one:
        client.get(LETTERS)
    for _ in range(3):
        dead_run()
    with CaptureQueriesContext(connection) as four:
        assert "4 dead letters" in client.get(LETTERS).content.decode()
    assert len(four) == len(one)


def test_the_requeue_action_reopens_the_run_and_refuses_a_letter_already_handled(
    client, alice, dead_run
):
    run, other = dead_run(), dead_run()
    letter, handled = DeadLetter.objects.get(run=run), DeadLetter.objects.get(run=other)
    recovery.discard_dead_letter(handled)
    client.force_login(alice)

    shown = admin_action(client, LETTERS, "requeue", [letter, handled])

    assert sorted(shown) == sorted(
        [
            f"dead letter {letter.pk} (d run {short(run)} step 'x'): "
            "requeued; the step runs again and the run is running.",
            f"dead letter {handled.pk} (d run {short(other)} step 'x'): "
            f"dead letter {handled.pk} was already discarded",
        ]
    )
    letter.refresh_from_db()
    assert (letter.status, letter.resolved_by) == ("requeued", alice)
    assert status(run) == "running"
    assert StepRun.objects.get(run=run, name="x").status == "ready"
    assert Event.objects.filter(run=run, type="run.running", actor="user:alice").exists()
    assert status(other) == "failed"


def test_the_discard_action_closes_the_letter_and_refuses_one_already_handled(
    client, alice, dead_run
):
    run, other = dead_run(), dead_run()
    letter, handled = DeadLetter.objects.get(run=run), DeadLetter.objects.get(run=other)
    recovery.discard_dead_letter(handled)
    client.force_login(alice)

    shown = admin_action(client, LETTERS, "discard", [letter, handled])

    assert sorted(shown) == sorted(
        [
            f"dead letter {letter.pk} (d run {short(run)} step 'x'): discarded.",
            f"dead letter {handled.pk} (d run {short(other)} step 'x'): "
            f"dead letter {handled.pk} was already discarded",
        ]
    )
    letter.refresh_from_db()
    assert (letter.status, letter.resolved_by) == ("discarded", alice)
    assert status(run) == "failed"
    assert Event.objects.get(run=run, type="step.dead_letter_discarded").actor == "user:alice"


def test_dead_letters_cannot_be_added_edited_or_deleted_and_view_only_staff_get_no_actions(
    client, alice, charlie, dead_run
):
    letter = DeadLetter.objects.get(run=dead_run())
    url = reverse("admin:runs_deadletter_change", args=[letter.pk])
    client.force_login(alice)
    assert client.post(url, {"status": "discarded"}).status_code == 403
    assert client.get(url + "delete/").status_code == 403
    assert client.get(reverse("admin:runs_deadletter_add")).status_code == 403

    client.force_login(charlie)
    assert client.get(url).status_code == 200
    assert 'value="requeue"' not in client.get(LETTERS).content.decode()
    assert admin_action(client, LETTERS, "requeue", [letter]) == []
    assert status(letter) == "open"


# commands: pause_run, resume_run


def test_pause_run_and_resume_run_change_the_run_as_the_named_user(running, alice):
    run = running()

    assert command("pause_run", str(run.pk), "--as", "alice") == f"run {run.pk} paused\n"
    assert status(run) == "paused"
    assert command("resume_run", str(run.pk)) == f"run {run.pk} resumed\n"
    assert status(run) == "running"
    actors = dict(
        Event.objects.filter(run=run, type__in=["run.paused", "run.resumed"]).values_list(
            "type", "actor"
        )
    )
    assert actors == {"run.paused": "user:alice", "run.resumed": "cli"}


def test_pause_run_and_resume_run_refuse_a_run_in_the_wrong_state_and_unknown_runs(running):
    run = running()
    error = failing_command("resume_run", str(run.pk))
    assert (error.returncode, str(error)) == (1, f"run {run.pk} is running, not paused")
    services.cancel_run(run)
    error = failing_command("pause_run", str(run.pk))
    assert (error.returncode, str(error)) == (1, f"run {run.pk} is cancelled, not running")
    for name in ("pause_run", "resume_run"):
        assert str(failing_command(name, MISSING)) == f"no run with id {MISSING}"
        assert str(failing_command(name, "nope")) == "'nope' is not a run id (a UUID)"
    assert str(failing_command("pause_run", str(run.pk), "--as", "nobody")) == (
        "no user named 'nobody'"
    )


# commands: rerun


def rerunnable(publish: Any) -> Workflow:
    """a succeeds and outputs its input's n; b fails; a rerun of b needs a's output."""
    return publish(
        {
            "name": "again",
            "input": {"type": "object", "properties": {"n": {"type": "integer", "default": 1}}},
            "steps": {
                "a": {"type": "noop", "with": {"n": "{{ input.n }}"}},
                "b": {"type": "shell", "run": "exit 1", "needs": ["a"]},
            },
        }
    )


def test_rerun_prints_the_new_runs_id_and_keeps_what_succeeded(publish, alice):
    old = drive(services.start_run(rerunnable(publish), {}))

    out = command("rerun", str(old.pk), "--as", "alice")

    new = Run.objects.get(rerun_of=old)
    assert out == f"{new.pk}\n"
    assert (new.created_by, new.input) == (alice, {"n": 1})
    assert dict(new.steps.values_list("name", "status")) == {"a": "succeeded", "b": "ready"}
    assert Event.objects.get(run=old, type="run.rerun").actor == "user:alice"


def test_rerun_from_a_step_with_new_input_and_only_one_step(publish):
    old = drive(services.start_run(rerunnable(publish), {}))

    from_a = Run.objects.get(pk=command("rerun", str(old.pk), "--from-step", "a").strip())
    only_b = Run.objects.get(
        pk=command("rerun", str(old.pk), "--only-step", "b", "--input", '{"n": 7}').strip()
    )

    assert dict(from_a.steps.values_list("name", "status")) == {"a": "ready", "b": "pending"}
    assert dict(only_b.steps.values_list("name", "status")) == {"a": "succeeded", "b": "ready"}
    assert only_b.input == {"n": 7}
    assert Event.objects.get(run=old, type="run.rerun", data__only_step="b").actor == "cli"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--from-step", "zz"], "run {run} has no step 'zz'"),
        (["--input", "{n: 1"], "--input: not valid JSON"),
        (
            ["--input", '{"n": "x"}'],
            "the input does not fit the input schema of 'again':\n  input.n: 'x' is not of type",
        ),
        (
            ["--from-step", "a", "--only-step", "b"],
            "Error: argument --only-step: not allowed with argument --from-step",
        ),
        (["--as", "nobody"], "no user named 'nobody'"),
    ],
)
def test_rerun_refuses_bad_arguments_and_starts_nothing(publish, args, message):
    old = drive(services.start_run(rerunnable(publish), {}))
    error = failing_command("rerun", str(old.pk), *args)
    assert error.returncode == 1
    assert str(error).startswith(message.format(run=old.pk))
    assert not Run.objects.filter(rerun_of=old).exists()


def test_rerun_refuses_a_run_that_has_not_ended_and_an_unknown_run(running):
    run = running()
    assert str(failing_command("rerun", str(run.pk))) == (
        f"run {run.pk} is running; only an ended run can be rerun"
    )
    assert str(failing_command("rerun", MISSING)) == f"no run with id {MISSING}"


# commands: pause_workflow


def test_pause_workflow_queues_new_runs_and_resume_starts_them(publish, alice):
    workflow = publish(WAITS)

    out = command("pause_workflow", "waits", "--as", "alice")

    assert out == "workflow 'waits' paused; new runs queue until it is resumed\n"
    workflow.refresh_from_db()  # start_run reads `paused` from the instance it is given
    run = services.start_run(workflow, {})
    assert status(run) == "queued"
    assert command("pause_workflow", "waits", "--resume") == (
        "workflow 'waits' resumed; 1 queued run(s) started, 0 still queued\n"
    )
    assert status(run) == "running"
    workflow.refresh_from_db()
    assert not workflow.paused
    actors = dict(workflow.events.values_list("type", "actor"))
    assert (actors["workflow.paused"], actors["workflow.resumed"]) == ("user:alice", "cli")


def test_pause_workflow_refuses_a_state_it_is_already_in_and_an_unknown_name(publish):
    publish(WAITS)
    error = failing_command("pause_workflow", "waits", "--resume")
    assert (error.returncode, str(error)) == (1, "workflow 'waits' is not paused")
    command("pause_workflow", "waits")
    assert str(failing_command("pause_workflow", "waits")) == "workflow 'waits' is already paused"
    assert str(failing_command("pause_workflow", "nope")) == "no workflow named 'nope'"


# commands: dead_letters, dead_letter


def test_dead_letters_lists_the_open_ones_as_a_table(dead_run, bob):
    run, discarded = dead_run(), dead_run()
    recovery.discard_dead_letter(DeadLetter.objects.get(run=discarded), user=bob)
    letter = DeadLetter.objects.get(run=run)

    lines = command("dead_letters").splitlines()

    assert lines[0].split() == ["ID", "RUN", "WORKFLOW", "STEP", "ATTEMPTS", "ERROR", "CREATED"]
    assert len(lines) == 2
    assert lines[1].split()[:5] == [str(letter.pk), str(run.pk), "d", "x", "1"]
    assert letter.error.splitlines()[0] in lines[1]


def test_dead_letters_all_adds_the_handled_ones_with_who_handled_them(dead_run, bob):
    dead_run()
    discarded = dead_run()
    recovery.discard_dead_letter(DeadLetter.objects.get(run=discarded), user=bob)

    every = command("dead_letters", "--all").splitlines()

    assert every[0].split()[-1] == "STATUS"
    assert len(every) == 3
    assert sorted(line.split()[-1] for line in every[1:]) == ["bob", "open"]
    assert any(line.endswith("discarded by bob") for line in every)


def test_dead_letters_json_is_the_apis_list_and_an_empty_list_says_so(dead_run, api):
    assert command("dead_letters") == "no open dead letters\n"
    assert command("dead_letters", "--all") == "no dead letters\n"
    dead_run()
    data = json.loads(command("dead_letters", "--json"))
    assert data == api.get("/api/v1/dead-letters", {"status": "open"}).json()["results"]
    assert [(d["workflow"], d["step"], d["status"]) for d in data] == [("d", "x", "open")]


def test_dead_letter_shows_the_run_step_attempts_error_and_config(dead_run):
    run = dead_run()
    letter = DeadLetter.objects.get(run=run)

    out = command("dead_letter", str(letter.pk))

    summary, error, config = out.split("\n\n")
    fields = dict(line.split(None, 1) for line in summary.splitlines()[1:])
    assert summary.splitlines()[0].split() == ["dead", "letter", str(letter.pk)]
    assert fields == {
        "status": "open",
        "run": f"{run.pk} (failed)",
        "workflow": "d",
        "step": "x",
        "attempts": "1",
        "created": fields["created"],
        "resolved": "-",
    }
    assert error.splitlines()[0] == "error:"
    assert [line.strip() for line in error.splitlines()[1:]] == letter.error.splitlines()
    assert config.startswith("config:\n")
    assert json.loads(config.removeprefix("config:\n")) == letter.config
    assert letter.config["run"] == "exit 1"
    assert status(letter) == "open"  # looking changes nothing


def test_dead_letter_requeue_reopens_the_run_as_the_named_user(dead_run, alice):
    run = dead_run()
    letter = DeadLetter.objects.get(run=run)

    out = command("dead_letter", str(letter.pk), "--requeue", "--as", "alice")

    assert (
        out == f"dead letter {letter.pk} requeued: step 'x' runs again; run {run.pk} is running\n"
    )
    letter.refresh_from_db()
    assert (letter.status, letter.resolved_by) == ("requeued", alice)
    assert StepRun.objects.get(run=run, name="x").status == "ready"
    assert Event.objects.get(run=run, type="step.ready", data__requeued=letter.pk).actor == (
        "user:alice"
    )
    assert drive(run).status == "failed"  # exit 1 again: a new dead letter
    assert DeadLetter.objects.filter(run=run, status="open").count() == 1


def test_dead_letter_discard_closes_it_and_a_second_decision_is_refused(dead_run):
    run = dead_run()
    letter = DeadLetter.objects.get(run=run)

    assert command("dead_letter", str(letter.pk), "--discard") == (
        f"dead letter {letter.pk} discarded\n"
    )
    assert status(letter) == "discarded"
    assert Event.objects.get(run=run, type="step.dead_letter_discarded").actor == "cli"
    for flag in ("--requeue", "--discard"):
        error = failing_command("dead_letter", str(letter.pk), flag)
        assert (error.returncode, str(error)) == (
            1,
            f"dead letter {letter.pk} was already discarded",
        )
    assert status(run) == "failed"


def test_dead_letter_refuses_unknown_ids_and_users_and_both_flags(dead_run):
    letter = DeadLetter.objects.get(run=dead_run())
    assert str(failing_command("dead_letter", "999999")) == "no dead letter with id 999999"
    assert str(failing_command("dead_letter", "x")) == "'x' is not a dead letter id (a number)"
    assert str(failing_command("dead_letter", str(letter.pk), "--requeue", "--as", "nobody")) == (
        "no user named 'nobody'"
    )
    assert str(failing_command("dead_letter", str(letter.pk), "--requeue", "--discard")) == (
        "Error: argument --discard: not allowed with argument --requeue"
    )
    assert status(letter) == "open"


# commands: start_run with an idempotency key and a priority


def test_start_run_with_the_same_idempotency_key_prints_the_same_run(publish):
    publish(WAITS)
    first = command("start_run", "waits", "--idempotency-key", "order-42")

    out, err = io.StringIO(), io.StringIO()
    call_command("start_run", "waits", "--idempotency-key", "order-42", stdout=out, stderr=err)

    run = Run.objects.get()
    assert first == out.getvalue() == f"{run.pk}\n"
    assert err.getvalue() == (
        f"run {run.pk} was already started with idempotency key 'order-42'; not starting another\n"
    )
    assert run.idempotency_key == "order-42"


def test_start_run_refuses_a_used_key_with_another_input_and_creates_nothing(publish):
    publish(WAITS)
    command("start_run", "waits", "--idempotency-key", "k", "--input", '{"a": 1}')
    run = Run.objects.get()
    error = failing_command("start_run", "waits", "--idempotency-key", "k", "--input", '{"a": 2}')
    assert (error.returncode, str(error)) == (
        1,
        f"idempotency key 'k' was already used for run {run.pk} with a different input",
    )
    assert Run.objects.count() == 1


def test_start_run_priority_orders_the_queue(publish):
    workflow = publish({**WAITS, "concurrency": {"max_runs": 1}})
    command("start_run", "waits")
    low = Run.objects.get(pk=command("start_run", "waits", "--priority", "2").strip())
    high = Run.objects.get(pk=command("start_run", "waits", "--priority", "9").strip())
    assert (low.priority, high.priority) == (2, 9)
    assert (low.status, high.status) == ("queued", "queued")

    services.cancel_run(Run.objects.get(status="running"))
    services.admit_queued(workflow.pk)  # what the cancel's commit hook does
    assert (status(low), status(high)) == ("queued", "running")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--priority", "11"],
            "Error: argument --priority: must be an integer from 1 to 10, not '11'",
        ),
        (
            ["--priority", "high"],
            "Error: argument --priority: must be an integer from 1 to 10, not 'high'",
        ),
        (
            ["--idempotency-key", "k" * 201],
            "Error: argument --idempotency-key: must be at most 200 characters",
        ),
    ],
)
def test_start_run_refuses_a_bad_priority_or_key_and_creates_nothing(publish, args, message):
    publish(WAITS)
    error = failing_command("start_run", "waits", *args)
    assert str(error) == message
    assert not Run.objects.exists()
