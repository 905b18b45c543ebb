"""The admin's dashboard and its operations pages (issue 7): approvals inbox, dead letters,
health, workers, templates; and the admin lists' links and "Run now".

alice is a superuser; bob is staff with a view grant on two workflows (deploy, deploy-broken)
and nothing on the other two (payroll, payroll-broken).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from flows import access
from flows.models import Workflow, WorkflowGrant, WorkflowTemplate
from runs import services
from runs.models import Approval, DeadLetter, Run, StepRun
from steps import workers
from steps.models import CircuitBreaker, RateLimit, TargetHealth
from steps.worker import run_attempt
from tests.conftest import drive

pytestmark = pytest.mark.django_db

FORM = {
    "type": "object",
    "properties": {"ticket": {"type": "string", "pattern": "^OPS-[0-9]+$"}},
    "required": ["ticket"],
}


def approval_flow(name: str, approvers: dict[str, Any], form: Any = None) -> dict[str, Any]:
    ask: dict[str, Any] = {"approvers": approvers, "message": f"Ship {name}?"}
    if form:
        ask["form"] = form
    return {"name": name, "steps": {"ask": {"type": "approval", "with": ask}}}


def broken_flow(name: str) -> dict[str, Any]:
    charge = {"type": "shell", "run": "echo 'card declined' >&2; exit 3", "dead_letter": True}
    return {"name": name, "steps": {"charge": {**charge, "retry": {"max_attempts": 1}}}}


def waiting(workflow: Workflow) -> Run:
    """A run of an approval workflow, waiting at its approval."""
    run = services.start_run(workflow, {})
    for pk, attempt in StepRun.objects.filter(run=run, status="ready").values_list("pk", "attempt"):
        run_attempt(pk, attempt)
    assert Approval.objects.filter(run=run, status="pending").exists()
    return run


@pytest.fixture
def world(publish) -> dict[str, Any]:
    flows = {
        # bob decides deploy's approvals; only alice payroll's.
        "deploy": publish(approval_flow("deploy", {"users": ["bob"]}, FORM)),
        "payroll": publish(approval_flow("payroll", {"users": ["alice"]})),
        "deploy-broken": publish(broken_flow("deploy-broken")),
        "payroll-broken": publish(broken_flow("payroll-broken")),
    }
    runs = {name: waiting(flows[name]) for name in ("deploy", "payroll")}
    for name in ("deploy-broken", "payroll-broken"):
        runs[name] = drive(services.start_run(flows[name], {}))
    return {"flows": flows, "runs": runs}


@pytest.fixture
def viewer(bob, world) -> Any:
    """bob, staff, who may view deploy and deploy-broken and nothing else."""
    bob.is_staff = True
    bob.save()
    for name in ("deploy", "deploy-broken"):
        WorkflowGrant.objects.create(workflow=world["flows"][name], role="view", user=bob)
    access.forget(bob)
    return bob


def login(client, user) -> Any:
    client.force_login(user)
    return client


def page(client, name: str, **kwargs: Any) -> str:
    response = client.get(reverse(name, kwargs=kwargs or None))
    assert response.status_code == 200, (name, response.status_code)
    return response.content.decode()


PAGES = [
    "admin:index",
    "admin:approvals-inbox",
    "admin:dead-letters-page",
    "admin:health-page",
    "admin:workers-page",
    "admin:templates-gallery",
]


# Rendering and narrowing


@pytest.mark.parametrize("name", PAGES)
def test_every_page_renders_for_a_superuser_with_a_title_and_the_nav(client, alice, world, name):
    html = page(login(client, alice), name)
    assert "<title>" in html
    assert "| Furrow</title>" in html
    for link in ("approvals-inbox", "dead-letters-page", "health-page", "workers-page"):
        assert f'href="{reverse("admin:" + link)}"' in html


@pytest.mark.parametrize("name", PAGES)
def test_every_page_renders_for_staff_with_a_view_grant_only(client, viewer, name):
    page(login(client, viewer), name)


def test_the_dashboard_shows_failures_approvals_and_the_app_list(client, alice, world):
    html = page(login(client, alice), "admin:index")
    broken = world["runs"]["payroll-broken"]
    assert reverse("admin:run-page", args=[broken.pk]) in html
    assert "card declined" in html  # the error's first line
    assert 'Waiting for your approval <span class="muted">(2)</span>' in html
    assert reverse("admin:approvals-inbox") in html
    assert reverse("admin:runs_run_changelist") in html  # the admin's app list
    assert "hx-trigger=\"every 5s [document.visibilityState === 'visible']\"" in html
    assert "2 failed" in html  # runs in the last 24 hours


def test_the_dashboard_shows_only_the_workflows_the_user_may_view(client, viewer, world):
    html = page(login(client, viewer), "admin:index")
    runs = world["runs"]
    assert reverse("admin:run-page", args=[runs["deploy-broken"].pk]) in html
    assert reverse("admin:run-page", args=[runs["payroll-broken"].pk]) not in html
    assert "payroll" not in html
    assert 'Waiting for your approval <span class="muted">(1)</span>' in html
    assert "1 failed" in html


def test_the_dashboard_shows_running_runs_unhealthy_targets_and_workers(client, alice, world):
    now = timezone.now()
    TargetHealth.objects.create(
        key="http:api.example:443", url="https://api.example/health", status="unhealthy",
        error="HTTP 503", checked_at=now,
    )  # fmt: skip
    CircuitBreaker.objects.create(key="connector:billing", state="open", failures=5, opened_at=now)
    workers.register("gpu-1", host="box", pid=42, queues=["gpu"], capacity=4)
    html = page(login(client, alice), "admin:index")
    assert "http:api.example:443" in html
    assert "HTTP 503" in html
    assert "connector:billing" in html
    assert "gpu-1" in html
    assert "alive" in html
    running = world["runs"]["deploy"]  # waiting at its approval: the run is running
    assert Run.objects.get(pk=running.pk).status == "running"
    assert reverse("admin:run-page", args=[running.pk]) in html


def more_of_everything(world: dict[str, Any]) -> None:
    for name in ("deploy", "payroll"):
        for _ in range(3):
            waiting(world["flows"][name])
    for name in ("deploy-broken", "payroll-broken"):
        drive(services.start_run(world["flows"][name], {}))
    now = timezone.now()
    for i in range(3):
        workers.register(f"w{i}", host="box", pid=100 + i, queues=["default"], capacity=2)
        TargetHealth.objects.create(key=f"t{i}", url="http://t/", status="unhealthy")
        CircuitBreaker.objects.create(key=f"b{i}", state="half_open", opened_at=now)


@pytest.mark.parametrize("persona", ["alice", "viewer"])
def test_the_dashboard_costs_the_same_statements_whatever_the_data(client, request, world, persona):
    user = request.getfixturevalue(persona)
    login(client, user)
    urls = [reverse("admin:index"), reverse("admin:dashboard-live")]

    def cost() -> list[int]:
        counts = []
        for url in urls:
            access.forget(user)
            with CaptureQueriesContext(connection) as queries:
                response = client.get(url, HTTP_HX_REQUEST="true")
            assert response.status_code == 200
            counts.append(len(queries))
        return counts

    before = cost()
    more_of_everything(world)
    assert cost() == before
    assert before[1] <= 25, before


def test_the_dashboard_part_answers_htmx_and_sends_plain_visits_to_the_page(client, alice, world):
    login(client, alice)
    url = reverse("admin:dashboard-live")
    response = client.get(url, HTTP_HX_REQUEST="true")
    assert response.status_code == 200
    html = response.content.decode()
    assert html.lstrip().startswith('<div id="dashboard-live"')
    assert "<html" not in html
    assert "card declined" in html
    plain = client.get(url)
    assert plain.status_code == 302
    assert plain["Location"] == reverse("admin:index")


def test_the_dashboard_part_is_narrowed_too(client, viewer, world):
    response = login(client, viewer).get(reverse("admin:dashboard-live"), HTTP_HX_REQUEST="true")
    assert response.status_code == 200
    assert "payroll" not in response.content.decode()


# The approvals inbox


def test_the_inbox_lists_what_the_user_may_decide_with_its_form(client, viewer, world):
    html = page(login(client, viewer), "admin:approvals-inbox")
    deploy = Approval.objects.get(run=world["runs"]["deploy"])
    assert reverse("admin:run-decide", args=[deploy.run_id, "ask"]) in html
    assert "Ship deploy?" in html
    assert f'name="approval-{deploy.pk}-ticket"' in html  # the form from its JSON Schema
    assert f'value="{reverse("admin:approvals-inbox")}"' in html  # the `next` field
    assert '<button type="submit" name="decision" value="approve"' in html
    assert "Ship payroll?" not in html


def test_approving_from_the_inbox_with_answers_returns_to_the_inbox(client, alice, world):
    approval = Approval.objects.get(run=world["runs"]["deploy"])
    inbox = reverse("admin:approvals-inbox")
    response = login(client, alice).post(
        reverse("admin:run-decide", args=[approval.run_id, "ask"]),
        {"decision": "approve", f"approval-{approval.pk}-ticket": "OPS-7", "next": inbox},
    )
    assert response.status_code == 302
    assert response["Location"] == inbox
    approval.refresh_from_db()
    assert (approval.status, approval.decision, approval.data) == (
        "decided",
        "approve",
        {"ticket": "OPS-7"},
    )
    html = page(client, "admin:approvals-inbox")
    assert "Recently decided" in html
    assert "OPS-7" not in html
    assert "decided: approve" in html


def test_a_bad_answer_decides_nothing_and_returns_to_the_inbox(client, alice, world):
    approval = Approval.objects.get(run=world["runs"]["deploy"])
    inbox = reverse("admin:approvals-inbox")
    response = login(client, alice).post(
        reverse("admin:run-decide", args=[approval.run_id, "ask"]),
        {"decision": "approve", f"approval-{approval.pk}-ticket": "nope", "next": inbox},
    )
    assert response["Location"] == inbox
    approval.refresh_from_db()
    assert approval.status == "pending"


def test_a_next_to_another_site_is_ignored(client, alice, world):
    approval = Approval.objects.get(run=world["runs"]["payroll"])
    response = login(client, alice).post(
        reverse("admin:run-decide", args=[approval.run_id, "ask"]),
        {"decision": "reject", "next": "https://evil.example/"},
    )
    assert response["Location"] == reverse("admin:run-page", args=[approval.run_id])
    approval.refresh_from_db()
    assert approval.decision == "reject"


def test_who_is_not_an_approver_cannot_decide(client, viewer, world, publish):
    # deploy-alice: bob may view it (a grant) but only alice decides.
    other = publish(approval_flow("deploy-alice", {"users": ["alice"]}))
    WorkflowGrant.objects.create(workflow=other, role="view", user=viewer)
    access.forget(viewer)
    run = waiting(other)
    login(client, viewer)
    response = client.post(
        reverse("admin:run-decide", args=[run.pk, "ask"]),
        {"decision": "approve", "next": reverse("admin:approvals-inbox")},
    )
    assert response.status_code == 302
    assert Approval.objects.get(run=run).status == "pending"
    hidden = world["runs"]["payroll"]  # a workflow bob may not even see
    response = client.post(
        reverse("admin:run-decide", args=[hidden.pk, "ask"]), {"decision": "approve"}
    )
    assert response.status_code == 404
    assert Approval.objects.get(run=hidden).status == "pending"


# Dead letters


def test_the_dead_letters_page_shows_the_error_and_offers_the_buttons_to_runners(
    client, alice, world
):
    html = page(login(client, alice), "admin:dead-letters-page")
    for name in ("deploy-broken", "payroll-broken"):
        letter = DeadLetter.objects.get(run=world["runs"][name])
        assert reverse("admin:dead-letter-action", args=[letter.pk, "requeue"]) in html
        assert reverse("admin:dead-letter-action", args=[letter.pk, "discard"]) in html
    assert "card declined" in html


def test_a_viewer_sees_their_dead_letters_without_buttons(client, viewer, world):
    html = page(login(client, viewer), "admin:dead-letters-page")
    mine = DeadLetter.objects.get(run=world["runs"]["deploy-broken"])
    assert reverse("admin:run-page", args=[mine.run_id]) in html
    assert "payroll-broken" not in html
    assert reverse("admin:dead-letter-action", args=[mine.pk, "requeue"]) not in html
    assert "view only" in html


def test_requeue_and_discard_call_the_recovery_services(client, alice, world):
    login(client, alice)
    requeue = DeadLetter.objects.get(run=world["runs"]["deploy-broken"])
    discard = DeadLetter.objects.get(run=world["runs"]["payroll-broken"])
    back = reverse("admin:dead-letters-page")
    response = client.post(reverse("admin:dead-letter-action", args=[requeue.pk, "requeue"]))
    assert response.status_code == 302
    assert response["Location"] == back
    response = client.post(reverse("admin:dead-letter-action", args=[discard.pk, "discard"]))
    assert response["Location"] == back
    requeue.refresh_from_db()
    discard.refresh_from_db()
    assert (requeue.status, requeue.resolved_by) == ("requeued", alice)
    assert (discard.status, discard.resolved_by) == ("discarded", alice)
    assert StepRun.objects.get(pk=requeue.step_run_id).status == "ready"
    assert Run.objects.get(pk=requeue.run_id).status == "running"
    again = client.post(reverse("admin:dead-letter-action", args=[discard.pk, "requeue"]))
    assert again.status_code == 302
    discard.refresh_from_db()
    assert discard.status == "discarded"  # reported, not changed
    follow = client.get(back)
    assert "already discarded" in follow.content.decode()


def test_requeue_and_discard_refuse_who_may_not_run_the_workflow(client, viewer, world):
    login(client, viewer)
    mine = DeadLetter.objects.get(run=world["runs"]["deploy-broken"])
    hidden = DeadLetter.objects.get(run=world["runs"]["payroll-broken"])
    for action in ("requeue", "discard"):
        url = reverse("admin:dead-letter-action", args=[mine.pk, action])
        assert client.post(url).status_code == 403
        url = reverse("admin:dead-letter-action", args=[hidden.pk, action])
        assert client.post(url).status_code == 404
    assert set(DeadLetter.objects.values_list("status", flat=True)) == {"open"}
    assert (
        client.get(reverse("admin:dead-letter-action", args=[mine.pk, "requeue"])).status_code
        == 405
    )


def test_a_user_with_a_run_grant_may_requeue(client, viewer, world):
    WorkflowGrant.objects.create(workflow=world["flows"]["deploy-broken"], role="run", user=viewer)
    access.forget(viewer)
    letter = DeadLetter.objects.get(run=world["runs"]["deploy-broken"])
    login(client, viewer).post(reverse("admin:dead-letter-action", args=[letter.pk, "discard"]))
    letter.refresh_from_db()
    assert letter.status == "discarded"


# Health, workers, templates


def test_the_health_page_shows_targets_breakers_and_rate_limits(client, alice):
    now = timezone.now()
    TargetHealth.objects.create(
        key="connector:billing", url="https://billing/health", status="unhealthy",
        error="connection refused", checked_at=now,
    )  # fmt: skip
    CircuitBreaker.objects.create(
        key="connector:billing", state="half_open", failures=5, last_failure="HTTP 502"
    )
    RateLimit.objects.create(
        key="connector:maps",
        rate=2.0,
        burst=10.0,
        tokens=1.0,
        updated_at=now - timedelta(seconds=30),
    )
    html = page(login(client, alice), "admin:health-page")
    assert "connection refused" in html
    assert "unhealthy" in html
    assert "half open" in html
    assert "HTTP 502" in html
    assert "connector:maps" in html
    assert "2/s" in html
    assert "10.0</meter> 10.0" in html  # 1 token + 30 s at 2/s, capped at the burst


def test_the_workers_page_shows_load_state_and_queue_depth(client, alice, publish):
    workflow = publish({"name": "render", "steps": {"draw": {"type": "noop", "queue": "gpu"}}})
    services.start_run(workflow, {})  # its step is ready on `gpu`, claimed by nobody
    workers.register("gpu-1", host="box", pid=7, queues=["gpu"], capacity=3)
    old = workers.register("old", host="box", pid=8, queues=["default"], capacity=2)
    workers.retire(old.name, old.pid)
    html = page(login(client, alice), "admin:workers-page")
    assert "gpu-1" in html
    assert "alive" in html
    assert "old" in html
    assert "gone" in html
    assert "<code>gpu</code>" in html
    assert '?status__exact=ready&amp;queue=gpu">1</a>' in html


def test_the_templates_gallery_links_each_template_to_its_instantiate_page(client, alice, viewer):
    WorkflowTemplate.objects.create(
        name="nightly-report",
        title="Nightly report",
        description="Builds the report.",
        tags=["reports", "cron"],
        parameters={
            "type": "object",
            "properties": {"hour": {"type": "integer", "default": 3, "description": "UTC"}},
        },
        body="name: (( name ))\nsteps: {x: {type: noop}}\n",
    )
    template = WorkflowTemplate.objects.get(name="nightly-report")
    use = reverse("admin:flows_workflowtemplate_instantiate", args=[template.pk])
    html = page(login(client, alice), "admin:templates-gallery")
    assert "Nightly report" in html
    assert "reports" in html
    assert "<code>hour</code>" in html
    assert use in html
    filtered = client.get(reverse("admin:templates-gallery"), {"tag": "cron", "q": "night"})
    assert "Nightly report" in filtered.content.decode()
    assert (
        "Nightly report"
        not in client.get(reverse("admin:templates-gallery"), {"q": "zzz"}).content.decode()
    )
    assert use not in page(login(client, viewer), "admin:templates-gallery")  # no permission


# The admin lists


def test_run_and_workflow_rows_link_to_their_pages(client, alice, world):
    login(client, alice)
    run = world["runs"]["deploy"]
    runs = client.get(reverse("admin:runs_run_changelist")).content.decode()
    assert reverse("admin:run-page", args=[run.pk]) in runs
    flows = client.get(reverse("admin:flows_workflow_changelist")).content.decode()
    assert reverse("admin:workflow-page", args=["deploy"]) in flows
    change = client.get(reverse("admin:runs_run_change", args=[run.pk])).content.decode()
    assert reverse("admin:run-page", args=[run.pk]) in change  # "view on site"


def test_run_now_starts_runs_with_the_default_input_and_reports_input_errors(
    client, alice, publish
):
    easy = publish({"name": "easy", "steps": {"x": {"type": "noop"}}})
    needy = publish(
        {
            "name": "needy",
            "input": {
                "type": "object",
                "properties": {"who": {"type": "string"}},
                "required": ["who"],
            },
            "steps": {"x": {"type": "noop"}},
        }
    )
    response = login(client, alice).post(
        reverse("admin:flows_workflow_changelist"),
        {"action": "run_now", "_selected_action": [easy.pk, needy.pk]},
        follow=True,
    )
    assert response.status_code == 200
    started = Run.objects.get(workflow=easy)
    assert (started.source, started.created_by) == ("admin", alice)
    assert not Run.objects.filter(workflow=needy).exists()
    html = response.content.decode()
    assert reverse("admin:run-page", args=[started.pk]) in html
    assert "Needy: its default input is not enough" in html  # the admin capitalises messages


def test_run_now_refuses_a_workflow_the_user_may_only_view(client, viewer, world):
    from django.contrib.auth.models import Permission

    viewer.user_permissions.add(Permission.objects.get(codename="view_workflow"))
    flow = world["flows"]["deploy-broken"]
    before = Run.objects.filter(workflow=flow).count()
    response = login(client, viewer).post(
        reverse("admin:flows_workflow_changelist"),
        {"action": "run_now", "_selected_action": [flow.pk]},
        follow=True,
    )
    assert "you may not run this workflow" in response.content.decode()
    assert Run.objects.filter(workflow=flow).count() == before
