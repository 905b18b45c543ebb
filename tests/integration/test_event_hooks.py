"""Outbound event hooks: fan-out from the event log, signed delivery with retries, the API and
the admin. Real HTTP servers (pytest-httpserver), the real database; time is passed as `now`."""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.contrib.messages import get_messages
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.db import connection, transaction
from django.urls import include, path
from django.utils import timezone
from pytest_httpserver import HTTPServer
from rest_framework.test import APIClient
from werkzeug import Request, Response

from runs import hooks, services
from runs.models import Event, HookCursor, HookDelivery, HookEndpoint
from steps.secrets import set_secret
from tests.concurrency.test_races import in_threads

pytestmark = [pytest.mark.django_db, pytest.mark.urls(__name__)]

# Mounted here until orchestrator/api_urls.py includes runs.hooks_urls; then the first match wins.
urlpatterns = [
    path("api/v1/", include("runs.hooks_urls")),
    path("", include("orchestrator.urls")),
]

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
KEY = "hook-signing-key-7f3a"


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


@pytest.fixture(autouse=True)
def cursor_at_start() -> None:
    """The cursor starts at the end of the log, as on a new installation; events the test
    creates come after it."""
    hooks.enqueue_new_events(T0)


@pytest.fixture
def endpoint(httpserver: HTTPServer) -> Callable[..., HookEndpoint]:
    """Create an endpoint; by default it takes every event and posts to httpserver's /hook."""

    def make(name: str = "audit", **fields: Any) -> HookEndpoint:
        fields.setdefault("url", httpserver.url_for("/hook"))
        fields.setdefault("event_types", ["*"])
        return HookEndpoint.objects.create(name=name, **fields)

    return make


@pytest.fixture
def signing_secret() -> str:
    set_secret("HOOK_KEY", KEY)
    hooks.enqueue_new_events(T0)  # past its secret.created event, before any endpoint exists
    return "HOOK_KEY"


def emit(type_: str, **fields: Any) -> Event:
    return Event.objects.create(type=type_, **fields)


def answers(*statuses: int) -> Callable[[Request], Response]:
    """A handler answering with these statuses in turn, then 200."""
    queue = list(statuses)
    return lambda request: Response("ok", status=queue.pop(0) if queue else 200)


def received(httpserver: HTTPServer) -> list[tuple[dict[str, str], bytes]]:
    return [(dict(request.headers), request.get_data()) for request, _ in httpserver.log]


@pytest.fixture
def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/hook"  # nothing listens now that the socket is closed


@pytest.fixture
def slow_server() -> Iterator[HTTPServer]:
    """A second server that answers /hook after 3 s (threaded, so it can hold several)."""
    server = HTTPServer(threaded=True)
    server.expect_request("/hook").respond_with_handler(
        lambda request: time.sleep(3) or Response("late")
    )
    server.start()
    yield server
    server.clear()
    if server.is_running():
        server.stop()


# Delivery, retries and the attempt log


def test_an_endpoint_failing_three_times_then_answering_200_gets_the_event_once(
    httpserver, endpoint, publish, run_to_end
):
    httpserver.expect_request("/hook", method="POST").respond_with_handler(answers(500, 500, 500))
    endpoint(event_types=["step.failed"])
    workflow = publish({"name": "breaks", "steps": {"boom": {"type": "shell", "run": "exit 3"}}})
    run = run_to_end(services.start_run(workflow, {}))
    assert run.status == "failed"

    assert hooks.enqueue_new_events(at(0)) == 1
    for second in (0, 1, 3, 7):  # 1 s, 2 s, 4 s of backoff between the attempts
        assert hooks.deliver_due(at(second)) == 1
    assert hooks.deliver_due(at(600)) == 0

    delivery = HookDelivery.objects.get()
    assert (delivery.status, delivery.attempts, delivery.delivered_at) == ("delivered", 4, at(7))
    assert delivery.last_status_code == 200
    assert delivery.next_attempt_at is None
    assert [(e["attempt"], e["at"], e["status_code"]) for e in delivery.attempt_log] == [
        (1, "2026-01-01T12:00:00Z", 500),
        (2, "2026-01-01T12:00:01Z", 500),
        (3, "2026-01-01T12:00:03Z", 500),
        (4, "2026-01-01T12:00:07Z", 200),
    ]
    assert delivery.attempt_log[0]["error"].startswith("HTTP 500 from POST http://")
    assert all(isinstance(e["duration_ms"], int) for e in delivery.attempt_log)
    bodies = {body for _, body in received(httpserver)}
    assert len(httpserver.log) == 4
    assert len(bodies) == 1  # every attempt carries the same delivery
    event = json.loads(bodies.pop())["event"]
    assert (event["type"], event["run"], event["step"]) == ("step.failed", str(run.pk), "boom")
    assert event["workflow"] == "breaks"


