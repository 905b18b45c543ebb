from __future__ import annotations

import re
import socket
import threading
import time
from typing import Any

import pytest
from werkzeug import Request, Response

from steps.executors.base import StepContext, StepResult
from steps.executors.http import HttpExecutor


def run(config: dict[str, Any], timeout: float = 5, log: Any = None) -> StepResult:
    ctx = StepContext(
        run_id="run-1",
        step_name="notify",
        attempt=1,
        config=config,
        timeout=timeout,
        log=log or (lambda stream, text: None),
    )
    return HttpExecutor().run(ctx)


def test_get_sends_query_and_headers_and_parses_a_json_body(httpserver):
    httpserver.expect_request(
        "/items",
        method="GET",
        query_string={"page": "2", "q": "a b"},
        headers={"X-Token": "secret"},
    ).respond_with_json({"items": [1, 2]}, headers={"X-Total": "2"})
    lines: list[tuple[str, str]] = []

    result = run(
        {
            "url": httpserver.url_for("/items"),
            "query": {"page": 2, "q": "a b"},
            "headers": {"X-Token": "secret"},
        },
        log=lambda stream, text: lines.append((stream, text)),
    )

    assert result.ok, result.error
    assert result.output["status"] == 200
    assert result.output["body"] == {"items": [1, 2]}
    assert result.output["headers"]["x-total"] == "2"
    assert result.output["headers"]["content-type"] == "application/json"
    [(stream, text)] = lines
    assert stream == "system"
    assert re.fullmatch(r"GET http://localhost:\d+/items -> 200 in \d+ ms", text)


def test_post_sends_json_and_a_text_response_stays_text(httpserver):
    httpserver.expect_request(
        "/hooks", method="POST", json={"event": "done", "n": 1}
    ).respond_with_data("created", status=201, content_type="text/plain")
    result = run(
        {"url": httpserver.url_for("/hooks"), "method": "post", "json": {"event": "done", "n": 1}}
    )
    assert result == StepResult(
        ok=True,
        output={
            "status": 201,
            "headers": result.output["headers"],
            "body": "created",
        },
    )


def test_body_is_sent_as_is(httpserver):
    httpserver.expect_request("/raw", method="PUT", data=b"plain text").respond_with_data("ok")
    assert run({"url": httpserver.url_for("/raw"), "method": "PUT", "body": "plain text"}).ok


@pytest.mark.parametrize(
    ("content_type", "data", "body"),
    [
        ("application/problem+json", '{"title": "x"}', {"title": "x"}),
        ("application/json; charset=utf-8", "[1]", [1]),
        ("application/json", "{not json", "{not json"),
        ("text/html", '{"a": 1}', '{"a": 1}'),
    ],
)
def test_the_body_is_parsed_only_when_it_is_json(httpserver, content_type, data, body):
    httpserver.expect_request("/b").respond_with_data(data, content_type=content_type)
    assert run({"url": httpserver.url_for("/b")}).output["body"] == body


def test_a_server_error_fails_the_step_and_keeps_the_response_in_the_output(httpserver):
    httpserver.expect_request("/fail").respond_with_data("boom " * 200, status=500)
    url = httpserver.url_for("/fail")
    result = run({"url": url})
    assert not result.ok
    assert result.error == f"HTTP 500 from GET {url}: " + ("boom " * 200)[:500]
    assert result.output["status"] == 500
    assert result.output["body"] == "boom " * 200


def test_a_status_in_allow_status_does_not_fail_the_step(httpserver):
    httpserver.expect_request("/missing").respond_with_data("nope", status=404)
    result = run({"url": httpserver.url_for("/missing"), "allow_status": [404]})
    assert result.ok
    assert result.output["status"] == 404


def test_redirects_are_not_followed_unless_asked(httpserver):
    httpserver.expect_request("/old").respond_with_data(
        "", status=302, headers={"Location": "/new"}
    )
    httpserver.expect_request("/new").respond_with_data("here")
    assert run({"url": httpserver.url_for("/old")}).output["status"] == 302
    followed = run({"url": httpserver.url_for("/old"), "follow_redirects": True})
    assert followed.output["body"] == "here"


@pytest.mark.parametrize(
    "url", ["file:///etc/passwd", "ftp://example.com/x", "example.com/path", "http:///no-host"]
)
def test_only_http_and_https_urls_are_allowed(url):
    result = run({"url": url})
    assert not result.ok
    assert result.error == f"url must be http or https: {url!r}"


def test_json_and_body_together_are_refused():
    result = run({"url": "http://localhost/", "json": {}, "body": "x"})
    assert result.error == "invalid config: json and body cannot both be set"


def test_a_refused_connection_is_a_failure_result():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # Nothing listens on the port now that the socket is closed.
    result = run({"url": f"http://127.0.0.1:{port}/"})
    assert not result.ok
    assert result.error.startswith(f"could not connect to http://127.0.0.1:{port}/")
    assert "connection refused" in result.error.lower()


@pytest.fixture
def slow_url(httpserver):
    """An endpoint that answers only after 2 s, or as soon as the test is over."""
    release = threading.Event()

    def handler(request: Request) -> Response:
        release.wait(timeout=2)
        return Response("late")

    httpserver.expect_request("/slow").respond_with_handler(handler)
    yield httpserver.url_for("/slow")
    release.set()


@pytest.mark.parametrize(
    ("config_timeout", "step_timeout", "shown"),
    [(0.3, 5, "0.3s"), ("300ms", 5, "0.3s"), ("10s", 0.3, "0.3s")],
)
def test_a_slow_endpoint_times_out(slow_url, config_timeout, step_timeout, shown):
    started = time.monotonic()
    result = run({"url": slow_url, "timeout": config_timeout}, timeout=step_timeout)
    assert not result.ok
    assert result.error == f"timed out after {shown} waiting for a response to GET {slow_url}"
    assert time.monotonic() - started < 1.5


def test_a_response_over_10_mb_is_cut_off(httpserver):
    httpserver.expect_request("/big").respond_with_data(b"x" * (10 * 2**20 + 1))
    result = run({"url": httpserver.url_for("/big")})
    assert not result.ok
    assert result.error.endswith("is larger than 10 MB; stopped reading")


def test_a_password_in_the_url_is_not_shown_in_errors(httpserver):
    httpserver.expect_request("/x").respond_with_data("no", status=403)
    url = httpserver.url_for("/x").replace("http://", "http://bob:hunter2@")
    result = run({"url": url})
    assert "hunter2" not in result.error
    assert "bob:***@" in result.error


def test_a_cancelled_attempt_stops_waiting_for_a_slow_response(httpserver):
    def slow(request: Request) -> Response:
        time.sleep(3)
        return Response("late")

    httpserver.expect_request("/slow").respond_with_handler(slow)
    cancel = threading.Event()
    ctx = StepContext(
        run_id="r",
        step_name="s",
        attempt=1,
        config={"url": httpserver.url_for("/slow")},
        timeout=10,
        cancel=cancel,
    )
    threading.Timer(0.2, cancel.set).start()
    started = time.monotonic()

    result = HttpExecutor().run(ctx)

    assert time.monotonic() - started < 1.5
    assert not result.ok
    assert "aborted" in result.error
