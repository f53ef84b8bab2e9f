"""Faults on the Redis broker and result backend, end to end, with a real redis-server.

Each test starts the real ``celeriac -A tasks worker`` as a subprocess with broker
and result backend on Redis, breaks something the way it breaks in production
(a worker process SIGKILLed or frozen past its lease, redis-server restarted or
crashing under load, connections killed by the server, a URL nobody listens
on), and checks the promise with exact counts: no acknowledged message is lost,
a task runs again only when a delivery was really cut short, stale acks are
refused, and the logs say what happened in a few lines, never a traceback.

Executions are counted by the tasks themselves: ``record`` (conftest) and the
tasks below append ``<task id> <pid>`` to a file each time they run.
"""

from __future__ import annotations

import os
import re
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import psutil
import pytest
import redis
from conftest import Project, Worker, executions, normal_leg_only, stop_project, wait_until
from redisserver import RedisServer, free_port, require_redis_server

from celeriac.brokers import Delivery, OutgoingMessage, broker_from_url
from celeriac.exceptions import BrokerUnreachable

#: Tasks added to the project's ``tasks.py`` for these tests.
EXTRA = r'''

def _note(path, request):
    with open(path, "a") as f:
        f.write(f"{request.id} {os.getpid()}\n")


@app.task(bind=True)
def stamp(self, path):
    """Record this execution; return when it started (wall clock, this machine's)."""
    _note(path, self.request)
    return time.time()


@app.task(queue="children")
def child(x, seconds):
    time.sleep(seconds)
    return x * 2


@app.task(bind=True)
def parent(self, path, x):
    """Wait, inside the worker, for a task that another worker runs."""
    _note(path, self.request)
    return child.delay(x, 0.5).get(timeout=10, disable_sync_subtasks=False) + 1
'''


def load(project: Project, settings: str = "") -> ModuleType:
    """Write ``tasks.py`` (conftest's tasks, :data:`EXTRA`, then ``settings`` code) and import it."""
    project.write_tasks(EXTRA + settings)
    project.app()
    return sys.modules["tasks"]


def settled(project: Project) -> None:
    """Wait until nothing is in flight, then check that nothing at all is left in the queue."""
    wait_until(lambda: project.queue()["in_flight"] == 0, interval=0.2, message="nothing in flight")
    counts = project.queue()
    assert counts == {"ready": 0, "scheduled": 0, "in_flight": 0, "dead": 0}, counts


def replaced(worker: Worker, gone: int, count: int) -> list[int]:
    """Wait until the worker has ``count`` processes again, none of them ``gone``."""
    def check() -> list[int]:
        children = worker.children()
        return children if len(children) == count and gone not in children else []

    children: list[int] = wait_until(check, message=f"process {gone} replaced")
    return children


def connection_lines(log: str) -> Counter[tuple[str, str, str]]:
    """``(process, "lost"/"reconnected", what)`` -> how often a worker log says so.

    ``process`` is ``MainProcess`` (the supervisor) or a worker process's ``Worker-N``
    (Celery's log format: ``[2026-01-31 12:00:00,123: INFO/Worker-0] ...``);
    ``what`` is ``Redis broker`` or ``Redis result backend``.
    """
    found: Counter[tuple[str, str, str]] = Counter()
    pattern = re.compile(r"^\[\S+ \S+: \w+/([^\]]+)\] (lost the connection to|reconnected to) "
                         r"(Redis broker|Redis result backend) ", re.M)
    for process, verb, what in pattern.findall(log):
        found[(process, "lost" if verb.startswith("lost") else "reconnected", what)] += 1
    return found


def project_on(tmp_path: Path, url: str, monkeypatch: pytest.MonkeyPatch) -> Project:
    project = Project(tmp_path, url)
    project.write_tasks()
    monkeypatch.setenv("CELERIAC_BROKER_URL", url)
    monkeypatch.setenv("CELERIAC_RESULT_BACKEND", url)
    monkeypatch.syspath_prepend(str(tmp_path))
    return project


