"""Make one HTTP request and return its status, headers and body as the step output."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Mapping
from typing import Any, ClassVar
from urllib.parse import urlsplit, urlunsplit

import httpx

from flows.language.durations import DURATION_PATTERN, parse_duration
from steps.executors.base import LogSink, StepContext, StepResult, config_error, format_seconds

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")
MAX_BODY_BYTES = 10 * 1024 * 1024
ERROR_BODY_CHARS = 500
_SCALAR = ["string", "number", "boolean"]


class HttpExecutor:
    type: ClassVar[str] = "http"
    description: ClassVar[str] = (
        "One HTTP request; the output is its status, headers and (JSON-parsed) body."
    )
    config_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "properties": {
            "url": {"type": "string", "minLength": 1},
            "method": {
                "enum": [*METHODS, *(method.lower() for method in METHODS)],
                "default": "GET",
            },
            "headers": {"type": "object", "additionalProperties": {"type": "string"}},
            "query": {
                "type": "object",
                "additionalProperties": {"type": [*_SCALAR, "array"], "items": {"type": _SCALAR}},
            },
            "json": {},
            "body": {"type": "string"},
            "timeout": {
                "anyOf": [
                    {"type": "number", "exclusiveMinimum": 0},
                    {"type": "string", "pattern": DURATION_PATTERN},
                ]
            },
            "allow_status": {
                "type": "array",
                "items": {"type": "integer", "minimum": 100, "maximum": 599},
            },
            "follow_redirects": {"type": "boolean", "default": False},
            # For the health checks (steps.health): registers the target; the request ignores it.
            "health_check": {"type": "string", "minLength": 1},
        },
        "required": ["url"],
        "not": {"required": ["json", "body"]},
        "additionalProperties": False,
    }
    shell_quoted: ClassVar[frozenset[str]] = frozenset()

    def run(self, ctx: StepContext) -> StepResult:
        problem = (
            _exclusive_error(ctx.config)
            or config_error(self.config_schema, ctx.config)
            or url_error(ctx.config["url"])
        )
        if problem:
            return StepResult.failure(problem)
        try:
            timeout = request_timeout(ctx.config, ctx.timeout)
        except ValueError as exc:
            return StepResult.failure(f"invalid timeout: {exc}")
        return HttpRequest(ctx.config, timeout, ctx.log, ctx.cancel).send()


def _exclusive_error(config: Mapping[str, Any]) -> str | None:
    # Said here because the schema's `not` would only report "should not be valid under ...".
    if "json" in config and "body" in config:
        return "invalid config: json and body cannot both be set"
    return None


def url_error(url: str) -> str | None:
    """Why `url` cannot be requested (not http or https, no host), or None."""
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return f"url must be http or https: {display_url(url)!r}"
    return None


def display_url(url: str) -> str:
    """The url without a password, for logs and error messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{netloc}"))


def request_timeout(config: Mapping[str, Any], step_timeout: float) -> float:
    """The `timeout` key of `config`, never longer than the step's; raises ValueError."""
    if "timeout" not in config:
        return step_timeout
    return min(parse_duration(config["timeout"]), step_timeout)


def _body_kwargs(config: Mapping[str, Any]) -> dict[str, Any]:
    if "json" in config:
        return {"json": config["json"]}
    if "body" in config:
        return {"content": config["body"]}
    return {}


class _BodyTooLarge(Exception):
    pass


