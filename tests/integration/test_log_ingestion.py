"""POST /api/v1/runs/{id}/logs: external programs append lines to a run's log (runs/ingest.py)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import resolve
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from flows import access
from flows.models import WorkflowGrant
from runs import services
from runs.ingest import MAX_LINE_BYTES
from runs.ingest_api import RunLogsView
from runs.models import LogLine, Run, StepRun
from steps.worker import run_attempt

pytestmark = pytest.mark.django_db

WORKFLOW = {
    "name": "ingest",
    "steps": {
        "build": {"type": "noop"},
        "fetch": {"type": "noop", "for_each": [1, 2, 3], "parallelism": 3},
    },
}


@pytest.fixture
def run(publish) -> Run:
    """A running run whose steps `build` and `fetch` are ready (attempt 1), not yet running."""
    return services.start_run(publish(WORKFLOW), {})


def post_text(api: APIClient, run: Run, body: str | bytes, query: str = "", **headers: Any) -> Any:
    content_type = headers.pop("content_type", "text/plain")
    return api.post(
        f"/api/v1/runs/{run.pk}/logs{query}", body, content_type=content_type, **headers
    )


def post_json(api: APIClient, run: Run, body: Any, query: str = "") -> Any:
    return api.post(f"/api/v1/runs/{run.pk}/logs{query}", body, format="json")


def stored(run: Run) -> list[tuple[str | None, int, str, str]]:
    """(step, attempt, stream, text) of the run's lines, in order."""
    return [
        (line.step_run.name if line.step_run else None, line.attempt, line.stream, line.text)
        for line in LogLine.objects.filter(run=run).select_related("step_run").order_by("id")
    ]


def texts(run: Run) -> list[str]:
    return list(LogLine.objects.filter(run=run).order_by("id").values_list("text", flat=True))


def assert_refused(response: Any, code: int, path: str | None = None) -> None:
    assert response.status_code == code, response.content
    if path is not None:
        assert [e["path"] for e in response.json()["errors"]] == [path]
    assert not LogLine.objects.exists()


# The route


def test_the_logs_route_answers_get_and_post_with_the_ingesting_view():
    match = resolve(f"/api/v1/runs/{uuid.uuid4()}/logs")
    assert match.func.view_class is RunLogsView


# Plain text


def test_plain_text_lines_are_appended_to_the_run_as_external_lines(api, run):
    response = post_text(api, run, "checking out\nbuilding\n")

    assert response.status_code == 201
    body = response.json()
    ids = list(LogLine.objects.filter(run=run).order_by("id").values_list("id", flat=True))
    assert body == {
        "run": str(run.pk),
        "step": None,
        "attempt": 0,
        "accepted": 2,
        "first_id": ids[0],
        "last_id": ids[-1],
    }
    assert stored(run) == [
        (None, 0, "external", "checking out"),
        (None, 0, "external", "building"),
    ]


@pytest.mark.parametrize(
    ("body", "lines"),
    [
        ("one", ["one"]),
        ("one\n", ["one"]),
        ("one\r\ntwo\r\n", ["one", "two"]),
        ("one\rtwo\r", ["one", "two"]),
        ("one\n\n\ntwo", ["one", "", "", "two"]),
        ("one\n\n", ["one", ""]),
        ("\n", [""]),
        ("mixed\r\nbreaks\rand\nends", ["mixed", "breaks", "and", "ends"]),
        ("tab\tand\x0bform\x0cfeed stay", ["tab\tand\x0bform\x0cfeed stay"]),
    ],
)
def test_text_is_split_at_lf_crlf_and_cr_keeping_empty_lines_but_not_a_final_break(
    api, run, body, lines
):
    response = post_text(api, run, body)

    assert response.status_code == 201, response.content
    assert response.json()["accepted"] == len(lines)
    assert texts(run) == lines


def test_the_charset_of_the_content_type_decodes_the_body(api, run):
    latin = post_text(
        api, run, "café\n".encode("latin-1"), content_type="text/plain; charset=latin-1"
    )
    utf16 = post_text(
        api, run, "naïve\n".encode("utf-16"), content_type="text/plain; charset=utf-16"
    )
    default = post_text(api, run, "café ✓".encode())

    assert (latin.status_code, utf16.status_code, default.status_code) == (201, 201, 201)
    assert texts(run) == ["café", "naïve", "café ✓"]