@pytest.fixture
def fresh_project(tmp_path: Path, fresh_redis: RedisServer, monkeypatch: pytest.MonkeyPatch
                  ) -> Iterator[Project]:
    """A Redis project on this test's own AOF-backed server (``fresh_redis``)."""
    project = project_on(tmp_path, fresh_redis.url(prefix="fresh"), monkeypatch)
    yield project
    stop_project(project)


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test's own, without persistence: clients may be killed at will."""
    server = RedisServer(tmp_path / "redis", binary=require_redis_server())
    server.start()
    yield server
    server.stop()


@pytest.fixture
def private_project(tmp_path: Path, private_redis: RedisServer, monkeypatch: pytest.MonkeyPatch
                   ) -> Iterator[Project]:
    project = project_on(tmp_path, private_redis.url(prefix="private"), monkeypatch)
    yield project
    stop_project(project)


# -- 1. a worker process SIGKILLed mid-task ----------------------------------------------------
@normal_leg_only  # the supervisor's release: the test process only sends and waits
@pytest.mark.parametrize("pool,concurrency", [("prefork", 2), ("gevent", 50)])
def test_killed_worker_process_messages_released_at_once(redis_project: Project, tmp_path: Path,
                                                         pool: str, concurrency: int) -> None:
    tasks = load(redis_project, "\napp.conf.update(broker_lease_timeout=30)\n")
    log = tmp_path / "runs.txt"
    # Enough long tasks to fill every slot, then short ones that wait behind them:
    # prefork holds them in Redis (one message per process), gevent in the process.
    long = [tasks.record.delay(str(log), 2.0) for _ in range(concurrency)]
    short = [tasks.record.delay(str(log), 0.0) for _ in range(100)]
    worker = redis_project.start_worker("-P", pool, "-c", str(concurrency))
    processes = len(worker.children())

    def all_slots_busy() -> dict[str, list[int]]:
        runs = executions(log)
        return runs if len(runs) == concurrency else {}

    started = wait_until(all_slots_busy, message="every slot running a long task")
    victim = started[long[0].id][0]
    os.kill(victim, signal.SIGKILL)
    killed_at = time.monotonic()
    killed = {task_id for task_id, pids in started.items() if pids == [victim]}
    assert killed == ({r.id for r in long} if pool == "gevent" else {long[0].id}), started

    # The lease is 30 s: finishing well before means the supervisor released them at once.
    for result in long + short:
        if result.id in killed:
            assert result.get(timeout=15) == result.id
    assert time.monotonic() - killed_at < 12, "killed tasks ran again only after a long wait"
    for result in long + short:
        assert result.get(timeout=30) == result.id
        assert result.status == "SUCCESS"

    held = concurrency + 100 if pool == "gevent" else 1  # gevent had claimed everything
    assert f"(pid {victim}) died with signal 9" in worker.log()
    assert f"{held} message(s) released" in worker.log(), worker.log()
    runs = executions(log)
    assert set(runs) == {r.id for r in long + short}, "a message was lost"
    for task_id, pids in runs.items():
        if task_id in killed:
            assert len(pids) == 2 and pids[0] == victim and pids[1] != victim, (task_id, pids)
        else:
            assert pids != [victim] and len(pids) == 1, f"{task_id} ran {len(pids)} times: {pids}"
    replaced(worker, victim, processes)
    settled(redis_project)
    assert "Traceback" not in worker.log()
    assert worker.stop() == 0


