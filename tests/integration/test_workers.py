"""Queues and the worker registry: routing to a queue's cluster, the registry rows, the API, the
admin and the metrics. The broker is Django-Q2's ORM broker: each message is an OrmQ row whose
`key` is the cluster that will read it."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from io import StringIO
from typing import Any

import pytest
from django.contrib.auth.models import Permission
from django.core.management import CommandError, call_command
from django.utils import timezone
from django_q.conf import Conf
from django_q.models import OrmQ
from rest_framework.test import APIClient

from runs import services
from runs.models import Event, Run, StepRun
from runs.timers import redispatch_stranded
from steps import workers
from steps.models import WorkerCluster
from steps.worker import execute_chain, run_attempt
from steps.worker_rules import WorkerState
from tests.integration.test_ops_endpoints import by_label, scrape, value

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif(Conf.ORM is None, reason="reads the ORM broker's rows"),
]

PIPELINE = {
    "name": "render",
    "steps": {
        "fetch": {"type": "noop"},
        "draw": {"type": "noop", "needs": ["fetch"], "queue": "special"},
        "store": {"type": "noop", "needs": ["draw"]},
    },
}


def messages() -> list[tuple[str, int, int]]:
    """(cluster, step id, attempt) of every message on the broker, oldest first."""
    return [(row.key, *row.task["args"]) for row in OrmQ.objects.order_by("id")]


def step_of(run: Run, name: str) -> StepRun:
    return StepRun.objects.get(run=run, name=name)


@pytest.fixture
def serving(settings: Any) -> Callable[[str], None]:
    """Be a worker of the given queue, as `manage.py worker --queue` makes its clusters."""

    def _serve(queue: str) -> None:
        settings.FURROW = {**settings.FURROW, "WORKER_QUEUE": queue}

    _serve("default")
    return _serve


# Routing


def test_each_step_is_sent_to_its_queues_cluster_and_never_run_inline_by_another_queue(
    publish, serving, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        run = services.start_run(publish(PIPELINE), {})
    fetch, draw, store = (step_of(run, name) for name in ("fetch", "draw", "store"))
    assert (fetch.queue, draw.queue, store.queue) == ("default", "special", "default")
    assert messages() == [("furrow", fetch.pk, 1)]

    # The default worker runs fetch; draw is ready but belongs to "special": sent there.
    OrmQ.objects.all().delete()
    with django_capture_on_commit_callbacks(execute=True):
        assert execute_chain(fetch.pk, 1) == 1
    assert messages() == [("furrow.special", draw.pk, 1)]
    draw.refresh_from_db()
    assert (draw.status, draw.worker) == ("ready", "")

    # The special worker runs draw; store goes back to the default queue's cluster.
    OrmQ.objects.all().delete()
    serving("special")
    with django_capture_on_commit_callbacks(execute=True):
        assert execute_chain(draw.pk, 1) == 1
    assert messages() == [("furrow", store.pk, 1)]
    draw.refresh_from_db()
    assert draw.status == "succeeded"


def test_a_worker_hands_a_message_of_another_queue_on_without_claiming_it(publish, serving):
    run = services.start_run(
        publish({"name": "gpu-only", "steps": {"draw": {"type": "noop", "queue": "special"}}}),
        {},
    )
    draw = step_of(run, "draw")
    OrmQ.objects.all().delete()

    assert run_attempt(draw.pk, 1, serving="default") is None

    draw.refresh_from_db()
    assert (draw.status, draw.attempt, draw.worker) == ("ready", 1, "")
    assert not Event.objects.filter(step_run=draw, type="step.running").exists()
    assert messages() == [("furrow.special", draw.pk, 1)]

    serving("special")
    assert execute_chain(draw.pk, 1) == 1
    draw.refresh_from_db()
    assert draw.status == "succeeded"


def test_a_stranded_ready_step_is_sent_again_to_its_own_queue_once_a_worker_serves_it(publish):
    run = services.start_run(
        publish({"name": "lost", "steps": {"draw": {"type": "noop", "queue": "special"}}}), {}
    )
    draw = step_of(run, "draw")
    OrmQ.objects.all().delete()
    later = timezone.now() + timedelta(minutes=2)

    # Nobody serves "special": the first message waits on the broker; no copies pile up.
    assert redispatch_stranded(later) == 1
    assert messages() == []
    draw.refresh_from_db()
    assert draw.dispatched_at == later

    register("special@box")
    WorkerCluster.objects.update(last_heartbeat=later)
    assert redispatch_stranded(later + timedelta(minutes=1)) == 1
    assert messages() == [("furrow.special", draw.pk, 1)]


def test_a_retry_and_for_each_items_keep_their_steps_queue(
    publish, serving, django_capture_on_commit_callbacks
):
    workflow = publish(
        {
            "name": "items",
            "defaults": {"queue": "special"},
            "steps": {"each": {"type": "noop", "for_each": [1, 2]}},
        }
    )
    serving("special")
    with django_capture_on_commit_callbacks(execute=True):
        run = services.start_run(workflow, {})
    each = step_of(run, "each")
    OrmQ.objects.all().delete()
    with django_capture_on_commit_callbacks(execute=True):
        execute_chain(each.pk, 1)
    items = StepRun.objects.filter(item_of=each).order_by("item_index")
    assert [item.queue for item in items] == ["special", "special"]
    assert sorted(messages()) == sorted(("furrow.special", item.pk, 1) for item in items)


def test_a_step_records_the_registered_cluster_that_ran_it(publish, serving, settings):
    settings.FURROW = {**settings.FURROW, "WORKER_NAME": "special@box"}
    serving("special")
    run = services.start_run(
        publish({"name": "named", "steps": {"draw": {"type": "noop", "queue": "special"}}}), {}
    )
    draw = step_of(run, "draw")
    execute_chain(draw.pk, 1)
    draw.refresh_from_db()
    assert draw.worker.startswith("special@box/")
    assert draw.worker.rpartition("/")[2].count(":") == 1


# The registry


def register(name: str = "special@box", pid: int = 100, **fields: Any) -> WorkerCluster:
    options = {"host": "box", "pid": pid, "queues": ["special"], "capacity": 2, **fields}
    return workers.register(name, **options)


def age(name: str, seconds: float) -> None:
    WorkerCluster.objects.filter(name=name).update(
        last_heartbeat=timezone.now() - timedelta(seconds=seconds)
    )


def test_a_worker_registers_heartbeats_and_is_gone_once_it_stops():
    row = register()
    assert workers.state(row, timezone.now()) == WorkerState.ALIVE
    assert workers.beat("special@box", [201, 202])
    row.refresh_from_db()
    assert row.pids == [201, 202]

    assert not workers.retire("special@box", pid=999)  # only the process that registered it
    assert workers.retire("special@box", pid=100)
    row.refresh_from_db()
    assert row.stopped_at is not None
    assert workers.state(row, timezone.now()) == WorkerState.GONE
    assert not workers.beat("special@box", [])  # stopped: the launcher registers again


def test_a_live_name_cannot_be_taken_by_another_process_but_a_gone_one_can():
    register(pid=100)
    with pytest.raises(workers.WorkerNameTaken, match="pid 100 on box"):
        register(pid=200)
    register(pid=100, capacity=4)  # the same process registering again is a restart

    age("special@box", 3600)
    row = register(pid=200)
    assert (row.pid, row.capacity, row.stopped_at) == (200, 2, None)
    assert WorkerCluster.objects.count() == 1


def test_bad_names_are_refused_at_registration():
    with pytest.raises(ValueError, match="not a valid worker name"):
        register("has/slash")
    with pytest.raises(ValueError, match="not a valid queue name"):
        register(queues=["GPU"])


def test_the_load_is_the_steps_running_now_on_that_workers_processes(publish):
    register("special@box")
    register("default@box", pid=101, queues=["default"])
    run = services.start_run(
        publish({"name": "three", "steps": {n: {"type": "noop"} for n in ("a", "b", "c")}}), {}
    )
    for name, worker in [("a", "special@box/box:1"), ("b", "special@box/box:2"), ("c", "x:3")]:
        assert services.claim(step_of(run, name).pk, 1, worker) is not None
    # A name that is a prefix of another, and LIKE's wildcard, must not count.
    register("special", pid=102)
    register("special_box", pid=103)

    loads = dict(workers.with_load(WorkerCluster.objects.all()).values_list("name", "load"))

    assert loads == {"special@box": 2, "default@box": 0, "special": 0, "special_box": 0}


def test_the_states_filter_in_sql_as_the_rule_says():
    register("fresh", pid=1)
    register("late", pid=2)
    register("silent", pid=3)
    register("stopped", pid=4)
    age("late", 60)
    age("silent", 3600)
    workers.retire("stopped", pid=4)
    now = timezone.now()
    for state in WorkerState:
        names = set(
            workers.in_state(WorkerCluster.objects.all(), state, now).values_list("name", flat=True)
        )
        expected = {
            row.name for row in WorkerCluster.objects.all() if workers.state(row, now) == state
        }
        assert names == expected, state
    assert {
        state: set(
            workers.in_state(WorkerCluster.objects.all(), state, now).values_list("name", flat=True)
        )
        for state in WorkerState
    } == {"alive": {"fresh"}, "stale": {"late"}, "gone": {"silent", "stopped"}}


def test_a_beacon_registers_again_when_its_row_was_deleted():
    beacon = workers.Beacon(
        "special@box",
        host="box",
        pid=100,
        queues=["special"],
        capacity=2,
        alive=lambda: True,
        pids=lambda: [7],
    )
    beacon._register()
    WorkerCluster.objects.all().delete()
    assert beacon.tick()
    assert WorkerCluster.objects.get().name == "special@box"

    dead = workers.Beacon(
        "x", host="box", pid=1, queues=["default"], capacity=1, alive=lambda: False, pids=list
    )
    assert not dead.tick()  # no cluster alive: no heartbeat, so the row goes stale


# The API


@pytest.fixture
def registry() -> None:
    register("special@box", pid=100)
    register("default@box", pid=101, queues=["default"], capacity=4)
    register("old@box", pid=102, queues=["default", "special"])
    workers.retire("old@box", pid=102)


def test_the_workers_api_lists_the_registry_with_load_and_state(api, registry):
    response = api.get("/api/v1/workers")

    assert response.status_code == 200, response.content
    rows = {row["name"]: row for row in response.json()["results"]}
    assert list(rows) == ["default@box", "old@box", "special@box"]
    assert rows["special@box"]["queues"] == ["special"]
    assert (rows["special@box"]["capacity"], rows["special@box"]["load"]) == (2, 0)
    assert rows["special@box"]["state"] == "alive"
    assert rows["old@box"]["state"] == "gone"
    assert rows["old@box"]["stopped_at"] is not None

    detail = api.get("/api/v1/workers/special@box")
    assert detail.status_code == 200
    assert detail.json() == rows["special@box"]
    assert api.get("/api/v1/workers/nobody").status_code == 404


@pytest.mark.parametrize(
    ("query", "names"),
    [
        ("state=alive", ["default@box", "special@box"]),
        ("state=gone", ["old@box"]),
        ("queue=special", ["old@box", "special@box"]),
        ("queue=special&state=alive", ["special@box"]),
        ("host=box&ordering=-capacity,name", ["default@box", "old@box", "special@box"]),
        ("ordering=-name", ["special@box", "old@box", "default@box"]),
    ],
)
def test_the_workers_api_filters(api, registry, query, names):
    response = api.get(f"/api/v1/workers?{query}")
    assert response.status_code == 200, response.content
    assert [row["name"] for row in response.json()["results"]] == names


@pytest.mark.parametrize(
    "query", ["state=dead", "queue=Not%20A%20Queue", 'queue="', "ordering=pid"]
)
def test_a_bad_workers_filter_is_a_400(api, registry, query):
    assert api.get(f"/api/v1/workers?{query}").status_code == 400


def test_only_staff_or_holders_of_the_view_permission_see_workers(bob, registry):
    anonymous = APIClient()
    assert anonymous.get("/api/v1/workers").status_code == 401

    client = APIClient()
    client.force_authenticate(bob)
    assert client.get("/api/v1/workers").status_code == 403
    assert client.get("/api/v1/workers/special@box").status_code == 403

    bob.user_permissions.add(Permission.objects.get(codename="view_workercluster"))
    bob = type(bob).objects.get(pk=bob.pk)  # a fresh permission cache
    client.force_authenticate(bob)
    assert client.get("/api/v1/workers").status_code == 200


# Admin, metrics, command


def test_the_admin_lists_workers_read_only_with_state_and_load(client, alice, registry):
    client.force_login(alice)

    page = client.get("/admin/steps/workercluster/?state=alive&q=box")

    assert page.status_code == 200
    text = page.content.decode()
    assert "special@box" in text
    assert "default@box" in text
    assert "old@box" not in text
    assert client.get("/admin/steps/workercluster/add/").status_code == 403
    row = WorkerCluster.objects.get(name="special@box")
    change = client.get(f"/admin/steps/workercluster/{row.pk}/change/")
    assert change.status_code == 200
    assert "alive" in change.content.decode()


def test_metrics_report_workers_by_state_capacity_load_and_each_queues_depth(
    client, publish, registry
):
    services.start_run(
        publish({"name": "waits", "steps": {"draw": {"type": "noop", "queue": "special"}}}), {}
    )
    age("special@box", 60)  # stale: still counted as capacity, and its series stay

    samples = scrape(client)

    assert by_label(samples, "furrow_workers", "state") == {"alive": 1, "stale": 1, "gone": 1}
    assert by_label(samples, "furrow_worker_capacity", "worker") == {
        "default@box": 4,
        "special@box": 2,
    }
    assert by_label(samples, "furrow_worker_load", "worker") == {"default@box": 0, "special@box": 0}
    assert value(samples, "furrow_worker_heartbeat_age_seconds", worker="special@box") >= 60
    assert by_label(samples, "furrow_queue_ready", "queue") == {"default": 0, "special": 1}
    assert by_label(samples, "furrow_queue_capacity", "queue") == {"default": 4, "special": 2}
    assert value(samples, "furrow_queue_depth") == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--queue", "GPU"], "not a valid queue name"),
        (["--capacity", "0"], "--capacity must be at least 1"),
        (["--name", "a/b"], "not a valid worker name"),
    ],
)
def test_the_worker_command_refuses_bad_arguments_before_starting_anything(args, message):
    with pytest.raises(CommandError, match=message):
        call_command("worker", *args)
    assert not WorkerCluster.objects.exists()


def test_the_worker_command_refuses_a_name_a_live_worker_holds():
    register("special@box", pid=1)
    with pytest.raises(CommandError, match="has not stopped"):
        call_command("worker", "--queue", "special", "--name", "special@box")


def test_the_workers_command_lists_live_workers_and_gone_ones_with_all(registry):
    out = StringIO()
    call_command("workers", stdout=out)
    lines = out.getvalue().splitlines()
    assert [line.split()[0] for line in lines] == ["default@box", "special@box"]
    assert "alive  queues=special  load=0/2" in lines[1]

    out = StringIO()
    call_command("workers", "--all", "--json", stdout=out)
    assert [row["name"] for row in json.loads(out.getvalue())] == [
        "default@box",
        "old@box",
        "special@box",
    ]
