"""Triggers on the real launcher: a signed webhook starts a run on real workers, and its end starts
the follow-on workflow through the tick loop's trigger thread."""

from __future__ import annotations

import hashlib
import hmac
import json
import time

import httpx
import pytest

from runs.models import Run
from tests.e2e.test_end_to_end import wait_final

pytestmark = [pytest.mark.e2e]

BUILD = """
name: e2e-build
input:
  type: object
  properties: {ref: {type: string}}
  required: [ref]
steps:
  compile: {type: shell, run: "echo building {{ input.ref }}"}
"""
NOTIFY = """
name: e2e-notify
input:
  type: object
  properties: {build: {type: string}, outcome: {type: string}}
steps:
  tell: {type: noop}
"""


def test_a_signed_webhook_runs_a_build_and_its_end_starts_the_follower(furrow, client_for, alice):
    client = client_for(alice)
    for text in (BUILD, NOTIFY):
        response = client.post(
            "/api/v1/workflows", content=text, headers={"Content-Type": "application/yaml"}
        )
        assert response.status_code == 201, response.text
    secret = client.post("/api/v1/secrets", json={"name": "e2e_hook", "value": "k3y"})
    assert secret.status_code == 201, secret.text
    hook = client.post(
        "/api/v1/triggers",
        json={
            "workflow": "e2e-build",
            "name": "push",
            "kind": "webhook",
            "slug": "e2e-push",
            "secret": "e2e_hook",
            "input": {"ref": "{{ payload.ref }}"},
        },
    )
    assert hook.status_code == 201, hook.text
    follow = client.post(
        "/api/v1/workflows/e2e-notify/triggers",
        json={
            "name": "after-build",
            "kind": "workflow",
            "after_workflow": "e2e-build",
            "on_statuses": ["succeeded", "failed"],
            "input": {"build": "{{ run.id }}", "outcome": "{{ run.status }}"},
        },
    )
    assert follow.status_code == 201, follow.text

    body = json.dumps({"ref": "refs/heads/main"}).encode()
    signature = "sha256=" + hmac.new(b"k3y", body, hashlib.sha256).hexdigest()
    forged = httpx.post(
        f"{furrow}/hooks/e2e-push", content=body, headers={"X-Furrow-Signature": "sha256=00"}
    )
    assert forged.status_code == 401
    delivered = httpx.post(
        f"{furrow}/hooks/e2e-push", content=body, headers={"X-Furrow-Signature": signature}
    )
    assert delivered.status_code == 202, delivered.text
    build = wait_final(client, delivered.json()["run"])
    assert build["status"] == "succeeded"
    assert build["input"] == {"ref": "refs/heads/main"}

    deadline = time.monotonic() + 30
    while not Run.objects.filter(workflow__name="e2e-notify").exists():
        assert time.monotonic() < deadline, "the follower never started"
        time.sleep(0.1)
    follower = Run.objects.get(workflow__name="e2e-notify")
    assert follower.input == {"build": build["id"], "outcome": "succeeded"}
    assert wait_final(client, str(follower.pk))["status"] == "succeeded"
    assert Run.objects.count() == 2  # one build, one follower: nothing fired twice