def test_invalid_bytes_and_nul_become_replacement_characters_instead_of_an_error(api, run):
    response = post_text(api, run, b"bad \xff\xfe bytes\nnul \x00 here\n")

    assert response.status_code == 201
    assert texts(run) == ["bad \ufffd\ufffd bytes", "nul \ufffd here"]


@pytest.mark.parametrize("charset", ["klingon", "base64", "idna"])
def test_a_charset_that_cannot_decode_text_is_a_400(api, run, charset):
    response = post_text(api, run, b"x", content_type=f"text/plain; charset={charset}")

    assert_refused(response, 400)
    assert charset in response.json()["message"]


def test_a_line_over_64_kb_is_stored_as_consecutive_pieces_cut_between_characters(api, run):
    line = "é" * MAX_LINE_BYTES  # two bytes each: 128 KB
    response = post_text(api, run, f"before\n{line}\nafter\n")

    assert response.status_code == 201
    lines = texts(run)
    assert response.json()["accepted"] == len(lines) == 4
    assert lines[0] == "before"
    assert lines[-1] == "after"
    assert all(len(piece.encode()) <= MAX_LINE_BYTES for piece in lines)
    assert "".join(lines[1:-1]) == line


# JSON


def test_json_lines_go_to_the_named_step_and_stream(api, run):
    response = post_json(
        api, run, {"lines": ["one", "two\nthree", ""], "stream": "stderr", "step": "build"}
    )

    assert response.status_code == 201
    assert response.json()["step"] == "build"
    assert stored(run) == [
        ("build", 0, "stderr", "one"),
        ("build", 0, "stderr", "two"),
        ("build", 0, "stderr", "three"),
        ("build", 0, "stderr", ""),
    ]


def test_step_and_stream_can_come_from_the_query_string(api, run):
    text = post_text(api, run, "from text\n", "?step=build&stream=stdout")
    json = post_json(api, run, {"lines": ["from json"]}, "?step=fetch&stream=stderr")

    assert (text.status_code, json.status_code) == (201, 201)
    assert stored(run) == [("build", 0, "stdout", "from text"), ("fetch", 0, "stderr", "from json")]


@pytest.mark.parametrize(
    ("body", "query", "path"),
    [
        ({"lines": []}, "", "lines"),
        ({"lines": "one line"}, "", "lines"),
        ({"lines": ["ok", 3]}, "", "lines"),
        ({"stream": "stdout"}, "", "lines"),
        ({"lines": ["a"], "level": "info"}, "", "level"),
        ({"lines": ["a"], "stream": "system"}, "", "stream"),
        ({"lines": ["a"], "stream": 1}, "", "stream"),
        ({"lines": ["a"], "step": "build"}, "?step=fetch", "step"),
        (["a", "b"], "", ""),
    ],
)
def test_a_malformed_json_body_is_a_400_naming_the_field(api, run, body, query, path):
    assert_refused(post_json(api, run, body, query), 400, path)


def test_an_unknown_stream_in_the_query_is_a_400(api, run):
    assert_refused(post_text(api, run, "x", "?stream=system"), 400, "stream")


def test_an_empty_body_is_a_400(api, run):
    assert_refused(post_text(api, run, ""), 400, "lines")


def test_a_form_body_is_415_as_text_must_say_text_plain(api, run):
    response = post_text(api, run, "a=b", content_type="application/x-www-form-urlencoded")
    assert_refused(response, 415)


# Steps and attempts


def test_lines_for_a_running_step_join_its_current_attempt(api, run):
    build = StepRun.objects.get(run=run, name="build")
    assert services.claim(build.pk, 1, "test-worker") is not None

    response = post_text(api, run, "from the side\n", "?step=build")

    assert response.status_code == 201
    assert response.json()["attempt"] == 1
    assert stored(run) == [("build", 1, "external", "from the side")]


def test_lines_for_a_step_not_running_go_to_attempt_0(api, run):
    response = post_text(api, run, "early\n", "?step=build")  # ready, not claimed

    assert response.status_code == 201
    assert stored(run) == [("build", 0, "external", "early")]


def test_an_item_of_a_for_each_step_is_a_valid_step_name(api, run):
    fetch = StepRun.objects.get(run=run, name="fetch")
    run_attempt(fetch.pk, 1)  # fans out into fetch[0..2]
    item = StepRun.objects.get(run=run, name="fetch[2]")
    assert services.claim(item.pk, item.attempt, "test-worker") is not None

    response = post_text(api, run, "item two\n", "?step=fetch[2]")

    assert response.status_code == 201
    assert stored(run) == [("fetch[2]", item.attempt, "external", "item two")]


