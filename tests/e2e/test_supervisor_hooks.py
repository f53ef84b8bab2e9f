"""Tasks the supervisor ends itself still reach the hooks, as in Celery.

When a task's own process cannot report its end -- the supervisor killed it at the
task's hard time limit, or the process died on the task's last delivery -- the
supervisor runs the after-task hooks instead: ``task_failure`` (and
``task_postrun``), the task class's ``on_failure`` and ``after_return``, and with
``-E`` a ``task-failed`` event. A real worker on prefork, threads and gevent (a task
that blocks the event loop past its hard limit).
"""

from __future__ import annotations

import json
import sys
from typing import Any

import pytest
from conftest import Project, wait_until

from celeriac.exceptions import TimeLimitExceeded, WorkerLostError

HOOKED = r'''
import json
from celeriac import Task
from celeriac.signals import task_failure


def note(**fields):
    with open("hooks.log", "a") as f:
        f.write(json.dumps({**fields, "pid": os.getpid()}) + "\n")


@task_failure.connect
def on_task_failure(sender=None, task_id=None, exception=None, einfo=None, **kwargs):
    note(hook="task_failure", task=sender.name, id=task_id, exc=type(exception).__name__,
         einfo=type(einfo.exception).__name__)


class Noted(Task):
    def on_failure(self, exc, task_id, args, kwargs, einfo):
        note(hook="on_failure", task=self.name, id=task_id, exc=type(exc).__name__)

    def after_return(self, status, retval, task_id, args, kwargs, einfo):
        note(hook="after_return", task=self.name, id=task_id, status=status)


@app.task(base=Noted)
def overrun(seconds):
    time.sleep(seconds)


@app.task(base=Noted)
def spin(seconds):
    """Hold a green pool's event loop: its own timer cannot fire, the supervisor acts."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


@app.task(base=Noted)
def crash():
    os._exit(3)
'''


def hooks(project: Project) -> list[dict[str, Any]]:
    path = project.path / "hooks.log"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def events(project: Project) -> list[dict[str, Any]]:
    out = project.cli("-A", "tasks", "events", "--dump", "--limit", "1000").stdout
    return [json.loads(line) for line in out.splitlines()]


@pytest.mark.parametrize(("pool", "task"), [
    ("prefork", "overrun"), ("threads", "overrun"), ("gevent", "spin")])
def test_a_hard_time_limit_reaches_the_hooks(project: Project, pool: str, task: str) -> None:
    project.write_tasks(extra=HOOKED)
    project.app()
    tasks = sys.modules["tasks"]
    worker = project.start_worker("-P", pool, "-c", "2", "-E")
    result = getattr(tasks, task).apply_async((30,), time_limit=1)
    with pytest.raises(TimeLimitExceeded):
        result.get(timeout=30)
    found = wait_until(lambda: (lambda h: h if len(h) >= 3 else None)(
        [h for h in hooks(project) if h["id"] == result.id]), message="three hooks")
    assert sorted(h["hook"] for h in found) == ["after_return", "on_failure", "task_failure"]
    [failure] = [h for h in found if h["hook"] == "task_failure"]
    assert failure["exc"] == failure["einfo"] == "TimeLimitExceeded"
    assert failure["task"] == f"tasks.{task}"
    assert all(h["pid"] == worker.proc.pid for h in found), "sent by the supervisor"
    [after] = [h for h in found if h["hook"] == "after_return"]
    assert after["status"] == "FAILURE"
    failed = wait_until(lambda: [e for e in events(project) if e["type"] == "task-failed"
                                 and e["data"]["uuid"] == result.id],
                        message="a task-failed event")
    assert "TimeLimitExceeded" in failed[0]["data"]["exception"]
    assert failed[0]["data"]["name"] == f"tasks.{task}"
    # Failed once and acked: not delivered again.
    wait_until(lambda: project.queue()["in_flight"] == 0, message="settled")
    assert project.queue()["dead"] == 0 and tasks.app.AsyncResult(result.id).state == "FAILURE"


def test_a_last_delivery_lost_with_its_process_reaches_the_hooks(project: Project) -> None:
    project.write_tasks(extra=HOOKED)
    module = project.path / "tasks.py"
    module.write_text(module.read_text().replace(
        'app = Celeriac("tasks")', 'app = Celeriac("tasks", broker_max_deliveries=2)'))
    project.app()
    tasks = sys.modules["tasks"]
    project.start_worker("-P", "prefork", "-c", "1")
    result = tasks.crash.delay()
    with pytest.raises(WorkerLostError):
        result.get(timeout=60)
    found = wait_until(lambda: (lambda h: h if len(h) >= 3 else None)(
        [h for h in hooks(project) if h["id"] == result.id]), message="three hooks")
    assert sorted(h["hook"] for h in found) == ["after_return", "on_failure", "task_failure"]
    assert {h.get("exc") for h in found if h["hook"] != "after_return"} == {"WorkerLostError"}