# -- 2. a worker process frozen past its lease -------------------------------------------------
@normal_leg_only  # leases between worker processes: the test process only sends and waits
def test_frozen_worker_past_its_lease_has_its_stale_ack_refused(redis_project: Project,
                                                                tmp_path: Path) -> None:
    tasks = load(redis_project, "\napp.conf.update(broker_lease_timeout=2)\n")
    log = tmp_path / "runs.txt"
    frozen = redis_project.start_worker("-P", "prefork", "-c", "1", "-n", "frozen@test")
    [child] = frozen.children()
    result = tasks.record.delay(str(log), 3.0)
    wait_until(lambda: executions(log).get(result.id), message="task started")
    os.kill(child, signal.SIGSTOP)
    try:
        stopped_at = time.monotonic()
        # Started only now, so the first delivery is surely the frozen worker's.
        rescuer = redis_project.start_worker("-P", "threads", "-c", "2", "-n", "rescuer@test")
        wait_until(lambda: len(executions(log)[result.id]) == 2, timeout=15,
                   message="another worker took the message over")
        took_over = time.monotonic() - stopped_at
        # The lease (2 s, renewed every 2/3 s until the freeze) had to run out first.
        assert took_over > 1.2, f"taken over {took_over:.2f}s after the freeze, within its lease"
        assert result.get(timeout=10) == result.id
        assert psutil.Process(child).status() == psutil.STATUS_STOPPED
        assert "ack of message" not in rescuer.log()
    finally:
        os.kill(child, signal.SIGCONT)
    # Thawed: the task's sleep is long over, it finishes and tries to ack with its old token.
    frozen.wait_for_log("refused: its lease passed to another worker", timeout=15)
    assert frozen.log().count("ack of message") == 1, frozen.log()
    runs = executions(log)[result.id]
    assert len(runs) == 2 and runs[0] == child and runs[1] in rescuer.children(), runs
    assert result.status == "SUCCESS"
    settled(redis_project)
    # Its supervisor saw nothing wrong: the process was alive all along, and still serves.
    assert frozen.children() == [child]
    assert "died" not in frozen.log()
    assert tasks.add.delay(2, 3).get(timeout=10) == 5
    assert "Traceback" not in frozen.log() + rescuer.log()
    assert rescuer.stop() == 0
    assert frozen.stop() == 0