def test_an_unknown_step_is_a_400_and_stores_nothing(api, run):
    response = post_text(api, run, "lost\n", "?step=deploy")

    assert_refused(response, 400, "step")
    assert response.json()["errors"][0]["message"] == "run has no step 'deploy'"


def test_a_run_that_ended_refuses_lines_with_409(api, run):
    services.cancel_run(run)

    response = post_text(api, run, "too late\n")

    assert_refused(response, 409)
    assert (
        response.json()["message"] == f"run {run.pk} already ended (cancelled); its log is closed"
    )


def test_an_unknown_run_is_a_404(api):
    response = api.post(f"/api/v1/runs/{uuid.uuid4()}/logs", "x", content_type="text/plain")
    assert_refused(response, 404)


# Limits


def test_more_lines_than_the_limit_is_a_400_and_stores_none(api, run, settings):
    settings.FURROW = {**settings.FURROW, "MAX_INGEST_LINES": 3}

    refused = post_text(api, run, "1\n2\n3\n4\n")
    assert_refused(refused, 400, "lines")
    assert refused.json()["errors"][0]["message"] == "at most 3 lines per request; this one has 4"

    assert post_text(api, run, "1\n2\n3\n").status_code == 201
    assert texts(run) == ["1", "2", "3"]


def test_a_body_over_the_request_size_limit_is_a_413_and_stores_nothing(api, run, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 100

    response = post_text(api, run, "x" * 101)

    assert_refused(response, 413)
    assert response.json()["message"] == "request body is larger than the limit of 100 bytes"
    assert post_text(api, run, "x" * 100).status_code == 201


def test_10000_lines_are_one_request_of_a_few_inserts(api, run):
    body = "".join(f"line {n}\n" for n in range(10_000))

    with CaptureQueriesContext(connection) as queries:
        response = post_text(api, run, body)

    assert response.status_code == 201
    assert response.json()["accepted"] == 10_000
    assert LogLine.objects.filter(run=run).count() == 10_000
    inserts = [q for q in queries.captured_queries if q["sql"].startswith("INSERT")]
    # 2,000 rows per INSERT; Django keeps SQLite under its 999 parameters: 166 rows.
    assert len(inserts) == (5 if connection.vendor == "postgresql" else 61)
    assert len(queries) - len(inserts) <= 4  # the run, its lock, and the savepoint around them
    first, last = texts(run)[0], texts(run)[-1]
    assert (first, last) == ("line 0", "line 9999")


# Reading them back, and who may send


def test_ingested_lines_are_read_back_in_order_as_json_text_and_from_a_cursor(api, run):
    post_text(api, run, "external one\nexternal two\n")
    post_json(api, run, {"lines": ["for build"], "step": "build"})

    page = api.get(f"/api/v1/runs/{run.pk}/logs").json()
    text = api.get(f"/api/v1/runs/{run.pk}/logs", HTTP_ACCEPT="text/plain")
    from_cursor = api.get(f"/api/v1/runs/{run.pk}/logs?after={page['lines'][0]['id']}").json()

    assert [(line["step"], line["stream"], line["text"]) for line in page["lines"]] == [
        (None, "external", "external one"),
        (None, "external", "external two"),
        ("build", "external", "for build"),
    ]
    assert text.content.decode() == "[-] external one\n[-] external two\n[build] for build\n"
    assert [line["text"] for line in from_cursor["lines"]] == ["external two", "for build"]


def test_a_token_or_a_session_may_send_lines(run, bob):
    WorkflowGrant.objects.create(workflow=run.workflow, user=bob, role="run")
    token = APIClient(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=bob).key}")
    session = APIClient()
    assert session.login(username="bob", password="bob-pw")

    assert post_text(token, run, "by token\n").status_code == 201
    assert post_text(session, run, "by session\n").status_code == 201
    assert texts(run) == ["by token", "by session"]


def test_only_those_who_may_run_the_workflow_send_lines(run, bob):
    client = APIClient()
    client.force_authenticate(bob)
    assert post_text(client, run, "outsider\n").status_code == 404  # not even its existence
    WorkflowGrant.objects.create(workflow=run.workflow, user=bob, role="view")
    access.forget(bob)  # a real request loads its user afresh; this client reuses one object
    assert post_text(client, run, "viewer\n").status_code == 403
    assert texts(run) == []


def test_anonymous_clients_may_not_send_lines(run):
    response = post_text(APIClient(), run, "anonymous\n")
    assert_refused(response, 401)
