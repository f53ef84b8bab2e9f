"""Faults on the RabbitMQ broker, end to end, with real RabbitMQ nodes and the real CLI worker.

Each test starts ``celeriac -A tasks worker`` as a subprocess on a RabbitMQ broker (its
state store and result backend on Redis), breaks something the way it breaks in
production (a worker process or a whole node SIGKILLed, rabbitmq-server restarted, the
worker's connection closed by the server, a node frozen past its heartbeat, a task
blocking the gevent hub, poison tasks) and checks the promise with exact counts: every
task sent (every publish that returned) runs and has a result, a task runs again only
when its delivery was really cut short, and delivery counts charge only the task that
was running in a process that died alone.

Executions are counted by the tasks themselves: each run appends
``<task id> <pid> <delivery count>`` to a file.
"""

from __future__ import annotations

import os
import re
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import psutil
import pytest
from conftest import Project, Worker, normal_leg_only, stop_project, wait_until
from rabbitserver import RabbitServer

from celeriac.exceptions import WorkerLostError
from celeriac.message import decode

#: What happens is inside worker processes and RabbitMQ: a gevent-patched test process
#: adds nothing to it.
pytestmark = normal_leg_only

#: Tasks added to the project's ``tasks.py`` for these tests.
EXTRA = r'''
import signal


def _note(path, request):
    with open(path, "a") as f:
        f.write(f"{request.id} {os.getpid()} {request.delivery_count}\n")


@app.task(bind=True)
def run(self, path, gate=None, seconds=0.0):
    """Record this delivery; then wait for ``gate`` (if given) or sleep ``seconds``."""
    _note(path, self.request)
    deadline = time.monotonic() + 60
    while gate is not None and not os.path.exists(gate) and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(seconds)
    return self.request.id


@app.task(bind=True)
def poison(self, path):
    """Record this delivery, let the neighbours start, then take the whole process down."""
    _note(path, self.request)
    time.sleep(0.1)
    os._exit(1)


@app.task(bind=True)
def block_hub(self, path, seconds):
    """Block the whole process (a gevent worker's hub too): no greenlet runs meanwhile."""
    _note(path, self.request)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        pass
    return self.request.id
'''


def load(project: Project, settings: str = "") -> ModuleType:
    """Write ``tasks.py`` (conftest's tasks, :data:`EXTRA`, then ``settings`` code) and import it."""
    project.write_tasks(EXTRA + settings)
    project.app()
    return sys.modules["tasks"]


def runs(path: Path) -> dict[str, list[tuple[int, int]]]:
    """What the tasks appended to ``path``: task id -> (pid, delivery count) of each run."""
    found: dict[str, list[tuple[int, int]]] = {}
    if path.exists():
        for line in path.read_text().split("\n")[:-1]:  # not a line still being written
            task_id, pid, count = line.split()
            found.setdefault(task_id, []).append((int(pid), int(count)))
    return found


def all_done(tasks: ModuleType, ids: list[str], timeout: float = 60.0) -> None:
    """Every task id has its result (the task's own id): none was lost."""
    for task_id in ids:
        assert tasks.app.AsyncResult(task_id).get(timeout=timeout) == task_id


def nothing_left(project: Project, dead: int = 0) -> None:
    """The queue is empty (``ready`` is RabbitMQ's own count) and holds ``dead`` dead letters."""
    counts = project.queue()
    assert (counts["ready"], counts["dead"]) == (0, dead), counts


def pids_of(worker: Worker) -> list[int]:
    """The supervisor and its worker processes."""
    return [worker.proc.pid, *worker.children()]


def busy(log: Path, count: int) -> dict[str, list[tuple[int, int]]]:
    """Wait until ``count`` tasks have started; what started."""
    def check() -> dict[str, list[tuple[int, int]]]:
        found = runs(log)
        return found if len(found) >= count else {}

    started: dict[str, list[tuple[int, int]]] = wait_until(
        check, timeout=30, message=f"{count} tasks running")
    return started


@pytest.fixture
def fault_project(tmp_path: Path, fault_rabbit: RabbitServer, redis_url: str,
                  monkeypatch: pytest.MonkeyPatch) -> Iterator[Project]:
    """``amqp_project`` on the node that tests may restart (a vhost of this test's own)."""
    project = Project(tmp_path, fault_rabbit.url(fault_rabbit.vhost()), backend_url=redis_url)
    project.write_tasks()
    monkeypatch.setenv("CELERIAC_BROKER_URL", project.broker_url)
    monkeypatch.setenv("CELERIAC_RESULT_BACKEND", project.result_url)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield project
    stop_project(project)


