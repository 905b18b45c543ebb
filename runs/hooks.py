"""Outbound event hooks: chosen events of the log, POSTed as signed JSON to configured endpoints.

The engine knows nothing of hooks. The tick loop's hook thread calls `hook_pass`, which does two
things, each safe with any number of tick loops at once:

1. `enqueue_new_events` reads the events after a cursor (`HookCursor`, locked while it works) and
   creates one pending `HookDelivery` per matching enabled endpoint, in the same transaction that
   moves the cursor on, so each event is enqueued exactly once.
2. `deliver_due` claims due deliveries with a compare-and-set on their attempt count, POSTs them
   concurrently (at most PER_ENDPOINT per endpoint, so a dead endpoint cannot take every slot)
   and records each attempt in the delivery's `attempt_log`. A 2xx answer delivers; anything else
   is retried after 1 s, 2 s, 4 s ... (at most FURROW_HOOK_MAX_BACKOFF) until the endpoint's
   `max_attempts`, then the delivery is `failed` until someone redelivers it.

This module is the only writer of the hook tables' state (the admin edits endpoint settings).
Secret values are read for each pass, used to sign, and kept out of every stored or returned
text. Delivery is at least once: a receiver dedupes on `X-Furrow-Delivery`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
import time
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import datetime, timedelta
from fnmatch import fnmatchcase
from typing import Any

import httpx
from django.conf import settings
from django.core import checks
from django.core.exceptions import ValidationError
from django.core.serializers.json import DjangoJSONEncoder
from django.db import IntegrityError, transaction
from django.db.models import Max, Min, Q
from django.views.decorators.debug import sensitive_variables

from runs.models import Event, HookCursor, HookDelivery, HookEndpoint, HookStatus
from runs.services import InvalidTransition
from steps.executors.http import display_url
from steps.models import Secret
from steps.secrets import Masker, SecretError, get_values

log = logging.getLogger(__name__)

CURSOR_NAME = "hooks"
BATCH = 500
"""Events read per transaction: the cursor's lock is held for one batch only."""
PER_ENDPOINT = 4
"""Deliveries to one endpoint per pass: a dead endpoint holds at most this many slots."""
GAP_GRACE = 60.0
"""Seconds an id missing below the cursor is looked for again (see HookCursor.gaps)."""
MAX_GAPS = 1000
LEASE_GRACE = 30.0
"""A claimed attempt whose process died is due again this long after its timeout."""
LOG_LIMIT = 200
ERROR_CHARS = 1000
ERROR_BODY_BYTES = 500
"""Of an answer that is not 2xx, this much of the body goes into the error."""
SETTINGS_FIELDS = frozenset(
    {"name", "url", "event_types", "workflows", "secret", "enabled", "timeout", "max_attempts"}
)


def hook_pass(now: datetime) -> int:
    """What the tick loop's hook thread does each time: enqueue, then deliver. Returns the
    deliveries created plus the attempts made (0: nothing to do, the loop may sleep)."""
    return enqueue_new_events(now) + deliver_due(now)


# Endpoints from settings


def settings_endpoints(entries: Any) -> tuple[list[HookEndpoint], list[str]]:
    """Unsaved rows for the valid FURROW_HOOKS entries, and one message per invalid entry.

    Checks what needs no database (names, URL, patterns, numbers), so the system check can run
    it before migrations; whether the secret exists is checked when syncing.
    """
    if not isinstance(entries, list):
        return [], ["FURROW_HOOKS must be a JSON array of endpoints"]
    rows: list[HookEndpoint] = []
    problems: list[str] = []
    for index, entry in enumerate(entries):
        row, problem = _settings_row(entry, f"FURROW_HOOKS[{index}]")
        if problem:
            problems.append(problem)
        elif row.name in {r.name for r in rows}:
            problems.append(f"FURROW_HOOKS[{index}]: the name {row.name!r} is used twice")
        else:
            rows.append(row)
    return rows, problems


