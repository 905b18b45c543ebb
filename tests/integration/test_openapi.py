"""The OpenAPI description and its viewers, served without any CDN."""

from __future__ import annotations

import re

import pytest
import yaml
from django.core.management import call_command
from drf_spectacular.drainage import GENERATOR_STATS

pytestmark = pytest.mark.django_db


def test_the_schema_describes_the_api(api):
    response = api.get("/api/v1/schema/")
    assert response.status_code == 200
    schema = yaml.safe_load(response.content)
    assert schema["openapi"].startswith("3.")
    paths = schema["paths"]
    for path in (
        "/api/v1/workflows",
        "/api/v1/workflows/{name}/rollback",
        "/api/v1/runs/{id}",
        "/api/v1/audit",
    ):
        assert path in paths, path


def test_the_schema_generates_without_any_warning_or_error(tmp_path, capsys):
    GENERATOR_STATS.reset()  # the counts are global: start from this test's own generation
    target = tmp_path / "schema.yaml"

    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(target))

    assert not GENERATOR_STATS, capsys.readouterr().err
    assert yaml.safe_load(target.read_text())["paths"]


@pytest.fixture
def schema(api):
    return yaml.safe_load(api.get("/api/v1/schema/").content)


def _operations(schema):
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            yield f"{method.upper()} {path}", operation


def test_every_error_response_is_the_shared_error_body(schema):
    error = {"$ref": "#/components/schemas/Error"}
    for name, operation in _operations(schema):
        for code, response in operation["responses"].items():
            if int(code) >= 400:
                assert response["content"]["application/json"]["schema"] == error, (name, code)
    assert set(schema["components"]["schemas"]["Error"]["properties"]) == {"message", "errors"}


def test_every_operation_but_the_callback_needs_credentials_and_says_401(schema):
    for name, operation in _operations(schema):
        if name == "POST /api/v1/callbacks/{token}":
            assert "security" not in operation
            assert "401" not in operation["responses"]
        else:
            assert operation["security"], name
            assert "401" in operation["responses"], name


def test_an_operation_on_one_object_documents_its_404(schema):
    creates = {"PUT /api/v1/workflows/{name}"}  # publishing creates the workflow
    for name, operation in _operations(schema):
        if "{" in name and name not in creates and "callbacks" not in name:
            assert "404" in operation["responses"], name


@pytest.mark.parametrize("page", ["/api/v1/schema/swagger/", "/api/v1/schema/redoc/"])
def test_the_viewers_load_their_assets_from_this_server(api, page):
    html = api.get(page).content.decode()
    sources = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert sources
    assert all(not s.startswith(("http://", "https://", "//")) for s in sources), sources
    assert any("drf_spectacular_sidecar" in s for s in sources)