def test_the_payload_and_headers_describe_the_event(httpserver, endpoint, publish):
    httpserver.expect_request("/hook").respond_with_data("ok")
    endpoint(event_types=["run.running"])
    run = services.start_run(publish({"name": "one", "steps": {"a": {"type": "noop"}}}), {})
    hooks.enqueue_new_events(at(0))

    hooks.deliver_due(at(0))

    event = Event.objects.get(run=run, type="run.running")
    delivery = HookDelivery.objects.get(event=event)
    [(headers, body)] = received(httpserver)
    assert json.loads(body) == {
        "delivery_id": str(delivery.delivery_id),
        "event": {
            "id": event.pk,
            "type": "run.running",
            "run": str(run.pk),
            "step": None,
            "workflow": "one",
            "actor": event.actor,
            "data": event.data,
            "created_at": event.created_at.isoformat().replace("+00:00", "Z"),
        },
    }
    assert headers["Content-Type"] == "application/json"
    assert headers["X-Furrow-Delivery"] == str(delivery.delivery_id)
    assert headers["X-Furrow-Event"] == "run.running"
    assert headers["X-Furrow-Timestamp"] == str(int(T0.timestamp()))


def test_the_signature_verifies_with_the_secret(httpserver, endpoint, signing_secret):
    httpserver.expect_request("/hook").respond_with_data("ok")
    endpoint(secret=signing_secret)
    emit("step.failed")
    hooks.enqueue_new_events(at(0))

    hooks.deliver_due(at(0))

    [(headers, body)] = received(httpserver)
    signed = headers["X-Furrow-Timestamp"].encode() + b"." + body
    expected = hmac.new(KEY.encode(), signed, hashlib.sha256).hexdigest()
    assert headers["X-Furrow-Signature"] == f"sha256={expected}"
    assert KEY not in json.dumps(headers)
    assert KEY.encode() not in body


def test_without_a_secret_there_is_no_signature_header(httpserver, endpoint):
    httpserver.expect_request("/hook").respond_with_data("ok")
    endpoint()
    emit("run.succeeded")
    hooks.enqueue_new_events(at(0))

    hooks.deliver_due(at(0))

    [(headers, _)] = received(httpserver)
    assert "X-Furrow-Signature" not in headers
    assert HookDelivery.objects.get().status == "delivered"


def test_a_missing_signing_secret_fails_the_attempt_without_sending(httpserver, endpoint):
    HookEndpoint.objects.create(
        name="audit", url=httpserver.url_for("/hook"), event_types=["*"], secret="GONE"
    )
    emit("run.succeeded")
    hooks.enqueue_new_events(at(0))

    assert hooks.deliver_due(at(0)) == 1

    assert httpserver.log == []
    delivery = HookDelivery.objects.get()
    assert (delivery.status, delivery.attempts, delivery.next_attempt_at) == ("pending", 1, at(1))
    assert delivery.last_error == "not sent: the signing secret 'GONE' is not set"


