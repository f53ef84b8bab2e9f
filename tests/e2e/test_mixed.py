"""Mixed pools under one supervisor, with tasks routed by the pool they need."""

from __future__ import annotations

import sys
from types import ModuleType

import psutil
from conftest import Project, wait_until

MIXED_TASKS = '''
import sys

@app.task(pool="prefork")
def where_cpu():
    return {"pid": os.getpid(), "patched": "gevent.monkey" in sys.modules}

@app.task(pool="gevent")
def where_io():
    import gevent.monkey
    return {"pid": os.getpid(), "patched": gevent.monkey.is_module_patched("socket")}
'''


def module(project: Project) -> ModuleType:
    """The project's freshly imported ``tasks`` module."""
    project.app()
    return sys.modules["tasks"]


def test_one_worker_runs_green_and_prefork_pools_each_on_its_queues(project: Project) -> None:
    project.write_tasks(MIXED_TASKS)
    tasks = module(project)
    worker = project.start_worker("-P", "gevent:20:io", "-P", "prefork:2:cpu")
    children = set(worker.children())
    assert len(children) == 3, "one gevent process and two prefork processes"

    cpu = [tasks.where_cpu.delay() for _ in range(4)]
    io = [tasks.where_io.delay() for _ in range(4)]
    cpu_runs = [r.get(timeout=30) for r in cpu]
    io_runs = [r.get(timeout=30) for r in io]
    assert all(not run["patched"] for run in cpu_runs), "a pool='prefork' task ran patched"
    assert all(run["patched"] for run in io_runs), "a pool='gevent' task ran unpatched"
    cpu_pids = {run["pid"] for run in cpu_runs}
    io_pids = {run["pid"] for run in io_runs}
    assert len(io_pids) == 1 and not cpu_pids & io_pids
    assert cpu_pids | io_pids <= children

    # Explicit queues of each group are served by that group only.
    on_io = tasks.pid.apply_async(queue="io").get(timeout=30)
    on_cpu = tasks.pid.apply_async(queue="cpu").get(timeout=30)
    assert on_io in io_pids and on_cpu not in io_pids

    status = project.status()
    [info] = status["workers"]
    assert {p["pool"] for p in info["pools"]} == {"gevent", "prefork"}
    assert set(info["queues"]) == {"io", "celery.gevent", "cpu", "celery.prefork"}
    assert status["unserved"] == []
    assert worker.stop() == 0


def test_a_task_for_a_pool_no_worker_runs_is_visible_in_status(project: Project) -> None:
    project.write_tasks(MIXED_TASKS)
    tasks = module(project)
    project.start_worker("-P", "threads", "-c", "2")
    assert tasks.add.delay(1, 1).get(timeout=30) == 2
    waiting = tasks.where_cpu.delay()

    def unserved() -> list[str]:
        return list(project.status()["unserved"])

    assert wait_until(unserved, timeout=10) == ["celery.prefork"]
    text = project.cli("-A", "tasks", "status").stdout
    assert "celery.prefork" in text and "no live worker" in text
    assert waiting.status == "PENDING"

    # A prefork worker started later picks it up.
    project.start_worker("-P", "prefork", "-c", "1")
    assert waiting.get(timeout=30)["patched"] is False
    assert psutil.pid_exists(project.workers[0].proc.pid)