# -- 3. redis-server restarted and crashing under load -----------------------------------------
@pytest.mark.timeout(180)
def test_redis_restart_under_load_loses_no_acknowledged_enqueue(
        fresh_project: Project, fresh_redis: RedisServer, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    # A claim whose reply is lost with the connection comes back when its lease runs out.
    tasks = load(fresh_project, "\napp.conf.update(broker_lease_timeout=3)\n")
    log = tmp_path / "runs.txt"
    worker = fresh_project.start_worker("-P", "gevent", "-c", "50")
    acknowledged: list[str] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def produce() -> None:
        while not stop.is_set():
            try:
                acknowledged.append(tasks.record.delay(str(log)).id)
            except BaseException as exc:
                errors.append(exc)
            time.sleep(0.001)

    producer = threading.Thread(target=produce, name="producer", daemon=True)
    producer.start()
    outages = 0
    try:
        time.sleep(1.5)
        fresh_redis.restart()  # clean: SIGTERM, the AOF is fsynced, same port and directory
        outages += 1
        time.sleep(2.0)
        before = len(acknowledged)
        fresh_redis.kill()  # a crash: only what was fsynced survives (appendfsync always)
        fresh_redis.start()
        outages += 1
        time.sleep(2.0)
        assert len(acknowledged) > before, "the producer did not resume after the crash"
        # A long one, past the producer's patience: its .delay() calls fail, cleanly.
        tasks.app.broker.retry_for(0.5)
        fresh_redis.kill()
        time.sleep(1.5)
        fresh_redis.start()
        outages += 1
        time.sleep(2.0)
    finally:
        stop.set()
        producer.join(30)
    assert not producer.is_alive()
    assert errors, "no .delay() failed although Redis was down 1.5s and patience was 0.5s"
    assert all(isinstance(exc, BrokerUnreachable) for exc in errors), errors
    # Enqueues were under way during the outages and waited them out (one line each way).
    producer_lost = [r for r in caplog.records if r.getMessage().startswith(
        "lost the connection to Redis broker")]
    assert 1 <= len(producer_lost) <= outages, [r.getMessage() for r in producer_lost]
    assert len(acknowledged) > 500, f"only {len(acknowledged)} tasks sent: no load"

    wait_until(lambda: set(acknowledged) <= set(executions(log)), timeout=40, interval=0.2,
               message="every acknowledged task ran")
    for task_id in acknowledged:
        assert tasks.app.AsyncResult(task_id).get(timeout=10) == task_id
    runs = executions(log)
    assert len(set(runs) - set(acknowledged)) <= len(errors), "tasks nobody sent ran"
    duplicates = {task_id: pids for task_id, pids in runs.items() if len(pids) > 1}
    assert len(duplicates) < 0.05 * len(acknowledged), (
        f"{len(duplicates)} of {len(acknowledged)} tasks ran more than once")
    settled(fresh_project)
    assert worker.proc.poll() is None

    text = worker.log()
    assert "Traceback" not in text, text
    lines = connection_lines(text)
    for (process, verb, what), count in lines.items():
        assert count <= outages, f"{process} logged {count} '{verb}' lines for its {what}: {lines}"
        if verb == "lost":
            assert lines[(process, "reconnected", what)] == count, f"{process}: {lines}"
    # Whether an outage costs the broker's or the backend's connection (or both, or neither:
    # redis-py quietly replaces a pooled socket the server closed while it was idle)
    # depends on what was on the wire at that moment; but under load something was.
    noticed = sum(count for (process, verb, _), count in lines.items()
                  if verb == "lost" and process != "MainProcess")
    assert noticed >= 1, f"the worker process noticed no outage: {lines}"
    assert worker.stop() == 0


# -- 4. the server kills every client connection, again and again ------------------------------
@pytest.mark.timeout(180)
# The test process sends its 2000 tasks while its own connections are killed too: the
# patched leg runs that once; the worker's pool makes no difference to the client.
@pytest.mark.parametrize("pool,concurrency", [
    ("gevent", 50), pytest.param("prefork", 2, marks=normal_leg_only)])
def test_client_kill_while_processing_loses_nothing(private_project: Project,
                                                    private_redis: RedisServer, tmp_path: Path,
                                                    pool: str, concurrency: int) -> None:
    tasks = load(private_project, "\napp.conf.update(broker_lease_timeout=3)\n")
    log = tmp_path / "runs.txt"
    worker = private_project.start_worker("-P", pool, "-c", str(concurrency))
    killer = private_redis.client()
    kills: list[int] = []
    stop = threading.Event()

    def kill_clients() -> None:
        while not stop.wait(0.05):
            kills.append(int(killer.client_kill_filter(_type="normal", skipme=True)))

    thread = threading.Thread(target=kill_clients, name="killer", daemon=True)
    thread.start()
    try:
        # gevent runs 2000 instant tasks in well under a second: make them last ~2 s in all.
        seconds = 0.05 if pool == "gevent" else 0.0
        ids = [tasks.record.delay(str(log), seconds).id for _ in range(2000)]
        wait_until(lambda: set(ids) <= set(executions(log)), timeout=60, interval=0.2,
                   message="every task ran")
    finally:
        stop.set()
        thread.join(10)
    assert len(kills) >= 10 and sum(kills) >= 10, f"CLIENT KILL killed too little: {kills}"
    for task_id in ids:
        assert tasks.app.AsyncResult(task_id).get(timeout=10) == task_id
    runs = executions(log)
    assert set(runs) == set(ids), "tasks nobody sent ran"
    duplicates = {task_id: pids for task_id, pids in runs.items() if len(pids) > 1}
    assert len(duplicates) < 0.01 * len(ids), f"{len(duplicates)} tasks ran twice: {duplicates}"
    settled(private_project)
    assert worker.proc.poll() is None
    assert "Traceback" not in worker.log(), worker.log()
    assert worker.stop() == 0


# -- 5. nothing listening at the URL -----------------------------------------------------------
@pytest.fixture
def unreachable_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Project, str]:
    """A project whose broker and backend URL name a port nobody listens on."""
    address = f"127.0.0.1:{free_port()}"
    project = project_on(tmp_path, f"redis://{address}/0", monkeypatch)
    project.write_tasks("\napp.conf.update(broker_reconnect_timeout=1)\n")
    return project, address


