"""Connectors: presets, settings and admin rows as step types; requests with secrets; the API."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.urls import include, path
from jsonschema import Draft202012Validator
from werkzeug import Request, Response

from steps import connectors
from steps.executors.base import StepContext, StepResult
from steps.models import Connector, Secret
from steps.secrets import SecretsView, set_secret

pytestmark = [pytest.mark.django_db, pytest.mark.urls(__name__)]

# Mounted here until orchestrator/api_urls.py includes steps.api_urls; then the first match wins.
urlpatterns = [
    path("api/v1/", include("steps.api_urls")),
    path("", include("orchestrator.urls")),
]

SEED_ACTIONS = [
    "ai_router.chat",
    "web.search",
    "web.extract",
    "memarch.store_fact",
    "memarch.search",
    "scm.call",
]


@pytest.fixture
def make_connector(httpserver) -> Any:
    def _make(name: str = "billing", **fields: Any) -> Connector:
        fields.setdefault("base_url", httpserver.url_for("/"))
        fields.setdefault("operations", {"charge": {"method": "POST", "path": "/v1/charges"}})
        connector = Connector(name=name, **fields)
        connector.full_clean()
        connector.save()
        return connector

    return _make


def run_step(type_name: str, config: dict[str, Any], secrets: Any = None) -> StepResult:
    executor = connectors.connector_executor(type_name)
    assert executor is not None, f"no connector type {type_name}"
    ctx = StepContext(
        run_id="run-1",
        step_name="call",
        attempt=1,
        config=config,
        timeout=5,
        secrets=SecretsView() if secrets is None else secrets,
    )
    return executor.run(ctx)


# Step types


def test_every_orchestrator_seed_action_is_a_connector_type_with_a_valid_schema():
    types = connectors.connector_types()

    assert set(SEED_ACTIONS) <= set(types)
    for schema in types.values():
        Draft202012Validator.check_schema(schema)
    seed_input = {
        "method": "POST",
        "url": "http://ai-router:8080/v1/chat/completions",
        "headers": {"Content-Type": "application/json"},
        "body": {"model": "llama2", "messages": [{"role": "user", "content": "hello"}]},
    }
    for action in SEED_ACTIONS:
        assert list(Draft202012Validator(types[action]).iter_errors(seed_input)) == []


def test_an_unknown_connector_operation_has_no_executor():
    assert connectors.connector_executor("web.crawl") is None
    assert connectors.connector_executor("nothing.here") is None
    assert connectors.connector_executor("http") is None


def test_an_operation_schema_takes_its_own_keys_and_refuses_others():
    schema = connectors.connector_types()["ai_router.chat"]
    validator = Draft202012Validator(schema)

    assert list(validator.iter_errors({"model": "m", "messages": []})) == []
    [error] = validator.iter_errors({"modle": "m"})
    assert "'modle' was unexpected" in error.message


# Requests


def test_a_connector_step_sends_the_bearer_token_from_a_secret(httpserver, make_connector):
    make_connector(auth={"scheme": "bearer", "secret": "BILLING_TOKEN"})
    set_secret("BILLING_TOKEN", "tok-123")
    httpserver.expect_request(
        "/v1/charges",
        method="POST",
        headers={"Authorization": "Bearer tok-123"},
        json={"amount": 5},
    ).respond_with_json({"id": "ch_1"}, status=201)
    secrets = SecretsView()

    result = run_step("billing.charge", {"json": {"amount": 5}}, secrets)

    assert result.ok, result.error
    assert result.output == {
        "status": 201,
        "headers": result.output["headers"],
        "body": {"id": "ch_1"},
    }
    assert result.output["headers"]["content-type"] == "application/json"
    assert secrets.used == {"BILLING_TOKEN": "tok-123"}  # so the worker masks it


@pytest.mark.parametrize(
    ("auth", "header", "value"),
    [
        (
            {"scheme": "basic", "secret": "PW", "username": "svc"},
            "Authorization",
            "Basic " + base64.b64encode(b"svc:s3cret").decode(),
        ),
        ({"scheme": "header", "secret": "PW", "header": "X-Api-Key"}, "X-Api-Key", "s3cret"),
    ],
)
def test_basic_and_header_auth_take_the_secret_as_well(
    httpserver, make_connector, auth, header, value
):
    make_connector(auth=auth, headers={"Accept": "application/json"})
    httpserver.expect_request(
        "/v1/charges", headers={header: value, "Accept": "application/json"}
    ).respond_with_data("ok")

    result = run_step("billing.charge", {}, {"PW": "s3cret"})

    assert result.ok, result.error


def test_a_missing_secret_fails_the_step_without_a_retry(httpserver, make_connector):
    make_connector(auth={"scheme": "bearer", "secret": "BILLING_TOKEN"})

    result = run_step("billing.charge", {"json": {}})

    assert result == StepResult.failure(
        "connector 'billing' needs secret 'BILLING_TOKEN', which is not set", retryable=False
    )
    assert httpserver.log == []


def test_a_secret_that_does_not_decrypt_fails_the_step_with_the_reason(make_connector):
    make_connector(auth={"scheme": "bearer", "secret": "OLD_TOKEN"})
    Secret.objects.create(name="OLD_TOKEN", ciphertext="written-with-a-lost-key")

    result = run_step("billing.charge", {})

    assert result.retryable is False
    assert result.error == (
        "connector 'billing' cannot read secret 'OLD_TOKEN': secret 'OLD_TOKEN' cannot be "
        "decrypted with the configured FURROW_SECRETS_KEY"
    )


def test_path_params_fill_the_path_url_quoted(httpserver, make_connector):
    make_connector(operations={"note": {"method": "GET", "path": "/v1/items/{id}/notes/{note}"}})
    seen: list[str] = []

    def handler(request: Request) -> Response:
        seen.append(request.environ["REQUEST_URI"])
        return Response("{}", content_type="application/json")

    httpserver.expect_request("/v1/items/a/b c?/notes/7").respond_with_handler(handler)

    result = run_step(
        "billing.note", {"path_params": {"id": "a/b c?", "note": 7}, "query": {"full": True}}
    )

    assert result.ok, result.error
    assert seen == ["/v1/items/a%2Fb%20c%3F/notes/7?full=true"]


@pytest.mark.parametrize(
    ("config", "error"),
    [
        ({}, "operation path '/v1/items/{id}' needs path_params.id"),
        (
            {"path_params": {"id": 1, "idd": 2}},
            "path_params.idd is not a placeholder in the operation path '/v1/items/{id}'",
        ),
        (
            {"url": "http://elsewhere/x", "path_params": {"id": 1}},
            "invalid config: path_params cannot be used with url",
        ),
        ({"json": {}, "body": "x"}, "invalid config: json and body cannot both be set"),
        ({"headers": {"X": 1}}, "invalid config at headers/X: 1 is not of type 'string'"),
        ({"url": "ftp://example.com/x"}, "url must be http or https: 'ftp://example.com/x'"),
    ],
)
def test_a_step_that_cannot_be_sent_fails_without_a_retry(make_connector, config, error):
    make_connector(operations={"get": {"method": "GET", "path": "/v1/items/{id}"}})

    assert run_step("billing.get", config) == StepResult.failure(error, retryable=False)


def test_a_seed_url_replaces_base_url_and_path_and_a_raw_body_is_sent_as_json(httpserver):
    # The orchestrator seed's steps: {action: web.search, input: {url, method, headers, body}}.
    httpserver.expect_request(
        "/custom/search",
        method="POST",
        json={"q": "furrow"},
        headers={"Content-Type": "application/json"},
    ).respond_with_json({"hits": 1})

    result = run_step(
        "web.search", {"url": httpserver.url_for("/custom/search"), "body": {"q": "furrow"}}
    )

    assert result.ok, result.error
    assert result.output["body"] == {"hits": 1}


def test_a_preset_sends_its_token_only_when_the_secret_exists(httpserver, settings):
    settings.FURROW = {**settings.FURROW, "PRESET_URLS": {"ai_router": httpserver.url_for("/ai")}}
    connectors.clear_cache()
    requests: list[dict[str, Any]] = []

    def handler(request: Request) -> Response:
        requests.append({"auth": request.headers.get("Authorization"), "json": request.json})
        return Response(json.dumps({"choices": []}), content_type="application/json")

    httpserver.expect_request("/ai/v1/chat/completions", method="POST").respond_with_handler(
        handler
    )
    chat = {"model": "llama2", "messages": [{"role": "user", "content": "hi"}]}

    assert run_step("ai_router.chat", chat).ok
    set_secret("AI_ROUTER_TOKEN", "router-token")
    assert run_step("ai_router.chat", chat).ok

    assert requests == [
        {"auth": None, "json": chat},  # the operation's own keys make up the JSON body
        {"auth": "Bearer router-token", "json": chat},
    ]


def test_operation_keys_cannot_be_mixed_with_json(make_connector):
    make_connector(
        operations={
            "charge": {
                "path": "/v1/charges",
                "with": {"properties": {"amount": {"type": "integer"}}, "required": ["amount"]},
            }
        }
    )

    assert run_step("billing.charge", {"amount": 1, "json": {}}).error == (
        "invalid config: json cannot be set together with the operation's keys (amount), "
        "which make up the JSON body"
    )
    assert run_step("billing.charge", {}).error == "invalid config: 'amount' is a required property"


def test_a_disabled_connector_fails_its_steps(make_connector):
    make_connector(enabled=False)

    assert run_step("billing.charge", {}) == StepResult.failure(
        "connector 'billing' is disabled", retryable=False
    )


# Where connectors come from


def test_a_database_connector_replaces_the_preset_of_the_same_name(httpserver, make_connector):
    make_connector("web", operations={"search": {"method": "GET", "path": "/find"}})
    httpserver.expect_request("/find", method="GET").respond_with_json([])

    types = connectors.connector_types()

    assert "web.search" in types
    assert "web.extract" not in types
    assert connectors.get_connector("web").source == "database"
    assert run_step("web.search", {}).ok


def test_settings_merge_over_a_preset_key_by_key(settings):
    settings.FURROW = {
        **settings.FURROW,
        "CONNECTORS": {
            "web": {"base_url": "https://web.internal", "operations": {"crawl": {"path": "/c"}}},
            "crm": {"base_url": "https://crm.internal", "operations": {"find": {"path": "/f"}}},
        },
    }
    connectors.clear_cache()

    web = connectors.get_connector("web")

    assert web.source == "settings"
    assert web.base_url == "https://web.internal"
    assert sorted(web.operations) == ["crawl", "extract", "search"]
    assert web.auth.secret == "WEB_TOKEN"
    assert {"web.crawl", "crm.find", "ai_router.chat"} <= set(connectors.connector_types())


def test_a_bad_settings_connector_is_left_out_and_reported_by_the_system_check(settings):
    settings.FURROW = {
        **settings.FURROW,
        "CONNECTORS": {"crm": {"base_url": "ftp://crm", "operations": {"find": {"path": "/f"}}}},
        "RATE_LIMITS": {"http": -1},
    }
    connectors.clear_cache()

    assert connectors.get_connector("crm") is None
    assert connectors.catalogue().problems == [
        "connector 'crm': base_url: url must be http or https: 'ftp://crm'"
    ]
    with pytest.raises(SystemCheckError) as raised:
        call_command("check", tags=["furrow"])
    assert "furrow.E101" in str(raised.value)
    assert "furrow.E102" in str(raised.value)


def test_a_connector_added_in_the_admin_is_a_step_type_at_once(client, alice):
    assert "crm.find" not in connectors.connector_types()  # warms the cache
    client.force_login(alice)

    response = client.post(
        "/admin/steps/connector/add/",
        {
            "name": "crm",
            "description": "",
            "base_url": "https://crm.internal",
            "headers": "{}",
            "auth": '{"scheme": "bearer", "secret": "CRM_TOKEN"}',
            "health_url": "",
            "operations": '{"find": {"method": "GET", "path": "/people/{id}"}}',
            "timeout": "10",
            "rate_limit": "",
            "circuit_breaker": "null",
            "enabled": "on",
        },
    )

    assert response.status_code == 302, response.content.decode()[:2000]
    assert "crm.find" in connectors.connector_types()
    assert connectors.get_connector("crm").timeout == 10


def test_the_admin_form_refuses_a_bad_connector_and_shows_json_indented(
    client, alice, make_connector
):
    connector = make_connector(headers={"Accept": "application/json"})
    client.force_login(alice)

    page = client.get(f"/admin/steps/connector/{connector.pk}/change/").content.decode()
    assert "{\n  &quot;Accept&quot;: &quot;application/json&quot;\n}" in page

    response = client.post(
        "/admin/steps/connector/add/",
        {
            "name": "bad",
            "base_url": "https://bad.internal",
            "headers": "{}",
            "auth": "null",
            "operations": '{"find": {"verb": "GET"}}',
            "timeout": "10",
            "circuit_breaker": "null",
            "enabled": "on",
        },
    )

    assert response.status_code == 200
    assert "operations/find" in response.content.decode()
    assert not Connector.objects.filter(name="bad").exists()


# API


def test_the_api_lists_connectors_with_the_secret_name_and_never_header_values(api, make_connector):
    make_connector(
        auth={"scheme": "header", "secret": "BILLING_KEY", "header": "X-Key"},
        headers={"X-Static": "do-not-show"},
        rate_limit=2,
        circuit_breaker={"failure_threshold": 3},
    )

    response = api.get("/api/v1/connectors")

    assert response.status_code == 200
    body = response.json()
    names = [item["name"] for item in body["results"]]
    assert names == sorted(names)
    assert {"ai_router", "web", "memarch", "scm", "billing"} <= set(names)
    billing = next(item for item in body["results"] if item["name"] == "billing")
    assert billing["auth"] == {"scheme": "header", "secret": "BILLING_KEY", "header": "X-Key"}
    assert billing["operations"] == {
        "charge": {
            "type": "billing.charge",
            "method": "POST",
            "path": "/v1/charges",
            "description": "",
        }
    }
    assert billing["source"] == "database"
    assert billing["rate_limit"] == 2
    assert billing["circuit_breaker"]["failure_threshold"] == 3
    assert billing["health"] is None
    assert "do-not-show" not in response.content.decode()


def test_the_api_shows_one_connector_or_a_clear_404(api):
    response = api.get("/api/v1/connectors/ai_router")
    assert response.status_code == 200
    assert response.json()["operations"]["chat"]["path"] == "/v1/chat/completions"
    assert response.json()["auth"] == {"scheme": "bearer", "secret": "AI_ROUTER_TOKEN"}

    missing = api.get("/api/v1/connectors/nope")
    assert missing.status_code == 404
    assert missing.json() == {"message": "unknown connector 'nope'"}


def test_the_connector_api_needs_a_login(client):
    assert client.get("/api/v1/connectors").status_code in (401, 403)