# -- 1. a worker process SIGKILLed under load ---------------------------------------------------
@pytest.mark.parametrize("pool,concurrency", [("prefork", 2), ("gevent", 10)])
def test_killed_worker_process_loses_nothing(amqp_project: Project, tmp_path: Path,
                                             pool: str, concurrency: int) -> None:
    tasks = load(amqp_project)
    log, gate = tmp_path / "runs.txt", tmp_path / "gate"
    worker = amqp_project.start_worker("-P", pool, "-c", str(concurrency))
    long = [tasks.run.delay(str(log), str(gate)) for _ in range(concurrency)]
    short = [tasks.run.delay(str(log)) for _ in range(100)]
    started = busy(log, concurrency)
    victim = started[long[0].id][0][0]
    killed = {task_id for task_id, seen in started.items() if seen[0][0] == victim}
    os.kill(victim, signal.SIGKILL)
    worker.wait_for_log(f"(pid {victim}) died with signal 9")
    gate.touch()
    all_done(tasks, [r.id for r in long + short])

    found = runs(log)
    assert set(found) == {r.id for r in long + short}
    for task_id, seen in found.items():
        if task_id in killed:
            # Started in the process that died, so run again elsewhere: charged when it ran
            # alone there (prefork), a suspect (uncharged) when it ran beside others (gevent).
            assert len(seen) == 2 and seen[0][0] == victim != seen[1][0], (task_id, seen)
            assert seen[1][1] == (2 if pool == "prefork" else 1), (task_id, seen)
        else:
            # Never started in the dead process (at most reserved there): once, uncharged.
            assert seen[0][0] != victim and len(seen) == 1 and seen[0][1] == 1, (task_id, seen)
    nothing_left(amqp_project)
    assert "Traceback" not in worker.log(), worker.log()
    assert worker.stop() == 0


# -- 2. a whole worker node SIGKILLed under load -----------------------------------------------
def test_killed_worker_node_loses_nothing(amqp_project: Project, tmp_path: Path) -> None:
    tasks = load(amqp_project)
    log, gate = tmp_path / "runs.txt", tmp_path / "gate"
    first = amqp_project.start_worker("-P", "prefork", "-c", "2", "-n", "first@test")
    ids = [tasks.run.delay(str(log), str(gate)).id for _ in range(2)]
    ids += [tasks.run.delay(str(log)).id for _ in range(100)]
    busy(log, 2)
    killed = pids_of(first)
    for pid in killed:
        os.kill(pid, signal.SIGKILL)
    first.proc.wait(10)
    gate.touch()
    second = amqp_project.start_worker("-P", "gevent", "-c", "20", "-n", "second@test")
    all_done(tasks, ids)
    found = runs(log)
    assert set(found) == set(ids)
    gated = set(ids[:2])
    for task_id, seen in found.items():
        there = [run for run in seen if run[0] in killed]
        if task_id in gated and there:  # running (behind the gate) when the node died
            assert len(seen) == 2 and seen[1][0] not in killed, (task_id, seen)
        elif there:  # a quick one: done before the kill, or killed while it ran
            assert len(seen) in (1, 2), (task_id, seen)
        else:  # never started on the killed node: once
            assert len(seen) == 1, (task_id, seen)
    assert any(run[0] in killed for task_id in gated for run in found[task_id])
    nothing_left(amqp_project)
    assert "Traceback" not in second.log(), second.log()
    assert second.stop() == 0