def _settings_row(entry: Any, where: str) -> tuple[HookEndpoint, str]:
    if not isinstance(entry, dict):
        return HookEndpoint(), f"{where}: must be an object {{name, url, event_types, ...}}"
    if unknown := sorted(set(entry) - SETTINGS_FIELDS):
        return (
            HookEndpoint(),
            f"{where}: unknown keys {unknown} (allowed: {sorted(SETTINGS_FIELDS)})",
        )
    row = HookEndpoint(source="settings", **entry)
    try:
        row.clean_fields()
    except ValidationError as exc:
        detail = "; ".join(f"{field}: {' '.join(msgs)}" for field, msgs in exc.message_dict.items())
        return row, f"{where}: {detail}"
    return row, ""


def sync_settings_endpoints() -> int:
    """Create or update a HookEndpoint row for each valid FURROW_HOOKS entry; returns how many.

    Called when the tick loop starts. An admin row of the same name wins (it is left alone, as
    admin connectors win over settings ones). Rows of entries no longer configured are disabled,
    not deleted, so their deliveries stay visible. Invalid entries are logged and left out
    (`manage.py check` reports them as furrow.E110), so one typo does not stop the others.
    """
    rows, problems = settings_endpoints(settings.FURROW.get("HOOKS", []))
    for problem in problems:
        log.error("%s; this hook endpoint is left out", problem)
    admin_names = set(HookEndpoint.objects.filter(source="admin").values_list("name", flat=True))
    synced = [row for row in rows if row.name not in admin_names]
    for row in rows:
        if row.name in admin_names:
            log.warning(
                "FURROW_HOOKS endpoint %r is ignored: an admin endpoint has that name", row.name
            )
    for row in synced:
        fields = {name: getattr(row, name) for name in SETTINGS_FIELDS - {"name"}}
        HookEndpoint.objects.update_or_create(
            name=row.name, defaults=fields | {"source": "settings"}
        )
        if row.secret and not Secret.objects.filter(name=row.secret).exists():
            log.warning("hook endpoint %r names secret %r, which is not set", row.name, row.secret)
    gone = HookEndpoint.objects.filter(source="settings", enabled=True)
    gone.exclude(name__in=[row.name for row in synced]).update(enabled=False)
    return len(synced)


@checks.register("furrow")
def check_hook_settings(**kwargs: Any) -> list[checks.CheckMessage]:
    _, problems = settings_endpoints(settings.FURROW.get("HOOKS", []))
    return [
        checks.Error(problem, hint="fix FURROW_HOOKS", id="furrow.E110") for problem in problems
    ]


# Fan-out: the event log to pending deliveries


@dataclass(frozen=True)
class Route:
    """One enabled endpoint's filter, as plain data."""

    endpoint_id: int
    event_types: tuple[str, ...]
    workflows: tuple[str, ...]

    def wants(self, event_type: str, workflow: str | None) -> bool:
        """Whether an event of this type (and workflow; None for events of no workflow) matches.
        No workflow patterns means every event, including those of no workflow."""
        if not any(fnmatchcase(event_type, pattern) for pattern in self.event_types):
            return False
        if not self.workflows:
            return True
        return workflow is not None and any(fnmatchcase(workflow, p) for p in self.workflows)


def enqueue_new_events(now: datetime) -> int:
    """Create a pending delivery for each new event and each enabled endpoint it matches.

    Returns the number of deliveries created. Each event is enqueued exactly once, however many
    processes call this at once: the cursor row is locked (select_for_update; on SQLite the
    IMMEDIATE transaction serialises) while deliveries are created and the cursor moves on, in
    one transaction per BATCH events. Events are matched against the endpoints enabled when the
    pass reads them; while no endpoint is enabled the cursor just skips to the end of the log.
    """
    total = 0
    while True:
        read, created = _enqueue_batch(now)
        total += created
        if read < BATCH:
            return total