def test_a_secret_echoed_by_the_receiver_is_masked_in_the_log(httpserver, endpoint, signing_secret):
    httpserver.expect_request("/hook").respond_with_data(f"bad signature, key {KEY}", status=401)
    endpoint(secret=signing_secret)
    emit("run.succeeded")
    hooks.enqueue_new_events(at(0))

    hooks.deliver_due(at(0))

    delivery = HookDelivery.objects.get()
    assert delivery.last_status_code == 401
    assert "key ***" in delivery.last_error
    assert KEY not in json.dumps(delivery.attempt_log) + delivery.last_error


def test_after_max_attempts_a_delivery_is_failed_and_no_longer_sent(httpserver, endpoint):
    httpserver.expect_request("/hook").respond_with_data("down", status=503)
    endpoint(max_attempts=3)
    emit("run.failed")
    hooks.enqueue_new_events(at(0))

    assert [hooks.deliver_due(at(s)) for s in (0, 0.5, 1, 3, 100)] == [1, 0, 1, 1, 0]

    delivery = HookDelivery.objects.get()
    assert (delivery.status, delivery.attempts, delivery.next_attempt_at) == ("failed", 3, None)
    assert [e["status_code"] for e in delivery.attempt_log] == [503, 503, 503]
    assert len(httpserver.log) == 3


def test_a_redirect_is_not_a_delivery(httpserver, endpoint):
    httpserver.expect_request("/hook").respond_with_data("", status=302, headers={"Location": "/x"})
    endpoint()
    emit("run.failed")
    hooks.enqueue_new_events(at(0))

    hooks.deliver_due(at(0))

    delivery = HookDelivery.objects.get()
    assert (delivery.status, delivery.last_status_code) == ("pending", 302)
    assert "HTTP 302 from POST" in delivery.last_error


@pytest.mark.parametrize(
    ("attempt", "seconds"), [(1, 1), (2, 2), (3, 4), (8, 128), (9, 256), (10, 300), (60, 300)]
)
def test_the_backoff_doubles_up_to_five_minutes(attempt, seconds):
    assert hooks.backoff(attempt) == seconds


def test_a_slow_and_a_dead_endpoint_do_not_hold_up_a_healthy_one(
    httpserver, endpoint, slow_server, closed_port_url
):
    arrivals: list[float] = []
    httpserver.expect_request("/hook").respond_with_handler(
        lambda request: arrivals.append(time.monotonic()) or Response("ok")
    )
    endpoint("healthy")
    endpoint("slow", url=slow_server.url_for("/hook"), timeout=0.5)
    endpoint("dead", url=closed_port_url, timeout=0.5)
    for type_ in ("run.running", "step.failed", "run.failed"):
        emit(type_)
    assert hooks.enqueue_new_events(at(0)) == 9

    started = time.monotonic()
    assert hooks.deliver_due(at(0)) == 9
    elapsed = time.monotonic() - started

    assert elapsed < 0.5 + 1.0
    assert len(arrivals) == 3
    assert max(arrivals) - started < 0.5  # sent at once, not after the slow ones
    rows = HookDelivery.objects.select_related("endpoint")
    outcomes = {(d.endpoint.name, d.status) for d in rows}
    assert outcomes == {("healthy", "delivered"), ("slow", "pending"), ("dead", "pending")}
    slow_error = rows.filter(endpoint__name="slow").first().last_error
    assert slow_error.startswith("timed out after 0.5s waiting for a response to POST")
    dead_error = rows.filter(endpoint__name="dead").first().last_error
    assert dead_error.startswith(f"could not connect to {closed_port_url}")


def test_each_endpoint_gets_a_share_of_a_small_pool(httpserver, endpoint, settings):
    settings.FURROW = {**settings.FURROW, "HOOK_CONCURRENCY": 3}
    httpserver.expect_request("/hook").respond_with_data("ok")
    for name in ("a", "b", "c"):
        endpoint(name)
    for _ in range(5):
        emit("run.running")
    hooks.enqueue_new_events(at(0))

    assert hooks.deliver_due(at(0)) == 3

    delivered = HookDelivery.objects.filter(status="delivered")
    assert sorted(delivered.values_list("endpoint__name", flat=True)) == ["a", "b", "c"]


