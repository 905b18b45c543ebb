"""The WebSocket protocol against the real ASGI application (origin check, auth, routing, consumers).

Each test is a sync test that runs one async scenario with `async_to_sync`: the consumer's page
queries run on threads of their own, so the rows they read must be committed (transaction=True).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from channels.testing import WebsocketCommunicator
from rest_framework.authtoken.models import Token

from orchestrator.asgi import application
from runs import services
from runs.models import Event, LogLine, Run
from tests.conftest import drive

pytestmark = pytest.mark.django_db(transaction=True)

T = TypeVar("T")

HEADERS = [(b"origin", b"http://testserver"), (b"host", b"testserver")]
TIMEOUT = 5.0

FLOW = """
name: ws-flow
steps:
  first: {type: shell, run: "echo one; echo two"}
  second: {type: shell, needs: [first], run: "echo three"}
"""


def scenario(body: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run one async scenario to its end and return what it returns."""
    return async_to_sync(body)()


def socket(path: str, headers: list[tuple[bytes, bytes]] | None = None) -> WebsocketCommunicator:
    return WebsocketCommunicator(application, path, headers=headers or HEADERS)


async def opened(path: str, headers: list[tuple[bytes, bytes]] | None = None) -> Any:
    ws = socket(path, headers)
    connected, _ = await ws.connect(timeout=TIMEOUT)
    assert connected
    return ws


async def receive(ws: WebsocketCommunicator) -> dict[str, Any]:
    return await ws.receive_json_from(timeout=TIMEOUT)


async def receive_until(ws: WebsocketCommunicator, kind: str) -> list[dict[str, Any]]:
    """Messages up to and including the first of type `kind`."""
    messages = [await receive(ws)]
    while messages[-1]["type"] != kind:
        messages.append(await receive(ws))
    return messages


async def closed_with(ws: WebsocketCommunicator) -> int:
    output = await ws.receive_output(timeout=TIMEOUT)
    assert output["type"] == "websocket.close", output
    await ws.disconnect()
    return output.get("code", 1000)


async def still_open(ws: WebsocketCommunicator) -> None:
    await ws.send_json_to({"type": "ping"})
    assert await receive(ws) == {"type": "pong"}


