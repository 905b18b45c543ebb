"""Request rates: per user (token or session alike), per address without one (callbacks, and
webhooks per slug), 429 with Retry-After in the API's error body, "off", and strict settings.

The rates here are per day, so that no test crosses a window's end while it runs."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import uuid
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import Client
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from orchestrator.env import env_rate, parse_rate
from orchestrator.throttling import hit

pytestmark = pytest.mark.django_db

RUNS = "/api/v1/runs"


def rates(settings: Any, **given: str) -> None:
    settings.FURROW = {**settings.FURROW, **{f"THROTTLE_{k.upper()}": v for k, v in given.items()}}


def client_for(user: Any) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def assert_throttled(response: Any) -> None:
    assert response.status_code == 429, response.content
    seconds = int(response["Retry-After"])
    assert 1 <= seconds <= 86400
    assert response.json() == {
        "message": f"Request was throttled. Expected available in {seconds} seconds."
    }


def test_a_user_over_the_rate_gets_429_with_retry_after_and_others_go_on(settings, alice, bob):
    rates(settings, user="3/day")
    as_bob = client_for(bob)

    assert [as_bob.get(RUNS).status_code for _ in range(3)] == [200, 200, 200]
    assert_throttled(as_bob.get(RUNS))
    assert_throttled(as_bob.get("/api/v1/step-types"))  # one count for every endpoint
    assert client_for(alice).get(RUNS).status_code == 200


def test_a_token_and_a_session_of_one_user_share_the_count(settings, bob):
    rates(settings, user="3/day")
    token = Token.objects.create(user=bob).key
    by_token = APIClient(headers={"Authorization": f"Token {token}"})
    by_session = Client()
    by_session.force_login(bob)

    assert by_token.get(RUNS).status_code == 200
    assert by_session.get(RUNS).status_code == 200
    assert by_token.get(RUNS).status_code == 200
    assert_throttled(by_session.get(RUNS))


def test_off_lets_every_request_through(settings, bob):
    rates(settings, user="off", anon="off")
    as_bob = client_for(bob)
    anonymous = APIClient()

    assert {as_bob.get(RUNS).status_code for _ in range(30)} == {200}
    assert {anonymous.post("/api/v1/callbacks/nope").status_code for _ in range(30)} == {404}


def test_callbacks_are_counted_per_address_at_the_anonymous_rate(settings):
    rates(settings, anon="2/day")
    stranger = APIClient(REMOTE_ADDR="203.0.113.7")

    assert stranger.post("/api/v1/callbacks/guess-1", {}, format="json").status_code == 404
    assert stranger.post("/api/v1/callbacks/guess-2", {}, format="json").status_code == 404
    assert_throttled(stranger.post("/api/v1/callbacks/guess-3", {}, format="json"))
    other = APIClient(REMOTE_ADDR="203.0.113.8")
    assert other.post("/api/v1/callbacks/guess-4", {}, format="json").status_code == 404


def test_a_forwarded_address_counts_only_behind_a_trusted_proxy(settings):
    rates(settings, anon="1/day")
    client = APIClient(REMOTE_ADDR="198.51.100.1")

    assert client.post("/api/v1/callbacks/x", HTTP_X_FORWARDED_FOR="10.0.0.1").status_code == 404
    # Without FURROW_NUM_PROXIES a client cannot escape its count by naming another address.
    refused = client.post("/api/v1/callbacks/x", HTTP_X_FORWARDED_FOR="10.0.0.2")
    assert refused.status_code == 429


def test_webhooks_are_counted_per_slug_and_address(settings, client):
    rates(settings, anon="2/day")

    def deliver(slug: str, address: str = "203.0.113.7") -> int:
        return client.post(
            f"/hooks/{slug}", b"{}", content_type="application/json", REMOTE_ADDR=address
        ).status_code

    assert [deliver("gh"), deliver("gh")] == [404, 404]  # no such webhook, and counted
    throttled = client.post(
        "/hooks/gh", b"{}", content_type="application/json", REMOTE_ADDR="203.0.113.7"
    )
    assert_throttled(throttled)
    assert deliver("gitlab") == 404
    assert deliver("gh", "203.0.113.9") == 404


def test_a_window_lets_requests_through_again_once_it_ends():
    key, limit = f"test:{uuid.uuid4()}", (2, 60)

    assert hit(key, limit, now=120.5) is None
    assert hit(key, limit, now=150.0) is None
    assert hit(key, limit, now=179.0) == pytest.approx(1.0)
    assert hit(key, limit, now=180.0) is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1200/min", (1200, 60)),
        ("5/s", (5, 1)),
        ("2/hour", (2, 3600)),
        ("1/day", (1, 86400)),
        (" 10/M ", (10, 60)),
        ("off", None),
        ("OFF", None),
    ],
)
def test_a_rate_is_a_count_per_period_or_off(text, expected):
    assert parse_rate(text) == expected


@pytest.mark.parametrize("text", ["10", "0/min", "-1/min", "ten/min", "10/week", "10/", "on"])
def test_a_malformed_rate_is_refused_at_startup(monkeypatch, text):
    monkeypatch.setenv("FURROW_THROTTLE_USER", text)
    with pytest.raises(ImproperlyConfigured, match="FURROW_THROTTLE_USER"):
        env_rate("FURROW_THROTTLE_USER", "3000/min")


def redis_answers() -> bool:
    try:
        socket.create_connection(("127.0.0.1", 6379), timeout=0.5).close()
    except OSError:
        return False
    return True


@pytest.mark.skipif(not redis_answers(), reason="no Redis on 127.0.0.1:6379")
def test_with_redis_url_the_counts_are_in_redis_and_shared_by_every_process(settings):
    url = "redis://127.0.0.1:6379/14"
    script = (
        "import django; django.setup()\n"
        "from django.conf import settings\n"
        "from orchestrator.throttling import hit\n"
        "print(settings.CACHES['default']['BACKEND'])\n"
        f"print(hit('shared-by-processes-{uuid.uuid4()}', (1, 86400)) is None)\n"
    )
    env = {**os.environ, "REDIS_URL": url, "DJANGO_SETTINGS_MODULE": "orchestrator.settings"}

    def in_a_process() -> list[str]:
        done = subprocess.run(
            [sys.executable, "-c", script],
            env=env,
            capture_output=True,
            text=True,
            check=True,
            cwd=settings.BASE_DIR,
        )
        return done.stdout.split()

    first, second = in_a_process(), in_a_process()

    assert first == ["django.core.cache.backends.redis.RedisCache", "True"]
    assert second == [
        "django.core.cache.backends.redis.RedisCache",
        "False",
    ]  # counted by the first