def test_worker_on_unreachable_redis_exits_with_one_clear_line(
        unreachable_project: tuple[Project, str]) -> None:
    project, address = unreachable_project
    began = time.monotonic()
    proc = project.cli("-A", "tasks", "worker", "-P", "threads", "-c", "1", check=False,
                       timeout=60)
    took = time.monotonic() - began
    assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)
    assert took < 10, f"the worker took {took:.1f}s to give up"
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and address in lines[0], (
        "expected exactly one line, the error naming the URL; the worker's startup PING "
        f"(retry=False) also logged the reconnector's 'retrying with backoff' warning:\n"
        f"{proc.stderr}")


def test_call_on_unreachable_redis_fails_cleanly(unreachable_project: tuple[Project, str]
                                                 ) -> None:
    project, address = unreachable_project
    began = time.monotonic()
    proc = project.cli("-A", "tasks", "call", "tasks.add", "--args", "[1, 2]", check=False,
                       timeout=60)
    took = time.monotonic() - began
    assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and address in errors[0], proc.stderr
    assert len(proc.stderr.strip().splitlines()) <= 2, proc.stderr  # + "lost the connection"
    assert proc.stdout == "", "an id was printed for a task that was never sent"
    # tasks.py sets broker_reconnect_timeout=1 (the default, 20 s, would make this slow).
    assert 1.0 <= took < 10, f"celeriac call gave up after {took:.1f}s"


# -- 6. countdown and eta: kept in Redis, not in a worker ----------------------------------------
@normal_leg_only  # where the worker keeps a countdown: the test process only sends and waits
def test_countdown_waits_in_redis_and_survives_a_worker_restart(redis_project: Project,
                                                                tmp_path: Path) -> None:
    tasks = load(redis_project)
    log = tmp_path / "runs.txt"
    first = redis_project.start_worker("-P", "gevent", "-c", "10")
    sent = time.time()
    # Long enough for the counts below to be read before either is due on a loaded machine.
    soon = tasks.stamp.apply_async((str(log),), countdown=3.0)
    later = tasks.stamp.apply_async((str(log),), eta=sent + 8.0)
    counts = redis_project.queue()
    assert counts == {"ready": 0, "scheduled": 2, "in_flight": 0, "dead": 0}, counts

    began = soon.get(timeout=12)
    assert began >= sent + 3.0, f"ran {began - sent:.3f}s after sending, countdown was 3s"
    assert began < sent + 5.0, f"ran {began - sent:.3f}s after sending: woken late"
    # The other one is still in Redis, not in the worker's memory: stop it and start another.
    counts = redis_project.queue()
    assert counts == {"ready": 0, "scheduled": 1, "in_flight": 0, "dead": 0}, counts
    assert first.stop() == 0
    assert time.time() < sent + 7.0, "too slow to stop the worker before the eta"
    assert later.status == "PENDING"
    second = redis_project.start_worker("-P", "threads", "-c", "2")
    began = later.get(timeout=15)
    assert began >= sent + 8.0, f"ran {began - sent:.3f}s after sending, eta was 8s"
    runs = executions(log)
    assert len(runs[soon.id]) == 1 and len(runs[later.id]) == 1, runs
    assert runs[later.id][0] in second.children()
    settled(redis_project)
    assert second.stop() == 0


