"""The dashboard's task search and task detail against a real ``celeriac worker`` (``-E``),
with broker and result backend on SQLite and on Redis: after the tasks ran, search
finds them by name and state (a running ``track_started`` task under STARTED, then
under SUCCESS only), and a task's detail has its arguments, traceback, parent and
children, and its events from the broker's event log.
"""

from __future__ import annotations

import json
import sqlite3
import sys

import pytest
import redis
from conftest import Project, project_on, wait_until

EXTRA = r'''
app.conf.result_extended = True

@app.task(bind=True)
def fan(self, n):
    for i in range(n):
        add.delay(i, 1)
    return n

@app.task(track_started=True)
def gated(path):
    return wait_for(path)
'''


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_search_finds_tasks_by_name_and_state_after_they_ran(
        request: pytest.FixtureRequest, kind: str) -> None:
    project: Project = project_on(request, kind)
    project.write_tasks(extra=EXTRA)
    app = project.app()
    tasks = sys.modules["tasks"]
    project.start_worker("-P", "threads", "-c", "4", "-E")
    backend = app.backend

    gate = project.path / "gate"
    running = tasks.gated.delay(str(gate))
    wait_until(lambda: backend.search(state="STARTED")[1] == 1, timeout=30,
               message="the gated task under STARTED")
    found, total = backend.search(name="tasks.gated", state="STARTED")
    assert total == 1 and found[0].task_id == running.id

    adds = [tasks.add.delay(i, i) for i in range(3)]
    fails = [tasks.fail.delay(f"boom {i}") for i in range(2)]
    parent = tasks.fan.delay(2)
    for result in [*adds, parent]:
        result.get(timeout=30)
    for result in fails:
        with pytest.raises(ValueError):
            result.get(timeout=30)
    children = [child.id for child in parent.children or []]
    assert len(children) == 2
    for child in children:
        app.AsyncResult(child).get(timeout=30)
    gate.write_text("go")
    running.get(timeout=30)

    found, total = backend.search(name="tasks.add", state="SUCCESS")
    assert total == 5  # three sent here, two by fan
    assert {item.task_id for item in found} == {r.id for r in adds} | set(children)
    assert all(item.queue == "celery" and item.worker for item in found)
    found, total = backend.search(state="FAILURE")
    assert total == 2 and {item.task_id for item in found} == {r.id for r in fails}
    assert backend.search(state="STARTED") == ([], 0)
    assert [item.task_id for item in backend.search(name="tasks.gated")[0]] == [running.id]
    everything, total = backend.search(limit=5)
    assert total == 9 and len(everything) == 5
    assert everything[0].task_id == running.id  # the newest store first
    rest = backend.search(offset=5, limit=5)
    assert rest[1] == 9 and len(rest[0]) == 4
    assert not {item.task_id for item in rest[0]} & {item.task_id for item in everything}
    assert backend.search(task_id_prefix=parent.id[:8])[0][0].task_id == parent.id

    failed = backend.task_detail(fails[0].id, broker=app.broker)
    assert failed is not None
    assert failed.record.args == ["boom 0"] and "ValueError: boom 0" in failed.record.traceback
    wait_until(lambda: len(backend.task_detail(fails[1].id, broker=app.broker).events) == 3,
               timeout=15, message="three events of the failed task")
    failed = backend.task_detail(fails[1].id, broker=app.broker)
    assert [event.type for event in failed.events] == [
        "task-received", "task-started", "task-failed"]
    fanned = backend.task_detail(parent.id, broker=app.broker)
    assert fanned is not None and fanned.children == children
    child = backend.task_detail(children[0])
    assert child is not None and child.parent_id == parent.id and child.events == []

    # The same search from the command line.
    shown = json.loads(project.cli("-A", "tasks", "tasks", "--name", "tasks.fail", "--state",
                                   "FAILURE", "--json").stdout)
    assert shown["total"] == 2
    assert {row["task_id"] for row in shown["tasks"]} == {r.id for r in fails}
    table = project.cli("-A", "tasks", "tasks", "--state", "SUCCESS", "--limit", "2").stdout
    assert "1-2 of 7" in table


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_with_result_index_off_the_worker_stores_no_index_and_search_refuses(
        request: pytest.FixtureRequest, kind: str) -> None:
    """``result_index = False`` reaches the worker's backend: results work as ever, the
    store writes no index (no ``tasks:`` key on Redis, no search index in SQLite), and
    ``celeriac tasks`` refuses, naming the setting."""
    project: Project = project_on(request, kind)
    project.write_tasks(extra="\napp.conf.result_index = False\n")
    app = project.app()
    tasks = sys.modules["tasks"]
    project.start_worker("-P", "threads", "-c", "2")
    results = [tasks.add.delay(i, i) for i in range(3)]
    assert [r.get(timeout=30) for r in results] == [0, 2, 4]
    backend = app.backend
    assert backend.index is False
    detail = backend.task_detail(results[0].id)
    assert detail is not None and detail.summary.state == "SUCCESS"
    if kind == "redis":
        raw = redis.Redis.from_url(backend.url.split("?")[0])
        try:
            assert raw.keys(f"{backend.prefix}:tasks:*") == []
            assert raw.exists(f"{backend.prefix}:result:{results[0].id}")
        finally:
            raw.close()
    else:
        with sqlite3.connect(backend.path) as conn:
            indexes = {row[0] for row in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'index'")}
        assert "results_recent" in indexes
        assert not indexes & {"results_by_state", "results_by_name"}
    refused = project.cli("-A", "tasks", "tasks", "--name", "tasks.add", check=False)
    assert refused.returncode != 0
    assert "result_index" in refused.stdout + refused.stderr
