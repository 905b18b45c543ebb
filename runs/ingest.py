"""Log lines from outside: a program that is not a Furrow worker appends text to a run's log.

`services.append_logs` is the worker's path: fenced to the attempt it runs, and a heartbeat.
This is the other one (`POST /api/v1/runs/{id}/logs`): the sender holds no attempt, so the lines go
to the run (attempt 0), or to a named step's attempt in progress, and they renew no lease.

Lines are stored as sent: they are not masked, because Furrow cannot know which secrets the sender
saw (templates and connectors read them while the step runs, and nothing keeps which), and masking
with every secret would decrypt them all on each request. A program that was handed a secret must
not log it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from django.conf import settings
from django.db import transaction

from runs.engine.states import RunStatus, StepStatus
from runs.models import LogLine, Run, StepRun
from runs.services import InvalidTransition

MAX_LINE_BYTES = 64 * 1024
"""A longer line is stored as several consecutive lines of at most this many bytes (UTF-8)."""

INSERT_BATCH = 2000
"""Rows per INSERT: 10,000 lines are 5 statements on PostgreSQL. SQLite allows 999 parameters per
statement, so Django caps it there at 166 rows (61 statements), which SQLite runs in-process."""

DEFAULT_MAX_LINES = 10_000

# Steps whose current attempt has started and not ended: lines named for them join that attempt.
_IN_PROGRESS = frozenset({StepStatus.RUNNING, StepStatus.WAITING})
_BREAK = re.compile(r"\r\n|\r|\n")
# No database text column takes NUL (PostgreSQL refuses it) or a lone surrogate (not UTF-8),
# and JSON can carry both.
_UNSTORABLE = re.compile(r"[\x00\ud800-\udfff]")


class IngestStream(StrEnum):
    STDOUT = "stdout"
    STDERR = "stderr"
    EXTERNAL = "external"
    """The default: a line from an outside program, neither of a step's own streams."""


class LogClosed(InvalidTransition):
    """The run has ended, so its log takes no more lines (API: 409)."""


class UnknownStep(Exception):
    """The run has no step of that name (API: 400)."""


class TooManyLines(Exception):
    """More lines in one call than FURROW["MAX_INGEST_LINES"] (API: 400)."""


@dataclass(frozen=True)
class Ingested:
    run_id: Any
    step: str | None
    attempt: int
    accepted: int
    first_id: int | None
    last_id: int | None


def split_lines(text: str) -> list[str]:
    """The lines of `text`, broken at \\n, \\r\\n and \\r.

    A final line break ends the last line rather than starting an empty one; empty lines elsewhere
    are kept; "" has no lines.
    """
    lines = _BREAK.split(text)
    if lines[-1] == "":
        lines.pop()
    return lines


def storable(lines: Iterable[str]) -> list[str]:
    """`lines` as rows: NULs and lone surrogates become U+FFFD, a line over MAX_LINE_BYTES is cut
    into pieces (between characters, never inside one)."""
    return [piece for line in lines for piece in _pieces(_UNSTORABLE.sub("\ufffd", line))]


def _pieces(line: str) -> list[str]:
    if len(line) <= MAX_LINE_BYTES // 4:  # short enough whatever its characters
        return [line]
    data = line.encode()
    pieces, start = [], 0
    while start < len(data):
        end = min(start + MAX_LINE_BYTES, len(data))
        while end < len(data) and data[end] & 0xC0 == 0x80:  # a continuation byte: back up
            end -= 1
        pieces.append(data[start:end].decode())
        start = end
    return pieces


def max_lines() -> int:
    return int(settings.FURROW.get("MAX_INGEST_LINES", DEFAULT_MAX_LINES))


def ingest_logs(
    run: Run,
    lines: Iterable[str],
    *,
    step: str | None = None,
    stream: IngestStream = IngestStream.EXTERNAL,
) -> Ingested:
    """Append `lines` to the run's log, in order, all or none; returns what was stored.

    With `step`, the lines belong to that step of the run (an item such as `fetch[2]` too): to
    its current attempt while that is running or waiting, else to attempt 0, as run-level lines
    always are. Lines pass through `storable`, so a long line counts as its pieces.

    Raises TooManyLines and UnknownStep (nothing stored) and LogClosed once the run has ended.
    Holds the Run row's lock while inserting, so no line lands after the run ends.
    """
    texts = storable(lines)
    if len(texts) > max_lines():
        raise TooManyLines(
            f"at most {max_lines():,} lines per request; this one has {len(texts):,}"
        )
    with transaction.atomic():
        status = Run.objects.select_for_update().values_list("status", flat=True).get(pk=run.pk)
        if RunStatus(status).is_final:
            raise LogClosed(f"run {run.pk} already ended ({status}); its log is closed")
        target = _step(run, step) if step else None
        attempt = target.attempt if target is not None and target.status in _IN_PROGRESS else 0
        rows = LogLine.objects.bulk_create(
            [
                LogLine(run_id=run.pk, step_run=target, attempt=attempt, stream=stream, text=text)
                for text in texts
            ],
            batch_size=INSERT_BATCH,
        )
    return Ingested(
        run_id=run.pk,
        step=step or None,
        attempt=attempt,
        accepted=len(rows),
        first_id=rows[0].pk if rows else None,
        last_id=rows[-1].pk if rows else None,
    )


def _step(run: Run, name: str) -> StepRun:
    target = StepRun.objects.filter(run_id=run.pk, name=name).only("status", "attempt").first()
    if target is None:
        raise UnknownStep(f"run has no step '{name}'")
    return target