# -- 3. rabbitmq-server restarted under load ----------------------------------------------------
@pytest.mark.timeout(240)
def test_rabbitmq_restart_under_load_runs_every_confirmed_publish(
        fault_project: Project, fault_rabbit: RabbitServer, tmp_path: Path) -> None:
    tasks = load(fault_project)
    log = tmp_path / "runs.txt"
    worker = fault_project.start_worker("-P", "gevent", "-c", "20")
    confirmed: list[str] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def produce() -> None:
        while not stop.is_set():
            try:
                confirmed.append(tasks.run.delay(str(log)).id)
            except Exception as exc:  # the node is down: the publish says so
                errors.append(exc)
                time.sleep(0.1)
            time.sleep(0.002)

    producer = threading.Thread(target=produce, name="producer", daemon=True)
    producer.start()
    try:
        wait_until(lambda: len(runs(log)) > 100, timeout=30, message="tasks running")
        fault_rabbit.restart()
        before = len(confirmed)
        wait_until(lambda: len(confirmed) > before + 100, timeout=60,
                   message="the producer publishing again")
    finally:
        stop.set()
        producer.join(60)
    assert not producer.is_alive()
    all_done(tasks, confirmed, timeout=90)
    found = runs(log)
    assert set(confirmed) <= set(found), "a confirmed publish never ran"
    assert len(set(found) - set(confirmed)) <= len(errors), "tasks nobody sent ran"
    # Run twice only if the worker held it when the node went down: at most its 20 slots
    # times the default prefetch multiplier (4); in practice a handful.
    duplicates = {task_id: seen for task_id, seen in found.items() if len(seen) > 1}
    assert len(duplicates) <= 80, f"{len(duplicates)} of {len(confirmed)} tasks ran twice"
    assert all(len(seen) == 2 for seen in duplicates.values()), duplicates
    nothing_left(fault_project)
    text = worker.log()
    assert "Traceback" not in text, text
    assert "reconnected to" in text, text
    assert worker.stop() == 0


# -- 4. the worker's connection closed by the server --------------------------------------------
@pytest.mark.parametrize("pool,concurrency", [("prefork", 1), ("gevent", 10)])
def test_closed_connection_reconnects_and_loses_nothing(
        amqp_project: Project, rabbit_server: RabbitServer, tmp_path: Path,
        pool: str, concurrency: int) -> None:
    # The process holds more than it runs (prefetch multiplier 4): what it had fetched
    # and not started when the connection closed is dropped before it starts (its claim
    # is lost: Broker.lost), not run on a stale delivery and then again.
    tasks = load(amqp_project)
    log, gate = tmp_path / "runs.txt", tmp_path / "gate"
    worker = amqp_project.start_worker("-P", pool, "-c", str(concurrency))
    [child] = worker.children()
    ids = [tasks.run.delay(str(log), str(gate)).id for _ in range(concurrency)]
    ids += [tasks.run.delay(str(log)).id for _ in range(50)]
    started = busy(log, concurrency)
    name = f"pid {child}"
    [connection] = [n for n in rabbit_server.connection_names() if n.endswith(name)]
    assert rabbit_server.close_connection(connection) == 1
    worker.wait_for_log("reconnected to")
    gate.touch()
    all_done(tasks, ids)
    found = runs(log)
    assert set(found) == set(ids)
    for task_id, seen in found.items():
        # What was running when the connection closed went back to the queue and ran
        # again (its ack was refused); nothing else ran twice.
        assert len(seen) <= (2 if task_id in started else 1), (task_id, seen)
    nothing_left(amqp_project)
    text = worker.log()
    if concurrency < 50:  # it held more than it ran
        assert "was lost with the broker connection before it started" in text, text
    assert text.count("lost the connection to") == 1, text
    assert text.count("reconnected to") == 1, text
    assert "Traceback" not in text, text
    assert worker.stop() == 0


# -- 5. a worker node frozen past its heartbeat -------------------------------------------------
HEARTBEAT = "\napp.conf.update(broker_heartbeat=2)\n"


def test_frozen_node_past_its_heartbeat_loses_nothing(amqp_project: Project,
                                                      tmp_path: Path) -> None:
    tasks = load(amqp_project, HEARTBEAT)
    log, gate = tmp_path / "runs.txt", tmp_path / "gate"
    frozen = amqp_project.start_worker("-P", "prefork", "-c", "1", "-n", "frozen@test")
    [child] = frozen.children()
    first = tasks.run.delay(str(log), str(gate))
    busy(log, 1)
    stopped = pids_of(frozen)
    for pid in stopped:
        os.kill(pid, signal.SIGSTOP)
    stopped_at = time.monotonic()
    try:
        rescuer = amqp_project.start_worker("-P", "gevent", "-c", "10", "-n", "rescuer@test")
        ids = [first.id, *(tasks.run.delay(str(log)).id for _ in range(20))]
        # RabbitMQ drops the frozen node's connection after missed heartbeats, and the
        # task it was running goes to the rescuer.
        wait_until(lambda: len(runs(log).get(first.id, ())) == 2, timeout=30,
                   message="the frozen node's task taken over")
        gate.touch()
        all_done(tasks, ids)
        assert psutil.Process(child).status() == psutil.STATUS_STOPPED
        time.sleep(max(0.0, stopped_at + 7.0 - time.monotonic()))  # surely past 2 heartbeats
    finally:
        for pid in stopped:
            os.kill(pid, signal.SIGCONT)
    # Thawed: its task finishes and its ack is refused (the channel is a dead generation).
    frozen.wait_for_log("refused: its lease passed to another worker", timeout=20)
    frozen.wait_for_log("reconnected to", timeout=20)
    # Each of its processes knew at once that it had been stopped past the heartbeat: it
    # dropped the connection before reading what the server had pushed into it meanwhile
    # (deliveries requeued with the connection, which would otherwise run here again).
    for process in ("MainProcess", "Worker-0"):
        assert re.search(rf"WARNING/{process}\] lost the connection to \S+ \(this process was "
                         r"stopped for", frozen.log()), frozen.log()
    found = runs(log)
    assert set(found) == set(ids)
    assert [pid for pid, _ in found[first.id]] == [child, *rescuer.children()], found[first.id]
    assert all(len(seen) == 1 for task_id, seen in found.items() if task_id != first.id)
    # It serves again.
    assert tasks.add.delay(2, 3).get(timeout=20) == 5
    nothing_left(amqp_project)
    assert "Traceback" not in frozen.log() + rescuer.log()
    assert rescuer.stop() == 0
    assert frozen.stop() == 0


