"""Start work in another service and wait, holding no worker, until it calls back (Spuds' async steps).

The request carries a single-use callback URL; the service answers at once and later POSTs the
result there (`POST /api/v1/callbacks/{token}`). If nothing arrives within the step's timeout the
attempt fails, and the retry policy decides what next.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

from steps.executors.base import StepContext, StepResult, Wait, config_error, format_seconds
from steps.executors.http import HttpExecutor, HttpRequest, display_url, url_error

_SCHEMA = HttpExecutor.config_schema
CALLBACK_HEADER = "X-Furrow-Callback-URL"


class HttpAsyncExecutor:
    type: ClassVar[str] = "http_async"
    description: ClassVar[str] = (
        "POSTs to a service with a single-use callback URL, then waits (no worker held) for the "
        "service to call back with the output or error."
    )
    config_schema: ClassVar[dict[str, Any]] = {
        **_SCHEMA,
        "properties": {
            **_SCHEMA["properties"],
            "method": {"enum": ["POST", "PUT", "PATCH", "post", "put", "patch"], "default": "POST"},
            "callback_field": {
                "type": "string",
                "minLength": 1,
                "default": "callback_url",
                "description": "Key under which the callback URL is added to a JSON object body.",
            },
            "format": {
                "enum": ["native", "spuds"],
                "default": "native",
                "description": "spuds: send {arguments, metadata: {flow_id, step_id, webhook_url}}.",
            },
        },
    }
    shell_quoted: ClassVar[frozenset[str]] = frozenset()
    needs_callback: ClassVar[bool] = True

    def run(self, ctx: StepContext) -> StepResult:
        config = dict(ctx.config)
        problem = config_error(self.config_schema, config) or url_error(config["url"])
        if problem:
            return StepResult.failure(problem, retryable=False)
        if ctx.callback_url is None:
            return StepResult.failure("internal error: no callback URL was issued", retryable=False)
        config.setdefault("method", "POST")
        if config.get("format") == "spuds":
            config["json"] = {
                "arguments": config.get("json", {}),
                "metadata": {
                    "flow_id": ctx.run_id,
                    "step_id": ctx.step_name,
                    "webhook_url": ctx.callback_url,
                },
            }
        elif isinstance(config.get("json"), dict) or (
            "json" not in config and "body" not in config
        ):
            body = dict(config.get("json") or {})
            body[config.get("callback_field", "callback_url")] = ctx.callback_url
            config["json"] = body
        config["headers"] = {**config.get("headers", {}), CALLBACK_HEADER: ctx.callback_url}
        for key in ("callback_field", "format", "health_check"):
            config.pop(key, None)
        started = datetime.now(UTC)
        sent = HttpRequest(config, min(ctx.timeout, 30.0), ctx.log, ctx.cancel).send()
        if not sent.ok:
            return sent
        until = started + timedelta(seconds=ctx.timeout)
        ctx.log("system", f"waiting for a callback until {until.isoformat()}")
        return StepResult.waiting(
            Wait(
                kind="callback",
                until=until,
                on_due=StepResult.failure(
                    f"no callback from {display_url(config['url'])} within "
                    f"{format_seconds(ctx.timeout)}"
                ),
            ),
            output={"accepted": sent.output},
        )
