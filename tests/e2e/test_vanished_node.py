"""A whole node vanishes (supervisor and all), end to end, on SQLite and on Redis.

When a node is SIGKILLed with its supervisor, or its machine is gone, nobody is
left to release what its worker processes held: without help its messages wait
for their leases. Each node's heartbeat lists the messages its processes run, and
a live node that finds a heartbeat expired releases that node's messages at
once (its running tasks charged, as for a SIGKILL). A node that was only frozen
wakes up to find its leases gone: its late acks are refused, and what it had
fetched but not started it drops instead of running it twice.

The heartbeat interval is 0.5 s (so a node is taken for dead 1.5 s after its last
beat) and the lease 60 s: a message that came back in less than the lease came
back through the heartbeat.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import psutil
import pytest
from conftest import BROKER_KINDS, Project, Worker, executions, gevent_patched, project_on, wait_until

from celeriac.exceptions import WorkerLostError

#: What is tested happens in worker processes and between nodes: a gevent-patched test
#: process adds nothing, and the gevent leg has no minute to spare for it.
pytestmark = pytest.mark.skipif(gevent_patched(), reason="worker-side only")

SETTINGS = "\napp.conf.update(worker_heartbeat_interval=0.5, broker_lease_timeout=60)\n"
#: A message waiting for its lease would not be back before this.
LEASE = 60.0


@pytest.fixture(params=BROKER_KINDS)
def any_project(request: pytest.FixtureRequest) -> Iterator[Project]:
    yield project_on(request, request.param)


def on_rabbitmq(project: Project) -> bool:
    return project.broker_url.startswith("amqp")


def load(project: Project, settings: str = "") -> ModuleType:
    project.write_tasks(SETTINGS + settings)
    project.app()
    return sys.modules["tasks"]


def node_pids(worker: Worker) -> list[int]:
    return [worker.proc.pid, *worker.children()]


def signal_node(pids: list[int], signum: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)


def alive(pids: list[int]) -> bool:
    """True while any of ``pids`` runs (a zombie has stopped running)."""
    for pid in pids:
        with contextlib.suppress(psutil.NoSuchProcess):
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                return True
    return False


def started_by(log: Path, pids: list[int]) -> int:
    return sum(1 for runs in executions(log).values() for pid in runs if pid in pids)


def test_killed_node_messages_run_elsewhere_within_heartbeats(any_project: Project,
                                                              tmp_path: Path) -> None:
    tasks = load(any_project)
    log = tmp_path / "runs.txt"
    doomed = any_project.start_worker("-P", "threads", "-c", "4", "-n", "doomed@test")
    doomed_pids = node_pids(doomed)
    # Running until the gate opens: still running after the rescuer started, however slowly.
    gate = tmp_path / "gate"
    results = [tasks.record_until.delay(str(log), str(gate)) for _ in range(8)]
    # It prefetches all 8 and starts 4.
    wait_until(lambda: started_by(log, doomed_pids) == 4, message="4 tasks started")
    wait_until(lambda: any_project.queue()["ready"] == 0, message="all 8 claimed")
    rescuer = any_project.start_worker("-P", "threads", "-c", "8", "-n", "rescuer@test")
    signal_node(doomed_pids, signal.SIGKILL)
    killed_at = time.monotonic()
    # Its 4 were running when it died (the gate still shut); their reruns need not wait.
    wait_until(lambda: not alive(doomed_pids), message="the doomed node gone")
    gate.touch()
    for result in results:
        assert result.get(timeout=30) == result.id
    took = time.monotonic() - killed_at
    assert took < LEASE / 2, f"back after {took:.1f}s: waited for the lease"
    rescuer.wait_for_log("node doomed@test stopped sending heartbeats")
    # RabbitMQ hands back what a dead connection held by itself: the reaper only writes
    # what the 4 running ones owe (their charges).
    released = 4 if on_rabbitmq(any_project) else 8
    assert f"{released} message(s) its worker processes held were released" in rescuer.log()
    runs = executions(log)
    rescuer_pids = rescuer.children()
    # The 4 it was running ran again; the 4 it had not started ran once.
    assert sorted(len(runs[r.id]) for r in results) == [1, 1, 1, 1, 2, 2, 2, 2], runs
    assert all(runs[r.id][-1] in rescuer_pids for r in results)
    assert any_project.queue() == {"ready": 0, "scheduled": 0, "in_flight": 0, "dead": 0}
    assert "Traceback" not in rescuer.log()
    assert rescuer.stop() == 0


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_node_killed_on_a_last_delivery_fails_the_task(kind: str, request: pytest.FixtureRequest,
                                                       tmp_path: Path) -> None:
    """Not on RabbitMQ: there the dead node's connection hands its message back at once,
    before any node can know it died (three heartbeats), so the message runs again and
    the charge comes one delivery late (docs/rabbitmq.md, "Crash attribution")."""
    any_project = project_on(request, kind)
    tasks = load(any_project, "app.conf.update(broker_max_deliveries=1)\n")
    log = tmp_path / "runs.txt"
    doomed = any_project.start_worker("-P", "threads", "-c", "2", "-n", "doomed@test")
    doomed_pids = node_pids(doomed)
    result = tasks.record.delay(str(log), 30.0)
    wait_until(lambda: started_by(log, doomed_pids) == 1, message="task started")
    rescuer = any_project.start_worker("-P", "threads", "-c", "2", "-n", "rescuer@test")
    time.sleep(0.6)  # the doomed node's heartbeat lists the task
    signal_node(doomed_pids, signal.SIGKILL)
    with pytest.raises(WorkerLostError, match=r"the worker node running task tasks\.record died "
                                              r"on delivery 1 of 1"):
        result.get(timeout=30)
    wait_until(lambda: any_project.queue()["dead"] == 1, message="dead-lettered")
    assert len(executions(log)[result.id]) == 1
    assert rescuer.stop() == 0


def test_frozen_node_wakes_and_runs_nothing_twice_but_what_it_was_running(
        any_project: Project, tmp_path: Path) -> None:
    # On RabbitMQ the frozen node's messages come back when the server drops its
    # connection: after two missed heartbeats.
    tasks = load(any_project, "app.conf.update(broker_heartbeat=1)\n"
                 if on_rabbitmq(any_project) else "")
    log = tmp_path / "runs.txt"
    # The rescuer is up first, on a queue of its own, so that the freeze follows the first
    # two starts at once however slowly a node starts on a loaded machine (it had taken
    # longer than the tasks, and the frozen node had run them all before it froze); it
    # reaps vanished nodes whatever queue it serves, and serves the tasks' queue once
    # the frozen node is frozen.
    rescuer = any_project.start_worker("-P", "threads", "-c", "8", "-n", "rescuer@test",
                                       "-Q", "standby")
    frozen = any_project.start_worker("-P", "threads", "-c", "2", "-n", "frozen@test")
    frozen_pids = node_pids(frozen)
    # Long enough to be still running when the freeze comes.
    results = [tasks.record.delay(str(log), 3.0) for _ in range(6)]
    # Two run, four wait in its prefetch (2 slots x 4).
    wait_until(lambda: started_by(log, frozen_pids) == 2, message="2 tasks started")
    wait_until(lambda: any_project.queue()["ready"] == 0, message="all 6 claimed")
    signal_node(frozen_pids, signal.SIGSTOP)
    # Two, unless a loaded machine let the first two end before the freeze.
    started = started_by(log, frozen_pids)
    assert tasks.app.control.add_consumer("celery", destination=["rescuer@test"], reply=True,
                                          timeout=10) == [{"rescuer@test": {"ok": "add consumer celery"}}]
    try:
        for result in results:
            assert result.get(timeout=30) == result.id
        rescuer.wait_for_log("node frozen@test stopped sending heartbeats")
        assert all(psutil.Process(pid).status() == psutil.STATUS_STOPPED for pid in frozen_pids)
    finally:
        signal_node(frozen_pids, signal.SIGCONT)
    # What it was running when frozen (its two slots' tasks) the rescuer ran again: those
    # and only those ran twice.
    runs = executions(log)
    twice = [task_id for task_id, pids in runs.items() if len(pids) == 2]
    assert 1 <= len(twice) <= 2, runs
    assert all(runs[task_id][0] in frozen_pids for task_id in twice), runs
    # Awake: those finish and their acks are refused; what it had fetched but not
    # started is dropped, not run.
    wait_until(lambda: frozen.log().count("refused: its lease passed") == len(twice),
               message="its stale acks refused")
    # Leases it finds lost: the waiting ones, and those of the running ones that had not
    # finished when it renewed. (On RabbitMQ the broker knows a waiting one is lost before
    # any renewal: its channel died, and the consumer drops it before starting it.)
    # The consumer finds them in the turns after the refused acks: waited for, not
    # read at once (a read between the two found none).
    def lost() -> int:
        text = frozen.log()
        return (text.count("was lost; it may run elsewhere")
                + text.count("was lost with the broker connection before it started"))

    wait_until(lambda: lost() >= len(results) - started, message="its lost leases found")
    time.sleep(1.5)  # time enough to start what it should not
    assert started_by(log, frozen_pids) == started
    runs = executions(log)
    assert sorted(len(runs[r.id]) for r in results) == [1] * (6 - len(twice)) + [2] * len(twice), runs
    assert any_project.queue() == {"ready": 0, "scheduled": 0, "in_flight": 0, "dead": 0}
    # It is alive and serves; its supervisor saw nothing wrong.
    assert frozen.children() == frozen_pids[1:]
    assert tasks.add.delay(2, 3).get(timeout=10) == 5
    assert "Traceback" not in frozen.log() + rescuer.log()
    assert rescuer.stop() == 0
    assert frozen.stop() == 0


def test_orphans_of_a_killed_supervisor_keep_their_node_alive_until_they_finish(
        any_project: Project, tmp_path: Path) -> None:
    """Only the supervisor is killed (``kill -9`` of the pid an operator sees): its
    processes finish their running tasks warm, and keep the node's heartbeat alive
    meanwhile, so no other node takes their messages and runs them twice."""
    tasks = load(any_project)
    log = tmp_path / "runs.txt"
    # The rescuer is up first, on a queue of its own (it reaps vanished nodes whatever it
    # serves), so the kill follows the starts at once however slowly a node starts.
    rescuer = any_project.start_worker("-P", "threads", "-c", "4", "-n", "rescuer@test",
                                       "-Q", "standby")
    node = any_project.start_worker("-P", "threads", "-c", "2", "-n", "headless@test")
    [child] = node.children()
    results = [tasks.record.delay(str(log), 4.0) for _ in range(2)]
    wait_until(lambda: started_by(log, [child]) == 2, message="2 tasks started")
    node.signal(signal.SIGKILL)
    # Three heartbeat intervals (1.5 s) pass long before the tasks end.
    wait_until(lambda: any(w["name"] == "headless@test" and w.get("orphaned")
                           for w in any_project.status()["workers"]),
               message="the orphaned process keeps the node's heartbeat")
    for result in results:
        assert result.get(timeout=30) == result.id
    wait_until(lambda: not psutil.pid_exists(child) or psutil.Process(child).status() ==
               psutil.STATUS_ZOMBIE, message="the orphan exited")
    time.sleep(2.0)  # a reaper would have acted by now
    assert "stopped sending heartbeats" not in rescuer.log()
    runs = executions(log)
    assert sorted(len(runs[r.id]) for r in results) == [1, 1], runs
    assert "headless@test" not in {w["name"] for w in any_project.status()["workers"]}
    assert any_project.queue() == {"ready": 0, "scheduled": 0, "in_flight": 0, "dead": 0}
    assert rescuer.stop() == 0