def test_a_disabled_endpoint_gets_nothing_new_and_its_pending_deliveries_wait(httpserver, endpoint):
    httpserver.expect_request("/hook").respond_with_data("ok")
    audit = endpoint()
    emit("run.running")
    hooks.enqueue_new_events(at(0))
    HookEndpoint.objects.filter(pk=audit.pk).update(enabled=False)
    emit("run.failed")

    assert hooks.enqueue_new_events(at(1)) == 0
    assert hooks.deliver_due(at(1)) == 0

    HookEndpoint.objects.filter(pk=audit.pk).update(enabled=True)
    assert hooks.deliver_due(at(2)) == 1
    assert HookDelivery.objects.get().status == "delivered"


# Fan-out: patterns, workflows, the cursor


def test_patterns_and_workflow_filters_choose_the_events(endpoint, publish):
    release = publish({"name": "release", "steps": {"a": {"type": "noop"}}})
    other = publish({"name": "other", "steps": {"a": {"type": "noop"}}})
    hooks.enqueue_new_events(at(0))  # past the workflow.published events
    endpoint("runs", event_types=["run.*"])
    endpoint("problems", event_types=["step.failed", "approval.decided"])
    endpoint("releases", event_types=["*"], workflows=["release"])
    endpoint("everything", event_types=["*"])
    HookEndpoint.objects.create(
        name="off", url="http://x.example", event_types=["*"], enabled=False
    )
    events = {
        "run.running": emit("run.running", workflow=release),
        "step.failed": emit("step.failed", workflow=other),
        "approval.decided": emit("approval.decided", workflow=release),
        "secret.created": emit("secret.created"),
        "runs.x": emit("runs.x", workflow=other),
    }

    assert hooks.enqueue_new_events(at(0)) == 10

    got = {
        (d.endpoint.name, d.event.type)
        for d in HookDelivery.objects.select_related("endpoint", "event")
    }
    assert got == {
        ("runs", "run.running"),
        ("problems", "step.failed"),
        ("problems", "approval.decided"),
        ("releases", "run.running"),
        ("releases", "approval.decided"),
        *{("everything", type_) for type_ in events},
    }


def test_a_run_event_matches_by_its_runs_workflow(endpoint, publish):
    endpoint(event_types=["run.*", "step.*"], workflows=["etl-*"])
    run = services.start_run(publish({"name": "etl-nightly", "steps": {"a": {"type": "noop"}}}), {})
    services.start_run(publish({"name": "web", "steps": {"a": {"type": "noop"}}}), {})

    hooks.enqueue_new_events(at(0))

    assert set(HookDelivery.objects.values_list("event__run", flat=True)) == {run.pk}


def test_each_event_is_enqueued_once_across_passes(endpoint):
    endpoint()
    emit("run.running")
    assert hooks.enqueue_new_events(at(0)) == 1
    assert hooks.enqueue_new_events(at(1)) == 0
    emit("run.failed")
    assert hooks.enqueue_new_events(at(2)) == 1
    assert HookDelivery.objects.count() == 2


def test_with_no_endpoint_the_cursor_skips_to_the_end(endpoint):
    emit("run.running")
    emit("run.failed")

    assert hooks.enqueue_new_events(at(0)) == 0

    assert HookCursor.objects.get().last_event_id == Event.objects.latest("id").pk
    endpoint()
    assert hooks.enqueue_new_events(at(1)) == 0  # endpoints get what happens after they exist
    emit("run.succeeded")
    assert hooks.enqueue_new_events(at(2)) == 1


def test_an_idle_pass_costs_three_queries(django_assert_num_queries):
    with django_assert_num_queries(3):  # the cursor, new events?, due deliveries?
        assert hooks.hook_pass(at(0)) == 0