def _enqueue_batch(now: datetime) -> tuple[int, int]:
    cursor = event_cursor()
    if not unread(cursor, now).exists():  # the common case, without taking SQLite's write lock
        return 0, 0
    with transaction.atomic():
        cursor = HookCursor.objects.select_for_update().get(pk=cursor.pk)
        routes = _routes()
        if not routes:
            skip_to_end(cursor)
            return 0, 0
        events = list(
            unread(cursor, now)
            .order_by("pk")
            .values_list("pk", "type", "workflow__name", "run__workflow__name")[:BATCH]
        )
        deliveries = [
            HookDelivery(endpoint_id=route.endpoint_id, event_id=pk, next_attempt_at=now)
            for pk, type_, workflow, run_workflow in events
            for route in routes
            if route.wants(type_, workflow or run_workflow)
        ]
        HookDelivery.objects.bulk_create(deliveries, batch_size=BATCH)
        seen = [pk for pk, *_ in events]
        cursor.last_event_id, cursor.gaps = advance(
            cursor.last_event_id, live_gaps(cursor.gaps, now), seen, now.timestamp()
        )
        cursor.save(update_fields=["last_event_id", "gaps", "updated_at"])
    return len(events), len(deliveries)


def event_cursor(name: str = CURSOR_NAME) -> HookCursor:
    """The named cursor over the event log, created at the log's end on first use."""
    cursor = HookCursor.objects.filter(name=name).first()
    if cursor is not None:
        return cursor
    # A new installation starts at the end of the log: hooks are for what happens from now on,
    # not a replay of history into endpoints configured later.
    start = Event.objects.aggregate(last=Max("pk"))["last"] or 0
    try:
        with transaction.atomic():
            return HookCursor.objects.create(name=name, last_event_id=start)
    except IntegrityError:  # another tick loop created it meanwhile
        return HookCursor.objects.get(name=name)


def unread(cursor: HookCursor, now: datetime) -> Any:
    gaps = list(live_gaps(cursor.gaps, now))
    return Event.objects.filter(Q(pk__gt=cursor.last_event_id) | Q(pk__in=gaps))


def _routes() -> list[Route]:
    rows = HookEndpoint.objects.filter(enabled=True).values_list("pk", "event_types", "workflows")
    return [Route(pk, tuple(types or ()), tuple(flows or ())) for pk, types, flows in rows]


def skip_to_end(cursor: HookCursor) -> None:
    last = Event.objects.aggregate(last=Max("pk"))["last"] or 0
    cursor.last_event_id, cursor.gaps = max(last, cursor.last_event_id), []
    cursor.save(update_fields=["last_event_id", "gaps", "updated_at"])


def live_gaps(gaps: Iterable[list[float]], now: datetime) -> dict[int, float]:
    """The cursor's gaps still worth looking for: {event id: first seen, unix seconds}."""
    oldest = now.timestamp() - GAP_GRACE
    return {int(pk): seen for pk, seen in gaps if seen >= oldest}


def advance(
    last: int, gaps: Mapping[int, float], seen: Iterable[int], now_ts: float
) -> tuple[int, list[list[float]]]:
    """The cursor after reading the event ids `seen` (ascending): the new last id, and the gaps.

    Ids are drawn when a row is inserted, but transactions commit in any order: id 7 may become
    visible after id 8. Moving past 8 would lose 7 for ever, so each id skipped over is kept as a
    gap and read again on later passes until it appears (a rollback leaves a gap for good, which
    is forgotten after GAP_GRACE). At most MAX_GAPS are kept, the newest.
    """
    seen = sorted(seen)
    found = set(seen)
    open_gaps = {pk: ts for pk, ts in gaps.items() if pk not in found}
    previous = last
    for pk in (pk for pk in seen if pk > last):
        for missing in range(max(previous + 1, pk - MAX_GAPS), pk):
            open_gaps[missing] = now_ts
        previous = pk
    kept = sorted(open_gaps.items())[-MAX_GAPS:]
    return previous, [[pk, ts] for pk, ts in kept]


