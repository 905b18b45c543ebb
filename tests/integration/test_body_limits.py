"""Request bodies over FURROW_MAX_BODY_BYTES are a 413 with the API's error body, before any view
or parser reads them: with Content-Length, and without one (chunked transfer encoding, which
daphne accepts), for each kind of endpoint. A chunked body within the limit is read as any other.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.core import signals
from django.core.handlers.asgi import ASGIHandler
from django.db import close_old_connections
from rest_framework.authtoken.models import Token

from runs import services
from runs.models import LogLine, Run

pytestmark = pytest.mark.django_db

LIMIT = 100
TOO_LARGE = {"message": "request body is larger than the limit of 100 bytes"}
WORKFLOW = {"name": "w", "steps": {"a": {"type": "noop"}}}


@pytest.fixture(autouse=True)
def small_limit(settings: Any) -> None:
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = LIMIT


@pytest.fixture
def run(publish: Any) -> Run:
    return services.start_run(publish(WORKFLOW), {})


def over() -> bytes:
    return json.dumps({"input": {"x": "y" * LIMIT}}).encode()


def assert_too_large(status: int, body: bytes) -> None:
    assert status == 413, body
    assert json.loads(body) == TOO_LARGE


# With Content-Length


def test_a_drf_endpoint_refuses_a_large_json_body_and_starts_nothing(api, run):
    response = api.post("/api/v1/workflows/w/runs", over(), content_type="application/json")

    assert_too_large(response.status_code, response.content)
    assert Run.objects.count() == 1


def test_a_large_yaml_body_is_refused(api):
    body = "name: w\ndescription: " + "x" * LIMIT + "\nsteps: {a: {type: noop}}\n"

    response = api.post("/api/v1/workflows", body, content_type="application/yaml")

    assert_too_large(response.status_code, response.content)


def test_log_ingestion_refuses_a_large_body_and_stores_nothing(api, run):
    response = api.post(f"/api/v1/runs/{run.pk}/logs", "x\n" * LIMIT, content_type="text/plain")

    assert_too_large(response.status_code, response.content)
    assert not LogLine.objects.filter(stream="external").exists()


def test_a_webhook_refuses_a_large_body(client):
    response = client.post("/hooks/gh", over(), content_type="application/json")

    assert_too_large(response.status_code, response.content)


def test_a_callback_refuses_a_large_body_before_looking_at_its_token(client):
    response = client.post("/api/v1/callbacks/unknown", over(), content_type="application/json")

    assert_too_large(response.status_code, response.content)


def test_a_body_of_exactly_the_limit_goes_through(client):
    body = json.dumps({"output": {"x": "y" * (LIMIT - 21)}}).encode()
    assert len(body) == LIMIT

    response = client.post("/api/v1/callbacks/unknown", body, content_type="application/json")

    assert response.status_code == 404  # refused for its token, not its size


def test_a_content_length_that_is_not_a_number_is_a_400(client):
    response = client.post(
        "/api/v1/callbacks/x", b"{}", content_type="application/json", CONTENT_LENGTH="ten"
    )

    assert response.status_code == 400
    assert response.json() == {"message": "Content-Length is not a number"}


# Without Content-Length: through the ASGI handler, as daphne hands a chunked body over.


@pytest.fixture
def connection_kept_open() -> Iterator[None]:
    """Django's test clients do the same: at a request's end, `close_old_connections` would close
    the connection that holds the test's transaction."""
    for signal in (signals.request_started, signals.request_finished):
        signal.disconnect(close_old_connections)
    yield
    for signal in (signals.request_started, signals.request_finished):
        signal.connect(close_old_connections)


def chunked(path: str, chunks: list[bytes], **headers: str) -> tuple[int, bytes]:
    """POST `chunks` as daphne passes a body without Content-Length; (status, body)."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "server": ("testserver", 80),
        "client": ("127.0.0.1", 50000),
        "headers": [(b"host", b"testserver"), (b"transfer-encoding", b"chunked")]
        + [(k.lower().encode(), v.encode()) for k, v in headers.items()],
    }
    messages = [
        {"type": "http.request", "body": chunk, "more_body": i < len(chunks) - 1}
        for i, chunk in enumerate(chunks)
    ]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop(0)
        await asyncio.Event().wait()  # the client stays connected
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async_to_sync(ASGIHandler())(scope, receive, send)
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    return status, b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")


@pytest.mark.parametrize("path", ["/api/v1/callbacks/unknown", "/hooks/gh"])
def test_a_large_chunked_body_is_refused(connection_kept_open, path):
    status, body = chunked(path, [b'{"output": {"x": "', b"y" * LIMIT, b'"}}'])

    assert_too_large(status, body)


def test_a_large_chunked_body_is_refused_before_authentication(connection_kept_open, run):
    status, body = chunked(f"/api/v1/runs/{run.pk}/logs", [b"x\n" * LIMIT])

    assert_too_large(status, body)


def test_a_chunked_body_within_the_limit_is_read_as_any_other(connection_kept_open, run, alice):
    token = Token.objects.create(user=alice).key

    status, body = chunked(
        f"/api/v1/runs/{run.pk}/logs",
        [b"first line\nsec", b"ond line\n"],
        **{"Authorization": f"Token {token}", "Content-Type": "text/plain"},
    )

    assert status == 201, body
    assert json.loads(body)["accepted"] == 2
    lines = LogLine.objects.filter(run=run, stream="external").order_by("id")
    assert [line.text for line in lines] == ["first line", "second line"]
