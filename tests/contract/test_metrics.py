"""The contract of the brokers' metric rollups (every broker; the shared ones also from
several broker instances writing at once)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from celeriac.brokers import Broker, broker_from_url
from celeriac.brokers.metrics import (
    ALL_TASKS,
    BUCKETS,
    MAX_TASK_NAMES,
    OTHER_TASKS,
    MetricRow,
    bucket,
)
from contract.test_broker import BROKERS, SHARED, _make_broker


@pytest.fixture(params=BROKERS)
def broker(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Broker]:
    yield from _make_broker(request.param, request, tmp_path)


@pytest.fixture(params=SHARED)
def shared_broker(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Broker]:
    yield from _make_broker(request.param, request, tmp_path)


def hist(*runtimes: float) -> tuple[int, ...]:
    counts = [0] * BUCKETS
    for runtime in runtimes:
        counts[bucket(runtime)] += 1
    return tuple(counts)


def this_minute() -> int:
    return int(time.time()) // 60 * 60


def test_rows_are_kept_per_minute_and_task_and_add_up(broker: Broker) -> None:
    now = this_minute()
    before = now - 60
    broker.record_metrics([
        MetricRow(now, "a", processed=2, failed=1, retried=0, runtime_hist=hist(0.01, 0.02)),
        MetricRow(now, "b", processed=1, runtime_hist=hist(1.5), stalls=1),
        MetricRow(before, "a", processed=1, runtime_hist=hist(0.01)),
    ])
    broker.record_metrics([
        MetricRow(now, "a", processed=1, retried=2, runtime_hist=hist(0.01, 0.3, 0.3)),
        MetricRow(now + 30, "b", failed=0, stalls=2),  # any time within the minute
    ])
    rows = broker.metrics(before, now + 59)
    assert [(r.minute, r.task) for r in rows] == [(before, "a"), (now, "a"), (now, "b")]
    a_now, b_now = rows[1], rows[2]
    assert (a_now.processed, a_now.failed, a_now.retried, a_now.stalls) == (3, 1, 2, 0)
    assert a_now.runtime_hist == hist(0.01, 0.02, 0.01, 0.3, 0.3)
    assert (b_now.processed, b_now.stalls, b_now.runs) == (1, 3, 1)
    assert rows[0].processed == 1


def test_totals_add_every_task_of_a_minute(broker: Broker) -> None:
    now = this_minute()
    broker.record_metrics([MetricRow(now, "a", processed=2, failed=1, runtime_hist=hist(0.1)),
                           MetricRow(now, "b", processed=5, retried=1, runtime_hist=hist(2.0))])
    broker.record_metrics([MetricRow(now - 120, "b", processed=7)])
    totals = broker.metrics(now - 3600, now, ALL_TASKS)
    assert [(r.minute, r.task, r.processed) for r in totals] == [
        (now - 120, ALL_TASKS, 7), (now, ALL_TASKS, 7)]
    assert (totals[1].failed, totals[1].retried) == (1, 1)
    assert totals[1].runtime_hist == hist(0.1, 2.0)


def test_one_task_and_a_span_of_minutes(broker: Broker) -> None:
    now = this_minute()
    broker.record_metrics([MetricRow(now - m * 60, name, processed=m + 1)
                           for m in range(5) for name in ("a", "b")])
    only_b = broker.metrics(now - 3 * 60 + 10, now - 60 + 59, "b")
    # The minute holding ``since`` counts; the one after ``until`` does not.
    assert [(r.minute, r.processed) for r in only_b] == [
        (now - 180, 4), (now - 120, 3), (now - 60, 2)]
    assert broker.metrics(now - 600, now, "no-such-task") == []
    assert broker.metrics(now + 600, now + 1200) == []
    assert broker.metrics(now, now - 600) == []


def test_rows_are_also_kept_per_hour(broker: Broker) -> None:
    now = this_minute()
    hour = now // 3600 * 3600
    broker.record_metrics([MetricRow(hour - 60, "a", processed=1, runtime_hist=hist(0.1)),
                           MetricRow(hour, "a", processed=2, runtime_hist=hist(0.2, 0.2)),
                           MetricRow(hour + 120, "a", failed=1, processed=1),
                           MetricRow(hour + 60, "b", retried=3)])
    rows = broker.metrics(hour - 3600, now, step=3600)
    assert [(r.minute, r.task, r.processed, r.failed, r.retried, r.runs) for r in rows] == [
        (hour - 3600, "a", 1, 0, 0, 1), (hour, "a", 3, 1, 0, 2), (hour, "b", 0, 0, 3, 0)]
    assert [(r.minute, r.processed) for r in broker.metrics(hour - 3600, now, "a", step=3600)
            ] == [(hour - 3600, 1), (hour, 3)]
    totals = broker.metrics(hour - 3600, now, ALL_TASKS, step=3600)
    assert [(r.minute, r.processed, r.retried) for r in totals] == [
        (hour - 3600, 1, 0), (hour, 3, 3)]
    with pytest.raises(ValueError, match="per hour"):
        broker.metrics(hour, now, step=600)


def test_rows_past_the_retention_are_gone(broker: Broker) -> None:
    now = this_minute()
    broker.metrics_retention = 300.0
    broker.record_metrics([MetricRow(now - 3 * 3600, "old", processed=1),
                           MetricRow(now, "new", processed=1)])
    assert [r.task for r in broker.metrics(now - 4 * 3600, now)] == ["new"]
    # Deleted, not only hidden: a longer retention later does not bring them back.
    broker.metrics_retention = 86_400.0
    assert [r.task for r in broker.metrics(now - 4 * 3600, now)] == ["new"]
    assert [r.processed for r in broker.metrics(now - 4 * 3600, now, ALL_TASKS)] == [1]
    assert [r.task for r in broker.metrics(now - 4 * 3600, now, step=3600)] == ["new"]


def test_a_minute_keeps_a_bounded_number_of_task_names(broker: Broker) -> None:
    now = this_minute()
    names = [f"t{i:04d}" for i in range(MAX_TASK_NAMES + 3)]
    broker.record_metrics([MetricRow(now, name, processed=1) for name in names[:MAX_TASK_NAMES]])
    broker.record_metrics([MetricRow(now, name, processed=2) for name in names])
    rows = {r.task: r.processed for r in broker.metrics(now, now)}
    assert len(rows) == MAX_TASK_NAMES + 1
    assert rows[names[0]] == 3  # names already kept still add up
    assert rows[OTHER_TASKS] == 6  # the three newcomers, in the overflow row
    assert broker.metrics(now, now, ALL_TASKS)[0].processed == MAX_TASK_NAMES * 3 + 6


def test_a_histogram_of_the_wrong_size_is_refused(broker: Broker) -> None:
    with pytest.raises(ValueError, match="buckets"):
        broker.record_metrics([MetricRow(this_minute(), "a", runtime_hist=(1, 2, 3))])
    assert broker.metrics(this_minute() - 60, this_minute()) == []


def test_nothing_to_record_is_fine(broker: Broker) -> None:
    broker.record_metrics([])
    assert broker.metrics(0, time.time()) == []


def test_processes_writing_at_once_lose_nothing(shared_broker: Broker) -> None:
    """Several broker instances (as separate worker processes have) add to the same rows."""
    now = this_minute()
    writers, calls = 4, 25
    url = shared_broker.url

    def write() -> None:
        own = broker_from_url(url)
        for _ in range(calls):
            own.record_metrics([MetricRow(now, "a", processed=1, failed=1,
                                          runtime_hist=hist(0.05)),
                                MetricRow(now, "b", retried=1)])
        own.close()

    threads = [threading.Thread(target=write) for _ in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    rows = {r.task: r for r in shared_broker.metrics(now, now)}
    assert (rows["a"].processed, rows["a"].failed) == (writers * calls, writers * calls)
    assert rows["a"].runtime_hist[bucket(0.05)] == writers * calls
    assert rows["b"].retried == writers * calls
    assert shared_broker.metrics(now, now, ALL_TASKS)[0].processed == writers * calls
