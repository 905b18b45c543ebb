"""Streams never step past a row that commits late (runs/frontier.py), on real PostgreSQL."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest
from django.db import connection, transaction

from runs import streams
from runs.frontier import Frontier, frontier_of
from runs.models import Event
from tests.concurrency.test_races import in_threads

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def postgres_only():
    if connection.vendor != "postgresql":
        pytest.skip("SQLite commits one writer at a time: ids always become visible in order")


@pytest.fixture
def fresh_frontier(settings):
    settings.FURROW = {**settings.FURROW, "STREAM_POLL": 0.0}  # refresh on every look
    frontier_of(Event).__init__(Event)
    return frontier_of(Event)


def seen_types() -> list[str]:
    return [e["type"] for e in streams.events_after(streams.EventFilter(), 0)]


def test_a_row_committed_after_a_later_one_is_streamed_in_id_order(fresh_frontier):
    Event.objects.create(type="before")
    fresh_frontier.current()  # the process is already streaming when the race happens
    inserted, commit = threading.Event(), threading.Event()
    looks: list[list[str]] = []

    def slow_writer() -> None:
        with transaction.atomic():
            Event.objects.create(type="late")
            inserted.set()
            assert commit.wait(10)

    def streamer() -> None:
        assert inserted.wait(10)
        Event.objects.create(type="early")
        looks.append(seen_types())  # "early" is visible, but "late" may still come below it
        commit.set()

    in_threads([slow_writer, streamer])
    looks.append(seen_types())

    assert looks == [["before"], ["before", "late", "early"]]


def test_a_rolled_back_row_holds_a_stream_only_until_postgresql_proves_it_gone(settings):
    settings.FURROW = {**settings.FURROW, "STREAM_POLL": 0.0, "STREAM_GAP_GRACE": 600.0}
    frontier = Frontier(Event)
    Event.objects.create(type="before")
    frontier.current()
    rolled_back_insert(lambda: Event.objects.create(type="rolled-back"))
    after = Event.objects.create(type="after")

    assert frontier.current() == after.pk - 2
    deadline = time.monotonic() + 10
    while frontier.current() != after.pk and time.monotonic() < deadline:
        time.sleep(0.02)
    # With a grace of ten minutes, only the transaction horizon can have let it through.
    assert frontier.current() == after.pk


def test_the_end_of_a_run_waits_for_rows_held_back(fresh_frontier):
    Event.objects.create(type="before")
    fresh_frontier.current()
    inserted, commit = threading.Event(), threading.Event()
    results: dict[str, object] = {}

    def slow_writer() -> None:
        with transaction.atomic():
            Event.objects.create(type="late")
            inserted.set()
            assert commit.wait(10)

    def reader() -> None:
        assert inserted.wait(10)
        Event.objects.create(type="early")
        flt = streams.EventFilter()
        results["settled"] = [e["type"] for e in streams.events_after(flt, 0)]
        results["pending"] = [e["type"] for e in streams.events_after(flt, 0, settled=False)]
        commit.set()

    in_threads([slow_writer, reader])
    assert results == {"settled": ["before"], "pending": ["before", "early"]}


def rolled_back_insert(insert: Callable[[], object]) -> None:
    """Run `insert` in a transaction that rolls back: its ids are taken and never committed."""
    try:
        with transaction.atomic():
            insert()
            raise _Rollback
    except _Rollback:
        pass


class _Rollback(Exception):
    pass