def test_an_event_that_becomes_visible_late_is_still_enqueued(endpoint):
    emit("run.queued")
    hooks.enqueue_new_events(at(0))  # no endpoint yet: the cursor moves to the last id
    endpoint()
    first, late, third = emit("run.running"), emit("step.ready"), emit("step.failed")
    late_id = late.pk
    late.delete()  # as if its transaction had not committed yet

    assert hooks.enqueue_new_events(at(0)) == 2
    assert HookCursor.objects.get().last_event_id == third.pk
    assert [pk for pk, _ in HookCursor.objects.get().gaps] == [late_id]

    emit("step.ready", id=late_id)  # it commits
    assert hooks.enqueue_new_events(at(1)) == 1
    assert HookCursor.objects.get().gaps == []
    assert HookDelivery.objects.filter(event_id__in=[first.pk, late_id, third.pk]).count() == 3


def test_a_gap_is_forgotten_after_the_grace_period(endpoint):
    endpoint()
    emit("run.running")
    gone = emit("step.ready")
    emit("step.failed")
    gone.delete()  # a rolled-back insert leaves a gap for good
    hooks.enqueue_new_events(at(0))

    assert hooks.enqueue_new_events(at(hooks.GAP_GRACE + 1)) == 0
    emit("run.failed")
    hooks.enqueue_new_events(at(hooks.GAP_GRACE + 2))

    assert HookCursor.objects.get().gaps == []


def test_advance_records_at_most_max_gaps():
    last, gaps = hooks.advance(10, {}, [11, 13, 10_000], 5.0)

    assert last == 10_000
    assert len(gaps) == hooks.MAX_GAPS
    assert gaps[0] == [10_000 - hooks.MAX_GAPS, 5.0]
    assert [12, 5.0] not in gaps  # the oldest gaps give way to the newest


@pytest.mark.django_db(transaction=True)
def test_four_threads_enqueueing_at_once_enqueue_each_event_exactly_once(endpoint):
    endpoint("a")
    endpoint("b", event_types=["step.*"])
    writers_done = threading.Event()

    def write(prefix: str) -> None:
        for i in range(40):
            emit(f"step.{prefix}{i}")
        writers_done.set()

    def enqueue() -> None:
        while not writers_done.is_set():
            hooks.enqueue_new_events(timezone.now())
        hooks.enqueue_new_events(timezone.now())

    in_threads([lambda: write("x"), lambda: write("y"), enqueue, enqueue, enqueue, enqueue])
    hooks.enqueue_new_events(timezone.now())  # anything a thread's last pass could not see

    events = Event.objects.filter(type__startswith="step.")
    assert events.count() == 80
    pairs = list(HookDelivery.objects.values_list("endpoint__name", "event_id"))
    assert len(pairs) == len(set(pairs)) == 160
    assert set(pairs) == {(name, pk) for name in "ab" for pk in events.values_list("pk", flat=True)}


@pytest.mark.django_db(transaction=True)
def test_an_event_committed_after_a_later_one_is_not_lost(endpoint):
    if connection.vendor == "sqlite":
        pytest.skip("SQLite commits one writer at a time: ids are always visible in order")
    endpoint()
    inserted, commit = threading.Event(), threading.Event()
    late_ids: list[int] = []

    def slow_writer() -> None:
        with transaction.atomic():
            late_ids.append(emit("run.running").pk)
            inserted.set()
            assert commit.wait(10)

    def main() -> None:
        assert inserted.wait(10)
        emit("run.failed")
        assert hooks.enqueue_new_events(timezone.now()) == 1  # the late one is not visible yet
        commit.set()

    in_threads([slow_writer, main])
    assert hooks.enqueue_new_events(timezone.now()) == 1

    assert HookDelivery.objects.filter(event_id=late_ids[0]).count() == 1
    assert HookDelivery.objects.count() == 2


# Endpoints from settings


