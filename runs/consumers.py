"""WebSockets over the same cursors as the SSE views: `/ws/runs/{id}/` and `/ws/events/`.

The protocol (README.md, "Streams") in short: the client authenticates (session cookie, `?token=`,
or a first `{"type": "auth", "token": ...}` message), sends `{"type": "subscribe", "after": ...,
"filters": {...}}`, and receives `subscribed`, then every matching row after its cursor (replay),
then new rows as they are written (live), in id order. A run's socket ends with `end` and close
code 1000 once the run has ended and everything was sent.

A subscription is one background task that pages through `runs.streams` exactly as the SSE views
do and sleeps `FURROW["STREAM_POLL"]` when idle: it holds at most one page, never a backlog, and
is cancelled on disconnect and when a new subscribe replaces it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from asgiref.sync import sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings
from rest_framework.authtoken.models import Token

from flows import access
from runs import streams, wakeups
from runs.models import StepRun

log = logging.getLogger(__name__)

UNAUTHENTICATED = 4401
"""Close code for a client without valid credentials (4000 + the HTTP status, by convention)."""
NOT_FOUND = 4404
"""Close code for a run socket whose run does not exist."""
STREAM_FAILED = 1011
AUTH_TIMEOUT = 10.0
"""Seconds an unauthenticated socket may stay open waiting for its `auth` message."""

RUN_FILTERS = frozenset({"events", "logs", "step", "streams"})
EVENT_FILTERS = frozenset({"workflow", "run", "types"})


class ProtocolError(ValueError):
    """A message the client sent that we cannot act on; the socket stays open."""


@dataclass(frozen=True)
class RunSubscription:
    """What a `/ws/runs/{id}/` socket follows, and from where: events and logs have their own ids."""

    run: str
    after_event: int = 0
    after_log: int = 0
    events: bool = True
    logs: bool = True
    step: str | None = None
    streams: tuple[str, ...] = ()

    def cursor(self) -> dict[str, int]:
        return {"events": self.after_event, "logs": self.after_log}


@dataclass(frozen=True)
class EventSubscription:
    """What a `/ws/events/` socket follows, and from which event id."""

    filter: streams.EventFilter
    after: int = 0


def _cursor(value: Any, what: str) -> int:
    # bool is an int in Python, and `true` is no cursor.
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ProtocolError(f"{what} must be a non-negative integer (a row id), not {value!r}")
    return value


def _filters(message: Mapping[str, Any], allowed: frozenset[str]) -> Mapping[str, Any]:
    filters = message.get("filters")
    if filters is None:
        return {}
    if not isinstance(filters, dict):
        raise ProtocolError("filters must be an object")
    # A misspelt filter silently matching everything is worse than an error.
    unknown = sorted(set(filters) - allowed)
    if unknown:
        raise ProtocolError(f"unknown filters {unknown}; expected some of {sorted(allowed)}")
    return filters


def _flag(filters: Mapping[str, Any], name: str) -> bool:
    value = filters.get(name, True)
    if not isinstance(value, bool):
        raise ProtocolError(f"filters.{name} must be true or false, not {value!r}")
    return value


def _optional_text(filters: Mapping[str, Any], name: str) -> str | None:
    value = filters.get(name)
    if value is not None and (not isinstance(value, str) or not value):
        raise ProtocolError(f"filters.{name} must be a non-empty string, not {value!r}")
    return value


def _texts(value: Any, what: str) -> tuple[str, ...]:
    """A list of strings, or one comma-separated string (as in `?type=run.*,step.failed`)."""
    if value is None:
        return ()
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise ProtocolError(f"{what} must be a list of strings, not {value!r}")
    return tuple(p.strip() for v in values for p in v.split(",") if p.strip())


def run_subscription(run: str, message: Mapping[str, Any]) -> RunSubscription:
    """Parse a subscribe message for a run socket; raises ProtocolError with what is wrong.

    `after` is `{"events": n, "logs": m}` (either may be left out), or a plain event id.
    """
    after = message.get("after")
    if isinstance(after, dict):
        unknown = sorted(set(after) - {"events", "logs"})
        if unknown:
            raise ProtocolError(f"after has unknown keys {unknown}; expected events and logs")
        after_event = _cursor(after.get("events"), "after.events")
        after_log = _cursor(after.get("logs"), "after.logs")
    else:
        after_event, after_log = _cursor(after, "after"), 0
    filters = _filters(message, RUN_FILTERS)
    return RunSubscription(
        run=run,
        after_event=after_event,
        after_log=after_log,
        events=_flag(filters, "events"),
        logs=_flag(filters, "logs"),
        step=_optional_text(filters, "step"),
        streams=_texts(filters.get("streams"), "filters.streams"),
    )


def event_subscription(message: Mapping[str, Any]) -> EventSubscription:
    """Parse a subscribe message for the all-events socket; raises ProtocolError."""
    after = _cursor(message.get("after"), "after")
    filters = _filters(message, EVENT_FILTERS)
    run = _optional_text(filters, "run")
    if run is not None:
        try:
            run = str(uuid.UUID(run))
        except ValueError:
            raise ProtocolError(f"filters.run must be a run id, not {run!r}") from None
    try:
        types = streams.type_patterns(_texts(filters.get("types"), "filters.types"))
    except ValueError as exc:
        raise ProtocolError(str(exc)) from None
    flt = streams.EventFilter(run=run, workflow=_optional_text(filters, "workflow"), types=types)
    return EventSubscription(filter=flt, after=after)


async def user_for_token(key: str) -> Any:
    """The active user owning API token `key`, else None."""
    if not key:
        return None
    token = await Token.objects.select_related("user").filter(key=key).afirst()
    return token.user if token is not None and token.user.is_active else None


def _query_token(scope: Mapping[str, Any]) -> str | None:
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
    values = query.get("token")
    return values[-1] if values else None


_rows = streams.reader


class StreamConsumer(AsyncJsonWebsocketConsumer):
    """Authentication, message dispatch and the one follow task shared by both sockets."""

    user: Any = None
    closing = False
    follower: asyncio.Task[None] | None = None
    auth_timer: asyncio.Task[None] | None = None

    async def connect(self) -> None:
        # Accept first: a close before accepting reaches a browser as a bare 403 without a reason,
        # and the protocol promises an error message and a 4401.
        await self.accept()
        user = self.scope.get("user")
        token = _query_token(self.scope)
        if user is not None and user.is_authenticated:
            self.user = user
        elif token is not None:
            self.user = await user_for_token(token)
            if self.user is None:
                await self.refuse()
        else:
            self.auth_timer = asyncio.create_task(self.expire_auth())

    async def disconnect(self, code: int) -> None:
        self.closing = True
        await self.stop_following()
        if self.auth_timer is not None:
            self.auth_timer.cancel()

    async def receive(
        self, text_data: str | None = None, bytes_data: bytes | None = None, **kwargs: Any
    ) -> None:
        """Decode one frame ourselves: the base class would end the socket on bad JSON."""
        if self.closing:
            return
        if text_data is None:
            await self.error("a message must be a text frame holding JSON, not binary")
            return
        try:
            message = json.loads(text_data)
        except ValueError:
            await self.error("a message must be JSON text")
            return
        if not isinstance(message, dict) or not isinstance(message.get("type"), str):
            await self.error('a message must be a JSON object with a string "type"')
            return
        await self.receive_json(message)

    async def receive_json(self, content: dict[str, Any], **kwargs: Any) -> None:
        kind = content["type"]
        if kind == "auth":
            await self.authenticate(content.get("token"))
        elif self.user is None:
            await self.refuse()
        elif kind == "ping":
            await self.send_json({"type": "pong"})
        elif kind == "subscribe":
            await self.subscribe(content)
        else:
            await self.error(f"unknown message type {kind!r}: expected subscribe, ping or auth")

    @classmethod
    async def encode_json(cls, content: Any) -> str:
        return json.dumps(content, separators=(",", ":"), default=str)

    async def authenticate(self, token: Any) -> None:
        self.user = await user_for_token(token) if isinstance(token, str) else None
        if self.user is None:
            await self.refuse()
        elif self.auth_timer is not None:
            self.auth_timer.cancel()

    async def expire_auth(self) -> None:
        await asyncio.sleep(settings.FURROW.get("WS_AUTH_TIMEOUT", AUTH_TIMEOUT))
        if self.user is None:
            await self.refuse()

    async def refuse(self) -> None:
        await self.close_with("authentication required", UNAUTHENTICATED)

    async def error(self, message: str) -> None:
        await self.send_json({"type": "error", "message": message})

    async def close_with(self, message: str, code: int) -> None:
        self.closing = True
        await self.error(message)
        await self.close(code)

    async def subscribe(self, message: Mapping[str, Any]) -> None:
        """Replace the current subscription (if any) with the one `message` asks for."""
        try:
            subscription = await self.parse(message)
        except ProtocolError as exc:
            await self.error(str(exc))
            return
        if subscription is None:
            return
        await streams.release_connection()
        # The old task is gone before `subscribed` goes out, so everything after it belongs to
        # the new subscription.
        await self.stop_following()
        self.follower = asyncio.create_task(self.guarded(subscription))

    async def stop_following(self) -> None:
        task, self.follower = self.follower, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def guarded(self, subscription: Any) -> None:
        # A task's exception would otherwise vanish into "Task exception was never retrieved"
        # while the client waits for ever.
        try:
            await self.follow(subscription)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("WebSocket stream failed")
            if not self.closing:
                await self.close_with("the stream failed; subscribe again", STREAM_FAILED)

    async def parse(self, message: Mapping[str, Any]) -> Any:
        """The subscription `message` asks for; None if the socket was closed instead."""
        raise NotImplementedError

    async def follow(self, subscription: Any) -> None:
        raise NotImplementedError

    async def send_rows(
        self, fetch: Callable[[int], Awaitable[list[dict[str, Any]]]], after: int, kind: str
    ) -> tuple[int, int]:
        """Send one page after `after` as `{"type": kind, kind-field: row}`; (new cursor, count)."""
        rows = await fetch(after)
        field = "line" if kind == "log" else "event"
        for row in rows:
            await self.send_json({"type": kind, field: row})
        return (rows[-1]["id"] if rows else after), len(rows)


class RunConsumer(StreamConsumer):
    """`/ws/runs/{id}/`: one run's events and log lines, ending with `end` when the run has ended."""

    async def parse(self, message: Mapping[str, Any]) -> RunSubscription | None:
        run_id = str(self.scope["url_route"]["kwargs"]["run_id"])
        subscription = run_subscription(run_id, message)
        if not await sync_to_async(streams.may_view_run)(self.user, run_id):
            await self.close_with(f"no run {run_id}", NOT_FOUND)
            return None
        step = subscription.step
        if step and not await StepRun.objects.filter(run_id=run_id, name=step).aexists():
            raise ProtocolError(f"run has no step '{step}'")
        return subscription

    async def follow(self, sub: RunSubscription) -> None:
        """Replay then tail both id spaces; end once the run has ended and a last look is empty."""
        await self.send_json({"type": "subscribed", "after": sub.cursor()})
        events = _rows(streams.events_after)
        lines = _rows(streams.lines_after)
        ended = _rows(streams.run_has_ended)
        event_filter = streams.EventFilter(run=sub.run)
        log_filter = streams.LogFilter(run=sub.run, step=sub.step, streams=sub.streams)
        after_event, after_log = sub.after_event, sub.after_log

        async def page() -> tuple[int, bool]:
            nonlocal after_event, after_log
            sent_events = sent_logs = 0
            if sub.events:
                after_event, sent_events = await self.send_rows(
                    lambda a: events(event_filter, a), after_event, "event"
                )
            if sub.logs:
                after_log, sent_logs = await self.send_rows(
                    lambda a: lines(log_filter, a), after_log, "log"
                )
            full = streams.PAGE in (sent_events, sent_logs)
            return sent_events + sent_logs, full

        async def pending() -> bool:
            """Rows not yet past the frontier (runs/frontier.py): the end must wait for them."""
            if sub.events and await events(event_filter, after_event, 1, settled=False):
                return True
            return bool(sub.logs and await lines(log_filter, after_log, 1, settled=False))

        kinds = ("event",) * sub.events + ("log",) * sub.logs
        with wakeups.listener.waiter(sub.run, kinds) as waiter:
            while True:
                sent, full = await page()
                if sent:
                    waiter.touched()
                if full:
                    continue  # a backlog: no sleeping until it is drained
                # The final event commits with the final status, but a row may have committed
                # between the page and the status check: one more look after seeing the end.
                if not sent and await ended(sub.run):
                    sent, full = await page()
                    if not sent and not await pending():
                        cursor = {"events": after_event, "logs": after_log}
                        await self.send_json({"type": "end", "run": sub.run, "after": cursor})
                        self.closing = True
                        await self.close(1000)
                        return
                if not full:
                    await waiter.wait()


class EventsConsumer(StreamConsumer):
    """`/ws/events/`: every event, narrowed by workflow, run and type patterns; never ends."""

    async def parse(self, message: Mapping[str, Any]) -> EventSubscription:
        subscription = event_subscription(message)
        visible = await sync_to_async(access.workflow_ids)(self.user, "view")
        return dataclasses.replace(
            subscription, filter=dataclasses.replace(subscription.filter, workflow_ids=visible)
        )

    async def follow(self, sub: EventSubscription) -> None:
        await self.send_json({"type": "subscribed", "after": sub.after})
        events = _rows(streams.events_after)
        after = sub.after
        with wakeups.listener.waiter(sub.filter.run, ("event",)) as waiter:
            while True:
                after, sent = await self.send_rows(lambda a: events(sub.filter, a), after, "event")
                if sent:
                    waiter.touched()
                if sent < streams.PAGE:
                    await waiter.wait()
