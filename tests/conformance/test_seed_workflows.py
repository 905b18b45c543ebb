"""Workflows of the seeds, written in Furrow's language, give the seeds' documented results.

Inputs are copies of shared/seed-assets (Spuds' script steps and flows, under assets/) and SPANE's
documented examples; importing the seeds' own formats unchanged is a later issue.
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone

from runs import services
from runs.models import Run, StepRun
from runs.timers import tick
from tests.conftest import drive

pytestmark = pytest.mark.django_db

ASSETS = Path(__file__).resolve().parent / "assets"


def spuds(name: str) -> Any:
    return json.loads((ASSETS / "spuds" / name).read_text())


def outputs(run: Run) -> dict[str, Any]:
    return dict(StepRun.objects.filter(run=run).values_list("name", "output"))


@pytest.mark.parametrize(
    ("flow", "expected"),
    [
        (
            "check-eligible-pass",
            {"eligible": True, "reason": "all criteria met", "risk_level": "medium"},
        ),
        (
            "check-eligible-fail",
            {"eligible": False, "reason": "age below minimum (18)", "risk_level": "medium"},
        ),
    ],
)
def test_spuds_lua_eligibility_checker_runs_unchanged_as_a_script_step(publish, flow, expected):
    step = next(s for s in spuds("script-steps.json") if s["id"] == "eligibility-checker")
    init = next(f for f in spuds("script-flows.json") if f["id"] == flow)["init"]
    workflow = publish(
        {
            "name": "eligibility",
            "steps": {"check": {"type": "script", "with": {"lua": step["script"]["script"]}}},
        }
    )
    run = drive(services.start_run(workflow, init))

    assert run.status == "succeeded", run.error
    assert outputs(run)["check"] == expected


def test_spuds_price_calculator_ported_from_ale_to_lua_gives_the_documented_total(publish):
    init = next(f for f in spuds("script-flows.json") if f["id"] == "calc-price")["init"]
    lua = """
    local subtotal = quantity * unit_price
    local shipping = quantity > 5 and 0.0 or 9.99
    return {subtotal = subtotal, tax = subtotal * 0.08, shipping = shipping,
            total = subtotal + subtotal * 0.08 + shipping}
    """
    workflow = publish(
        {"name": "price", "steps": {"calc": {"type": "script", "with": {"lua": lua}}}}
    )
    run = drive(services.start_run(workflow, init))

    assert round(outputs(run)["calc"]["total"], 2) == 107.16  # Spuds' examples/README.md


def test_spane_data_enrichment_merges_four_parents_and_tolerates_a_failed_enricher(
    publish, httpserver
):
    httpserver.expect_request("/profile/7").respond_with_json({"tier": "gold"})
    httpserver.expect_request("/orders/7").respond_with_json({"orders": 12})
    httpserver.expect_request("/preferences/7").respond_with_data("down", status=503)
    enrich = {
        "type": "http",
        "needs": ["fetch-user"],
        "retry": {"max_attempts": 3},
        "on_failure": "continue",  # SPANE's continueOnFail
    }
    workflow = publish(
        {
            "name": "data-enrichment",
            "steps": {
                "fetch-user": {"type": "noop", "with": {"userId": 7, "name": "ada"}},
                **{
                    f"enrich-{part}": {
                        **enrich,
                        "with": {"url": httpserver.url_for(f"/{part}/") + "{{ parent.userId }}"},
                    }
                    for part in ("profile", "orders", "preferences")
                },
                "merge": {
                    "type": "transform",
                    "needs": [
                        "fetch-user",
                        "enrich-profile",
                        "enrich-orders",
                        "enrich-preferences",
                    ],
                    # SPANE's rule: several parents give a mapping of their outputs by name.
                    "with": {
                        "jmespath": '{user: parent."fetch-user".name, '
                        'tier: parent."enrich-profile".body.tier, '
                        'orders: parent."enrich-orders".body.orders, '
                        'preferences: parent."enrich-preferences".status}'
                    },
                },
            },
        }
    )
    run = drive(services.start_run(workflow, {}))

    assert run.status == "succeeded", run.error
    assert outputs(run)["merge"] == {
        "user": "ada",
        "tier": "gold",
        "orders": 12,
        "preferences": 503,
    }
    assert StepRun.objects.get(run=run, name="enrich-preferences").attempt == 3


def test_spane_onboarding_calls_send_email_as_a_sub_workflow(publish):
    publish(
        {
            "name": "send-email",
            "steps": {
                "prepare": {"type": "transform", "with": {"set": {"to": "{{ input.email }}"}}},
                "send": {
                    "type": "noop",
                    "needs": ["prepare"],
                    "with": {"sent_to": "{{ parent.to }}"},
                },
            },
        }
    )
    workflow = publish(
        {
            "name": "onboarding",
            "steps": {
                "validate": {"type": "transform", "with": {"set": {"email": "{{ input.email }}"}}},
                "call-email": {
                    "type": "subflow",
                    "needs": ["validate"],
                    "with": {"workflow": "send-email"},
                },
                "complete": {
                    "type": "noop",
                    "needs": ["call-email"],
                    "with": {"ok": "{{ parent.send.sent_to }}"},
                },
            },
        }
    )
    run = drive(services.start_run(workflow, {"email": "ada@example.com"}))

    assert run.status == "succeeded", run.error
    assert outputs(run)["complete"] == {"ok": "ada@example.com"}


def test_spane_delay_node_with_duration_seconds_passes_its_parent_data_through(publish):
    workflow = publish(
        {
            "name": "delay-example",
            "steps": {
                "a": {"type": "noop", "with": {"n": 1}},
                "wait": {"type": "delay", "needs": ["a"], "with": {"durationSeconds": 5}},
                "b": {"type": "noop", "needs": ["wait"], "with": {"n": "{{ parent.input.n }}"}},
            },
        }
    )
    run = services.start_run(workflow, {})
    for _ in range(3):
        drive_ready = list(StepRun.objects.filter(status="ready").values_list("pk", "attempt"))
        from steps.worker import run_attempt

        for pk, attempt in drive_ready:
            run_attempt(pk, attempt)
    assert StepRun.objects.get(run=run, name="wait").status == "waiting"
    tick(timezone.now() + timedelta(seconds=6))
    run = drive(run)
    assert outputs(run)["b"] == {"n": 1}