def test_furrow_hooks_are_synced_into_rows_and_an_admin_row_wins(settings, httpserver):
    HookEndpoint.objects.create(name="mine", url="http://admin.example/h", event_types=["run.*"])
    settings.FURROW = {
        **settings.FURROW,
        "HOOKS": [
            {"name": "memarch", "url": httpserver.url_for("/m"), "event_types": ["step.*"]},
            {"name": "mine", "url": "http://settings.example/h", "event_types": ["*"]},
        ],
    }

    assert hooks.sync_settings_endpoints() == 1

    memarch = HookEndpoint.objects.get(name="memarch")
    assert (memarch.source, memarch.enabled, memarch.event_types) == ("settings", True, ["step.*"])
    assert (memarch.timeout, memarch.max_attempts, memarch.workflows) == (5.0, 8, [])
    assert HookEndpoint.objects.get(name="mine").url == "http://admin.example/h"

    settings.FURROW = {**settings.FURROW, "HOOKS": []}
    hooks.sync_settings_endpoints()
    assert HookEndpoint.objects.get(name="memarch").enabled is False  # kept, with its history


def test_bad_furrow_hooks_entries_are_reported_and_left_out(settings):
    settings.FURROW = {
        **settings.FURROW,
        "HOOKS": [
            {"name": "files", "url": "file:///etc/passwd", "event_types": ["*"]},
            {"name": "typo", "url": "http://x.example", "event_type": ["*"]},
            {"name": "ok", "url": "http://x.example", "event_types": ["run.*"], "timeout": 2},
        ],
    }

    assert hooks.sync_settings_endpoints() == 1
    with pytest.raises(SystemCheckError) as raised:
        call_command("check")

    assert list(HookEndpoint.objects.values_list("name", flat=True)) == ["ok"]
    message = str(raised.value)
    assert "furrow.E110" in message
    assert "FURROW_HOOKS[0]: url: url must be http or https" in message
    assert "FURROW_HOOKS[1]: unknown keys ['event_type']" in message


# API


@pytest.fixture
def failed_delivery(httpserver, endpoint, signing_secret) -> HookDelivery:
    httpserver.expect_request("/hook").respond_with_handler(answers(500, 500))
    endpoint(secret=signing_secret, max_attempts=2)
    emit("step.failed")
    hooks.enqueue_new_events(at(0))
    hooks.deliver_due(at(0))
    hooks.deliver_due(at(1))
    delivery = HookDelivery.objects.get()
    assert delivery.status == "failed"
    return delivery


def test_the_api_lists_endpoints_with_the_secret_name_only(api, failed_delivery):
    response = api.get("/api/v1/hooks")

    assert response.status_code == 200
    [item] = response.json()["results"]
    assert item["name"] == "audit"
    assert (item["secret"], item["signed"]) == ("HOOK_KEY", True)
    assert item["deliveries"] == {"pending": 0, "delivered": 0, "failed": 1}
    assert api.get("/api/v1/hooks/audit").json() == item
    assert KEY not in response.content.decode()


def test_the_api_lists_deliveries_with_their_attempts(api, failed_delivery):
    response = api.get("/api/v1/hooks/audit/deliveries?status=failed")

    assert response.status_code == 200
    [item] = response.json()["results"]
    assert item["id"] == failed_delivery.pk
    assert item["delivery_id"] == str(failed_delivery.delivery_id)
    assert item["event"]["type"] == "step.failed"
    assert [e["status_code"] for e in item["attempt_log"]] == [500, 500]
    assert api.get("/api/v1/hooks/audit/deliveries?status=pending").json()["results"] == []
    assert api.get("/api/v1/hooks/audit/deliveries?status=nope").status_code == 400
    assert api.get("/api/v1/hooks/nope/deliveries").status_code == 404


