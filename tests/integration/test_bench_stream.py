"""The pieces of `manage.py bench --scenario stream`, without starting servers.

Structure, not timing: the numbers themselves come from the real bench (README, Performance).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from flows import services as flow_services
from runs import bench_stream, services, streams
from runs.bench_stream import (
    arrival,
    per_second,
    percentile,
    sse_messages,
    status_kb,
    summary_ms,
)
from runs.management.commands import bench
from tests.conftest import drive

STATUS = """Name:\tdaphne
VmPeak:\t  300000 kB
VmHWM:\t  104448 kB
VmRSS:\t  102400 kB
Threads:\t12
"""


@pytest.mark.parametrize(
    ("q", "expected"),
    [(50, 50.0), (95, 95.0), (100, 100.0), (1, 1.0), (0.1, 1.0)],
)
def test_percentile_is_the_nearest_rank_of_the_sorted_values(q: float, expected: float) -> None:
    values = [float(v) for v in range(100, 0, -1)]
    assert percentile(values, q) == expected


def test_percentile_of_one_value_is_that_value_and_of_none_is_an_error() -> None:
    assert percentile([0.25], 95) == 0.25
    with pytest.raises(ValueError, match="no values"):
        percentile([], 50)


def test_summary_reports_p50_p95_and_max_in_milliseconds() -> None:
    seconds = [i / 1000 for i in range(1, 101)]
    assert summary_ms(seconds) == {"p50": 50.0, "p95": 95.0, "max": 100.0}


def test_status_kb_reads_resident_and_peak_memory_from_a_proc_status_text() -> None:
    assert status_kb(STATUS, "VmRSS") == 102400
    assert status_kb(STATUS, "VmHWM") == 104448
    with pytest.raises(ValueError, match="no VmSwap"):
        status_kb(STATUS, "VmSwap")


def test_memory_of_this_process_is_a_positive_number_of_megabytes() -> None:
    assert bench_stream.memory_mb(os.getpid()) > 0


def test_per_second_counts_intervals_between_the_first_and_last_time() -> None:
    assert per_second([10.0, 10.5, 11.0]) == 2.0
    assert per_second([10.0]) == 0.0


def test_sse_messages_parse_what_the_stream_views_write_and_skip_comments() -> None:
    line = {"id": 7, "step": "emit", "text": "0 1700000000.5", "created_at": "x"}
    text = (
        "retry: 1000\n\n"
        + streams.sse_message(line, "log")
        + streams.sse_comment("keep-alive")
        + streams.sse_message({"id": 7, "ended": True}, "end")
    )
    messages = list(sse_messages(text.split("\n")))
    assert messages == [
        {"event": "log", "id": "7", "data": line},
        {"event": "end", "id": "7", "data": {"id": 7, "ended": True}},
    ]


@pytest.mark.django_db
@pytest.mark.parametrize("rate", [0, 500])
def test_the_emitting_step_prints_indexed_timestamps_at_its_rate_that_become_arrivals(
    tmp_path: Path, rate: float
) -> None:
    workflow = flow_services.publish(bench_stream.definition(), actor="bench").version.workflow
    go = tmp_path / "go"
    go.touch()  # no SSE client here: let it print at once
    run = services.start_run(
        workflow, {"go": str(go), "lines": 5, "rate": rate}, actor="bench", source="bench"
    )
    assert drive(run).status == "succeeded"

    rows = streams.lines_after(streams.LogFilter(run=str(run.pk), streams=("stdout",)), 0)
    arrivals = [arrival(row, 1e12) for row in rows]
    assert [row["text"].split()[0] for row in rows] == ["0", "1", "2", "3", "4"]
    assert all(a.printed <= a.written <= a.arrived for a in arrivals)
    if rate:  # paced: line i is printed no earlier than i / rate after the first
        assert arrivals[-1].printed - arrivals[0].printed >= 4 / rate * 0.9


def test_the_stream_scenario_is_opt_in() -> None:
    assert "stream" not in bench.SCENARIOS
    assert "stream" in bench.OPT_IN
