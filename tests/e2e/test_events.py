"""End to end: ``celeriac events --dump`` shows what a worker node reported.

A gevent worker with a task that holds its event loop: the events name the
worker coming online, the task blocking the loop (with its stack) and the loop
free again, and, once the worker stops, the worker going offline.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from typing import Any

from conftest import Project, wait_until

EVENT_TASKS = r'''
@app.task
def hog(seconds):
    """Hold the event loop: a busy loop that never switches."""
    end = time.monotonic() + seconds
    while time.monotonic() < end: pass  # noqa: the blocking line
    return seconds
'''


def events(project: Project, *args: str) -> list[dict[str, Any]]:
    """``celeriac events --dump`` as parsed JSON lines."""
    out = project.cli("-A", "tasks", "events", "--dump", "--limit", "1000", *args).stdout
    return [json.loads(line) for line in out.splitlines()]


def of_type(found: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [e for e in found if e["type"] == kind]


def test_gevent_worker_events_show_a_blocking_task(project: Project) -> None:
    project.write_tasks(extra=EVENT_TASKS)
    project.app()
    tasks = sys.modules["tasks"]
    assert events(project) == []
    worker = project.start_worker("-P", "gevent", "-c", "10", "--max-blocking-time", "0.1")
    [node] = [w["name"] for w in wait_until(lambda: project.status()["workers"], timeout=10,
                                            message="a live worker")]
    hog = tasks.hog.delay(0.5)
    assert hog.get(timeout=30) == 0.5
    found = wait_until(lambda: (lambda got: got if of_type(got, "task-unblocked") else None)(
        events(project)), timeout=10, message="a task-unblocked event")

    [online] = of_type(found, "worker-online")
    assert online["worker"] == node
    [blocked] = of_type(found, "task-blocked")
    [unblocked] = of_type(found, "task-unblocked")
    assert found.index(online) < found.index(blocked) < found.index(unblocked)
    assert [e["seq"] for e in found] == sorted({e["seq"] for e in found})
    [child] = worker.children()
    for event in (blocked, unblocked):
        assert event["worker"] == node
        assert event["data"]["task"] == "tasks.hog"
        assert event["data"]["id"] == hog.id
        assert event["data"]["pid"] == child
    assert "in hog" in blocked["data"]["stack"], blocked
    assert 0.5 <= unblocked["data"]["seconds"] < 0.8, unblocked
    assert of_type(found, "worker-offline") == []

    # Paging: --after the last event seen shows nothing old.
    assert events(project, "--after", str(found[-1]["seq"])) == []

    assert worker.stop() == 0
    after_stop = events(project, "--after", str(found[-1]["seq"]))
    [offline] = of_type(after_stop, "worker-offline")
    assert offline["worker"] == node


def test_events_follow_prints_new_events_until_sigterm(project: Project) -> None:
    app = project.app()
    from celeriac.brokers import WorkerEvent

    follower = subprocess.Popen(
        [sys.executable, "-m", "celeriac", "-A", "tasks", "events", "--dump", "--follow"],
        cwd=project.path, env=project.env, stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(0.5)
        app.broker.emit([WorkerEvent(type="worker-online", worker="n1", data={"k": 1})])
        assert follower.stdout is not None
        line = json.loads(follower.stdout.readline())
        assert (line["type"], line["worker"], line["data"]) == ("worker-online", "n1", {"k": 1})
        follower.send_signal(signal.SIGTERM)
        assert follower.wait(10) == 0
    finally:
        if follower.poll() is None:
            follower.kill()
