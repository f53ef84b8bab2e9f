"""``celeriac worker --autoscale MAX,MIN`` end to end: a real node (SQLite; Redis once) grows with a
burst of slow tasks and shrinks back once idle for the keepalive (1 s here, through the
celeriac-only ``worker_autoscale_keepalive`` setting).

* threads and gevent grow by slots in their one worker process, prefork by processes;
  growth shows as more tasks running at once (``inspect active``) than the pool started
  with, and in ``inspect stats``;
* ``celeriac control autoscale MAX [MIN]`` changes the bounds at once; ``pool_grow`` is
  refused with Celery's message; a node without ``--autoscale`` refuses ``autoscale``;
* bad ``--autoscale`` values and a mixed node are refused before anything starts.
"""

from __future__ import annotations

import socket
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from conftest import Project, project_on, wait_until

HOST = socket.gethostname()
W1 = f"w1@{HOST}"

EXTRA = r'''
app.conf.worker_autoscale_keepalive = 1.0
'''


def tasks_module(project: Project) -> ModuleType:
    project.write_tasks(extra=EXTRA)
    project.app()
    return sys.modules["tasks"]


def running(app: Any) -> int:
    return len((app.control.inspect(destination=[W1]).active() or {}).get(W1, []))


def autoscaler(app: Any) -> dict[str, int]:
    stats: dict[str, Any] = (app.control.inspect(destination=[W1]).stats() or {}).get(W1, {})
    return dict(stats.get("autoscaler", {}))


def current(app: Any) -> int:
    return autoscaler(app).get("current", -1)


def burst(tasks: ModuleType, gate: Path, count: int) -> list[Any]:
    return [tasks.wait_for.delay(str(gate)) for _ in range(count)]


@pytest.mark.parametrize(("pool", "broker"), [("threads", "sqlite"), ("gevent", "sqlite"),
                                             ("asyncio", "sqlite"), ("threads", "redis")])
def test_slots_grow_with_a_burst_and_shrink_when_idle(pool: str, broker: str, tmp_path: Path,
                                                      request: pytest.FixtureRequest) -> None:
    project: Project = project_on(request, broker)
    tasks = tasks_module(project)
    app = tasks.app
    worker = project.start_worker("-P", pool, "-c", "8", "--autoscale", "4,1", "-n", "w1@%h")
    assert "-c 8 is not used: --autoscale 4,1 starts the pool at 1" in worker.log()
    [child] = worker.children()
    assert autoscaler(app) == {"max": 4, "min": 1, "current": 1, "qty": 0}

    gate = tmp_path / "gate"
    calls = burst(tasks, gate, 6)
    # One slot at start: four running at once means the pool grew, up to MAX and no further.
    wait_until(lambda: running(app) == 4 and project.queue()["ready"] == 2, timeout=60,
               message="four tasks running, two ready in the broker")
    assert current(app) == 4
    assert worker.children() == [child]  # slots in the same process
    worker.wait_for_log("autoscale: scaling up")
    gate.touch()
    assert [r.get(timeout=60) for r in calls] == [str(gate)] * 6

    # Idle past the keepalive: back to MIN.
    wait_until(lambda: current(app) == 1, timeout=60, message="the pool shrank to one slot")
    worker.wait_for_log("autoscale: scaling down by 3")
    gate.unlink()
    again = burst(tasks, gate, 2)
    wait_until(lambda: running(app) == 2, timeout=60, message="it grows again")
    gate.touch()
    assert [r.get(timeout=60) for r in again] == [str(gate)] * 2


def test_prefork_grows_and_shrinks_by_processes(project: Project, tmp_path: Path) -> None:
    tasks = tasks_module(project)
    app = tasks.app
    worker = project.start_worker("-P", "prefork", "--autoscale", "3,1", "-n", "w1@%h")
    assert len(worker.children()) == 1
    gate = tmp_path / "gate"
    calls = burst(tasks, gate, 3)
    wait_until(lambda: running(app) == 3, timeout=60, message="three tasks running at once")
    assert len(worker.children()) == 3
    assert current(app) == 3
    gate.touch()
    assert [r.get(timeout=60) for r in calls] == [str(gate)] * 3
    wait_until(lambda: len(worker.children()) == 1, timeout=60,
               message="back to one prefork process")
    assert current(app) == 1
    worker.wait_for_log("stopping: the pool shrank")


def test_remote_control_changes_the_bounds(project: Project, tmp_path: Path) -> None:
    tasks = tasks_module(project)
    app = tasks.app
    project.start_worker("-P", "threads", "--autoscale", "4,1", "-n", "w1@%h")
    assert app.control.pool_grow(1, reply=True) == [{W1: {"error": (
        "pool_grow is not supported with autoscale. Adjust autoscale range instead.")}}]
    out = project.cli("-A", "tasks", "control", "autoscale", "2", "2").stdout
    assert f"-> {W1}: OK autoscale now max=2 min=2" in out
    assert current(app) == 2  # MIN went up: grown at once
    assert app.control.autoscale(1, 3, reply=True) == [{W1: {"error": (
        "max must be at least 1 and min from 0 to max, got max=1 min=3")}}]

    gate = tmp_path / "gate"
    calls = burst(tasks, gate, 4)
    wait_until(lambda: running(app) == 2 and project.queue()["ready"] == 2, timeout=60,
               message="two running (MAX 2), two ready in the broker")
    assert current(app) == 2
    gate.touch()
    assert [r.get(timeout=60) for r in calls] == [str(gate)] * 4
    assert app.control.autoscale(3, None, reply=True) == [
        {W1: {"ok": "autoscale now max=3 min=2"}}]


def test_autoscale_refused_without_the_flag(project: Project) -> None:
    tasks = tasks_module(project)
    project.start_worker("-P", "threads", "-c", "1", "-n", "w1@%h")
    assert tasks.app.control.autoscale(4, 1, reply=True) == [{W1: {"error": (
        "autoscale is not enabled on this node (start it with --autoscale MAX,MIN)")}}]


@pytest.mark.parametrize(("args", "error"), [
    (["--autoscale", "4,x"], "--autoscale '4,x': expected whole numbers"),
    (["--autoscale", "1,2,3"], "expected MAX,MIN or MAX"),
    (["-P", "threads:2:a", "-P", "prefork:1:b", "--autoscale", "4"], "several -P groups"),
])
def test_bad_autoscale_is_refused(args: list[str], error: str, project: Project) -> None:
    proc = project.cli("-A", "tasks", "worker", *args, check=False)
    assert proc.returncode != 0
    assert error in proc.stderr
