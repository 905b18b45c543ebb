"""Connectors: named HTTP services whose operations are step types (`ai_router.chat`).

Three layers, later ones winning: the PRESETS below (the orchestrator seed's actions), then
`FURROW_CONNECTORS` (merged key by key over a preset of the same name, operations one by one),
then `Connector` rows from the admin (a row replaces its name entirely).

The merged set is cached per process for `FURROW_CONNECTOR_CACHE_SECONDS`, and dropped at once
when a Connector row is saved or deleted, so publishing in the process that served the admin
sees the change immediately and every other process within the TTL.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from django.conf import settings
from django.core import checks
from django.db import OperationalError, ProgrammingError, transaction
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from steps.executors.base import Executor
from steps.executors.connector import ConnectorError, ConnectorExecutor, ConnectorSpec
from steps.models import Connector
from steps.resilience_rules import parse_rate_limits

log = logging.getLogger(__name__)

_CHAT_WITH = {
    "properties": {
        "model": {"type": "string"},
        "messages": {"type": "array", "items": {"type": "object"}},
        "project_id": {"type": "string"},
        "temperature": {"type": "number"},
        "max_tokens": {"type": "integer", "minimum": 1},
    },
}

# The orchestrator seed's actions as data. Its workflows carry an absolute `url` in every step,
# which replaces base_url + path; the paths here serve workflows written for Furrow. Base URLs
# come from FURROW_<NAME>_URL (settings.FURROW["PRESET_URLS"]); a secret named <NAME>_TOKEN is
# sent as a bearer token when it exists, and nothing is sent when it does not.
PRESETS: dict[str, dict[str, Any]] = {
    "ai_router": {
        "description": "The AI router: chat completions",
        "auth": {"scheme": "bearer", "secret": "AI_ROUTER_TOKEN", "optional": True},
        "operations": {
            "chat": {
                "method": "POST",
                "path": "/v1/chat/completions",
                "description": "A chat completion; `with` takes model and messages, or json",
                "with": _CHAT_WITH,
            },
        },
    },
    "web": {
        "description": "Web search and page extraction",
        "auth": {"scheme": "bearer", "secret": "WEB_TOKEN", "optional": True},
        "operations": {
            "search": {"method": "POST", "path": "/v1/search", "description": "Search the web"},
            "extract": {
                "method": "POST",
                "path": "/v1/extract",
                "description": "Extract the content of a page",
            },
        },
    },
    "memarch": {
        "description": "The memory archive: facts by project",
        "auth": {"scheme": "bearer", "secret": "MEMARCH_TOKEN", "optional": True},
        "operations": {
            "store_fact": {"method": "POST", "path": "/v1/facts", "description": "Store a fact"},
            "search": {"method": "POST", "path": "/v1/search", "description": "Search facts"},
        },
    },
    "scm": {
        "description": "Source control operations",
        "auth": {"scheme": "bearer", "secret": "SCM_TOKEN", "optional": True},
        "operations": {
            "call": {"method": "POST", "path": "/v1/call", "description": "One SCM operation"},
        },
    },
}


@dataclass
class Catalogue:
    connectors: dict[str, ConnectorSpec] = field(default_factory=dict)
    executors: dict[str, ConnectorExecutor] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    """Definitions that were left out, and why (bad settings, or a row saved around clean())."""


_lock = threading.Lock()
_cached: tuple[float, Catalogue] | None = None


def catalogue() -> Catalogue:
    """Every connector and connector step type, from the cache or freshly loaded."""
    global _cached
    ttl = settings.FURROW.get("CONNECTOR_CACHE_SECONDS", 5.0)
    with _lock:
        if _cached is None or time.monotonic() - _cached[0] > ttl:
            _cached = (time.monotonic(), _load())
        return _cached[1]


def clear_cache() -> None:
    """Forget the cached connectors; the next lookup reads settings and the database again."""
    global _cached
    with _lock:
        _cached = None


def connector_types() -> dict[str, dict[str, Any]]:
    """Step type (`<connector>.<operation>`) -> JSON Schema (Draft 2020-12) of its `with`."""
    return {name: executor.config_schema for name, executor in catalogue().executors.items()}


def connector_executor(type_name: str) -> Executor | None:
    """The executor of a connector step type, or None when no connector has that operation."""
    return catalogue().executors.get(type_name)  # type: ignore[return-value]


def all_connectors() -> dict[str, ConnectorSpec]:
    return dict(catalogue().connectors)


def get_connector(name: str) -> ConnectorSpec | None:
    return catalogue().connectors.get(name)


def connector_of_type(type_name: str) -> ConnectorSpec | None:
    """The connector a step type belongs to (`web.search` -> web), or None."""
    name, dot, _ = type_name.partition(".")
    return catalogue().connectors.get(name) if dot else None


def _load() -> Catalogue:
    found = Catalogue()
    definitions = {name: (data, "preset") for name, data in _presets().items()}
    definitions |= {name: (data, "settings") for name, data in settings_definitions().items()}
    try:
        rows = list(Connector.objects.all())
    except (OperationalError, ProgrammingError):
        # Not migrated yet (`manage.py validate` on a fresh checkout): presets and settings only.
        rows = []
    definitions |= {row.name: (row.definition(), "database") for row in rows}
    for name, (data, source) in sorted(definitions.items()):
        try:
            spec = _spec(name, data, source)
        except ConnectorError as exc:
            log.error("connector left out: %s", exc)
            found.problems.append(str(exc))
            continue
        found.connectors[name] = spec
        for op in spec.operations:
            executor = ConnectorExecutor(spec, op)
            found.executors[executor.type] = executor
    return found


def _spec(name: str, data: Any, source: str) -> ConnectorSpec:
    if not isinstance(data, Mapping):
        raise ConnectorError(f"connector '{name}' must be an object, not {type(data).__name__}")
    return ConnectorSpec.from_mapping(name, data, source)


def _presets() -> dict[str, dict[str, Any]]:
    urls = settings.FURROW.get("PRESET_URLS", {})
    return {
        name: {**copy.deepcopy(preset), "base_url": urls.get(name, "")}
        for name, preset in PRESETS.items()
    }


def settings_definitions() -> dict[str, dict[str, Any]]:
    """FURROW_CONNECTORS merged over the presets: top-level keys replace, operations merge."""
    presets = _presets()
    merged: dict[str, dict[str, Any]] = {}
    for name, data in settings.FURROW.get("CONNECTORS", {}).items():
        if not isinstance(data, Mapping):
            merged[name] = data  # _spec reports it
            continue
        base = presets.get(name, {})
        merged[name] = {**base, **data}
        if "operations" in base and isinstance(data.get("operations"), Mapping):
            merged[name]["operations"] = {**base["operations"], **data["operations"]}
    return merged


@receiver([post_save, post_delete], sender=Connector)
def _connector_changed(**kwargs: Any) -> None:
    clear_cache()
    # Again after commit: another thread may have reloaded from before the commit meanwhile.
    transaction.on_commit(partial(clear_cache))


@checks.register("furrow")
def check_settings(**kwargs: Any) -> list[checks.CheckMessage]:
    """FURROW_CONNECTORS and FURROW_RATE_LIMITS make sense (the database is not read here)."""
    errors: list[checks.CheckMessage] = []
    for name, data in settings_definitions().items():
        try:
            _spec(name, data, "settings")
        except ConnectorError as exc:
            errors.append(checks.Error(str(exc), hint="fix FURROW_CONNECTORS", id="furrow.E101"))
    try:
        parse_rate_limits(settings.FURROW.get("RATE_LIMITS", {}))
    except ValueError as exc:
        errors.append(checks.Error(str(exc), hint="fix FURROW_RATE_LIMITS", id="furrow.E102"))
    return errors