def test_redeliver_puts_a_failed_delivery_back_and_it_is_sent_again(api, failed_delivery):
    url = f"/api/v1/hooks/audit/deliveries/{failed_delivery.pk}/redeliver"

    response = api.post(url)

    assert response.status_code == 200
    body = response.json()
    assert (body["status"], body["attempts"]) == ("pending", 0)
    assert body["attempt_log"][-1]["redelivered_by"] == "user:alice"
    assert api.post(url).status_code == 409  # pending now: nothing to redeliver

    assert hooks.deliver_due(timezone.now() + timedelta(seconds=1)) == 1
    delivery = HookDelivery.objects.get()
    assert (delivery.status, delivery.attempts) == ("delivered", 1)
    assert delivery.delivery_id == failed_delivery.delivery_id
    assert [e.get("status_code") for e in delivery.attempt_log] == [500, 500, None, 200]
    assert api.post(url).status_code == 409
    assert api.post("/api/v1/hooks/audit/deliveries/999999/redeliver").status_code == 404


def test_the_hook_api_is_staff_only(bob, failed_delivery):
    client = APIClient()
    client.force_authenticate(bob)
    redeliver = f"/api/v1/hooks/audit/deliveries/{failed_delivery.pk}/redeliver"

    assert client.get("/api/v1/hooks").status_code == 403
    assert client.get("/api/v1/hooks/audit").status_code == 403
    assert client.get("/api/v1/hooks/audit/deliveries").status_code == 403
    assert client.post(redeliver).status_code == 403
    assert APIClient().get("/api/v1/hooks").status_code in (401, 403)
    assert HookDelivery.objects.get().status == "failed"


# Admin


def test_the_admin_refuses_a_bad_endpoint(client, alice):
    client.force_login(alice)

    response = client.post(
        "/admin/runs/hookendpoint/add/",
        {
            "name": "bad name!",
            "url": "file:///etc/passwd",
            "event_types": '["run created"]',
            "workflows": "[]",
            "secret": "NOT_A_SECRET",
            "enabled": "on",
            "timeout": "5",
            "max_attempts": "8",
        },
    )

    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert set(errors) == {"name", "url", "event_types", "secret"}
    assert "there is no secret named 'NOT_A_SECRET'" in errors["secret"][0]
    assert not HookEndpoint.objects.exists()


def test_the_admin_saves_a_good_endpoint_and_warns_when_unsigned(client, alice, httpserver):
    client.force_login(alice)

    response = client.post(
        "/admin/runs/hookendpoint/add/",
        {
            "name": "memarch",
            "url": httpserver.url_for("/hook"),
            "event_types": '["run.*", "step.failed"]',
            "workflows": "[]",
            "secret": "",
            "enabled": "on",
            "timeout": "5",
            "max_attempts": "8",
        },
    )

    assert response.status_code == 302
    assert HookEndpoint.objects.get().event_types == ["run.*", "step.failed"]
    shown = [str(m) for m in get_messages(response.wsgi_request)]
    assert any(m.startswith("memarch is unsigned: receivers cannot tell") for m in shown)


def test_the_admin_shows_every_attempt_and_redelivers(client, alice, failed_delivery):
    client.force_login(alice)

    listing = client.get("/admin/runs/hookdelivery/")
    detail = client.get(f"/admin/runs/hookdelivery/{failed_delivery.pk}/change/")
    endpoints = client.get("/admin/runs/hookendpoint/")
    response = client.post(
        "/admin/runs/hookdelivery/",
        {"action": "redeliver", "_selected_action": [failed_delivery.pk]},
    )

    assert listing.status_code == detail.status_code == endpoints.status_code == 200
    assert "500, 500" in listing.content.decode()
    assert detail.content.decode().count("HTTP 500 from POST") == 3  # two rows, and last_error
    assert KEY not in detail.content.decode()
    assert "1 failed" in endpoints.content.decode()
    assert response.status_code == 302
    assert [str(m) for m in get_messages(response.wsgi_request)] == [
        f"delivery {failed_delivery.pk} to audit: pending again."
    ]
    assert HookDelivery.objects.get().status == "pending"
    assert client.get("/admin/runs/hookcursor/").status_code == 200
