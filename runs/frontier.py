"""How far a stream may read without skipping a row that commits late.

Ids come from a sequence when a row is inserted, but transactions commit in their own order: on
PostgreSQL, event 105 can be visible while 104's transaction is still open. A cursor that had
moved past 105 would never see 104. So a stream reads only up to the *frontier*: the highest id
below which every id is either visible or given up as a hole.

A hole is given up (a rolled-back insert, or a sequence jump after a crash) once it has been
missing for `grace` seconds, or at once when the row after it is older than `grace`: whoever held
the hole took its id before that row did, so it has been open for longer than any of our
transactions lasts. SQLite writes one transaction at a time, so there ids commit in order and
nothing is held back.

One frontier per table per process, shared by every stream in it, refreshed at most once per
`refresh` seconds: one small index scan a poll, however many clients are watching.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.db import connection, models

WINDOW = 2000
"""Rows looked at per refresh; also how far back a process starts when it first streams."""

CONFIRM = 0.1
"""Seconds after first seeing a hole before noting the transaction horizon for it: by then the
transaction that took the missing id (just before writing its row) surely has its xid."""


@dataclass
class Hole:
    """Ids [start, end) missing between visible rows. Holes are ranges, so a gap of a million
    ids (a sequence far ahead of an emptied table) costs one entry, not a million."""

    end: int
    """The visible row just above the hole."""
    first_seen: float
    """Monotonic seconds."""
    horizon: int | None = None
    """The next transaction id PostgreSQL would assign, noted CONFIRM seconds after first seen:
    once every transaction below it has ended, the hole's rows can never appear."""


@dataclass(frozen=True)
class Snapshot:
    """pg_current_snapshot(): transactions below `xmin` have all ended; `xmax` is the next xid."""

    xmin: int
    xmax: int


def settle(
    frontier: int,
    rows: Sequence[tuple[int, float]],
    holes: dict[int, Hole],
    now: float,
    wall_now: float,
    grace: float,
    snapshot: Snapshot | None = None,
) -> int:
    """The frontier after looking at `rows`: (id, created_at as unix seconds), ascending ids > frontier.

    Pure: it walks up from `frontier` while each next id is visible or in a hole given up, and
    stops below the first hole still worth waiting for. Holes above it are noted too, so a later
    hole's wait starts when it is first seen, not when the walk reaches it. `holes` (keyed by
    their first id) carries what is known of each hole between calls; it is replaced with the
    holes of this walk. `snapshot` must be taken before `rows` were read.
    """
    expected = frontier + 1
    stopped: int | None = None
    found: dict[int, Hole] = {}
    for row_id, created in rows:
        if row_id > expected:
            hole = found[expected] = _inherit(holes, expected, row_id, now)
            passed = _given_up(hole, now, grace, snapshot) or wall_now - created >= grace
            if not passed and stopped is None:
                stopped = expected - 1
        if stopped is None:
            frontier = row_id
        expected = row_id + 1
    result = frontier if stopped is None else stopped
    holes.clear()
    holes.update({start: hole for start, hole in found.items() if start > result})
    return result


def _inherit(holes: dict[int, Hole], start: int, end: int, now: float) -> Hole:
    """The hole [start, end) with what was known of the earlier hole it is part of.

    Holes only shrink or split as rows commit (new ones appear above the walk), so a hole is
    part of at most one earlier hole.
    """
    for earlier_start, earlier in holes.items():
        if earlier_start <= start < earlier.end:
            return Hole(end=end, first_seen=earlier.first_seen, horizon=earlier.horizon)
    return Hole(end=end, first_seen=now)


def _given_up(hole: Hole, now: float, grace: float, snapshot: Snapshot | None) -> bool:
    if now - hole.first_seen >= grace:
        return True
    if snapshot is None:
        return False
    if hole.horizon is not None:
        return snapshot.xmin >= hole.horizon
    if now - hole.first_seen >= CONFIRM:
        hole.horizon = snapshot.xmax
    return False


class Frontier:
    """The settled frontier of one table, computed for the whole process."""

    def __init__(self, model: type[models.Model]) -> None:
        self.model = model
        self.value: int | None = None
        self.holes: dict[int, Hole] = {}
        self.refreshed_at = float("-inf")
        self.lock = threading.Lock()

    def current(self) -> int | None:
        """The id up to which a stream may read; None where ids commit in order (SQLite)."""
        if connection.vendor != "postgresql":
            return None
        refresh = settings.FURROW["STREAM_POLL"] / 2
        with self.lock:
            now = time.monotonic()
            if self.value is None or now - self.refreshed_at >= refresh:
                self.value = self._refresh(now)
                self.refreshed_at = now
            return self.value

    def _refresh(self, now: float) -> int:
        if self.value is None:
            # Start a window back: older rows are long settled, newer ones are walked.
            recent = list(self.model.objects.order_by("-id").values_list("id", flat=True)[:WINDOW])
            frontier = (recent[-1] - 1) if recent else 0
        else:
            frontier = self.value
        snapshot = _snapshot() if self.holes or self.value is None else None
        found = (
            self.model.objects.filter(id__gt=frontier)
            .order_by("id")
            .values_list("id", "created_at")[:WINDOW]
        )
        rows = [(row_id, _timestamp(created)) for row_id, created in found]
        if snapshot is None and _has_gap(frontier, rows):
            snapshot = _snapshot()
        grace = settings.FURROW["STREAM_GAP_GRACE"]
        return settle(frontier, rows, self.holes, now, time.time(), grace, snapshot)


def _has_gap(frontier: int, rows: Sequence[tuple[int, float]]) -> bool:
    return bool(rows) and rows[-1][0] - frontier != len(rows)


def _snapshot() -> Snapshot:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_snapshot_xmin(s)::text::bigint, pg_snapshot_xmax(s)::text::bigint"
            " FROM pg_current_snapshot() AS s"
        )
        xmin, xmax = cursor.fetchone()
    return Snapshot(xmin=xmin, xmax=xmax)


def _timestamp(value: datetime) -> float:
    return value.timestamp()


_frontiers: dict[type[models.Model], Frontier] = {}
_frontiers_lock = threading.Lock()


def frontier_of(model: type[models.Model]) -> Frontier:
    with _frontiers_lock:
        if model not in _frontiers:
            _frontiers[model] = Frontier(model)
        return _frontiers[model]
