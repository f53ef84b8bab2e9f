"""Cluster-wide rate and concurrency limits, end to end: two real ``celeriac worker``
nodes on one SQLite or Redis broker.

* a ``rate_limit="10/s"`` task sent 30 times: in any one-second window of the runs'
  start times there are at most 10 + 1 (the burst) across both nodes, so the batch
  spreads over more than 2.5 s; unlimited tasks sent with them are not held behind
  them (all of them finish before the limited batch does);
* ``celeriac control rate_limit`` changes the limit while the nodes run;
* ``concurrency_limit=2`` with 6 slow tasks over two nodes: never more than 2 running
  at once (start and end times recorded by the tasks), and every slot freed after.

The assertions are about what the limits allow (counts in a window), not about speed.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import BROKER_KINDS, Project, project_on

EXTRA = r'''
@app.task(rate_limit="10/s")
def limited(path):
    with open(path, "a") as f:
        f.write(f"{time.time()}\n")

@app.task
def unlimited(path):
    with open(path, "a") as f:
        f.write(f"{time.time()}\n")

@app.task(concurrency_limit=2)
def fragile(path, seconds):
    start = time.time()
    time.sleep(seconds)
    with open(path, "a") as f:
        f.write(f"{start} {time.time()}\n")
'''


def times(path: Path) -> list[float]:
    return sorted(float(line) for line in path.read_text().split())


def most_in_any_second(starts: list[float]) -> int:
    return max(sum(1 for t in starts if first <= t < first + 1.0) for first in starts)


def setup(broker: str, request: pytest.FixtureRequest) -> tuple[Project, Any]:
    project: Project = project_on(request, broker)
    project.write_tasks(extra=EXTRA)
    project.app()
    tasks = sys.modules["tasks"]
    project.start_worker("-P", "threads", "-c", "4", "-n", "w1@%h")
    project.start_worker("-P", "threads", "-c", "4", "-n", "w2@%h")
    return project, tasks


@pytest.mark.parametrize("broker", BROKER_KINDS)
def test_a_rate_limit_holds_across_nodes_and_changes_at_run_time(
        broker: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    project, tasks = setup(broker, request)
    slow, fast = tmp_path / "limited.txt", tmp_path / "unlimited.txt"
    sent = [tasks.limited.delay(str(slow)) for _ in range(30)]
    sent += [tasks.unlimited.delay(str(fast)) for _ in range(30)]
    for result in sent:
        result.get(timeout=60)
    limited, unlimited = times(slow), times(fast)
    assert len(limited) == len(unlimited) == 30
    assert most_in_any_second(limited) <= 11
    assert limited[-1] - limited[0] >= 2.5
    # The unlimited tasks were not queued behind the deferred ones.
    assert unlimited[-1] < limited[-1]
    assert project.queue()["dead"] == 0

    # A lower limit at run time, from the CLI: stored in the broker, applied by both nodes.
    out = project.cli("-A", "tasks", "control", "rate_limit", "tasks.limited", "4/s").stdout
    assert out.count("OK new rate limit set successfully") == 2
    assert tasks.app.broker.rate_limits() == {"tasks.limited": "4/s"}
    slow.unlink()
    for result in [tasks.limited.delay(str(slow)) for _ in range(12)]:
        result.get(timeout=60)
    limited = times(slow)
    assert most_in_any_second(limited) <= 5
    assert limited[-1] - limited[0] >= 2.5


@pytest.mark.parametrize("broker", BROKER_KINDS)
def test_a_concurrency_limit_holds_across_nodes(broker: str, request: pytest.FixtureRequest,
                                                tmp_path: Path) -> None:
    project, tasks = setup(broker, request)
    runs = tmp_path / "runs.txt"
    for result in [tasks.fragile.delay(str(runs), 0.5) for _ in range(6)]:
        result.get(timeout=60)
    spans = [tuple(map(float, line.split())) for line in runs.read_text().splitlines()]
    assert len(spans) == 6
    # The most runs going at once: at each start, how many spans cover that moment.
    overlap = max(sum(1 for s, e in spans if s <= start < e) for start, _ in spans)
    assert overlap <= 2
    assert tasks.app.broker.slots_in_use("tasks.fragile") == 0
    assert project.queue()["dead"] == 0
