"""Connector steps: `type: <connector>.<operation>`, one HTTP call to a named service.

A connector (`steps.connectors` gathers them from presets, settings and the admin) holds what a
workflow should not repeat in every step: the base URL, default headers, which secret
authenticates, and the operations with their method and path. The request itself is the http
step's (`HttpRequest`): same timeouts, body cap, JSON parsing, error messages and output shape.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError, best_match

from flows.language.durations import DURATION_PATTERN, parse_duration
from steps.executors.base import StepContext, StepResult, config_error
from steps.executors.http import METHODS, HttpExecutor, HttpRequest, url_error
from steps.resilience_rules import BREAKER_POLICY_SCHEMA, BreakerPolicy

CONNECTOR_NAME_PATTERN = r"^[a-z][a-z0-9_]{0,49}$"
OPERATION_NAME_PATTERN = r"^[a-z][a-z0-9_]{0,49}$"
# steps.models.SECRET_NAME_PATTERN, repeated because a pure module reads no models.
_SECRET_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,99}$"
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_SCALAR = ["string", "number", "boolean"]
_DURATION = {
    "anyOf": [
        {"type": "number", "exclusiveMinimum": 0},
        {"type": "string", "pattern": DURATION_PATTERN},
    ]
}
_METHOD = {"enum": [*METHODS, *(method.lower() for method in METHODS)]}
# What an operation's `with` schema may say: the extra keys and which are required.
_WITH_KEYWORDS = frozenset(
    {"type", "properties", "required", "additionalProperties", "description", "title", "$comment"}
)

CONNECTOR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "description": {"type": "string"},
        "base_url": {"type": "string", "minLength": 1},
        "headers": {"type": "object", "additionalProperties": {"type": "string"}},
        "auth": {
            "type": ["object", "null"],
            "properties": {
                "scheme": {"enum": ["bearer", "basic", "header"]},
                "secret": {"type": "string", "pattern": _SECRET_NAME_PATTERN},
                "header": {"type": "string", "minLength": 1},
                "username": {"type": "string"},
                "optional": {"type": "boolean"},
            },
            "required": ["scheme", "secret"],
            "additionalProperties": False,
        },
        "health_url": {"type": "string"},
        "operations": {
            "type": "object",
            "minProperties": 1,
            "propertyNames": {"pattern": OPERATION_NAME_PATTERN},
            "additionalProperties": {
                "type": "object",
                "properties": {
                    "method": _METHOD,
                    "path": {"type": "string", "pattern": "^/"},
                    "description": {"type": "string"},
                    "with": {"type": ["object", "null"]},
                },
                "required": ["path"],
                "additionalProperties": False,
            },
        },
        "timeout": _DURATION,
        "rate_limit": {"type": ["number", "null"], "exclusiveMinimum": 0},
        "circuit_breaker": {"anyOf": [{"type": "null"}, BREAKER_POLICY_SCHEMA]},
        "enabled": {"type": "boolean"},
    },
    "required": ["base_url", "operations"],
    "additionalProperties": False,
}
"""JSON Schema (Draft 2020-12) of one connector as FURROW_CONNECTORS and the presets write it."""

# The keys every connector step's `with` may have; an operation's own keys come on top.
BASE_PROPERTIES: dict[str, Any] = {
    "json": {},
    "body": {"description": "a string is sent as it is; anything else is sent as JSON"},
    "headers": {"type": "object", "additionalProperties": {"type": "string"}},
    "query": {
        "type": "object",
        "additionalProperties": {"type": [*_SCALAR, "array"], "items": {"type": _SCALAR}},
    },
    "path_params": {"type": "object", "additionalProperties": {"type": _SCALAR}},
    "url": {
        "type": "string",
        "minLength": 1,
        "description": "an absolute URL replacing base_url + path (the orchestrator seed's actions)",
    },
    "method": _METHOD,
    "timeout": _DURATION,
    "allow_status": HttpExecutor.config_schema["properties"]["allow_status"],
}


class ConnectorError(ValueError):
    """A connector definition that cannot be used; the message names the connector and the key."""

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key
        """The top-level key at fault (base_url, operations, ...), when there is one."""


@dataclass(frozen=True)
class Auth:
    scheme: str
    """bearer (Authorization: Bearer), basic (username + the secret as password) or header."""
    secret: str
    """The secret's name; its value is looked up for every attempt and never stored here."""
    header: str = "X-Api-Key"
    username: str = ""
    optional: bool = False
    """True: without the secret, the request goes out unauthenticated (the presets)."""

    def public(self) -> dict[str, Any]:
        """What the API may show: the scheme and the secret's name, never a value."""
        shown: dict[str, Any] = {"scheme": self.scheme, "secret": self.secret}
        if self.scheme == "header":
            shown["header"] = self.header
        if self.scheme == "basic":
            shown["username"] = self.username
        return shown