# Delivery


@dataclass(frozen=True)
class Outcome:
    """What one attempt got: the HTTP status (None: no answer), an error, how long it took."""

    status_code: int | None
    error: str
    duration_ms: int

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


@dataclass(frozen=True)
class Request:
    """One attempt, ready to send. Holds the signature, never the key."""

    delivery_pk: int
    url: str
    body: bytes
    headers: dict[str, str]
    timeout: float


def deliver_due(now: datetime) -> int:
    """Send every due pending delivery this process can claim, concurrently; returns the number
    of attempts made.

    At most FURROW_HOOK_CONCURRENCY deliveries per call, at most PER_ENDPOINT of them to one
    endpoint, all at once: the call returns within about the longest endpoint timeout, and a
    slow endpoint delays others by no more than that. Each claim is a compare-and-set on the
    attempt count, so two processes never send the same attempt; an attempt whose process dies
    is due again LEASE_GRACE seconds after its timeout. Deliveries to disabled endpoints wait.
    """
    deliveries = _claim_due(now)
    if not deliveries:
        return 0
    keys, key_errors = _signing_keys({d.endpoint.secret for d in deliveries if d.endpoint.secret})
    outcomes: dict[int, Outcome] = {}
    requests: list[Request] = []
    for delivery in deliveries:
        if problem := key_errors.get(delivery.endpoint.secret):
            outcomes[delivery.pk] = Outcome(None, problem, 0)  # not sent: it could not be signed
        else:
            requests.append(build_request(delivery, keys.get(delivery.endpoint.secret), now))
    outcomes |= _send_all(requests)
    masker = Masker(keys.values())  # a receiver that knows the key might echo it in an error
    for delivery in deliveries:
        _record(delivery, outcomes[delivery.pk], now, masker)
    return len(deliveries)


