"""PostgreSQL wakes streams when rows commit (runs/migrations/0006, runs/wakeups.py)."""

from __future__ import annotations

import asyncio
import threading

import psycopg
import pytest
from django.db import connection, transaction

from runs import services
from runs.models import Event, LogLine
from runs.wakeups import CHANNEL, Listener, connection_params
from tests.integration.test_stream_frontier import rolled_back_insert

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def postgres_only():
    if connection.vendor != "postgresql":
        pytest.skip("LISTEN/NOTIFY is PostgreSQL's; SQLite streams poll")


@pytest.fixture
def listening():
    with psycopg.connect(**connection_params(), autocommit=True) as conn:
        conn.execute(f"LISTEN {CHANNEL}")
        yield lambda: [n.payload for n in conn.notifies(timeout=0.5)]


def test_a_commit_notifies_once_per_run_and_a_rollback_not_at_all(publish, listening):
    run = services.start_run(publish({"name": "w", "steps": {"a": {"type": "noop"}}}), {})
    step = run.steps.get()
    listening()  # what starting the run sent

    with transaction.atomic():
        Event.objects.bulk_create([Event(run=run, type="x") for _ in range(3)])
        LogLine.objects.bulk_create(
            [
                LogLine(run=run, step_run=step, attempt=1, stream="stdout", text=str(i))
                for i in range(5)
            ]
        )
        assert listening() == []  # nothing before the commit
    assert sorted(listening()) == [f"event:{run.pk}", f"log:{run.pk}"]

    rolled_back_insert(lambda: Event.objects.create(run=run, type="never"))
    Event.objects.create(type="workflow.published")
    assert listening() == ["event:"]


def test_the_listener_wakes_an_idle_stream_at_once(settings):
    # An idle stream would sleep a minute: only the notification can wake it within the wait.
    settings.FURROW = {**settings.FURROW, "STREAM_IDLE_POLL": 60.0, "STREAM_GAP_GRACE": 0.0}
    listener = Listener()

    async def scenario() -> None:
        with listener.waiter(None, ("event",)) as waiter:
            for _ in range(200):
                if listener.listening:
                    break
                await asyncio.sleep(0.05)
            assert listener.listening
            await waiter.wait()  # the ring every waiter gets when the listener connects
            waiter.active_at = 0.0
            writer = threading.Thread(
                target=lambda: (Event.objects.create(type="x"), connection.close())
            )
            writer.start()
            await asyncio.wait_for(waiter.wait(), timeout=10)
            writer.join()

    asyncio.run(scenario())
    stopped(listener)


def stopped(listener: Listener) -> None:
    """With no stream waiting, the listener lets its connection go."""
    thread = listener.thread
    if thread is not None:
        thread.join(timeout=5)
        assert not thread.is_alive()
    assert listener.thread is None
    assert not listener.listening


def test_a_waiter_ignores_other_runs_and_kinds():
    loop = asyncio.new_event_loop()
    try:
        listener = Listener()

        async def register() -> list:
            waiters = []
            for run, kinds in (
                ("0c8a1b0e-7f2b-4d6a-9a0e-3f1e2d4c5b6a", ("log",)),
                (None, ("event",)),
            ):
                cm = listener.waiter(run, kinds)
                waiters.append((cm, cm.__enter__()))
            return waiters

        waiters = loop.run_until_complete(register())
        listener.ring("event", "0c8a1b0e-7f2b-4d6a-9a0e-3f1e2d4c5b6a")
        listener.ring("log", "another")
        loop.run_until_complete(asyncio.sleep(0))
        assert [w.rung.is_set() for _, w in waiters] == [False, True]
        for cm, _ in waiters:
            cm.__exit__(None, None, None)
    finally:
        loop.close()
    stopped(listener)