@dataclass(frozen=True)
class Operation:
    name: str
    method: str
    path: str
    description: str = ""
    with_schema: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class ConnectorSpec:
    name: str
    base_url: str
    operations: Mapping[str, Operation]
    description: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)
    auth: Auth | None = None
    health_url: str = ""
    timeout: float = 30.0
    rate_limit: float | None = None
    circuit_breaker: BreakerPolicy | None = None
    enabled: bool = True
    source: str = "preset"
    """Where it was defined: preset, settings or database."""

    @classmethod
    def from_mapping(cls, name: str, data: Mapping[str, Any], source: str) -> ConnectorSpec:
        """The connector `data` defines. Raises ConnectorError saying what is wrong."""
        if not re.fullmatch(CONNECTOR_NAME_PATTERN, name):
            raise ConnectorError(
                f"connector name {name!r} must be lowercase letters, digits and underscores, "
                "starting with a letter (at most 50 characters)",
                "name",
            )
        problem = _schema_error(CONNECTOR_SCHEMA, data) or _url_problem(data)
        if problem:
            key, message = problem
            raise ConnectorError(f"connector '{name}': {message}", key)
        return cls(
            name=name,
            base_url=data["base_url"],
            operations=_operations(name, data["operations"]),
            description=data.get("description", ""),
            headers=dict(data.get("headers") or {}),
            auth=Auth(**data["auth"]) if data.get("auth") else None,
            health_url=data.get("health_url") or "",
            timeout=parse_duration(data.get("timeout", 30.0)),
            rate_limit=data.get("rate_limit"),
            circuit_breaker=_breaker(name, data.get("circuit_breaker")),
            enabled=data.get("enabled", True),
            source=source,
        )


def _operations(connector: str, specs: Mapping[str, Any]) -> dict[str, Operation]:
    try:
        return {op: _operation(op, spec) for op, spec in sorted(specs.items())}
    except ValueError as exc:
        raise ConnectorError(f"connector '{connector}': {exc}", "operations") from None


def _breaker(connector: str, policy: Mapping[str, Any] | None) -> BreakerPolicy | None:
    try:
        return BreakerPolicy.from_mapping(policy) if policy else None
    except ValueError as exc:
        raise ConnectorError(f"connector '{connector}': {exc}", "circuit_breaker") from None


def _schema_error(
    schema: Mapping[str, Any], data: Mapping[str, Any]
) -> tuple[str | None, str] | None:
    error = best_match(Draft202012Validator(schema).iter_errors(dict(data)))
    if error is None:
        return None
    path = [str(part) for part in error.absolute_path]
    where = "/".join(path)
    return (path[0] if path else None), f"{where + ': ' if where else ''}{error.message}"


def _url_problem(data: Mapping[str, Any]) -> tuple[str, str] | None:
    for key in ("base_url", "health_url"):
        if data.get(key) and (problem := url_error(data[key])):
            return key, f"{key}: {problem}"
    return None


def _operation(name: str, spec: Mapping[str, Any]) -> Operation:
    with_schema = spec.get("with")
    if with_schema:
        _check_with_schema(name, with_schema)
    return Operation(
        name=name,
        method=spec.get("method", "POST").upper(),
        path=spec["path"],
        description=spec.get("description", ""),
        with_schema=with_schema or None,
    )


def _check_with_schema(op: str, schema: Mapping[str, Any]) -> None:
    where = f"operations/{op}/with"
    unsupported = sorted(set(schema) - _WITH_KEYWORDS)
    if unsupported:
        raise ValueError(
            f"{where}: {', '.join(unsupported)} not supported (an operation's with lists its extra "
            "keys under properties, required and additionalProperties)"
        )
    if schema.get("type", "object") != "object":
        raise ValueError(f"{where}: type must be object")
    clashes = sorted(set(schema.get("properties", {})) & set(BASE_PROPERTIES))
    if clashes:
        raise ValueError(
            f"{where}: {', '.join(clashes)} clash with the keys every connector step has"
        )
    try:
        Draft202012Validator.check_schema(dict(schema))
    except SchemaError as exc:
        raise ValueError(f"{where}: not a valid JSON Schema: {exc.message}") from None


def operation_schema(operation: Operation) -> dict[str, Any]:
    """JSON Schema (Draft 2020-12) of a step's `with` for this operation."""
    extra = operation.with_schema or {}
    schema: dict[str, Any] = {
        "type": "object",
        "properties": {**BASE_PROPERTIES, **extra.get("properties", {})},
        "not": {"required": ["json", "body"]},
        "additionalProperties": extra.get("additionalProperties", False),
    }
    if extra.get("required"):
        schema["required"] = list(extra["required"])
    return schema


class _Problem(Exception):
    """A step that cannot be sent as configured; another attempt would not help."""