# -- 7. tasks that wait for other tasks inside a gevent worker -----------------------------------
@normal_leg_only  # the waiting happens inside the gevent worker, not in the test process
def test_gevent_tasks_wait_for_results_of_other_tasks(redis_project: Project,
                                                      tmp_path: Path) -> None:
    tasks = load(redis_project)
    log = tmp_path / "runs.txt"
    # Children on a pool of their own: parents filling every slot cannot starve them.
    worker = redis_project.start_worker("-P", "gevent:20:celery", "-P", "gevent:20:children")
    began = time.monotonic()
    parents = [tasks.parent.delay(str(log), i) for i in range(50)]
    assert [p.get(timeout=30) for p in parents] == [2 * i + 1 for i in range(50)]
    took = time.monotonic() - began
    # 50 parents, 20 at once, each waiting 0.5 s for its child: about 1.5 s when they overlap.
    assert took < 8, f"50 parents took {took:.1f}s: they did not wait concurrently"
    assert all(len(pids) == 1 for pids in executions(log).values())
    assert len(executions(log)) == 50
    settled_queues = redis_project.status()["queues"]
    for name in ("celery", "children"):
        counts = settled_queues[name]
        assert counts["ready"] == counts["in_flight"] == counts["dead"] == 0, settled_queues
    text = worker.log()
    assert "Traceback" not in text and "blocking the event loop" not in text, text
    assert worker.stop() == 0


# -- lost replies: the command ran on the server, the client saw the connection drop --------------
class LoseFirstReply:
    """Stands in for one of the broker's scripts: the first call runs on the server, then
    ``meanwhile()`` happens, then the reply is "lost" with the connection; later calls pass."""

    def __init__(self, script: Callable[..., Any], meanwhile: Callable[[], None]) -> None:
        self.script = script
        self.meanwhile = meanwhile
        self.calls = 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        value = self.script(*args, **kwargs)
        if self.calls == 1:
            self.meanwhile()
            raise redis.ConnectionError("Connection closed by server. (simulated)")
        return value


def lose_first_reply(broker: Any, name: str, meanwhile: Callable[[], None] = lambda: None
                     ) -> LoseFirstReply:
    fake = LoseFirstReply(broker._script(name), meanwhile)
    broker._scripts[name] = fake
    return fake


def test_publish_retried_after_a_lost_reply_is_not_delivered_twice(redis_url: str) -> None:
    producer = broker_from_url(redis_url)
    worker = broker_from_url(redis_url)
    ran: list[Delivery] = []

    def worker_runs_and_acks_it() -> None:  # a fast worker, between the publish and its retry
        [delivery] = worker.fetch(["q"], 10, consumer="w", lease=30)
        ran.append(delivery)
        assert worker.ack([delivery]) == [True]

    fake = lose_first_reply(producer, "publish", worker_runs_and_acks_it)
    producer.publish([OutgoingMessage(queue="q", body=b"once")])
    assert fake.calls == 2 and len(ran) == 1
    again = worker.fetch(["q"], 10, consumer="w", lease=30)
    assert again == [], (
        "the publish retried after its reply was lost stored the message again, because the "
        "worker had already run and acked it (publish.lua's HSETNX only sees a message that "
        f"still exists): it was delivered twice, the second time as {again}")


def test_ack_retried_after_a_lost_reply_reports_success(redis_url: str) -> None:
    broker = broker_from_url(redis_url)
    broker.publish([OutgoingMessage(queue="q", body=b"x")])
    [delivery] = broker.fetch(["q"], 1, consumer="w", lease=30)
    fake = lose_first_reply(broker, "settle")
    acked = broker.ack([delivery])
    assert fake.calls == 2
    assert broker.stats()["q"].in_flight == 0 and broker.fetch(["q"], 1, consumer="w", lease=30) == []
    assert acked == [True], (
        "the ack took effect on its first try, but its retry (reply lost) found the message "
        "gone and reported the token stale: the worker then logs 'ack of message ... refused: "
        "its lease passed to another worker (the task may run twice)', which is false")
