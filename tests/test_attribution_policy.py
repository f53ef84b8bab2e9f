"""Crash attribution's choice between running suspects alone and halving their group."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from celeriac.worker.attribution import _running_from_heartbeat, blame, held_by, suspect_group
from celeriac.worker.options import PoolGroup
from celeriac.worker.status import RunningTask, StatusReader
from celeriac.worker.supervisor import Child, _Group


@pytest.mark.parametrize(("count", "task_seconds", "restart_seconds", "group"), [
    (50, 0.03, 0.5, 1),     # short tasks: 1.5 s of serial runs beat 6 process restarts
    (50, 2.0, 0.5, 25),     # long ones: 100 s serial against 6 x 2.5 s of halving
    (2, 5.0, 0.5, 1),       # two suspects: alone is one crash either way
    (8, 0.3, 0.5, 1),       # 2.4 s alone against 3 x 0.8 s: a tie goes to alone...
    (8, 1.0, 0.2, 4),       # ...and loses when a restart is cheap and tasks are long
    (1000, 0.01, 1.0, 1),   # 10 s alone against 10 x 1 s: a tie, alone
    (1000, 0.1, 1.0, 500),
])
def test_the_cheaper_recovery_wins(count: int, task_seconds: float, restart_seconds: float,
                                   group: int) -> None:
    assert suspect_group(count, task_seconds, restart_seconds) == group


def test_unknown_task_length_halves() -> None:
    assert suspect_group(50, float("inf"), 0.5) == 25


def _child_with_a_blocker(pool: str) -> Child:
    """A real (ended) process of ``pool`` that ran two tasks, one of them reported blocking
    its event loop."""
    from celeriac.pools import get_pool

    group = _Group(PoolGroup(pool, 2, ["celery"]), get_pool(pool), 1, 2)
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    read_fd, write_fd = os.pipe()
    os.close(write_fd)
    child = Child(index=0, group=group, consumer_id="c", proc=proc,
                  reader=StatusReader(read_fd), started_at=time.monotonic())
    for n in (1, 2):
        child.running[f"d{n}"] = RunningTask(f"d{n}", n, "celery", 1, f"t{n}", "tasks.t",
                                             False, None, started_at=time.time())
    child.blocker = "d2"
    os.close(read_fd)
    return child


@pytest.mark.parametrize(("pool", "charged"), [
    ("asyncio", ("d2",)),  # its loop blocked: the other tasks could not have run
    ("threads", ()),       # an async task blocking the loop does not stop the sync tasks
])
def test_a_death_is_pinned_on_the_loop_blocker_only_where_it_stops_everything(
        pool: str, charged: tuple[str, ...]) -> None:
    assert blame(_child_with_a_blocker(pool))[0] == charged


def test_the_heartbeat_carries_each_running_tasks_start() -> None:
    """held_by's record says when each task started (the dashboard's "for 12.3 s"), and
    reads back; a record of an older node, without it, reads too."""
    task = RunningTask("d1", 7, "celery", 2, "t1", "tasks.t", False, None, started_at=1234.5)
    record = held_by([("c1", [task])])
    assert record == {"c1": [["d1", "t1", "tasks.t", 2, False, "celery", 1234.5]]}
    back = _running_from_heartbeat(record["c1"][0])
    assert (back.delivery_id, back.task_id, back.delivery_count, back.started_at) == (
        "d1", "t1", 2, 1234.5)
    assert _running_from_heartbeat(["d1", "t1", "tasks.t", 2, False, "celery"]).started_at == 0.0