class HttpRequest:
    """One attempt: sends the request, reads a bounded body, and turns whatever happens into a result.

    Reads `method`, `url`, `query`, `headers`, `json` or `body` (a string), `allow_status` and
    `follow_redirects` from `config`; the connector executor and the health probes use it too.
    """

    def __init__(
        self,
        config: Mapping[str, Any],
        timeout: float,
        log: LogSink,
        cancel: threading.Event | None = None,
    ) -> None:
        self.cancel = cancel
        self.config = config
        self.method = config.get("method", "GET").upper()
        self.url = config["url"]
        self.display_url = display_url(self.url)
        self.shown = f"{self.method} {self.display_url}"
        self.timeout = timeout
        self.log = log

    def send(self) -> StepResult:
        if self.cancel is None:
            return self._send()
        # A blocked socket read cannot be interrupted from outside, so the request runs in a
        # thread of its own and a cancel returns at once; the abandoned call ends at its timeout.
        outcome: list[StepResult] = []
        thread = threading.Thread(
            target=lambda: outcome.append(self._send()), name="furrow-http", daemon=True
        )
        thread.start()
        while thread.is_alive():
            if self.cancel.wait(0.05):
                self.log("system", f"{self.shown} -> aborted: the attempt was stopped")
                return StepResult.failure(f"{self.shown} was aborted: the attempt was stopped")
            thread.join(0.0)
        return outcome[0] if outcome else StepResult.failure(f"{self.shown} failed: no result")

    def _send(self) -> StepResult:
        started = time.monotonic()
        try:
            response, body = self._exchange(deadline=started + self.timeout)
        except (httpx.HTTPError, httpx.InvalidURL, _BodyTooLarge) as exc:
            error = self._error_message(exc)
            self.log("system", f"{self.shown} -> failed in {_ms_since(started)} ms: {error}")
            return StepResult.failure(error)
        self.log("system", f"{self.shown} -> {response.status_code} in {_ms_since(started)} ms")
        return self._result(response, body)

    def _exchange(self, deadline: float) -> tuple[httpx.Response, bytes]:
        config = self.config
        with (
            httpx.Client(
                timeout=self.timeout, follow_redirects=config.get("follow_redirects", False)
            ) as client,
            client.stream(
                self.method,
                self.url,
                params=config.get("query"),
                headers=config.get("headers"),
                **_body_kwargs(config),
            ) as response,
        ):
            return response, _read_body(response, deadline)

    def _error_message(self, exc: Exception) -> str:
        after = format_seconds(self.timeout)
        if isinstance(exc, httpx.ConnectTimeout):
            return f"timed out after {after} connecting to {self.display_url}"
        if isinstance(exc, httpx.TimeoutException):
            return f"timed out after {after} waiting for a response to {self.shown}"
        if isinstance(exc, httpx.ConnectError):
            return f"could not connect to {self.display_url}: {str(exc) or type(exc).__name__}"
        if isinstance(exc, _BodyTooLarge):
            return f"response from {self.shown} is larger than {MAX_BODY_BYTES // 2**20} MB; stopped reading"
        return f"{self.shown} failed: {str(exc) or type(exc).__name__}"

    def _result(self, response: httpx.Response, body: bytes) -> StepResult:
        text = _decode(body, response.charset_encoding)
        output = {
            "status": response.status_code,
            "headers": {name.lower(): value for name, value in response.headers.items()},
            "body": _parse_body(text, response.headers.get("content-type", "")),
        }
        if response.status_code >= 400 and response.status_code not in self.config.get(
            "allow_status", []
        ):
            error = f"HTTP {response.status_code} from {self.shown}: {text[:ERROR_BODY_CHARS]}"
            return StepResult.failure(error, output=output)
        return StepResult.success(output)


def _read_body(response: httpx.Response, deadline: float) -> bytes:
    """The decoded body, refusing more than MAX_BODY_BYTES and enforcing the wall-clock deadline.

    httpx timeouts apply to each network operation; a server trickling bytes would never trip them.
    """
    chunks: list[bytes] = []
    size = 0
    for chunk in response.iter_bytes():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise _BodyTooLarge
        if time.monotonic() > deadline:
            raise httpx.ReadTimeout("the response took longer than the timeout")
        chunks.append(chunk)
    return b"".join(chunks)


def _decode(body: bytes, charset: str | None) -> str:
    try:
        return body.decode(charset or "utf-8", errors="replace")
    except LookupError:  # a charset Python does not know
        return body.decode("utf-8", errors="replace")


def _parse_body(text: str, content_type: str) -> Any:
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type != "application/json" and not media_type.endswith("+json"):
        return text
    try:
        return json.loads(text)
    except ValueError:
        return text


def _ms_since(started: float) -> int:
    return round((time.monotonic() - started) * 1000)
