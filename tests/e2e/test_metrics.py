"""Metric rollups end to end: real CLI workers count what they ran into the broker."""

from __future__ import annotations

import json
import sys
import time
from types import ModuleType
from typing import Any

import pytest
from conftest import BROKER_KINDS, Project, project_on, wait_until

from celeriac.brokers.metrics import ALL_TASKS, MetricRow, combine
from celeriac.exceptions import TimeLimitExceeded

EXTRA = '''
@app.task(bind=True)
def flaky(self, path):
    """Fails its first run with a retry, succeeds on the second."""
    if not os.path.exists(path):
        open(path, "w").close()
        raise self.retry(countdown=0)
    return "ok"

@app.task
def hog(seconds):
    """Hold the event loop: a busy loop that never switches."""
    end = time.monotonic() + seconds
    while time.monotonic() < end: pass
    return seconds
'''


def load(project: Project, extra: str = EXTRA) -> ModuleType:
    project.write_tasks(extra)
    project.app()
    return sys.modules["tasks"]


def totals(app: Any, task: str | None = None) -> dict[str, MetricRow]:
    """Every task's rows of the last ten minutes, summed per task name (and ALL_TASKS)."""
    now = time.time()
    by_name: dict[str, list[MetricRow]] = {}
    for row in app.broker.metrics(now - 600, now + 60):
        by_name.setdefault(row.task, []).append(row)
    summed = {name: combine(rows, task=name) for name, rows in by_name.items()}
    summed[ALL_TASKS] = combine(app.broker.metrics(now - 600, now + 60, ALL_TASKS))
    return summed


def counts(row: MetricRow | None) -> tuple[int, int, int, int, int]:
    if row is None:
        return (0, 0, 0, 0, 0)
    return (row.processed, row.failed, row.retried, row.runs, row.stalls)


@pytest.mark.parametrize("kind", BROKER_KINDS)
def test_a_worker_counts_runs_failures_and_retries(request: pytest.FixtureRequest,
                                                   kind: str) -> None:
    project: Project = project_on(request, kind)
    tasks = load(project)
    worker = project.start_worker("-c", "2")
    adds = [tasks.add.delay(i, i) for i in range(5)]
    fails = [tasks.fail.delay("boom") for _ in range(2)]
    flaky = tasks.flaky.delay(str(project.path / "flaky.flag"))
    assert [r.get(timeout=30) for r in adds] == [0, 2, 4, 6, 8]
    for result in fails:
        with pytest.raises(ValueError):
            result.get(timeout=30)
    assert flaky.get(timeout=30) == "ok"
    expected = {
        "tasks.add": (5, 0, 0, 5, 0),
        "tasks.fail": (2, 2, 0, 2, 0),
        "tasks.flaky": (1, 0, 1, 2, 0),  # two runs: the retry and the success
        ALL_TASKS: (8, 2, 1, 9, 0),
    }
    # Written by the running worker within a few seconds (not only at shutdown).
    wait_until(lambda: {name: counts(totals(tasks.app).get(name)) for name in expected} == expected,
               timeout=15, message=f"metric rows {expected}")
    assert worker.stop() == 0
    # The last flush at shutdown adds nothing twice.
    found = totals(tasks.app)
    assert {name: counts(found.get(name)) for name in expected} == expected
    assert set(found) == set(expected)
    p50 = found["tasks.add"].percentile(50)
    assert p50 is not None and p50 < 5.0
    # The same from the command line.
    shown = json.loads(project.cli("-A", "tasks", "metrics", "--json").stdout)
    assert {name: (row["processed"], row["failed"], row["retried"])
            for name, row in shown["tasks"].items()} == {
        "tasks.add": (5, 0, 0), "tasks.fail": (2, 2, 0), "tasks.flaky": (1, 0, 1)}
    assert (shown["total"]["processed"], shown["total"]["failed"]) == (8, 2)
    lines = project.cli("-A", "tasks", "metrics", "--minutes", "5").stdout.splitlines()
    assert [line.split("\t")[:4] for line in lines] == [
        ["task", "processed", "failed", "retried"], ["tasks.add", "5", "0", "0"],
        ["tasks.fail", "2", "2", "0"], ["tasks.flaky", "1", "0", "1"],
        ["(all tasks)", "8", "2", "1"]]
    by_hour = json.loads(project.cli("-A", "tasks", "metrics", "--hours", "2", "--json").stdout)
    assert by_hour["tasks"]["tasks.fail"]["failed"] == 2
    assert by_hour["total"]["processed"] == 8
    each = [json.loads(line) for line in project.cli(
        "-A", "tasks", "metrics", "--each", "--task", "tasks.add").stdout.splitlines()]
    assert sum(row["processed"] for row in each) == 5


def test_a_gevent_worker_counts_stalls_and_the_failures_its_supervisor_ends(
        project: Project) -> None:
    tasks = load(project)
    worker = project.start_worker("-P", "gevent", "-c", "10")
    assert tasks.hog.delay(0.5).get(timeout=30) == 0.5  # blocks the hub once, then ends
    # Written before the process is killed (a killed process loses what it has not written).
    wait_until(lambda: counts(totals(tasks.app).get("tasks.hog")) == (1, 0, 0, 1, 1), timeout=15,
               message="the first hog's row")
    # Past its hard limit with the hub blocked: the supervisor kills the process and fails it.
    with pytest.raises(TimeLimitExceeded):
        tasks.hog.apply_async((30,), time_limit=1).get(timeout=30)
    expected = (2, 1, 0, 1, 2)  # the failure was not timed: one run in the histogram
    wait_until(lambda: counts(totals(tasks.app).get("tasks.hog")) == expected, timeout=15,
               message=f"hog's rows {expected}")
    assert worker.stop() == 0
    assert counts(totals(tasks.app).get("tasks.hog")) == expected


def test_worker_send_metrics_false_records_nothing(project: Project) -> None:
    tasks = load(project, "app.conf.worker_send_metrics = False\n")
    worker = project.start_worker("-c", "1")
    assert tasks.add.delay(1, 2).get(timeout=30) == 3
    assert worker.stop() == 0
    assert tasks.app.broker.metrics(time.time() - 600, time.time() + 60) == []
