"""The OpenAPI description and its viewers, served without any CDN."""

from __future__ import annotations

import re

import pytest
import yaml

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


@pytest.mark.parametrize("page", ["/api/v1/schema/swagger/", "/api/v1/schema/redoc/"])
def test_the_viewers_load_their_assets_from_this_server(api, page):
    html = api.get(page).content.decode()
    sources = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert sources
    assert all(not s.startswith(("http://", "https://", "//")) for s in sources), sources
    assert any("drf_spectacular_sidecar" in s for s in sources)
