from __future__ import annotations

import pytest

from flows.language.spec import Backoff, RetryPolicy
from runs.engine.plan import Graph, Plan, plan_next
from runs.engine.retry import retry_delay
from runs.engine.states import RunStatus, StepStatus

P, R, RUN, RT = StepStatus.PENDING, StepStatus.READY, StepStatus.RUNNING, StepStatus.RETRYING
OK, FAIL, SKIP, CANCEL = (
    StepStatus.SUCCEEDED,
    StepStatus.FAILED,
    StepStatus.SKIPPED,
    StepStatus.CANCELLED,
)

# build -> test -> deploy, and lint on its own; deploy also needs lint.
PIPELINE = {"build": (), "lint": (), "test": ("build",), "deploy": ("test", "lint")}


def graph(needs: dict[str, tuple[str, ...]], tolerated: tuple[str, ...] = ()) -> Graph:
    return Graph(order=tuple(needs), needs=needs, tolerated=frozenset(tolerated))


def plan(statuses: dict[str, StepStatus], tolerated: tuple[str, ...] = ()) -> Plan:
    return plan_next(graph(PIPELINE, tolerated), statuses)


def statuses(build=P, lint=P, test=P, deploy=P) -> dict[str, StepStatus]:
    return {"build": build, "lint": lint, "test": test, "deploy": deploy}


@pytest.mark.parametrize(
    ("given", "tolerated", "expected"),
    [
        # roots are ready at once
        (statuses(), (), Plan(("build", "lint"), (), None)),
        # a child waits for all its parents
        (statuses(build=OK, lint=RUN), (), Plan(("test",), (), None)),
        (statuses(build=OK, lint=RUN, test=OK), (), Plan((), (), None)),
        (statuses(build=OK, lint=OK, test=OK), (), Plan(("deploy",), (), None)),
        (statuses(build=OK, lint=RT, test=OK), (), Plan((), (), None)),
        # nothing new while steps are active
        (statuses(build=R, lint=R), (), Plan((), (), None)),
        # failure skips dependents transitively; the run fails once everything is final
        (statuses(build=FAIL, lint=RUN), (), Plan((), ("test", "deploy"), None)),
        (statuses(build=FAIL, lint=OK), (), Plan((), ("test", "deploy"), RunStatus.FAILED)),
        (statuses(build=OK, lint=FAIL, test=OK), (), Plan((), ("deploy",), RunStatus.FAILED)),
        # on_failure continue: dependents run and the run can succeed
        (statuses(build=FAIL, lint=OK), ("build",), Plan(("test",), (), None)),
        (
            statuses(build=FAIL, lint=OK, test=OK, deploy=OK),
            ("build",),
            Plan((), (), RunStatus.SUCCEEDED),
        ),
        # ...but a tolerated failure does not excuse an intolerant one
        (
            statuses(build=FAIL, lint=FAIL, test=OK),
            ("build",),
            Plan((), ("deploy",), RunStatus.FAILED),
        ),
        # skipped cascades, and a skipped step does not fail the run
        (statuses(build=SKIP, lint=OK), (), Plan((), ("test", "deploy"), RunStatus.SUCCEEDED)),
        (statuses(build=OK, lint=SKIP, test=OK), (), Plan((), ("deploy",), RunStatus.SUCCEEDED)),
        # cancelled blocks dependents and makes the run cancelled
        (statuses(build=CANCEL, lint=OK), (), Plan((), ("test", "deploy"), RunStatus.CANCELLED)),
        # all done
        (statuses(OK, OK, OK, OK), (), Plan((), (), RunStatus.SUCCEEDED)),
        (statuses(OK, OK, OK, FAIL), (), Plan((), (), RunStatus.FAILED)),
        (statuses(OK, OK, OK, FAIL), ("deploy",), Plan((), (), RunStatus.SUCCEEDED)),
    ],
)
def test_plan_next(given, tolerated, expected):
    assert plan(given, tolerated) == expected


@pytest.mark.parametrize("active", [R, RUN, RT, P])
def test_the_outcome_is_none_while_anything_is_not_final(active):
    given = statuses(build=OK, lint=OK, test=OK, deploy=active)
    assert plan(given).outcome is None


def test_plan_next_does_not_change_the_statuses_it_is_given():
    given = statuses(build=FAIL)
    plan(given)
    assert given == statuses(build=FAIL)


def test_skipping_cascades_through_a_long_chain_in_one_call():
    chain = {f"s{i}": ((f"s{i - 1}",) if i else ()) for i in range(50)}
    given = dict.fromkeys(chain, P) | {"s0": FAIL}
    result = plan_next(graph(chain), given)
    assert result.to_skip == tuple(f"s{i}" for i in range(1, 50))
    assert result.outcome == RunStatus.FAILED


def test_a_join_runs_only_when_every_branch_succeeded():
    diamond = {"a": (), "b": ("a",), "c": ("a",), "d": ("b", "c")}
    given = {"a": OK, "b": OK, "c": RUN, "d": P}
    assert plan_next(graph(diamond), given).to_ready == ()
    given["c"] = OK
    assert plan_next(graph(diamond), given).to_ready == ("d",)


@pytest.mark.parametrize(
    ("backoff", "delays"),
    [
        (Backoff.FIXED, [10, 10, 10, 10]),
        (Backoff.LINEAR, [10, 20, 30, 40]),
        (Backoff.EXPONENTIAL, [10, 20, 40, 80]),
    ],
)
def test_retry_delay_grows_with_the_backoff(backoff, delays):
    policy = RetryPolicy(max_attempts=5, delay=10, backoff=backoff)
    assert [retry_delay(policy, attempt, 0.0) for attempt in range(1, 5)] == delays


def test_retry_delay_is_capped_by_max_delay():
    policy = RetryPolicy(max_attempts=10, delay=10, backoff=Backoff.EXPONENTIAL, max_delay=35)
    assert [retry_delay(policy, attempt, 0.0) for attempt in range(1, 6)] == [10, 20, 35, 35, 35]


@pytest.mark.parametrize(
    ("jitter", "rand", "expected"),
    [
        (0.0, 0.999, 40.0),
        (0.5, 0.0, 40.0),
        (0.5, 0.999_999, 20.0),
        (1.0, 0.0, 40.0),
        (1.0, 0.999_999, 0.0),
        (0.25, 0.5, 35.0),
    ],
)
def test_jitter_takes_at_most_its_fraction_off_the_delay(jitter, rand, expected):
    policy = RetryPolicy(
        max_attempts=5, delay=10, backoff=Backoff.EXPONENTIAL, max_delay=40, jitter=jitter
    )
    assert retry_delay(policy, 3, rand) == pytest.approx(expected, abs=1e-3)


@pytest.mark.parametrize("rand", [0.0, 0.3, 0.7, 0.999_999])
def test_a_jittered_delay_stays_within_its_bounds(rand):
    policy = RetryPolicy(max_attempts=3, delay=8, jitter=0.5)
    assert 4.0 <= retry_delay(policy, 1, rand) <= 8.0


@pytest.mark.parametrize(
    ("max_attempts", "failed_attempt", "has_more"),
    [(1, 1, False), (3, 1, True), (3, 2, True), (3, 3, False), (3, 4, False)],
)
def test_no_retry_after_max_attempts(max_attempts, failed_attempt, has_more):
    policy = RetryPolicy(max_attempts=max_attempts, delay=1)
    assert (retry_delay(policy, failed_attempt, 0.5) is not None) is has_more
