"""Revoke end to end: a real worker for every pool, revocations through the broker.

* revoked before it starts: the message is not run, its result is REVOKED and
  ``task_revoked`` fires in the worker process (with ``expired=False``);
* ``terminate=True`` while it runs: the task stops (in its thread or greenlet for
  threads, gevent and eventlet; by replacing the process for prefork and solo),
  its result is REVOKED, it is not run again, and nothing else is lost;
* revocations are kept in the broker: a worker started after the revoke still
  refuses the task, on SQLite and on Redis;
* bad input: a non-string id is a clear error; an unknown id is accepted.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from conftest import Project, executions, normal_leg_only, wait_until

from celeriac import group

#: Every pool; the gevent-patched leg runs threads only: which pool stops the task is the
#: worker's side, the revoke the test process sends is the same for all of them.
POOLS = [pytest.param(pool, marks=() if pool == "threads" else (normal_leg_only,))
         for pool in ("solo", "threads", "prefork", "gevent", "eventlet", "asyncio")]
#: Pools that stop a terminated task inside the process; the others replace the process.
IN_PROCESS = {"threads", "gevent", "eventlet", "asyncio"}

EXTRA = r'''
import json
from celeriac.signals import task_revoked

@app.task(bind=True)
def spin(self, path, seconds):
    """Record this run, then wait in short sleeps (each a point where a thread can be
    interrupted, and a switch for green pools)."""
    with open(path, "a") as f:
        f.write(f"{self.request.id} {os.getpid()}\n")
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        time.sleep(0.05)
    return "finished"

@task_revoked.connect
def on_revoked(sender=None, request=None, terminated=None, signum=None, expired=None, **kwargs):
    with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "revoked.log"), "a") as f:
        f.write(json.dumps({"id": request.id, "task": sender.name, "terminated": terminated,
                            "signum": signum, "expired": expired, "pid": os.getpid()}) + "\n")
'''


@pytest.fixture
def tasks(project: Project) -> ModuleType:
    project.write_tasks(extra=EXTRA)
    project.app()
    return sys.modules["tasks"]


def revoked_log(project: Project) -> list[dict[str, Any]]:
    path = project.path / "revoked.log"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def wait_state(result: Any, state: str, timeout: float = 20.0) -> None:
    wait_until(lambda: result.state == state, timeout=timeout,
               message=f"{result.id} in state {state} (now {result.state})")


@pytest.mark.parametrize("pool", POOLS)
def test_revoked_before_start_is_not_run(project: Project, tasks: ModuleType, pool: str) -> None:
    runs = project.path / "runs.txt"
    project.start_worker("-P", pool, "-c", "2")
    doomed = tasks.spin.apply_async((str(runs), 0.0), countdown=1.5)
    doomed.revoke()
    kept = tasks.spin.apply_async((str(runs), 0.0), countdown=1.5)
    assert kept.get(timeout=30) == "finished"
    wait_state(doomed, "REVOKED")
    assert doomed.id not in executions(runs)
    assert kept.id in executions(runs)
    with pytest.raises(Exception, match="revoked"):
        doomed.get(timeout=1)
    [entry] = [e for e in revoked_log(project) if e["id"] == doomed.id]
    assert entry["terminated"] is False and entry["expired"] is False
    assert entry["task"] == "tasks.spin"
    assert entry["pid"] in project.workers[0].children()


@pytest.mark.parametrize("pool", POOLS)
def test_terminate_stops_a_running_task(project: Project, tasks: ModuleType, pool: str) -> None:
    runs = project.path / "runs.txt"
    worker = project.start_worker("-P", pool, "-c", "2")
    before = set(worker.children())
    victim = tasks.spin.delay(str(runs), 60.0)
    wait_until(lambda: victim.id in executions(runs), message="the victim started")
    started = time.monotonic()
    victim.revoke(terminate=True, signal="SIGKILL")
    wait_state(victim, "REVOKED", timeout=15)
    assert time.monotonic() - started < 15  # well before the task's 60 s or the 30 s lease
    [entry] = wait_until(lambda: [e for e in revoked_log(project) if e["id"] == victim.id],
                         message="task_revoked for the terminated task")
    assert entry["terminated"] is True and entry["signum"] == 9  # Celery passes the number (SIGKILL)
    # The node goes on: a new task runs, the terminated one never runs again.
    after = tasks.spin.delay(str(runs), 0.0)
    assert after.get(timeout=30) == "finished"
    time.sleep(1.0)
    assert len(executions(runs)[victim.id]) == 1
    if pool in IN_PROCESS:
        assert set(worker.children()) == before, "an in-process terminate keeps the process"
    else:
        assert set(worker.children()) != before, "prefork and solo replace the process"
    assert project.queue()["in_flight"] == 0


@normal_leg_only  # how the threads pool stops one thread: the worker's side
def test_terminate_in_a_thread_leaves_its_neighbour_running(project: Project,
                                                          tasks: ModuleType) -> None:
    runs = project.path / "runs.txt"
    worker = project.start_worker("-P", "threads", "-c", "4")
    [pid] = worker.children()
    neighbour = tasks.spin.delay(str(runs), 3.0)
    victim = tasks.spin.delay(str(runs), 60.0)
    wait_until(lambda: {victim.id, neighbour.id} <= set(executions(runs)), message="both started")
    victim.revoke(terminate=True)
    wait_state(victim, "REVOKED", timeout=15)
    assert neighbour.get(timeout=30) == "finished"
    assert worker.children() == [pid]
    assert executions(runs)[neighbour.id] == [pid]


@normal_leg_only  # how the threads pool stops one thread: the worker's side
def test_a_thread_stuck_in_a_c_call_is_stopped_by_replacing_its_process(
        project: Project, tasks: ModuleType) -> None:
    runs = project.path / "runs.txt"
    project.write_tasks(extra=EXTRA + r'''
@app.task(bind=True)
def stuck(self, path):
    with open(path, "a") as f:
        f.write(f"{self.request.id} {os.getpid()}\n")
    time.sleep(60)  # one C call: an async exception waits for it to return
''')
    stuck_tasks = project.app()
    worker = project.start_worker("-P", "threads", "-c", "2")
    before = worker.children()
    victim = stuck_tasks.tasks["tasks.stuck"].delay(str(runs))
    wait_until(lambda: victim.id in executions(runs), message="the stuck task started")
    victim.revoke(terminate=True)
    wait_state(victim, "REVOKED", timeout=20)
    wait_until(lambda: worker.children() and worker.children() != before,
               message="the process replaced")
    worker.wait_for_log("revoked with terminate")
    assert project.queue()["in_flight"] == 0


def test_revocations_survive_a_worker_restart(project: Project, tasks: ModuleType) -> None:
    runs = project.path / "runs.txt"
    doomed = tasks.spin.apply_async((str(runs), 0.0), countdown=0.5)
    doomed.revoke()
    time.sleep(0.6)  # due before any worker exists
    worker = project.start_worker("-P", "threads", "-c", "2")
    wait_state(doomed, "REVOKED")
    worker.stop()
    again = tasks.spin.apply_async((str(runs), 0.0), task_id=doomed.id)
    project.start_worker("-P", "prefork", "-c", "1")
    wait_until(lambda: project.queue()["ready"] == 0 and project.queue()["in_flight"] == 0,
               message="the second message consumed")
    assert again.state == "REVOKED"
    assert doomed.id not in executions(runs)


def test_group_revoke_and_bad_input(project: Project, tasks: ModuleType) -> None:
    runs = project.path / "runs.txt"
    members = group(tasks.spin.s(str(runs), 0.0).set(countdown=1.0) for _ in range(5))
    result = members.apply_async()
    result.revoke()
    with pytest.raises(TypeError, match="task ids are non-empty strings"):
        tasks.app.AsyncResult(123).revoke()  # type: ignore[arg-type]
    from celeriac.exceptions import ConfigurationError

    with pytest.raises(ConfigurationError, match="unknown signal"):
        result[0].revoke(terminate=True, signal="SIGNOPE")
    tasks.app.AsyncResult("no-such-task").revoke()  # accepted, as in Celery
    project.start_worker("-P", "threads", "-c", "4")
    for member in result:
        wait_state(member, "REVOKED")
    assert executions(runs) == {}


def test_revoke_on_redis(redis_project: Project) -> None:
    redis_project.write_tasks(extra=EXTRA)
    app = redis_project.app()
    tasks = sys.modules["tasks"]
    runs = Path(redis_project.path) / "runs.txt"
    redis_project.start_worker("-P", "gevent", "-c", "20")
    doomed = tasks.spin.apply_async((str(runs), 0.0), countdown=1.0)
    doomed.revoke()
    victim = tasks.spin.delay(str(runs), 60.0)
    wait_until(lambda: victim.id in executions(runs), message="the victim started")
    victim.revoke(terminate=True)
    wait_state(victim, "REVOKED", timeout=15)
    wait_state(doomed, "REVOKED", timeout=15)
    assert doomed.id not in executions(runs)
    assert [r.task_id for r in app.broker.revocations()] == [doomed.id, victim.id]
