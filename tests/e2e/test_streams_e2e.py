"""Server-sent events from a real daphne, fed by real workers: resumable, authenticated, ending."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import httpx
import pytest

pytestmark = [pytest.mark.e2e]

SLOW = """
name: e2e-stream
steps:
  first: {type: shell, run: "for i in 1 2 3; do echo line-$i; sleep 0.2; done"}
  second: {type: shell, needs: [first], run: "echo done"}
"""


def read_sse(
    response: httpx.Response, until: Any = None, limit: int = 10_000
) -> list[dict[str, Any]]:
    """Parse messages from a streaming response until `until(message)` or the stream ends."""
    messages: list[dict[str, Any]] = []
    current: dict[str, Any] = {}
    for line in response.iter_lines():
        if line == "":
            if "data" in current:
                current["data"] = json.loads(current["data"])
                messages.append(current)
                if (until and until(current)) or len(messages) >= limit:
                    return messages
            current = {}
        elif line.startswith(":"):
            current.setdefault("comments", []).append(line)
        else:
            key, _, value = line.partition(":")
            current[key] = value.removeprefix(" ")
    return messages


def start(client: httpx.Client) -> str:
    published = client.post(
        "/api/v1/workflows", content=SLOW, headers={"Content-Type": "application/yaml"}
    )
    assert published.status_code in (200, 201), published.text
    started = client.post("/api/v1/workflows/e2e-stream/runs", json={})
    assert started.status_code == 201, started.text
    return started.json()["id"]


def test_a_run_event_stream_resumes_after_a_disconnect_with_nothing_lost_or_repeated(
    furrow, client_for, alice
):
    client = client_for(alice)
    run_id = start(client)
    url = f"/api/v1/runs/{run_id}/events/stream"

    with client.stream("GET", url, timeout=30) as first:
        assert first.headers["content-type"].startswith("text/event-stream")
        before = read_sse(first, limit=3)
    with client.stream(
        "GET", url, headers={"Last-Event-ID": before[-1]["id"]}, timeout=30
    ) as second:
        after = read_sse(second, until=lambda m: m.get("event") == "end")

    assert after[-1]["event"] == "end"
    streamed = [m["data"]["id"] for m in before + after[:-1]]
    listed = [e["id"] for e in client.get(f"/api/v1/runs/{run_id}/events").json()]
    assert streamed == listed  # the union is the whole list, in order, without duplicates
    assert after[-2]["event"] == "run.succeeded"


def test_a_log_stream_follows_a_step_live_and_ends_with_the_run(furrow, client_for, alice):
    client = client_for(alice)
    run_id = start(client)
    with client.stream("GET", f"/api/v1/runs/{run_id}/logs/stream?step=first", timeout=30) as r:
        messages = read_sse(r, until=lambda m: m.get("event") == "end")
    texts = [m["data"]["text"] for m in messages if m.get("event") == "log"]
    assert texts == ["line-1", "line-2", "line-3"]


def test_a_hundred_clients_on_one_run_all_receive_every_event(furrow, client_for, alice):
    client = client_for(alice)
    run_id = start(client)
    token = client.headers["Authorization"]
    received: list[list[int]] = []
    errors: list[BaseException] = []

    def listen() -> None:
        try:
            with httpx.stream(
                "GET",
                f"{furrow}/api/v1/runs/{run_id}/events/stream",
                headers={"Authorization": token},
                timeout=60,
            ) as response:
                messages = read_sse(response, until=lambda m: m.get("event") == "end")
            received.append([m["data"]["id"] for m in messages if m.get("event") != "end"])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=listen) for _ in range(100)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=90)

    assert not errors, errors[:3]
    listed = [e["id"] for e in client.get(f"/api/v1/runs/{run_id}/events").json()]
    assert len(received) == 100
    assert all(ids == listed for ids in received)


@pytest.mark.parametrize(
    "path",
    ["/api/v1/events/stream", "/api/v1/runs/{run}/events/stream", "/api/v1/runs/{run}/logs/stream"],
)
def test_streams_refuse_clients_without_credentials(furrow, client_for, alice, path):
    run_id = start(client_for(alice))
    response = httpx.get(furrow + path.format(run=run_id), timeout=10)
    assert response.status_code in (401, 403)


def test_the_global_stream_filters_by_type_and_workflow(furrow, client_for, alice):
    client = client_for(alice)
    run_id = start(client)
    started = time.monotonic()
    with client.stream(
        "GET", "/api/v1/events/stream?workflow=e2e-stream&type=run.*", timeout=30
    ) as response:
        messages = read_sse(response, until=lambda m: m["data"].get("type") == "run.succeeded")
    assert time.monotonic() - started < 30
    assert {m["data"]["type"] for m in messages} <= {"run.queued", "run.running", "run.succeeded"}
    assert all(m["data"]["run"] == run_id for m in messages)
