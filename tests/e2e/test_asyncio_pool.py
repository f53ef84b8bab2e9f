"""``-P asyncio`` end to end: sync tasks (where they run, hard limits enforced in the
process), mixed pools with ``pool="asyncio"`` routing, and ``-c N`` running N coroutines
at once in one process.

The pool contract (results, failures, concurrency of ``-c``, soft limit, priorities,
recycling...) is tests/e2e/test_pools.py, which runs every pool; revoke-terminate is in
tests/e2e/test_revoke.py and ``pool_grow``/``pool_shrink`` in tests/e2e/test_control.py.
Async tasks on this pool (limits, terminate, blocking detection) are in
tests/e2e/test_aio_tasks.py, which runs them on every pool.
"""

from __future__ import annotations

import importlib.util
import sys
import time
from pathlib import Path
from types import ModuleType

import pytest
from conftest import Project, Worker, normal_leg_only, wait_until

from celeriac import TimeLimitExceeded
from celeriac.worker.heap import young_threshold

EXTRA = r'''
import asyncio, gc, threading

@app.task
async def abarrier(path, n):
    """Note its start, then wait until n tasks have started: it only returns once n
    ran at once (none returns before the n-th starts). Returns how many it saw."""
    with open(path, "a") as f:
        f.write("started\n")
    deadline = time.monotonic() + 120
    while True:
        with open(path) as f:
            seen = len(f.read().splitlines())
        if seen >= n or time.monotonic() > deadline:
            await asyncio.sleep(1)  # a one-second task, once all are in
            return seen
        await asyncio.sleep(0.2)

@app.task
async def loop_kind():
    """The module of the loop running this coroutine's class (uvloop's, when installed)."""
    return type(asyncio.get_running_loop()).__module__

@app.task
def placement():
    """Where a sync task body runs: its process and thread."""
    return {"pid": os.getpid(), "thread": threading.current_thread().name,
            "main": threading.current_thread() is threading.main_thread()}

@app.task
def interval(seconds):
    start = time.time()
    time.sleep(seconds)
    return [start, time.time(), os.getpid()]

@app.task
def spin_forever():
    while True:
        sum(range(1000))

@app.task(pool="asyncio")
def on_asyncio():
    return {"pid": os.getpid(), "thread": threading.current_thread().name,
            "young": gc.get_threshold()[0]}

@app.task(pool="prefork")
def on_prefork():
    return {"pid": os.getpid(), "thread": threading.current_thread().name,
            "young": gc.get_threshold()[0]}
'''

# What happens inside the worker processes: the normal leg runs it.
pytestmark = normal_leg_only


@pytest.fixture
def tasks(project: Project) -> ModuleType:
    project.write_tasks(EXTRA)
    project.app()
    return sys.modules["tasks"]


def only_child(worker: Worker) -> int:
    [child] = wait_until(worker.children, message="one worker process")
    return int(child)


def test_sync_tasks_run_on_the_sync_threads(project: Project, tasks: ModuleType) -> None:
    worker = project.start_worker("-P", "asyncio", "-c", "50")
    child = only_child(worker)
    runs = [r.get(timeout=30) for r in [tasks.placement.delay() for _ in range(10)]]
    assert {run["pid"] for run in runs} == {child}, "one process runs -c 50"
    assert all(run["thread"].startswith("celeriac-sync") and not run["main"] for run in runs), runs
    assert "asyncio 1x50" in worker.log(), worker.log()
    # Coroutines run on uvloop's loop when it is installed (the ``asyncio`` extra).
    expected = "uvloop" if importlib.util.find_spec("uvloop") else "celeriac"
    assert tasks.loop_kind.delay().get(timeout=30).split(".")[0] == expected
    assert worker.stop() == 0


