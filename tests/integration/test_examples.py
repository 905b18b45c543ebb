"""The example workflows `make run` imports run to the end: every one of them, as shipped."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import call_command
from django.utils import timezone

from flows.models import Workflow
from runs import services
from runs.models import Run, StepRun
from runs.timers import tick
from steps.worker import run_attempt
from tests.conftest import drive

pytestmark = pytest.mark.django_db

EXAMPLES = Path(settings.BASE_DIR) / "examples"


@pytest.fixture
def imported() -> None:
    call_command("import_workflows", str(EXAMPLES))


def test_every_example_is_imported(imported):
    names = {path.stem for path in EXAMPLES.glob("*.yaml")}
    assert names <= set(Workflow.objects.values_list("name", flat=True))


def test_the_scripted_pipeline_runs_its_script_transform_delay_and_subflow(imported):
    run = services.start_run(Workflow.objects.get(name="scripted-pipeline"), {})
    for _ in range(5):
        for pk, attempt in list(
            StepRun.objects.filter(status="ready").values_list("pk", "attempt")
        ):
            run_attempt(pk, attempt)
    tick(timezone.now() + timedelta(seconds=3))  # the delay's time has come
    run = drive(run)
    assert run.status == "succeeded", run.error
    outputs = dict(StepRun.objects.filter(run=run).values_list("name", "output"))
    assert round(outputs["price"]["total"], 2) == 121.47
    assert outputs["big-orders"] == {"result": [2]}
    assert Run.objects.get(parent_step__run=run).status == "succeeded"


@pytest.mark.parametrize(("env", "approved"), [("staging", False), ("prod", True)])
def test_the_release_example_deploys_to_staging_or_asks_before_prod(imported, alice, env, approved):
    run = services.start_run(Workflow.objects.get(name="release-with-approval"), {"env": env})
    for _ in range(5):
        for pk, attempt in list(
            StepRun.objects.filter(status="ready").values_list("pk", "attempt")
        ):
            run_attempt(pk, attempt)
    if approved:
        services.decide(run, "approve", "approve", user=alice, data={"ticket": "OPS-7"})
    run = drive(run)
    assert run.status == "succeeded", run.error
    steps = dict(
        StepRun.objects.filter(run=run, item_of__isnull=True).values_list("name", "status")
    )
    assert steps["announce"] == "succeeded"
    assert steps["deploy-prod" if approved else "deploy-staging"] == "succeeded"
    assert steps["deploy-staging" if approved else "deploy-prod"] == "skipped"
