"""The workflow page and the run page (flows/pages.py, runs/pages.py) through Django's test
client: what they show, what their buttons do, who may press them, and the run page's queries.

alice is a superuser; sam is staff (so the admin lets him in) with only the grants a test gives
him; charlie is not staff at all.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from flows import access
from flows.models import Workflow, WorkflowGrant
from runs import services
from runs.models import Approval, LogLine, Run, StepRun
from steps.worker import run_attempt
from tests.conftest import drive

pytestmark = pytest.mark.django_db

PIPELINE = """\
name: pipeline
description: Greets someone
input:
  type: object
  properties:
    who: {type: string, default: world}
    replicas: {type: integer, minimum: 1, default: 1}
steps:
  greet: {type: shell, run: 'echo "hello {{ input.who }}"'}
  after: {type: noop, needs: [greet]}
"""

GATED = {
    "name": "gated",
    "steps": {
        "build": {"type": "noop"},
        "sign-off": {"type": "approval", "needs": ["build"], "with": {"message": "Ship it?"}},
        "ship": {"type": "noop", "needs": ["sign-off"]},
    },
}

TICKETED = {
    "name": "ticketed",
    "steps": {
        "sign-off": {
            "type": "approval",
            "with": {
                "message": "Which ticket?",
                "form": {
                    "type": "object",
                    "properties": {"ticket": {"type": "string", "pattern": "^OPS-[0-9]+$"}},
                    "required": ["ticket"],
                },
            },
        },
        "ship": {"type": "noop", "needs": ["sign-off"]},
    },
}


@pytest.fixture
def sam(django_user_model: Any) -> Any:
    return django_user_model.objects.create_user("sam", "sam@example.com", "sam-pw", is_staff=True)


@pytest.fixture
def charlie(django_user_model: Any) -> Any:
    return django_user_model.objects.create_user("charlie", "c@example.com", "charlie-pw")


def logged_in(user: Any) -> Client:
    access.forget(user)
    client = Client()
    client.force_login(user)
    return client


def grant(workflow: Workflow, user: Any, role: str) -> None:
    WorkflowGrant.objects.create(workflow=workflow, user=user, role=role)
    access.forget(user)


def advance() -> None:
    """Run whatever is ready now (several rounds), without waiting for the run to end."""
    for _ in range(10):
        ready = list(StepRun.objects.filter(status="ready").values_list("pk", "attempt"))
        for pk, attempt in ready:
            run_attempt(pk, attempt)
        if not ready:
            return


def page_of(run: Run) -> str:
    return f"/admin/runs/{run.pk}/"


def action(run: Run, verb: str) -> str:
    return f"/admin/runs/{run.pk}/do/{verb}/"


def text(response: Any) -> str:
    return response.content.decode()


@pytest.fixture
def pipeline(publish) -> Workflow:
    return publish(PIPELINE)


@pytest.fixture
def finished(pipeline) -> Run:
    return drive(services.start_run(pipeline, {"who": "Ada"}))


# Rendering


def test_the_workflow_page_shows_the_graph_the_run_form_the_editor_and_the_runs(
    alice, pipeline, finished
):
    response = logged_in(alice).get("/admin/workflows/pipeline/")
    assert response.status_code == 200
    page = text(response)
    assert 'class="furrow-graph"' in page
    assert 'data-step="greet"' in page
    assert 'id="run-form"' in page
    assert 'name="input-who"' in page
    assert 'name="input-replicas"' in page
    assert 'id="definition"' in page
    assert "Publish a new version" in page
    assert f"/admin/runs/{finished.pk}/" in page
    assert "v1 <span" in page


def test_the_run_page_shows_status_graph_steps_and_the_log(alice, finished):
    response = logged_in(alice).get(page_of(finished))
    assert response.status_code == 200
    page = text(response)
    assert 'id="run-page"' in page
    assert 'data-status="succeeded" data-final="true"' in page
    assert '<span class="badge s-succeeded" id="run-status">succeeded</span>' in page
    assert 'data-step="greet" data-status="succeeded"' in page
    assert 'id="step-after"' in page
    assert "hello Ada" in page  # a log line
    assert "do/cancel/" not in page  # nothing to cancel any more


def test_the_live_part_and_a_step_panel_render_alone(alice, finished):
    client = logged_in(alice)
    live = client.get(f"/admin/runs/{finished.pk}/live/")
    assert live.status_code == 200
    assert text(live).lstrip().startswith('<div id="run-live"')
    assert 'id="log-view"' not in text(live)
    step = client.get(f"/admin/runs/{finished.pk}/steps/greet/", HTTP_HX_REQUEST="true")
    assert step.status_code == 200
    assert text(step).lstrip().startswith('<article class="step-detail" id="detail-greet">')
    assert client.get(f"/admin/runs/{finished.pk}/steps/nope/").status_code == 404


def test_a_user_without_a_view_grant_gets_404_everywhere(sam, pipeline, finished):
    client = logged_in(sam)
    for url in [
        "/admin/workflows/pipeline/",
        "/admin/workflows/pipeline/runs/",
        page_of(finished),
        f"/admin/runs/{finished.pk}/live/",
        f"/admin/runs/{finished.pk}/steps/greet/",
    ]:
        assert client.get(url).status_code == 404, url
    assert client.post(action(finished, "rerun")).status_code == 404
    assert client.post("/admin/workflows/pipeline/start/", {}).status_code == 404
    assert Run.objects.count() == 1


def test_a_user_who_is_not_staff_is_sent_to_the_login(charlie, finished):
    response = logged_in(charlie).get(page_of(finished))
    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")


# Run actions


def test_cancel_from_the_run_page_cancels_the_run_and_its_steps(alice, pipeline):
    run = services.start_run(pipeline, {})
    response = logged_in(alice).post(action(run, "cancel"), {"reason": "not today"}, follow=True)
    assert response.redirect_chain == [(page_of(run), 302)]
    assert f"Run {str(run.pk)[:8]} cancelled." in text(response)
    run.refresh_from_db()
    assert (run.status, run.error) == ("cancelled", "not today")
    assert set(run.steps.values_list("status", flat=True)) == {"cancelled"}
    assert run.events.filter(type="run.cancelled", actor="user:alice").exists()


def test_pause_then_resume_from_the_run_page(alice, pipeline):
    run = services.start_run(pipeline, {})
    client = logged_in(alice)
    assert client.post(action(run, "pause")).status_code == 302
    run.refresh_from_db()
    assert run.status == "paused"
    assert "Resume</button>" in text(client.get(page_of(run)))
    assert client.post(action(run, "resume")).status_code == 302
    run.refresh_from_db()
    assert run.status == "running"
    assert drive(run).status == "succeeded"


def test_rerun_of_a_cancelled_run_starts_a_new_run_and_lands_on_its_page(alice, pipeline):
    cancelled = services.cancel_run(services.start_run(pipeline, {"who": "Ada"}))
    client = logged_in(alice)
    assert action(cancelled, "rerun") in text(client.get(page_of(cancelled)))
    response = client.post(action(cancelled, "rerun"))
    rerun = Run.objects.exclude(pk=cancelled.pk).get()
    assert response.status_code == 302
    assert response["Location"] == page_of(rerun)
    assert (rerun.rerun_of_id, rerun.input) == (cancelled.pk, cancelled.input)
    assert drive(rerun).status == "succeeded"


def test_an_action_that_does_not_fit_the_state_is_a_message_not_a_change(alice, finished):
    response = logged_in(alice).post(action(finished, "cancel"), follow=True)
    assert "already ended" in text(response)
    finished.refresh_from_db()
    assert finished.status == "succeeded"
    assert logged_in(alice).post(action(finished, "explode")).status_code == 404


def test_a_view_only_user_cannot_control_runs(sam, pipeline):
    grant(pipeline, sam, "view")
    run = services.start_run(pipeline, {})
    client = logged_in(sam)
    page = text(client.get(page_of(run)))
    assert "Cancel run" not in page
    assert "Pause</button>" not in page
    response = client.post(action(run, "cancel"), follow=True)
    assert "You may not control runs of this workflow." in text(response)
    run.refresh_from_db()
    assert run.status == "running"
    assert not run.steps.filter(status="cancelled").exists()


# Approvals


def test_approving_from_the_run_page_lets_the_run_finish(alice, publish):
    run = services.start_run(publish(GATED), {})
    advance()
    client = logged_in(alice)
    page = text(client.get(page_of(run)))
    assert 'id="run-approvals"' in page
    assert "Ship it?" in page

    url = f"/admin/runs/{run.pk}/decide/sign-off/"
    response = client.post(url, {"decision": "approve", "comment": "go"}, follow=True)
    assert "Sign-off: approved." in text(response)  # the admin capitalises messages
    approval = Approval.objects.get(run=run)
    assert (approval.status, approval.decision, approval.comment) == ("decided", "approve", "go")
    assert approval.decided_by == alice
    assert drive(run).status == "succeeded"
    assert 'id="run-approvals"' not in text(client.get(page_of(run)))


def test_an_approval_with_a_form_needs_valid_answers(alice, publish):
    run = services.start_run(publish(TICKETED), {})
    advance()
    approval = Approval.objects.get(run=run)
    field = f"approval-{approval.pk}-ticket"
    client = logged_in(alice)
    assert f'name="{field}"' in text(client.get(page_of(run)))
    url = f"/admin/runs/{run.pk}/decide/sign-off/"

    refused = client.post(url, {"decision": "approve", field: "nope"}, follow=True)
    assert "ticket:" in text(refused)
    approval.refresh_from_db()
    assert approval.status == "pending"

    client.post(url, {"decision": "approve", field: "OPS-7"})
    approval.refresh_from_db()
    assert (approval.status, approval.data) == ("decided", {"ticket": "OPS-7"})
    assert drive(run).status == "succeeded"


def test_a_decision_must_be_approve_or_reject_and_a_rejection_fails_the_run(alice, publish):
    run = services.start_run(publish(GATED), {})
    advance()
    client = logged_in(alice)
    url = f"/admin/runs/{run.pk}/decide/sign-off/"
    assert "Choose approve or reject." in text(client.post(url, {"decision": "maybe"}, follow=True))
    assert Approval.objects.get(run=run).status == "pending"
    client.post(url, {"decision": "reject", "comment": "no"})
    assert drive(run).status == "failed"
    assert StepRun.objects.get(run=run, name="sign-off").status == "failed"


def test_a_user_not_named_as_approver_cannot_decide(sam, publish):
    # With no approvers named, staff may decide; naming one leaves sam (staff, view grant) out.
    named = {**GATED, "steps": {**GATED["steps"]}}
    named["steps"]["sign-off"] = {
        "type": "approval",
        "needs": ["build"],
        "with": {"message": "Ship it?", "approvers": {"users": ["bob"]}},
    }
    workflow = publish(named)
    grant(workflow, sam, "view")
    run = services.start_run(workflow, {})
    advance()
    client = logged_in(sam)
    assert 'id="run-approvals"' not in text(client.get(page_of(run)))
    url = f"/admin/runs/{run.pk}/decide/sign-off/"
    response = client.post(url, {"decision": "approve"}, follow=True)
    assert "You are not one of the approvers of step &#x27;sign-off&#x27;" in text(response)
    assert Approval.objects.get(run=run).status == "pending"


# The Run form


def test_the_run_form_starts_a_run_with_the_typed_input(alice, pipeline):
    response = logged_in(alice).post(
        "/admin/workflows/pipeline/start/", {"input-who": "Grace", "input-replicas": "3"}
    )
    run = Run.objects.get()
    assert response.status_code == 302
    assert response["Location"] == page_of(run)
    assert run.input == {"who": "Grace", "replicas": 3}
    assert (run.source, run.created_by) == ("ui", alice)


def test_the_run_form_refuses_bad_input_with_the_field_error(alice, pipeline):
    response = logged_in(alice).post(
        "/admin/workflows/pipeline/start/", {"input-who": "x", "input-replicas": "0"}
    )
    assert response.status_code == 400
    assert '<div class="field errors">' in text(response)
    assert "greater than or equal to 1" in text(response)
    assert not Run.objects.exists()


def test_a_view_only_user_cannot_start_a_run(sam, pipeline):
    grant(pipeline, sam, "view")
    client = logged_in(sam)
    assert 'id="run-form"' not in text(client.get("/admin/workflows/pipeline/"))
    assert client.post("/admin/workflows/pipeline/start/", {"input-who": "x"}).status_code == 403
    assert not Run.objects.exists()


# The editor


EDITED = PIPELINE.replace("description: Greets someone", "description: Greets warmly")


def test_the_check_endpoint_lists_problems_with_their_paths_or_says_valid(alice, pipeline):
    client = logged_in(alice)
    url = "/admin/workflows/pipeline/check/"
    broken = client.post(url, {"definition": EDITED.replace("needs: [greet]", "needs: [nope]")})
    assert broken.status_code == 200
    assert '<code class="path">steps.after.needs[0]</code> unknown step &#x27;nope&#x27;' in text(
        broken
    )
    renamed = client.post(url, {"definition": EDITED.replace("name: pipeline", "name: other")})
    assert "must stay &#x27;pipeline&#x27;" in text(renamed)
    valid = client.post(url, {"definition": EDITED})
    assert '<p class="valid">Valid.</p>' in text(valid)
    assert "<html" not in text(valid)  # the partial alone


def test_publishing_with_problems_is_a_400_listing_them_and_changes_nothing(alice, pipeline):
    broken = EDITED.replace("type: noop", "type: bogus")
    response = logged_in(alice).post("/admin/workflows/pipeline/publish/", {"definition": broken})
    assert response.status_code == 400
    page = text(response)
    assert '<code class="path">steps.after.type</code> unknown step type' in page
    assert "type: bogus" in page  # the text stays in the editor
    assert pipeline.versions.count() == 1


def test_publishing_a_valid_definition_makes_a_new_version(alice, pipeline):
    response = logged_in(alice).post(
        "/admin/workflows/pipeline/publish/", {"definition": EDITED}, follow=True
    )
    assert response.redirect_chain == [("/admin/workflows/pipeline/", 302)]
    assert "Published version 2." in text(response)
    pipeline.refresh_from_db()
    latest = pipeline.latest_version
    assert (latest.number, latest.source, latest.created_by) == (2, EDITED, alice)
    assert pipeline.description == "Greets warmly"

    again = logged_in(alice).post(
        "/admin/workflows/pipeline/publish/", {"definition": EDITED}, follow=True
    )
    assert "Nothing changed" in text(again)
    assert pipeline.versions.count() == 2


def test_the_diff_between_versions_as_a_page_and_as_a_part(alice, pipeline, publish):
    publish(EDITED)
    client = logged_in(alice)
    url = "/admin/workflows/pipeline/diff/?from=1&to=2"
    page = client.get(url)
    assert page.status_code == 200
    assert '<span class="add">+description: Greets warmly</span>' in text(page)
    part = client.get(url, HTTP_HX_REQUEST="true")
    assert text(part).lstrip().startswith('<div class="diff">')
    assert client.get("/admin/workflows/pipeline/diff/?from=1&to=x").status_code == 400
    assert client.get("/admin/workflows/pipeline/diff/?from=1&to=9").status_code == 404


def test_rollback_publishes_an_old_versions_content_as_the_newest(alice, pipeline, publish):
    publish(EDITED)
    response = logged_in(alice).post(
        "/admin/workflows/pipeline/rollback/", {"version": "1"}, follow=True
    )
    assert "Rolled back: version 3 has version 1&#x27;s content." in text(response)
    pipeline.refresh_from_db()
    assert pipeline.latest_version.number == 3
    assert pipeline.latest_version.content_hash == pipeline.versions.get(number=1).content_hash


def test_a_view_only_user_cannot_publish_roll_back_or_pause(sam, pipeline, publish):
    publish(EDITED)
    grant(pipeline, sam, "view")
    client = logged_in(sam)
    page = text(client.get("/admin/workflows/pipeline/"))
    assert "Publish a new version" not in page
    assert "readonly" in page
    base = "/admin/workflows/pipeline"
    assert client.post(f"{base}/publish/", {"definition": PIPELINE}).status_code == 403
    assert client.post(f"{base}/rollback/", {"version": "1"}).status_code == 403
    assert client.post(f"{base}/pause/").status_code == 403
    pipeline.refresh_from_db()
    assert (pipeline.versions.count(), pipeline.paused) == (2, False)


# Queries


def wide(n: int) -> dict[str, Any]:
    """n noop steps in chains of n / 10: wide and deep enough to be a real page."""
    return {
        "name": f"wide-{n}",
        "steps": {
            f"s{i}": {"type": "noop", **({"needs": [f"s{i - 10}"]} if i >= 10 else {})}
            for i in range(n)
        },
    }


def run_page_queries(client: Client, run: Run) -> int:
    with CaptureQueriesContext(connection) as queries:
        response = client.get(page_of(run))
    assert response.status_code == 200
    return len(queries)


def test_the_run_page_queries_do_not_grow_with_the_steps(alice, publish):
    client = logged_in(alice)
    counts = {}
    for n in (50, 500):
        run = services.start_run(publish(wide(n)), {})
        # Some steps done, some with log lines, the rest ready or pending.
        for pk, attempt in StepRun.objects.filter(run=run, status="ready").values_list(
            "pk", "attempt"
        )[:5]:
            run_attempt(pk, attempt)
        step = StepRun.objects.filter(run=run).first()
        LogLine.objects.bulk_create(
            LogLine(run=run, step_run=step, attempt=1, stream="stdout", text=f"line {i}")
            for i in range(20)
        )
        client.get(page_of(run))  # warm the per-process caches (graph layout, compiled spec)
        counts[n] = run_page_queries(client, run)
    assert counts[50] == counts[500], counts
    # 7 when written: session, user, run, steps, approvals, log tail, last event.
    assert counts[500] <= 10, counts