def test_hard_limit_ends_the_task_not_the_process(project: Project, tasks: ModuleType) -> None:
    worker = project.start_worker("-P", "asyncio", "-c", "10", "--time-limit", "1")
    child = only_child(worker)
    neighbours = [tasks.interval.apply_async((3.0,), time_limit=20) for _ in range(3)]
    spinner = tasks.spin_forever.delay()
    with pytest.raises(TimeLimitExceeded):
        spinner.get(timeout=30)
    # The neighbours outlive the supervisor's deadline for the spinner (limit + grace).
    runs = [r.get(timeout=30) for r in neighbours]
    assert {run[2] for run in runs} == {child}
    assert max(run[0] for run in runs) < min(run[1] for run in runs), "not run at once"
    assert worker.children() == [child], "the process was replaced"
    assert "killing" not in worker.log()
    wait_until(lambda: project.queue()["in_flight"] == 0, message="all settled")
    assert tasks.pid.delay().get(timeout=30) == child
    assert worker.stop() == 0


def test_a_body_stuck_in_a_c_call_fails_at_its_hard_limit(project: Project,
                                                         tasks: ModuleType) -> None:
    """``time.sleep(30)`` cannot be interrupted: the task still fails at its limit, and
    the process keeps running other tasks (the stuck thread frees itself later)."""
    worker = project.start_worker("-P", "asyncio", "-c", "4", "--time-limit", "1")
    child = only_child(worker)
    stuck = tasks.sleep.delay(30)
    started = time.monotonic()
    with pytest.raises(TimeLimitExceeded):
        stuck.get(timeout=30)
    assert time.monotonic() - started < 20, "it waited for the sleep"
    assert tasks.add.delay(2, 3).get(timeout=30) == 5
    assert worker.children() == [child]
    worker.wait_for_log(f"task tasks.sleep[{stuck.id}] ended (HardTimeLimit) but its thread "
                        "is stuck")
    # The abandoned thread (still in its sleep) does not hold the warm shutdown.
    assert worker.stop(timeout=15) == 0


def test_mixed_pools_route_by_pool_name(project: Project, tasks: ModuleType) -> None:
    worker = project.start_worker("-P", "asyncio:100:io", "-P", "prefork:2:cpu")
    children = set(wait_until(lambda: len(worker.children()) == 3 and worker.children(),
                              message="one asyncio process and two prefork processes"))
    io = [r.get(timeout=30) for r in [tasks.on_asyncio.delay() for _ in range(4)]]
    cpu = [r.get(timeout=30) for r in [tasks.on_prefork.delay() for _ in range(4)]]
    io_pids = {run["pid"] for run in io}
    assert len(io_pids) == 1 and all(run["thread"].startswith("celeriac-sync") for run in io)
    assert all(run["thread"] == "MainThread" for run in cpu)
    assert not io_pids & {run["pid"] for run in cpu}
    # Each process's collector is set for its own group's concurrency (celeriac.worker.heap).
    assert {run["young"] for run in io} == {young_threshold(100)} != {young_threshold(2)}
    assert {run["young"] for run in cpu} == {young_threshold(2)}
    assert io_pids | {run["pid"] for run in cpu} <= children
    assert tasks.pid.apply_async(queue="io").get(timeout=30) in io_pids

    status = project.status()
    [info] = status["workers"]
    assert {p["pool"] for p in info["pools"]} == {"asyncio", "prefork"}
    assert set(info["queues"]) == {"io", "celery.asyncio", "cpu", "celery.prefork"}
    assert status["unserved"] == []
    assert worker.stop() == 0


def test_c_n_runs_n_coroutines_at_once(project: Project, tasks: ModuleType,
                                       tmp_path: Path) -> None:
    """-c 200: 200 tasks awaiting at once in one process (each holds a job, no thread)."""
    count = 200
    path = tmp_path / "started.txt"
    worker = project.start_worker("-P", "asyncio", "-c", str(count))
    results = [tasks.abarrier.delay(str(path), count) for _ in range(count)]
    seen = [r.get(timeout=180) for r in results]
    # Every task saw all of them started before it returned: all ran at once.
    assert seen == [count] * count, sorted(set(seen))
    assert worker.stop() == 0, worker.log()
