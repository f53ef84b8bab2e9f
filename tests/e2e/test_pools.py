"""The pool contract, end to end: every pool, same tasks, a real worker.

Each test starts ``celeriac -A tasks worker -P <pool>`` as a subprocess, exactly
as a user would, on a SQLite broker in a temporary directory, and talks to it
through the same app from the test process. A new pool is done when it passes
this file: add its ``-P`` name to :data:`POOLS`.

Timing is measured by the tasks themselves (they return when they started and
ended), never by asserting how fast something was; waits have generous upper
bounds and only decide "did it happen".
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest
from conftest import Project, Worker, executions, stop_project, wait_until

from celeriac import TaskError
from celeriac.brokers.base import OutgoingMessage
from celeriac.worker.heap import YOUNG_THRESHOLD

#: Every ``-P`` pool; each test below runs once per pool.
POOLS = ["solo", "threads", "prefork", "gevent", "eventlet", "asyncio"]
#: Pools that run one task at a time in one process whatever ``-c`` says.
SERIAL_POOLS = {"solo"}
#: Pools that run ``-c`` tasks as greenlets of one process; patching makes the
#: ``time.sleep`` of the tasks below cooperative there.
GREEN_POOLS = {"gevent", "eventlet"}

#: Tasks added to the project's ``tasks.py`` for these tests.
EXTRA = r'''
from celeriac import SoftTimeLimitExceeded

@app.task
def interval(seconds):
    """Sleep, and say when this ran and where."""
    start = time.time()
    time.sleep(seconds)
    return [start, time.time(), os.getpid()]

@app.task
def now():
    return time.time()

@app.task(bind=True)
def queue_of(self):
    return self.request.queue

@app.task(bind=True, max_retries=5)
def flaky(self, path, times):
    """Fail ``times`` times (retrying after 0.1 s), recording the retries seen by each run."""
    with open(path, "a") as f:
        f.write(f"{self.request.retries}\n")
    if self.request.retries < times:
        raise self.retry(countdown=0.1)
    return self.request.retries

@app.task
def spin():
    """Loop until the soft time limit interrupts it: Python bytecode (which a thread's
    async exception needs) and short sleeps (which a green pool's timer needs)."""
    try:
        while True:
            sum(range(1000))
            time.sleep(0.01)
    except SoftTimeLimitExceeded:
        return "soft limit"

@app.task(acks_late=False)
def early(x):
    return x * 2

@app.task
def collector():
    """The garbage collector of the process running this task."""
    import gc
    return [gc.isenabled(), gc.get_threshold()[0], gc.get_freeze_count()]
'''


@pytest.fixture(scope="module", params=POOLS)
def pool(request: pytest.FixtureRequest) -> str:
    """Module-scoped, so that pytest runs every test of one pool before the next pool and
    :func:`node` starts one worker per pool."""
    name: str = request.param
    return name


@dataclass
class Node:
    """A worker of the pool under test (``-c 2``) in a project of its own."""

    project: Project
    tasks: ModuleType
    worker: Worker


@pytest.fixture(scope="module")
def node(pool: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    """One worker per pool for the tests that only send tasks and read their own results.

    They leave nothing behind for each other (each waits for its results, and none
    changes the worker), so one start serves them all; a test that needs flags of its
    own, or messages in the broker before the worker starts, starts its own worker. The
    shutdown at the end must still be warm.
    """
    path = tmp_path_factory.mktemp(f"node-{pool}")
    project = Project(path, f"sqlite:///{path / 'celeriac.db'}")
    project.write_tasks(EXTRA)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CELERIAC_BROKER_URL", project.broker_url)
        patch.setenv("CELERIAC_RESULT_BACKEND", project.broker_url)
        project.app()
        tasks = sys.modules["tasks"]
        # Connected now, to this project's database, whatever later tests import or set.
        assert tasks.app.broker and tasks.app.backend
        worker = project.start_worker("-P", pool, "-c", "2")
        try:
            yield Node(project, tasks, worker)
            stop(worker)
        finally:
            stop_project(project)
            tasks.app.close()


@pytest.fixture
def tasks(project: Project) -> ModuleType:
    """The project's ``tasks`` module (with :data:`EXTRA`), imported in the test process."""
    project.write_tasks(EXTRA)
    project.app()
    return sys.modules["tasks"]


def stop(worker: Worker) -> None:
    """A warm shutdown that must succeed."""
    assert worker.stop() == 0, worker.log()


def test_tasks_run_and_results_come_back(node: Node) -> None:
    project, tasks = node.project, node.tasks
    results = [tasks.add.delay(i, i) for i in range(40)]
    assert [r.get(timeout=30) for r in results] == [2 * i for i in range(40)]
    assert {r.status for r in results} == {"SUCCESS"}
    wait_until(lambda: project.queue()["in_flight"] == 0, message="every message acked")
    assert project.queue() == {"ready": 0, "scheduled": 0, "in_flight": 0, "dead": 0}


def test_the_collector_is_set_for_a_long_run(node: Node) -> None:
    """Every pool's process freezes what it made before the first task and raises the
    young threshold (celeriac.worker.heap)."""
    enabled, young, frozen = node.tasks.collector.delay().get(timeout=30)
    assert enabled
    assert young == YOUNG_THRESHOLD
    assert frozen > 5000  # the imports, the app and the pool, frozen before the first task


def test_failure_is_stored_and_reraised(node: Node) -> None:
    tasks = node.tasks
    result = tasks.fail.delay("boom")
    with pytest.raises(ValueError, match="boom"):
        result.get(timeout=30)
    assert result.status == "FAILURE"
    assert "ValueError" in (result.traceback or "")
    assert tasks.add.delay(1, 2).get(timeout=30) == 3  # the worker goes on


def test_concurrency_is_real(project: Project, tasks: ModuleType, pool: str) -> None:
    worker = project.start_worker("-P", pool, "-c", "4")
    runs = sorted(r.get(timeout=30) for r in [tasks.interval.delay(0.5) for _ in range(4)])
    starts, ends = [run[0] for run in runs], [run[1] for run in runs]
    if pool in SERIAL_POOLS:
        # One at a time: each run starts after the previous one ended.
        assert all(later >= earlier for earlier, later in zip(ends[:-1], starts[1:], strict=True)), runs
    else:
        # All four were running at one instant: the last start precedes the first end.
        assert max(starts) < min(ends), runs
    if pool == "prefork":
        assert len({run[2] for run in runs}) == 4, "prefork runs each task in its own process"
    if pool in GREEN_POOLS:
        assert len({run[2] for run in runs}) == 1, "a green pool runs them in one process"
    stop(worker)


def test_countdown_runs_after_its_delay(node: Node) -> None:
    tasks = node.tasks
    sent = time.time()
    delayed = tasks.now.apply_async(countdown=1.0)
    assert tasks.app.broker.stats()["celery"].scheduled == 1
    prompt = tasks.now.delay()
    ran_prompt, ran_delayed = prompt.get(timeout=30), delayed.get(timeout=30)
    assert ran_delayed >= sent + 1.0, "a countdown task ran before its delay"
    assert ran_prompt < ran_delayed, "a waiting countdown task held up the queue"


def test_consumes_every_listed_queue(project: Project, tasks: ModuleType, pool: str) -> None:
    other = tasks.queue_of.apply_async(queue="c")
    worker = project.start_worker("-P", pool, "-Q", "a,b")
    assert tasks.queue_of.apply_async(queue="a").get(timeout=30) == "a"
    assert tasks.queue_of.apply_async(queue="b").get(timeout=30) == "b"
    assert other.status == "PENDING"
    assert project.queue("c")["ready"] == 1, "a queue not listed with -Q was consumed"
    stop(worker)


def test_higher_priority_runs_first(project: Project, tasks: ModuleType, pool: str,
                                    tmp_path: Path) -> None:
    log = tmp_path / "runs.txt"
    low = [tasks.record.apply_async((str(log),), priority=0) for _ in range(3)]
    high = tasks.record.apply_async((str(log),), priority=9)
    worker = project.start_worker("-P", pool, "-c", "1")
    for result in [*low, high]:
        result.get(timeout=30)
    first = log.read_text().split()[0]
    assert first == high.id, "the priority 9 task, sent last, should run first"
    stop(worker)


def test_bound_task_sees_its_retries(node: Node, tmp_path: Path) -> None:
    log = tmp_path / "retries.txt"
    result = node.tasks.flaky.delay(str(log), 2)
    assert result.get(timeout=30) == 2
    assert log.read_text().split() == ["0", "1", "2"]


def test_soft_time_limit_raises_inside_the_task(project: Project, tasks: ModuleType,
                                                pool: str) -> None:
    worker = project.start_worker("-P", pool, "-c", "1", "--soft-time-limit", "0.5")
    assert tasks.spin.delay().get(timeout=30) == "soft limit"
    assert tasks.add.delay(2, 2).get(timeout=30) == 4
    stop(worker)


def test_max_tasks_per_child_recycles_processes(project: Project, tasks: ModuleType,
                                                pool: str) -> None:
    worker = project.start_worker("-P", pool, "-c", "2", "--max-tasks-per-child", "2")
    results = [tasks.pid.delay() for _ in range(8)]
    pids = [r.get(timeout=60) for r in results]
    assert len(set(pids)) >= 4, f"processes were not replaced: {pids}"
    over = {pid: pids.count(pid) for pid in set(pids) if pids.count(pid) > 2}
    assert not over, f"processes ran more than 2 tasks: {over}"
    assert worker.proc.poll() is None
    stop(worker)


def test_early_ack_task_runs(node: Node) -> None:
    project = node.project
    assert node.tasks.early.delay(21).get(timeout=30) == 42
    wait_until(lambda: project.queue()["in_flight"] == 0, message="message acked")
    assert project.queue()["ready"] == 0


def test_expired_task_is_revoked_not_run(project: Project, tasks: ModuleType, pool: str,
                                         tmp_path: Path) -> None:
    log = tmp_path / "runs.txt"
    expired = tasks.record.apply_async((str(log),), expires=0.5)
    time.sleep(1.0)
    worker = project.start_worker("-P", pool)
    assert tasks.add.delay(1, 1).get(timeout=30) == 2
    with pytest.raises(TaskError) as info:
        expired.get(timeout=30)
    assert info.value.exc_type == "TaskRevokedError"
    assert expired.status == "REVOKED"
    assert expired.id not in executions(log), "an expired task ran"
    wait_until(lambda: project.queue()["in_flight"] == 0, message="expired message acked")
    assert project.queue()["ready"] == 0
    stop(worker)


def test_messages_queued_first_each_run_once_and_bad_ones_are_dead_lettered(
        project: Project, tasks: ModuleType, pool: str, tmp_path: Path) -> None:
    """More messages queued before the worker starts than it has slots, a malformed one
    and one of an unknown task among them. A lone process holds the rest waiting and
    decodes them ahead while the first ones run; the gevent and asyncio pools hand them
    to freed slots from the slots' own thread. Each good one runs exactly once, and the
    two bad ones are dead-lettered with their reasons, as when they come one at a time."""
    log = tmp_path / "runs.txt"
    results = [tasks.record.delay(str(log), 0.2) for _ in range(6)]
    tasks.app.broker.publish([OutgoingMessage(queue="celery", body=b"not json")])
    unknown = tasks.app.send_task("tasks.nobody_registered_this")
    results += [tasks.record.delay(str(log), 0.2) for _ in range(6)]
    worker = project.start_worker("-P", pool, "-c", "2")
    assert [r.get(timeout=60) for r in results] == [r.id for r in results]
    runs = executions(log)
    assert sorted(len(runs[r.id]) for r in results) == [1] * len(results), runs
    wait_until(lambda: project.queue()["dead"] == 2, message="two dead letters")
    reasons = sorted(letter.reason for letter in tasks.app.broker.dead_letters())
    assert reasons[0].startswith("malformed message: message is not JSON"), reasons
    assert reasons[1] == "unknown task 'tasks.nobody_registered_this'", reasons
    assert unknown.status == "FAILURE"
    wait_until(lambda: project.queue()["in_flight"] == 0, message="every message settled")
    assert project.queue() == {"ready": 0, "scheduled": 0, "in_flight": 0, "dead": 2}
    stop(worker)