class ConnectorExecutor:
    """One operation of one connector, as a step type. Built by `steps.connectors`."""

    def __init__(self, connector: ConnectorSpec, op: str) -> None:
        self.connector = connector
        self.operation = connector.operations[op]
        self.type = f"{connector.name}.{op}"
        self.description = self.operation.description or (
            f"{self.operation.method} {self.operation.path} on connector '{connector.name}'"
        )
        self.config_schema = operation_schema(self.operation)
        self.shell_quoted: frozenset[str] = frozenset()
        self._extra_keys = frozenset(self.config_schema["properties"]) - set(BASE_PROPERTIES)

    def run(self, ctx: StepContext) -> StepResult:
        try:
            request, timeout = self._request(ctx)
        except _Problem as exc:
            return StepResult.failure(str(exc), retryable=False)
        return HttpRequest(request, timeout, ctx.log, ctx.cancel).send()

    def _request(self, ctx: StepContext) -> tuple[dict[str, Any], float]:
        config = ctx.config
        if not self.connector.enabled:
            raise _Problem(f"connector '{self.connector.name}' is disabled")
        problem = self._exclusive_error(config) or config_error(self.config_schema, config)
        if problem:
            raise _Problem(problem)
        try:
            timeout = min(
                parse_duration(config.get("timeout", self.connector.timeout)), ctx.timeout
            )
        except ValueError as exc:
            raise _Problem(f"invalid timeout: {exc}") from None
        request = {
            "method": config.get("method", self.operation.method).upper(),
            "url": self._url(config),
            "headers": self._headers(config, ctx.secrets),
            "query": config.get("query"),
            "allow_status": config.get("allow_status", []),
            **self._body(config),
        }
        return request, timeout

    def _exclusive_error(self, config: Mapping[str, Any]) -> str | None:
        given = [key for key in ("json", "body") if key in config]
        extra = sorted(self._extra_keys & set(config))
        if len(given) == 2:
            return "invalid config: json and body cannot both be set"
        if given and extra:
            return (
                f"invalid config: {given[0]} cannot be set together with the operation's keys "
                f"({', '.join(extra)}), which make up the JSON body"
            )
        return None

    def _url(self, config: Mapping[str, Any]) -> str:
        if "url" in config:
            if "path_params" in config:
                raise _Problem("invalid config: path_params cannot be used with url")
            if problem := url_error(config["url"]):
                raise _Problem(problem)
            return config["url"]
        path = _fill_path(self.operation.path, config.get("path_params", {}))
        return self.connector.base_url.rstrip("/") + path

    def _headers(self, config: Mapping[str, Any], secrets: Mapping[str, str]) -> dict[str, str]:
        headers = merge_headers(self.connector.headers, config.get("headers", {}))
        if isinstance(config.get("body"), str) and not _has(headers, "content-type"):
            headers["Content-Type"] = "application/json"  # the orchestrator seed's default
        # The connector's authentication last: a step cannot replace it by accident.
        return merge_headers(headers, self._auth_headers(secrets))

    def _auth_headers(self, secrets: Mapping[str, str]) -> dict[str, str]:
        auth = self.connector.auth
        if auth is None:
            return {}
        try:
            value = secrets.get(auth.secret)
        except Exception as exc:  # the store's own error (a value that does not decrypt)
            raise _Problem(
                f"connector '{self.connector.name}' cannot read secret '{auth.secret}': {exc}"
            ) from None
        if value is None:
            if auth.optional:
                return {}
            raise _Problem(
                f"connector '{self.connector.name}' needs secret '{auth.secret}', which is not set"
            )
        if auth.scheme == "bearer":
            return {"Authorization": f"Bearer {value}"}
        if auth.scheme == "basic":
            token = base64.b64encode(f"{auth.username}:{value}".encode()).decode()
            return {"Authorization": f"Basic {token}"}
        return {auth.header: value}

    def _body(self, config: Mapping[str, Any]) -> dict[str, Any]:
        if "json" in config:
            return {"json": config["json"]}
        if "body" in config:
            body = config["body"]
            return {"body": body} if isinstance(body, str) else {"json": body}
        extra = {key: config[key] for key in sorted(self._extra_keys & set(config))}
        return {"json": extra} if extra else {}


def _fill_path(path: str, params: Mapping[str, Any]) -> str:
    """`path` with each `{name}` replaced by params[name], URL-quoted (a `/` in a value stays
    inside its segment). Raises _Problem for a placeholder without a value or a value without
    a placeholder, which is always a typo."""
    names = _PLACEHOLDER.findall(path)
    missing = [name for name in names if name not in params]
    if missing:
        raise _Problem(f"operation path '{path}' needs path_params.{missing[0]}")
    unused = sorted(set(params) - set(names))
    if unused:
        raise _Problem(
            f"path_params.{unused[0]} is not a placeholder in the operation path '{path}'"
        )
    return _PLACEHOLDER.sub(lambda match: quote(_text(params[match.group(1)]), safe=""), path)


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def merge_headers(*layers: Mapping[str, str]) -> dict[str, str]:
    """Later layers win, comparing names case-insensitively (HTTP header names are)."""
    merged: dict[str, tuple[str, str]] = {}
    for layer in layers:
        for name, value in layer.items():
            merged[name.lower()] = (name, value)
    return dict(merged.values())


def _has(headers: Mapping[str, str], name: str) -> bool:
    return any(key.lower() == name for key in headers)
