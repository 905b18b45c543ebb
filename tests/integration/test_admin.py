from __future__ import annotations

import pytest
from django.urls import reverse

from runs import services
from runs.models import Event, LogLine, StepRun

pytestmark = pytest.mark.django_db

FLOW = """
name: admin-demo
steps:
  hello: {type: shell, run: 'echo hi; echo "OUTPUT: {\\"x\\": 1}"'}
  after: {type: noop, needs: [hello], with: {x: "{{ steps.hello.output.x }}"}}
"""


def test_every_admin_page_of_a_finished_run_renders_for_staff(client, alice, publish, run_to_end):
    workflow = publish(FLOW)
    run = run_to_end(services.start_run(workflow, {}))
    client.force_login(alice)
    step = StepRun.objects.filter(run=run).first()
    pages = [
        reverse("admin:index"),
        reverse("admin:flows_workflow_changelist"),
        reverse("admin:flows_workflow_change", args=[workflow.pk]),
        reverse("admin:flows_workflowversion_change", args=[workflow.latest_version_id]),
        reverse("admin:runs_run_changelist") + "?status__exact=succeeded",
        reverse("admin:runs_run_change", args=[run.pk]),
        reverse("admin:runs_steprun_change", args=[step.pk]),
        reverse("admin:runs_event_changelist"),
        reverse("admin:runs_logline_changelist") + f"?run__id__exact={run.pk}",
    ]
    for url in pages:
        response = client.get(url)
        assert response.status_code == 200, url
    run_page = client.get(reverse("admin:runs_run_change", args=[run.pk])).content.decode()
    assert "[hello] hi" in run_page
    assert "furrow/furrow.css" in run_page


def test_the_admin_offers_no_form_that_writes_run_state(client, alice, publish, run_to_end):
    run = run_to_end(services.start_run(publish(FLOW), {}))
    client.force_login(alice)
    before = (Event.objects.count(), LogLine.objects.count())
    response = client.post(reverse("admin:runs_run_change", args=[run.pk]), {"status": "failed"})
    assert response.status_code == 403
    run.refresh_from_db()
    assert run.status == "succeeded"
    assert (Event.objects.count(), LogLine.objects.count()) == before
    assert client.get(reverse("admin:runs_run_add")).status_code == 403


def test_the_admin_refuses_anonymous_visitors(client):
    response = client.get(reverse("admin:runs_run_changelist"))
    assert response.status_code == 302
    assert "/login/" in response["Location"]
