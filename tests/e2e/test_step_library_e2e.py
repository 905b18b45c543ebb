"""The step library on the real launcher: daphne, a Django-Q2 cluster and the tick loop in their own
processes; a real HTTP service that calls back over HTTP; secrets that never come back out."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import httpx
import pytest
from werkzeug import Request, Response

from steps.models import Connector
from steps.secrets import set_secret
from tests.e2e.test_end_to_end import wait_final

pytestmark = [pytest.mark.e2e]

TOKEN = "s3cr3t-Tok3n-value"

WORKFLOW = """
name: e2e-library
input:
  type: object
  properties:
    service: {type: string}
    regions: {type: array, items: {type: string}}
    env: {type: string, default: prod}
steps:
  pause:
    type: delay
    with: {for: 0.5s}
  charge:
    type: http_async
    needs: [pause]
    timeout: 30s
    with:
      url: "{{ input.service }}/charge"
      json: {amount: 12}
      headers: {Authorization: "Bearer {{ secrets.API_TOKEN }}"}
  lookup:
    type: crm.find
    needs: [charge]
    with: {path_params: {id: "{{ parent.receipt }}"}}
  route:
    type: condition
    needs: [charge, lookup]
    with:
      value: "{{ steps.lookup.output.body.receipt }}"
      matches: "^r-"
      then: [ship]
      else: [refund]
  ship:
    type: shell
    needs: [route]
    for_each: "{{ input.regions }}"
    parallelism: 2
    run: 'echo "shipping to $REGION with $TOKEN"'
    env: {REGION: "{{ item }}", TOKEN: "{{ secrets.API_TOKEN }}"}
  refund: {type: noop, needs: [route]}
  notify:
    type: subflow
    needs: [ship, refund]
    join: any_succeeded
    with: {workflow: e2e-child, input: {count: "{{ steps.ship.output.count }}"}}
  summary:
    type: script
    needs: [notify]
    with:
      lua: "return {shipped = input.tell.shipped, token_seen = input.tell.token ~= nil}"
"""

CHILD = """
name: e2e-child
input: {type: object, properties: {count: {type: integer}}, required: [count]}
steps:
  tell:
    type: transform
    with: {set: {shipped: "{{ input.count }}"}}
"""


class CallbackService:
    """Answers a job request at once, then calls the callback URL from another thread."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []

    def __call__(self, request: Request) -> Response:
        body = request.get_json()
        self.requests.append(body)
        self.headers.append(dict(request.headers))
        url = body["callback_url"]

        def call_back() -> None:
            time.sleep(0.3)
            httpx.post(url, json={"output": {"receipt": "r-991"}}, timeout=10)

        threading.Thread(target=call_back, daemon=True).start()
        return Response(json.dumps({"queued": True}), content_type="application/json")


def test_every_kind_of_step_runs_on_real_workers_and_secrets_stay_hidden(
    furrow, client_for, alice, httpserver
):
    set_secret("API_TOKEN", TOKEN)
    service = CallbackService()
    httpserver.expect_request("/charge", method="POST").respond_with_handler(service)
    httpserver.expect_request("/crm/receipts/r-991").respond_with_json({"receipt": "r-991"})
    Connector.objects.create(  # configured in the admin: the worker processes read it
        name="crm",
        base_url=httpserver.url_for("/crm"),
        auth={"scheme": "bearer", "secret": "API_TOKEN"},
        operations={"find": {"method": "GET", "path": "/receipts/{id}"}},
    )
    client = client_for(alice)
    for definition in (CHILD, WORKFLOW):
        published = client.post(
            "/api/v1/workflows", content=definition, headers={"Content-Type": "application/yaml"}
        )
        assert published.status_code == 201, published.text

    started = client.post(
        "/api/v1/workflows/e2e-library/runs",
        json={
            "input": {"service": httpserver.url_for("").rstrip("/"), "regions": ["eu", "us", "ap"]}
        },
    )
    assert started.status_code == 201, started.text
    run = wait_final(client, started.json()["id"], timeout=90)

    assert run["status"] == "succeeded", run
    steps = {step["name"]: step for step in run["steps"]}
    assert steps["refund"]["status"] == "skipped"
    assert steps["ship"]["output"]["count"] == 3
    assert steps["summary"]["output"] == {"shipped": 3, "token_seen": False}
    assert service.headers[0]["Authorization"] == f"Bearer {TOKEN}"  # the service got the secret
    crm_request = next(r for r, _ in httpserver.log if r.path.startswith("/crm"))
    assert crm_request.headers["Authorization"] == f"Bearer {TOKEN}"
    assert steps["lookup"]["output"]["body"] == {"receipt": "r-991"}

    # ...and nothing Furrow hands back contains it.
    logs = client.get(f"/api/v1/runs/{run['id']}/logs")
    shipped = [line["text"] for line in logs.json()["lines"] if line["text"].startswith("shipping")]
    assert sorted(shipped) == [f"shipping to {r} with ***" for r in ("ap", "eu", "us")]
    everything = [
        logs.text,
        client.get(f"/api/v1/runs/{run['id']}").text,
        client.get(f"/api/v1/runs/{run['id']}/events").text,
        client.get(f"/api/v1/runs/{run['id']}/logs", headers={"Accept": "text/plain"}).text,
        client.get("/api/v1/runs").text,
        client.get("/api/v1/secrets").text,
        client.get("/api/v1/secrets/API_TOKEN").text,
        client.get("/api/v1/workflows/e2e-library").text,
        client.get("/api/v1/connectors").text,
    ]
    for child in client.get("/api/v1/runs", params={"workflow": "e2e-child"}).json()["results"]:
        everything.append(client.get(f"/api/v1/runs/{child['id']}").text)
    for text in everything:
        assert TOKEN not in text