def rows(messages: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    field = "line" if kind == "log" else "event"
    return [m[field] for m in messages if m["type"] == kind]


@pytest.fixture
def token(alice: Any) -> str:
    return Token.objects.create(user=alice).key


@pytest.fixture
def finished(publish: Any) -> Run:
    run = drive(services.start_run(publish(FLOW), {}))
    assert run.status == "succeeded", run.error
    return run


def event_ids(run: Run) -> list[int]:
    return list(Event.objects.filter(run=run).order_by("id").values_list("id", flat=True))


def line_ids(run: Run) -> list[int]:
    return list(LogLine.objects.filter(run=run).order_by("id").values_list("id", flat=True))


# Authentication


@pytest.mark.parametrize("first", [{"type": "subscribe"}, {"type": "ping"}])
def test_a_client_without_credentials_gets_an_error_and_close_4401(finished, first):
    async def body() -> None:
        ws = await opened(f"/ws/runs/{finished.pk}/")
        await ws.send_json_to(first)
        assert await receive(ws) == {"type": "error", "message": "authentication required"}
        assert await closed_with(ws) == 4401

    scenario(body)


def test_a_wrong_token_in_the_url_is_refused_at_once(finished):
    async def body() -> None:
        ws = await opened(f"/ws/runs/{finished.pk}/?token=nope")
        assert await receive(ws) == {"type": "error", "message": "authentication required"}
        assert await closed_with(ws) == 4401

    scenario(body)


def test_a_wrong_token_in_an_auth_message_is_refused(finished, token):
    async def body() -> None:
        ws = await opened(f"/ws/runs/{finished.pk}/")
        await ws.send_json_to({"type": "auth", "token": token + "x"})
        assert (await receive(ws))["type"] == "error"
        assert await closed_with(ws) == 4401

    scenario(body)


def test_a_token_of_an_inactive_user_is_refused(alice, token):
    alice.is_active = False
    alice.save(update_fields=["is_active"])

    async def body() -> None:
        ws = await opened(f"/ws/events/?token={token}")
        assert (await receive(ws))["type"] == "error"
        assert await closed_with(ws) == 4401

    scenario(body)


def test_a_socket_that_never_authenticates_is_closed_after_the_auth_timeout(settings):
    settings.FURROW = {**settings.FURROW, "WS_AUTH_TIMEOUT": 0.1}

    async def body() -> None:
        ws = await opened("/ws/events/")
        assert await receive(ws) == {"type": "error", "message": "authentication required"}
        assert await closed_with(ws) == 4401

    scenario(body)


def test_a_token_in_the_url_authenticates(token):
    async def body() -> None:
        ws = await opened(f"/ws/events/?token={token}")
        await still_open(ws)
        await ws.disconnect()

    scenario(body)


def test_an_auth_message_authenticates(settings, token):
    # Past the auth timeout too: authenticating stops the timer.
    settings.FURROW = {**settings.FURROW, "WS_AUTH_TIMEOUT": 0.1}

    async def body() -> None:
        ws = await opened("/ws/events/")
        await ws.send_json_to({"type": "auth", "token": token})
        await ws.send_json_to({"type": "subscribe", "filters": {"workflow": "nothing-yet"}})
        assert await receive(ws) == {"type": "subscribed", "after": 0}
        assert await ws.receive_nothing(timeout=0.3)
        await still_open(ws)
        await ws.disconnect()

    scenario(body)


def test_a_session_cookie_authenticates(client, alice):
    client.force_login(alice)
    cookie = f"sessionid={client.cookies['sessionid'].value}".encode()

    async def body() -> None:
        ws = await opened("/ws/events/", [*HEADERS, (b"cookie", cookie)])
        await still_open(ws)
        await ws.disconnect()

    scenario(body)


def test_a_handshake_from_a_foreign_origin_is_refused(token):
    async def body() -> None:
        headers = [(b"origin", b"http://evil.example"), (b"host", b"testserver")]
        connected, _ = await socket(f"/ws/events/?token={token}", headers).connect(TIMEOUT)
        assert not connected

    scenario(body)


# A run's socket


def test_subscribe_replays_a_finished_runs_events_and_logs_then_ends_and_closes(finished, token):
    async def body() -> list[dict[str, Any]]:
        ws = await opened(f"/ws/runs/{finished.pk}/?token={token}")
        await ws.send_json_to({"type": "subscribe"})
        messages = await receive_until(ws, "end")
        assert await closed_with(ws) == 1000
        return messages

    messages = scenario(body)

    assert messages[0] == {"type": "subscribed", "after": {"events": 0, "logs": 0}}
    events, lines = event_ids(finished), line_ids(finished)
    assert [e["id"] for e in rows(messages, "event")] == events
    assert [line["id"] for line in rows(messages, "log")] == lines
    assert [line["text"] for line in rows(messages, "log")] == ["one", "two", "three"]
    assert rows(messages, "event")[-1]["type"] == "run.succeeded"
    assert set(rows(messages, "event")[0]) == {
        "id",
        "type",
        "run",
        "step",
        "workflow",
        "actor",
        "data",
        "created_at",
    }
    assert messages[-1] == {
        "type": "end",
        "run": str(finished.pk),
        "after": {"events": events[-1], "logs": lines[-1]},
    }


@pytest.mark.parametrize(
    ("filters", "kinds"),
    [({"logs": False}, {"event"}), ({"events": False}, {"log"}), ({}, {"event", "log"})],
)
def test_the_logs_and_events_filters_choose_what_a_run_socket_carries(
    finished, token, filters, kinds
):
    async def body() -> list[dict[str, Any]]:
        ws = await opened(f"/ws/runs/{finished.pk}/?token={token}")
        await ws.send_json_to({"type": "subscribe", "filters": filters})
        messages = await receive_until(ws, "end")
        await closed_with(ws)
        return messages

    messages = scenario(body)
    assert {m["type"] for m in messages[1:-1]} == kinds


def test_the_step_filter_narrows_the_log_to_one_step(finished, token):
    async def body() -> list[dict[str, Any]]:
        ws = await opened(f"/ws/runs/{finished.pk}/?token={token}")
        await ws.send_json_to({"type": "subscribe", "filters": {"step": "second"}})
        messages = await receive_until(ws, "end")
        await closed_with(ws)
        return messages

    messages = scenario(body)
    assert [(line["step"], line["text"]) for line in rows(messages, "log")] == [("second", "three")]
    assert len(rows(messages, "event")) == len(event_ids(finished))


def test_subscribing_after_cursors_resumes_each_id_space_without_repeats(finished, token):
    events, lines = event_ids(finished), line_ids(finished)
    after = {"events": events[2], "logs": lines[0]}

    async def body() -> list[dict[str, Any]]:
        ws = await opened(f"/ws/runs/{finished.pk}/?token={token}")
        await ws.send_json_to({"type": "subscribe", "after": after})
        messages = await receive_until(ws, "end")
        await closed_with(ws)
        return messages

    messages = scenario(body)
    assert messages[0] == {"type": "subscribed", "after": after}
    assert [e["id"] for e in rows(messages, "event")] == events[3:]
    assert [line["id"] for line in rows(messages, "log")] == lines[1:]


def test_a_plain_integer_after_is_the_event_cursor_and_logs_replay_from_the_start(finished, token):
    events, lines = event_ids(finished), line_ids(finished)

    async def body() -> list[dict[str, Any]]:
        ws = await opened(f"/ws/runs/{finished.pk}/?token={token}")
        await ws.send_json_to({"type": "subscribe", "after": events[-2]})
        messages = await receive_until(ws, "end")
        await closed_with(ws)
        return messages

    messages = scenario(body)
    assert messages[0]["after"] == {"events": events[-2], "logs": 0}
    assert [e["id"] for e in rows(messages, "event")] == events[-1:]
    assert [line["id"] for line in rows(messages, "log")] == lines


def test_a_running_run_is_followed_live_until_it_ends(publish, token):
    run = services.start_run(publish(FLOW), {})

    async def body() -> list[dict[str, Any]]:
        ws = await opened(f"/ws/runs/{run.pk}/?token={token}")
        await ws.send_json_to({"type": "subscribe"})
        assert (await receive(ws))["type"] == "subscribed"
        await sync_to_async(drive)(run)
        messages = await receive_until(ws, "end")
        assert await closed_with(ws) == 1000
        return messages

    messages = scenario(body)
    assert [e["id"] for e in rows(messages, "event")] == event_ids(run)
    assert [line["id"] for line in rows(messages, "log")] == line_ids(run)


def test_a_second_subscribe_replaces_the_first(publish, token):
    run = services.start_run(publish(FLOW), {})  # running: its socket does not end
    events = event_ids(run)

    async def body() -> None:
        ws = await opened(f"/ws/runs/{run.pk}/?token={token}")
        await ws.send_json_to({"type": "subscribe", "filters": {"logs": False}})
        first = [await receive(ws) for _ in range(1 + len(events))]
        assert [e["id"] for e in rows(first, "event")] == events
        await ws.send_json_to({"type": "subscribe", "after": events[0]})
        assert (await receive(ws))["type"] == "subscribed"
        again = [(await receive(ws))["event"]["id"] for _ in events[1:]]
        assert again == events[1:]
        assert await ws.receive_nothing(timeout=0.3)
        await ws.disconnect()

    scenario(body)


def test_a_run_that_does_not_exist_closes_the_socket_with_4404(token):
    missing = "00000000-0000-0000-0000-000000000000"

    async def body() -> None:
        ws = await opened(f"/ws/runs/{missing}/?token={token}")
        await ws.send_json_to({"type": "subscribe"})
        assert await receive(ws) == {"type": "error", "message": f"no run {missing}"}
        assert await closed_with(ws) == 4404

    scenario(body)


@pytest.mark.parametrize(
    ("frame", "says"),
    [
        ("{not json", "a message must be JSON text"),
        ('["subscribe"]', 'a JSON object with a string "type"'),
        ('{"kind": "ping"}', 'a JSON object with a string "type"'),
        ('{"type": "unsubscribe"}', "unknown message type 'unsubscribe'"),
        ('{"type": "subscribe", "after": -1}', "after must be a non-negative integer"),
        ('{"type": "subscribe", "after": true}', "after must be a non-negative integer"),
        ('{"type": "subscribe", "after": {"steps": 1}}', "after has unknown keys ['steps']"),
        ('{"type": "subscribe", "filters": {"log": false}}', "unknown filters ['log']"),
        ('{"type": "subscribe", "filters": {"logs": "no"}}', "filters.logs must be true or false"),
        ('{"type": "subscribe", "filters": {"step": "deploy"}}', "run has no step 'deploy'"),
        ('{"type": "subscribe", "filters": []}', "filters must be an object"),
    ],
)
def test_a_bad_message_gets_an_error_and_the_socket_stays_open(finished, token, frame, says):
    async def body() -> None:
        ws = await opened(f"/ws/runs/{finished.pk}/?token={token}")
        await ws.send_to(text_data=frame)
        reply = await receive(ws)
        assert reply["type"] == "error"
        assert says in reply["message"]
        await still_open(ws)
        await ws.disconnect()

    scenario(body)


def test_a_binary_frame_gets_an_error_and_the_socket_stays_open(token):
    async def body() -> None:
        ws = await opened(f"/ws/events/?token={token}")
        await ws.send_to(bytes_data=b'{"type": "ping"}')
        reply = await receive(ws)
        assert reply["type"] == "error"
        assert "not binary" in reply["message"]
        await still_open(ws)
        await ws.disconnect()

    scenario(body)


# The all-events socket


def test_the_events_socket_filters_by_type_and_workflow(finished, publish, token):
    other = drive(services.start_run(publish(FLOW.replace("ws-flow", "other-flow")), {}))
    subscribe = {
        "type": "subscribe",
        "filters": {"workflow": "ws-flow", "types": ["run.*", "step.succeeded"]},
    }
    wanted = list(
        Event.objects.filter(run=finished, type__regex=r"^(run\.|step\.succeeded$)")
        .order_by("id")
        .values_list("id", flat=True)
    )

    async def body() -> None:
        ws = await opened(f"/ws/events/?token={token}")
        await ws.send_json_to(subscribe)
        assert await receive(ws) == {"type": "subscribed", "after": 0}
        got = [(await receive(ws))["event"] for _ in wanted]
        assert [e["id"] for e in got] == wanted
        assert {e["run"] for e in got} == {str(finished.pk)}
        assert await ws.receive_nothing(timeout=0.3)
        await ws.disconnect()

    scenario(body)
    assert Event.objects.filter(run=other).exists()  # there was something to leave out


def test_the_events_socket_filters_by_run_and_resumes_after_a_cursor(finished, token):
    events = event_ids(finished)
    subscribe = {"type": "subscribe", "after": events[1], "filters": {"run": str(finished.pk)}}

    async def body() -> None:
        ws = await opened(f"/ws/events/?token={token}")
        await ws.send_json_to(subscribe)
        assert await receive(ws) == {"type": "subscribed", "after": events[1]}
        got = [(await receive(ws))["event"]["id"] for _ in events[2:]]
        assert got == events[2:]
        assert await ws.receive_nothing(timeout=0.3)
        await ws.disconnect()

    scenario(body)


@pytest.mark.parametrize(
    ("filters", "says"),
    [
        ({"types": ["run.*; drop"]}, "not an event type or pattern"),
        ({"types": [1]}, "filters.types must be a list of strings"),
        ({"run": "not-a-uuid"}, "filters.run must be a run id"),
        ({"step": "build"}, "unknown filters ['step']"),
    ],
)
def test_the_events_socket_rejects_bad_filters(token, filters, says):
    async def body() -> None:
        ws = await opened(f"/ws/events/?token={token}")
        await ws.send_json_to({"type": "subscribe", "filters": filters})
        reply = await receive(ws)
        assert reply["type"] == "error"
        assert says in reply["message"], json.dumps(reply)
        await still_open(ws)
        await ws.disconnect()

    scenario(body)
