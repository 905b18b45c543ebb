"""Outbound event hooks on the real launcher: FURROW_HOOKS synced by the tick loop, whose hook
thread delivers signed events of a real run while a dead endpoint keeps failing beside it."""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import threading
import time
from typing import Any

import pytest
from django.utils import timezone
from werkzeug import Request, Response

from runs import hooks
from runs.models import HookDelivery, HookEndpoint
from steps.secrets import set_secret
from tests.e2e.test_end_to_end import wait_final

pytestmark = [pytest.mark.e2e]

KEY = "e2e-hook-key-41c9"
WORKFLOW = """
name: e2e-hooks
steps:
  wait:
    type: delay
    with: {for: 0.3s}
  done:
    type: noop
    needs: [wait]
"""


class Receiver:
    """The audit service: keeps each request and says when `expected` have arrived."""

    def __init__(self, expected: int) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.expected = expected
        self.arrived = threading.Event()

    def __call__(self, request: Request) -> Response:
        self.requests.append((dict(request.headers), request.get_data()))
        if len(self.requests) >= self.expected:
            self.arrived.set()
        return Response("ok")


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(condition: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.1)


def test_the_tick_loop_delivers_signed_events_while_a_dead_endpoint_fails(
    launcher, launcher_client_for, alice, httpserver
):
    set_secret("HOOK_KEY", KEY)
    hooks.enqueue_new_events(timezone.now())  # the cursor starts here, before the run
    receiver = Receiver(expected=3)
    httpserver.expect_request("/hook", method="POST").respond_with_handler(receiver)
    endpoints = [
        {
            "name": "audit",
            "url": httpserver.url_for("/hook"),
            "event_types": ["step.succeeded", "run.succeeded"],
            "workflows": ["e2e-hooks"],
            "secret": "HOOK_KEY",
        },
        {"name": "dead", "url": f"http://127.0.0.1:{closed_port()}/", "event_types": ["run.*"]},
    ]
    launcher.start(FURROW_HOOKS=json.dumps(endpoints), FURROW_HOOK_POLL="0.1")
    wait_for(lambda: HookEndpoint.objects.filter(source="settings").count() == 2)
    client = launcher_client_for(alice)
    published = client.post(
        "/api/v1/workflows", content=WORKFLOW, headers={"Content-Type": "application/yaml"}
    )
    assert published.status_code == 201, published.text

    run_id = client.post("/api/v1/workflows/e2e-hooks/runs", json={"input": {}}).json()["id"]

    assert wait_final(client, run_id)["status"] == "succeeded"
    assert receiver.arrived.wait(20), receiver.requests
    events = []
    for headers, body in receiver.requests:
        signed = headers["X-Furrow-Timestamp"].encode() + b"." + body
        digest = hmac.new(KEY.encode(), signed, hashlib.sha256).hexdigest()
        assert headers["X-Furrow-Signature"] == f"sha256={digest}"
        event = json.loads(body)["event"]
        assert (event["run"], event["workflow"]) == (run_id, "e2e-hooks")
        events.append((event["type"], event["step"]))
    assert sorted(events, key=str) == sorted(
        [("step.succeeded", "wait"), ("step.succeeded", "done"), ("run.succeeded", None)], key=str
    )
    dead = HookDelivery.objects.filter(endpoint__name="dead", event__run_id=run_id)
    # A claim counts the attempt before it is sent; the error comes when it has failed.
    # .all() each time: iterating `dead` itself would cache its first answer for ever.
    wait_for(lambda: dead.exists() and all(d.last_error for d in dead.all()))
    assert all(d.status == "pending" for d in dead.all())
    assert all(d.last_error.startswith("could not connect to") for d in dead.all())
    audit = HookDelivery.objects.filter(endpoint__name="audit")
    wait_for(lambda: audit.filter(status="delivered").count() == 3)
    assert KEY not in json.dumps(list(HookDelivery.objects.values_list("attempt_log", flat=True)))