# -- 6. a task blocking the gevent hub for three heartbeat intervals ----------------------------
def test_blocked_gevent_hub_keeps_its_connection(amqp_project: Project,
                                                 rabbit_server: RabbitServer,
                                                 tmp_path: Path) -> None:
    tasks = load(amqp_project, HEARTBEAT)
    log = tmp_path / "runs.txt"
    server_log = len(rabbit_server.log_text())
    worker = amqp_project.start_worker("-P", "gevent", "-c", "10")
    blocker = tasks.block_hub.delay(str(log), 6.0)
    others = [tasks.run.delay(str(log), None, 0.1) for _ in range(20)]
    all_done(tasks, [blocker.id, *(r.id for r in others)])
    found = runs(log)
    assert all(len(seen) == 1 for seen in found.values()), found
    assert len(found) == 21
    text = worker.log()
    assert "lost the connection" not in text and "refused" not in text, text
    assert "missed heartbeats" not in rabbit_server.log_text()[server_log:]
    nothing_left(amqp_project)
    assert worker.stop() == 0


ALONE = "max deliveries (2) exceeded; it crashed its worker process while running alone"


# -- 7. poison tasks among normal ones ----------------------------------------------------------
def test_poison_tasks_are_dead_lettered_and_nothing_else(amqp_project: Project,
                                                         tmp_path: Path) -> None:
    tasks = load(amqp_project, "\napp.conf.update(broker_max_deliveries=2)\n")
    log = tmp_path / "runs.txt"
    worker = amqp_project.start_worker("-P", "gevent", "-c", "10")
    # Each poison task crashes its process up to six times: ten among 100 keep the
    # test under half a minute and still put several in every group of ten.
    normal = [tasks.run.delay(str(log), None, 0.05) for _ in range(50)]
    poisons = [tasks.poison.delay(str(log)) for _ in range(10)]
    normal += [tasks.run.delay(str(log), None, 0.05) for _ in range(50)]
    all_done(tasks, [r.id for r in normal], timeout=180)
    for result in poisons:
        with pytest.raises(WorkerLostError):
            result.get(timeout=60)
    letters = wait_until(lambda: (lambda d: d if len(d) >= 10 else None)(
        tasks.app.broker.dead_letters()), timeout=30, message="10 dead letters")
    # The poison tasks, and only they, each once.
    assert sorted(decode(letter.body).id for letter in letters) == sorted(r.id for r in poisons)
    # Crashes beside others mark them suspect, in groups halved until they run alone,
    # where a crash is their own; a poison task that happened to run alone from the start
    # was charged at once (then its reason is only the count, as on every broker).
    reasons = Counter(letter.reason for letter in letters)
    assert set(reasons) <= {ALONE, "max deliveries (2) exceeded"}, reasons
    assert reasons[ALONE] >= 5, reasons
    found = runs(log)
    for result in poisons:
        # Its two charged runs, after at most log2(10) + 1 uncharged ones in shrinking groups.
        assert 2 <= len(found[result.id]) <= 6, found[result.id]
    for result in normal:
        # Once, and once more for each crash it shared a group with a poison task.
        assert 1 <= len(found[result.id]) <= 5, found[result.id]
        assert found[result.id][-1][1] == 1, "a normal task was charged for a poison task's crash"
    nothing_left(amqp_project, dead=10)
    assert worker.proc.poll() is None
    assert worker.stop() == 0
