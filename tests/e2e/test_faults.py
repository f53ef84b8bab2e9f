"""Faults, end to end: killed processes, shutdowns, time limits, bad messages.

Each test starts the real ``celeriac -A tasks worker`` as a subprocess on a
SQLite broker, breaks something the way it breaks in production (signals,
poison messages, garbage on the queue), and checks the promise: nothing is
lost, nothing that finished runs again, what cannot be processed ends in the
dead-letter store with a reason, and the worker keeps serving.

Executions are counted by the tasks themselves: ``record`` (conftest) and the
tasks below append ``<task id> <pid>`` to a file each time they run.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from types import ModuleType

import psutil
import pytest
from conftest import Project, Worker, executions, wait_until

from celeriac import NotRegistered, TimeLimitExceeded
from celeriac.brokers import OutgoingMessage
from celeriac.exceptions import MessageDecodeError, WorkerLostError
from celeriac.message import encode

#: Tasks added to the project's ``tasks.py`` for these tests.
EXTRA = r'''
import signal

def _note(path, request):
    with open(path, "a") as f:
        f.write(f"{request.id} {os.getpid()}\n")

@app.task(bind=True)
def suicide(self, path):
    """Kill the process running it: a message that keeps killing its worker."""
    _note(path, self.request)
    os.kill(os.getpid(), signal.SIGKILL)

@app.task(bind=True)
def hang_once(self, path):
    """Hang on the first delivery only; return at once when delivered again."""
    _note(path, self.request)
    if self.request.delivery_count == 1:
        time.sleep(60)
    return os.getpid()
'''


#: A message handed back *charged* would be dead-lettered on its next delivery with
#: this setting: tests of "handed back uncharged" use it.
ONE_DELIVERY = "\napp.conf.update(broker_max_deliveries=1)\n"


def load(project: Project, settings: str = "") -> ModuleType:
    """Write ``tasks.py`` (conftest's tasks, :data:`EXTRA`, then ``settings`` code) and import it."""
    project.write_tasks(EXTRA + settings)
    project.app()
    return sys.modules["tasks"]


def settled(project: Project, ready: int = 0) -> None:
    """Wait until nothing is in flight, then check the counts with ``celeriac status --json``."""
    wait_until(lambda: project.queue()["in_flight"] == 0, interval=0.2, message="nothing in flight")
    counts = project.queue()
    assert (counts["ready"], counts["in_flight"]) == (ready, 0), counts


def alive(pids: list[int]) -> list[int]:
    """The ``pids`` still running (a zombie nobody reaped yet has exited)."""
    running = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                running.append(pid)
        except psutil.NoSuchProcess:
            pass
    return running


def replaced(worker: Worker, gone: int, count: int) -> list[int]:
    """Wait until the worker has ``count`` processes again, none of them ``gone``."""
    def check() -> list[int]:
        children = worker.children()
        return children if len(children) == count and gone not in children else []

    children: list[int] = wait_until(check, message=f"process {gone} replaced")
    return children


def results(tasks: ModuleType, ids: list[str]) -> dict[str, str]:
    """Status per task id, as stored now."""
    return {task_id: tasks.app.AsyncResult(task_id).status for task_id in ids}


# -- (a) a worker process killed mid-task ----------------------------------------------------
def test_killed_child_task_runs_again_and_child_is_replaced(project: Project,
                                                            tmp_path: Path) -> None:
    tasks = load(project)
    log = tmp_path / "runs.txt"
    worker = project.start_worker("-P", "prefork", "-c", "2")
    result = tasks.record.delay(str(log), 1.5)
    [victim] = wait_until(lambda: executions(log).get(result.id), message="task started")
    os.kill(victim, signal.SIGKILL)
    # Well within the 30 s lease: the supervisor gives the message back at once.
    assert result.get(timeout=20) == result.id
    assert result.status == "SUCCESS"
    runs = executions(log)[result.id]
    assert len(runs) == 2 and runs[0] == victim and runs[1] != victim, runs
    replaced(worker, victim, 2)
    settled(project)
    assert worker.proc.poll() is None
    assert worker.stop() == 0


# -- (b) warm shutdown under load -------------------------------------------------------------
@pytest.mark.parametrize("pool,concurrency", [("threads", "4"), ("prefork", "2")])
def test_warm_shutdown_loses_nothing_and_reruns_nothing(project: Project, tmp_path: Path,
                                                        pool: str, concurrency: str) -> None:
    tasks = load(project, ONE_DELIVERY)
    log = tmp_path / "runs.txt"
    ids = [tasks.record.delay(str(log), 0.05).id for _ in range(200)]
    worker = project.start_worker("-P", pool, "-c", concurrency, "--shutdown-timeout", "20")
    wait_until(lambda: len(executions(log)) >= 40, message="40 tasks ran")
    worker.signal(signal.SIGTERM)
    assert worker.wait(timeout=20) == 0, worker.log()
    assert "shutdown timeout" not in worker.log()

    done = {task_id for task_id, status in results(tasks, ids).items() if status == "SUCCESS"}
    assert 0 < len(done) < len(ids), "the shutdown did not happen mid-way"
    runs = executions(log)
    # Warm: every task that started also finished and was acked; none ran twice.
    assert set(runs) == done
    assert all(len(pids) == 1 for pids in runs.values())
    # The broker holds exactly the unfinished messages, ready for the next worker.
    settled(project, ready=len(ids) - len(done))

    second = project.start_worker("-P", "threads", "-c", "8")
    for task_id in ids:
        assert tasks.app.AsyncResult(task_id).get(timeout=60) == task_id
    runs = executions(log)
    assert set(runs) == set(ids), "a task was lost"
    twice = {task_id: pids for task_id, pids in runs.items() if len(pids) != 1}
    assert not twice, f"tasks ran more than once: {twice}"
    settled(project)
    assert second.stop() == 0


# -- (c) cold shutdown ------------------------------------------------------------------------
@pytest.mark.parametrize("pool,how", [("prefork", "SIGQUIT"), ("threads", "SIGQUIT"),
                                      ("prefork", "SIGTERM twice"), ("threads", "SIGTERM twice")])
def test_cold_shutdown_redelivers_running_tasks(project: Project, tmp_path: Path,
                                                pool: str, how: str) -> None:
    tasks = load(project, ONE_DELIVERY)
    log = tmp_path / "runs.txt"
    # Running until the gate opens: still running at the cold shutdown however slowly the
    # machine goes (a warm one would wait for them), and the reruns need not wait again.
    gate = tmp_path / "gate"
    ids = [tasks.record_until.delay(str(log), str(gate)).id for _ in range(6)]
    worker = project.start_worker("-P", pool, "-c", "2", "--shutdown-timeout", "30")
    wait_until(lambda: len(executions(log)) == 2, message="two tasks running")
    if how == "SIGQUIT":
        worker.signal(signal.SIGQUIT)
    else:
        worker.signal(signal.SIGTERM)
        worker.wait_for_log("warm shutdown")
        worker.signal(signal.SIGTERM)
    worker.wait(timeout=15)
    assert "cold shutdown" in worker.log()
    interrupted = executions(log)
    assert len(interrupted) == 2
    assert set(results(tasks, ids).values()) == {"PENDING"}, "a task finished?"
    settled(project, ready=len(ids))  # everything is back, nothing in flight
    gate.touch()

    second = project.start_worker("-P", "threads", "-c", "6")
    for task_id in ids:
        assert tasks.app.AsyncResult(task_id).get(timeout=60) == task_id
    runs = executions(log)
    assert set(runs) == set(ids)
    for task_id, pids in runs.items():
        assert len(pids) == (2 if task_id in interrupted else 1), (task_id, pids)
    settled(project)
    assert second.stop() == 0


# -- (d) hard time limit ----------------------------------------------------------------------
@pytest.mark.parametrize("pool", ["prefork", "solo", "threads"])
def test_hard_time_limit_fails_the_task_and_replaces_the_process(
        project: Project, tmp_path: Path, pool: str) -> None:
    tasks = load(project, ONE_DELIVERY)
    log = tmp_path / "runs.txt"
    worker = project.start_worker("-P", pool, "-c", "2", "--time-limit", "1")
    processes = len(worker.children())
    stuck = tasks.record.delay(str(log), 30)
    # A neighbour with its own, longer limit: on threads it shares the killed process.
    neighbour = tasks.record.apply_async((str(log), 1.5), time_limit=20)
    with pytest.raises(TimeLimitExceeded):
        stuck.get(timeout=30)
    assert stuck.status == "FAILURE"
    [victim] = executions(log)[stuck.id]
    replaced(worker, victim, processes)
    assert "exceeded its hard time limit" in worker.log()

    assert neighbour.get(timeout=30) == neighbour.id
    assert tasks.add.delay(2, 3).get(timeout=30) == 5  # the worker keeps serving
    neighbour_runs = executions(log)[neighbour.id]
    if pool == "threads":
        assert len(neighbour_runs) == 2, "the neighbour was killed with the process and redelivered"
    else:
        assert len(neighbour_runs) == 1
    settled(project)
    assert executions(log)[stuck.id] == [victim], "the task that overran was delivered again"
    assert worker.stop() == 0


# -- (e) unknown task -------------------------------------------------------------------------
def test_unknown_task_is_dead_lettered(project: Project) -> None:
    tasks = load(project)
    worker = project.start_worker("-P", "threads", "-c", "2")
    children = worker.children()
    result = tasks.app.send_task("no.such.task", [1, 2])
    with pytest.raises(NotRegistered, match=r"no\.such\.task"):
        result.get(timeout=30)
    # The result is stored first, then the message is settled: wait for the dead letter.
    [letter] = wait_until(tasks.app.broker.dead_letters, message="dead letter")
    assert "no.such.task" in letter.reason
    counts = project.queue()
    assert counts["dead"] == 1 and counts["ready"] == 0 and counts["in_flight"] == 0, counts
    assert tasks.add.delay(1, 2).get(timeout=30) == 3
    assert worker.children() == children, "a worker process died"
    assert worker.stop() == 0


# -- (f) malformed messages -------------------------------------------------------------------
def test_malformed_messages_are_dead_lettered(project: Project) -> None:
    tasks = load(project)
    worker = project.start_worker("-P", "prefork", "-c", "2")
    children = worker.children()
    envelope = json.loads(encode("tasks.add", "no-task-header", [1, 2], {}, queue="celery"))
    del envelope["headers"]["task"]
    tasks.app.broker.publish([
        OutgoingMessage(queue="celery", body=b"not json"),
        OutgoingMessage(queue="celery", body=json.dumps(envelope).encode()),
    ])
    # Stored as celeriac's own MessageDecodeError, which comes back as that class.
    with pytest.raises(MessageDecodeError, match="header 'task' is missing"):
        tasks.app.AsyncResult("no-task-header").get(timeout=30)
    wait_until(lambda: len(tasks.app.broker.dead_letters()) == 2, message="two dead letters")
    reasons = " | ".join(letter.reason for letter in tasks.app.broker.dead_letters())
    assert "not JSON" in reasons and "'task' is missing" in reasons, reasons
    counts = project.queue()
    assert counts["dead"] == 2 and counts["ready"] == 0 and counts["in_flight"] == 0, counts
    assert tasks.add.delay(1, 2).get(timeout=30) == 3
    assert worker.children() == children, "a worker process died"
    assert worker.stop() == 0


# -- (g) a message that keeps killing its worker ----------------------------------------------
def test_poison_message_ends_in_dead_letters(project: Project, tmp_path: Path) -> None:
    tasks = load(project, "\napp.conf.update(broker_max_deliveries=2)\n")
    log = tmp_path / "runs.txt"
    worker = project.start_worker("-P", "prefork", "-c", "2")
    poison = tasks.suicide.delay(str(log))
    wait_until(lambda: tasks.app.broker.dead_letters(), message="poison message dead-lettered")
    [letter] = tasks.app.broker.dead_letters()
    assert "max deliveries (2)" in letter.reason
    assert len(executions(log)[poison.id]) == 2, "it should run exactly max_deliveries times"
    with pytest.raises(WorkerLostError):
        poison.get(timeout=30)
    assert tasks.add.delay(1, 2).get(timeout=30) == 3
    assert worker.proc.poll() is None
    counts = project.queue()
    assert counts["dead"] == 1 and counts["ready"] == 0 and counts["in_flight"] == 0, counts
    assert worker.stop() == 0


# -- (h) the supervisor killed ----------------------------------------------------------------
def test_orphaned_processes_exit_and_messages_come_back(project: Project, tmp_path: Path) -> None:
    tasks = load(project, "\napp.conf.update(broker_lease_timeout=2.0)\n")
    log = tmp_path / "runs.txt"
    hanging = [tasks.hang_once.delay(str(log)) for _ in range(2)]
    waiting = [tasks.record.delay(str(log)) for _ in range(2)]
    worker = project.start_worker("-P", "prefork", "-c", "2", "--shutdown-timeout", "1")
    children = worker.children()
    wait_until(lambda: len(executions(log)) == 2, message="both hanging tasks started")
    worker.proc.kill()
    worker.wait(timeout=10)
    wait_until(lambda: not alive(children), timeout=15, message="orphaned processes exited")

    second = project.start_worker("-P", "threads", "-c", "4")
    for result in hanging:
        assert result.get(timeout=30) not in children
    for result in waiting:
        assert result.get(timeout=30) == result.id
    runs = executions(log)
    for result in hanging:
        assert len(runs[result.id]) == 2 and runs[result.id][0] in children, runs[result.id]
    settled(project)
    assert second.stop() == 0