def _claim_due(now: datetime) -> list[HookDelivery]:
    due = HookDelivery.objects.filter(
        status=HookStatus.PENDING, next_attempt_at__lte=now, endpoint__enabled=True
    )
    limit = int(settings.FURROW.get("HOOK_CONCURRENCY", 16))
    # The endpoints that have waited longest first, so a backlog at one cannot starve the others.
    endpoints = list(
        due.values("endpoint_id")
        .annotate(first=Min("next_attempt_at"))
        .order_by("first", "endpoint_id")
        .values_list("endpoint_id", flat=True)[:limit]
    )
    # An equal share each, so every endpoint with due work gets a slot in this pass.
    share = max(1, min(PER_ENDPOINT, limit // max(1, len(endpoints))))
    claimed: list[int] = []
    for endpoint_id in endpoints:
        candidates = (
            due.filter(endpoint_id=endpoint_id)
            .order_by("next_attempt_at", "pk")
            .values_list("pk", "attempts", "endpoint__timeout")[:share]
        )
        claimed += [pk for pk, tries, timeout in candidates if _claim(pk, tries, timeout, now)]
    related = ("endpoint", "event__workflow", "event__run__workflow", "event__step_run")
    return list(HookDelivery.objects.filter(pk__in=claimed).select_related(*related).order_by("pk"))


def _claim(pk: int, attempts: int, timeout: float, now: datetime) -> bool:
    lease = now + timedelta(seconds=timeout + LEASE_GRACE)
    rows = HookDelivery.objects.filter(
        pk=pk, status=HookStatus.PENDING, attempts=attempts, next_attempt_at__lte=now
    )
    return rows.update(attempts=attempts + 1, next_attempt_at=lease) == 1


@sensitive_variables("values")
def _signing_keys(names: set[str]) -> tuple[dict[str, str], dict[str, str]]:
    """{secret name: value} for the names that can be used, and {name: why not} for the rest."""
    keys: dict[str, str] = {}
    errors: dict[str, str] = {}
    for name in names:
        try:
            values = get_values([name])
        except SecretError as exc:  # its message names the secret, never a value
            errors[name] = f"not sent: {exc}"
            continue
        if name in values:
            keys[name] = values[name]
        else:
            errors[name] = f"not sent: the signing secret {name!r} is not set"
    return keys, errors


@sensitive_variables("key")
def build_request(delivery: HookDelivery, key: str | None, now: datetime) -> Request:
    """The POST for this attempt: the JSON body, and the signature headers when there is a key."""
    body = json.dumps(payload(delivery), cls=DjangoJSONEncoder, separators=(",", ":")).encode()
    timestamp = str(int(now.timestamp()))
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "Furrow-Hooks/1",
        "X-Furrow-Delivery": str(delivery.delivery_id),
        "X-Furrow-Event": delivery.event.type,
        "X-Furrow-Timestamp": timestamp,
    }
    if key is not None:
        headers["X-Furrow-Signature"] = f"sha256={sign(key, timestamp, body)}"
    endpoint = delivery.endpoint
    return Request(delivery.pk, endpoint.url, body, headers, endpoint.timeout)


@sensitive_variables("key")
def sign(key: str, timestamp: str, body: bytes) -> str:
    """Hex HMAC-SHA256 of `<timestamp>.<body>`: what a receiver recomputes to verify."""
    return hmac.new(key.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def payload(delivery: HookDelivery) -> dict[str, Any]:
    event = delivery.event
    return {
        "delivery_id": str(delivery.delivery_id),
        "event": {
            "id": event.pk,
            "type": event.type,
            "run": str(event.run_id) if event.run_id else None,
            "step": event.step_run.name if event.step_run_id else None,
            "workflow": workflow_name(event),
            "actor": event.actor,
            "data": event.data,
            "created_at": _iso(event.created_at),
        },
    }


def workflow_name(event: Event) -> str | None:
    if event.workflow_id:
        return event.workflow.name
    if event.run_id:
        return event.run.workflow.name
    return None


def _send_all(requests: list[Request]) -> dict[int, Outcome]:
    if not requests:
        return {}
    pool = ThreadPoolExecutor(max_workers=len(requests), thread_name_prefix="furrow-hook")
    futures = {pool.submit(post, request): request for request in requests}
    # httpx enforces each timeout; this bound only guards against a thread that hangs anyway,
    # which is then left to end on its own.
    done, _ = wait(futures, timeout=max(r.timeout for r in requests) + 1.0)
    pool.shutdown(wait=False, cancel_futures=True)
    return {
        request.delivery_pk: future.result() if future in done else _late(request)
        for future, request in futures.items()
    }


def _late(request: Request) -> Outcome:
    return Outcome(None, f"no answer within {request.timeout:g}s", round(request.timeout * 1000))


def post(request: Request) -> Outcome:
    """Send one attempt. Never raises: whatever happens is an Outcome."""
    started = time.monotonic()
    shown = f"POST {display_url(request.url)}"
    try:
        status, text = _exchange(request, deadline=started + request.timeout)
    except Exception as exc:  # a hook must not take the tick loop's hook thread down
        return Outcome(None, _error_message(exc, request, shown), _ms_since(started))
    if 200 <= status < 300:
        return Outcome(status, "", _ms_since(started))
    # Redirects are not followed: for a hook they mean a misconfigured URL.
    detail = f": {text.strip()}" if text.strip() else ""
    return Outcome(status, f"HTTP {status} from {shown}{detail}", _ms_since(started))


def _exchange(request: Request, deadline: float) -> tuple[int, str]:
    """The status and the start of the body. httpx's timeout bounds each network operation;
    the deadline bounds the whole answer (a server trickling bytes would never trip httpx's)."""
    kwargs = {"content": request.body, "headers": request.headers, "timeout": request.timeout}
    with _client().stream("POST", request.url, **kwargs) as response:
        body = b""
        for chunk in response.iter_bytes():
            body += chunk
            if time.monotonic() > deadline:
                raise httpx.ReadTimeout("the response took longer than the timeout")
            if len(body) >= ERROR_BODY_BYTES:
                break
        return response.status_code, body[:ERROR_BODY_BYTES].decode(errors="replace")


def _error_message(exc: Exception, request: Request, shown: str) -> str:
    after = f"{request.timeout:g}s"
    if isinstance(exc, httpx.ConnectTimeout):
        return f"timed out after {after} connecting to {display_url(request.url)}"
    if isinstance(exc, httpx.TimeoutException):
        return f"timed out after {after} waiting for a response to {shown}"
    if isinstance(exc, httpx.ConnectError):
        return f"could not connect to {display_url(request.url)}: {exc or type(exc).__name__}"
    return f"{shown} failed: {type(exc).__name__}: {exc}"


_shared: httpx.Client | None = None
_shared_lock = threading.Lock()


def _client() -> httpx.Client:
    """One client for every delivery thread: building one costs ~60 ms (its TLS context), and
    a shared pool keeps connections to the endpoints open between passes."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = httpx.Client(follow_redirects=False)
        return _shared


def _record(delivery: HookDelivery, outcome: Outcome, now: datetime, masker: Masker) -> None:
    attempt = delivery.attempts
    error = masker.text(outcome.error)[:ERROR_CHARS]
    entry = {
        "attempt": attempt,
        "at": _iso(now),
        "status_code": outcome.status_code,
        "error": error,
        "duration_ms": outcome.duration_ms,
    }
    fields: dict[str, Any] = {
        "last_status_code": outcome.status_code,
        "last_error": error,
        "attempt_log": [*delivery.attempt_log, entry][-LOG_LIMIT:],
    }
    if outcome.delivered:
        fields |= {"status": HookStatus.DELIVERED, "delivered_at": now, "next_attempt_at": None}
    elif attempt >= delivery.endpoint.max_attempts:
        fields |= {"status": HookStatus.FAILED, "next_attempt_at": None}
    else:
        fields["next_attempt_at"] = now + timedelta(seconds=backoff(attempt))
    # Fenced on the attempt we claimed: a process that took over after our lease ran out wins.
    rows = HookDelivery.objects.filter(pk=delivery.pk, status=HookStatus.PENDING, attempts=attempt)
    if not rows.update(**fields):
        log.info(
            "hook delivery %s attempt %s: result ignored, no longer current", delivery.pk, attempt
        )


def backoff(attempt: int) -> float:
    """Seconds before the attempt after `attempt` (1-based): 1, 2, 4 ... at most the setting."""
    cap = float(settings.FURROW.get("HOOK_MAX_BACKOFF", 300.0))
    return min(2.0 ** min(attempt - 1, 32), cap)


def redeliver(pk: int, *, actor: str, now: datetime) -> HookDelivery:
    """Put a failed delivery back to pending, due now, with its attempt count reset (its log is
    kept, with a line saying who redelivered). It keeps its delivery id: the receiver may have
    processed an attempt it failed to acknowledge.

    Raises HookDelivery.DoesNotExist, or InvalidTransition unless the delivery is failed.
    """
    with transaction.atomic():
        delivery = HookDelivery.objects.select_for_update().get(pk=pk)
        if delivery.status != HookStatus.FAILED:
            raise InvalidTransition(
                f"delivery {pk} is {delivery.status}: only a failed delivery can be redelivered"
            )
        delivery.status = HookStatus.PENDING
        delivery.attempts = 0
        delivery.next_attempt_at = now
        mark = {"at": _iso(now), "redelivered_by": actor}
        delivery.attempt_log = [*delivery.attempt_log, mark][-LOG_LIMIT:]
        delivery.save(update_fields=["status", "attempts", "next_attempt_at", "attempt_log"])
    return delivery


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def _ms_since(started: float) -> int:
    return round((time.monotonic() - started) * 1000)
