"""Task events end to end: ``celeriac worker -E`` and ``celeriac events`` as a user runs them.

A real worker subprocess with ``-E``, on SQLite and on Redis, runs tasks that
succeed, fail, retry, are rejected (unknown task) and expire, sent by this test
process with ``task_send_sent_event`` on. ``celeriac events`` reads them back:

* ``--dump``: each task's events in order with Celery's fields, every one from the
  node that ran it; ``worker-heartbeat`` from the supervisor;
* the one-line view, on a pipe: one line per task event (``STATE NAME ID WORKER
  RUNTIME [INFO]``), filtered by ``--type`` and ``--task``; with ``--follow`` it
  keeps printing as tasks run, until SIGTERM; on a terminal, a table;
* the stream stays capped (``EVENTS_KEPT``) however many tasks run;
* the gevent pool records events too, and a task terminated by replacing its
  prefork process is reported by the supervisor.
"""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from types import ModuleType
from typing import Any

import pytest
from conftest import BROKER_KINDS, Project, project_on, wait_until

from celeriac.brokers.base import EVENTS_KEPT

EXTRA = r'''
@app.task(bind=True)
def flaky(self):
    """Asks to be retried once, then succeeds."""
    if self.request.retries == 0:
        raise self.retry(countdown=0, exc=KeyError("not yet"))
    return "second time"
'''


@pytest.fixture(params=BROKER_KINDS)
def any_project(request: pytest.FixtureRequest) -> Project:
    """The ``project`` fixture (SQLite) and the ``redis_project`` one (Redis), in turn."""
    found: Project = project_on(request, request.param)
    return found


def load_tasks(project: Project, *, sent_events: bool = False) -> ModuleType:
    project.write_tasks(extra=EXTRA)
    app = project.app()
    app.conf.task_send_sent_event = sent_events  # before the first send builds the pipeline
    return sys.modules["tasks"]


def dump(project: Project, *args: str) -> list[dict[str, Any]]:
    """``celeriac events --dump``, parsed."""
    out = project.cli("-A", "tasks", "events", "--dump", "--limit", "100000", *args).stdout
    return [json.loads(line) for line in out.splitlines()]


def view(project: Project, *args: str) -> list[list[str]]:
    """``celeriac events`` on a pipe: one line per event, split into its columns."""
    out = project.cli("-A", "tasks", "events", *args).stdout
    return [line.split(maxsplit=5) for line in out.splitlines()]


def node_of(project: Project) -> str:
    [worker] = wait_until(lambda: project.status()["workers"], message="a live worker")
    name: str = worker["name"]
    return name


def of_task(found: list[dict[str, Any]], task_id: str) -> list[dict[str, Any]]:
    return [e for e in found if e["data"].get("uuid") == task_id]


def run_every_outcome(tasks: ModuleType) -> dict[str, str]:
    """Send a task that succeeds, one that fails, one retried once, an unknown one and an
    expired one; wait for their results; their ids by outcome."""
    app = tasks.app
    ids = {
        "success": tasks.add.delay(2, 3).id,
        "failure": tasks.fail.delay("boom").id,
        "retry": tasks.flaky.delay().id,
        "unknown": app.send_task("tasks.nope", [1]).id,
        "expired": tasks.add.apply_async(
            (1, 1), expires=datetime.now(timezone.utc) - timedelta(seconds=5)).id,
    }
    assert app.AsyncResult(ids["success"]).get(timeout=30) == 5
    assert app.AsyncResult(ids["retry"]).get(timeout=30) == "second time"
    for name in ("failure", "unknown", "expired"):
        wait_until(lambda name=name: app.AsyncResult(ids[name]).ready(), timeout=30,
                   message=f"the {name} task's result")
    return ids


FINAL = {"success": {"task-succeeded"}, "failure": {"task-failed"},
         "retry": {"task-retried", "task-succeeded"}, "unknown": {"task-rejected"},
         "expired": {"task-revoked"}}


def all_final(project: Project, ids: dict[str, str]) -> list[dict[str, Any]] | None:
    """The dump once every task's final events are in it (events are flushed in batches, and
    the retried run's task-retried may come after its retry has run)."""
    found = dump(project)
    done = all(FINAL[k] <= {e["type"] for e in of_task(found, ids[k])} for k in ids)
    return found if done else None


# -- every outcome, on SQLite and Redis -------------------------------------------------------
def test_a_worker_with_E_records_every_outcome_and_events_shows_them(any_project: Project
                                                                     ) -> None:
    project = any_project
    tasks = load_tasks(project, sent_events=True)
    worker = project.start_worker("-E", "-P", "threads", "-c", "4")
    node = node_of(project)
    ids = run_every_outcome(tasks)
    found = wait_until(lambda: all_final(project, ids), timeout=20, message="final events")

    sent = [e for e in found if e["type"] == "task-sent"]
    assert {e["data"]["uuid"] for e in sent} >= set(ids.values())
    assert all(e["worker"] == e["data"]["hostname"] and e["worker"].startswith("gen")
               for e in sent)
    by_worker = [e for e in found if e["type"] != "task-sent"]
    assert {e["worker"] for e in by_worker} == {node}
    assert [e["seq"] for e in found] == sorted(e["seq"] for e in found)

    def types(key: str) -> list[str]:
        return [e["type"] for e in of_task(found, ids[key]) if e["type"] != "task-sent"]

    assert types("success") == ["task-received", "task-started", "task-succeeded"]
    assert types("failure") == ["task-received", "task-started", "task-failed"]
    assert types("unknown") == ["task-rejected"]
    assert types("expired") == ["task-received", "task-revoked"]
    # The retry's own message may be received, and even run, before the first run's
    # task-retried is sent (another thread takes it at once; Celery's order is the same).
    retry = types("retry")
    assert retry[:2] == ["task-received", "task-started"]
    assert retry.index("task-succeeded") > retry.index("task-received", 1)
    assert sorted(retry) == sorted(["task-received", "task-started", "task-retried",
                                    "task-received", "task-started", "task-succeeded"])

    [received, started, succeeded] = of_task(by_worker, ids["success"])
    assert received["data"]["name"] == "tasks.add" and received["data"]["args"] == "[2, 3]"
    assert received["data"]["retries"] == 0 and received["data"]["root_id"] == ids["success"]
    assert started["data"]["pid"] in worker.children()
    assert succeeded["data"]["result"] == "5" and succeeded["data"]["runtime"] >= 0
    assert succeeded["data"]["hostname"] == node
    [failed] = [e for e in of_task(found, ids["failure"]) if e["type"] == "task-failed"]
    assert failed["data"]["exception"] == "ValueError('boom')"
    assert "raise ValueError(message)" in failed["data"]["traceback"]
    [retried] = [e for e in of_task(found, ids["retry"]) if e["type"] == "task-retried"]
    assert retried["data"]["exception"] == "KeyError('not yet')"
    [rejected] = of_task(by_worker, ids["unknown"])
    assert (rejected["data"]["name"], rejected["data"]["requeue"]) == ("tasks.nope", False)
    [revoked] = [e for e in of_task(found, ids["expired"]) if e["type"] == "task-revoked"]
    assert (revoked["data"]["expired"], revoked["data"]["terminated"]) == (True, False)

    beats = wait_until(lambda: dump(project, "--type", "worker-heartbeat"), timeout=10,
                       message="a worker-heartbeat")
    beat = beats[-1]["data"]
    assert beats[-1]["worker"] == beat["hostname"] == node
    assert beat["freq"] == 2.0 and beat["pool"] == "threads" and len(beat["loadavg"]) == 3
    assert (beat["sw_ident"], beat["sw_sys"]) == ("py-celeriac", os.uname().sysname)
    assert isinstance(beat["active"], int) and isinstance(beat["processed"], int)

    # -- the one-line view of the same events ----------------------------------------------
    lines = view(project)
    assert ["worker-online", node] == lines[0][:2]
    assert not any(line[0] == "worker-heartbeat" for line in lines)  # unless asked for
    task_lines = [line for line in lines if line[0].isupper()]
    # The producer's task-sent may reach the log after the worker's task-received on a
    # busy machine: its PENDING line then names the worker already seen.
    assert ["PENDING", "tasks.add", ids["success"]] in [line[:3] for line in task_lines]
    assert ["RECEIVED", "tasks.add", ids["success"], node, "-"] in task_lines
    [success] = [line for line in task_lines if line[0] == "SUCCESS" and line[2] == ids["success"]]
    assert success[:4] == ["SUCCESS", "tasks.add", ids["success"], node]
    assert success[4].endswith("s") and float(success[4][:-1]) >= 0
    [failure] = [line for line in task_lines if line[0] == "FAILURE"]
    assert failure[:4] == ["FAILURE", "tasks.fail", ids["failure"], node]
    assert failure[5] == "ValueError('boom')"
    [rejection] = [line for line in task_lines if line[0] == "REJECTED"]
    assert rejection[:5] == ["REJECTED", "tasks.nope", ids["unknown"], node, "-"]
    assert rejection[5].startswith("dead-lettered: no task named 'tasks.nope'")
    [expiry] = [line for line in task_lines if line[0] == "REVOKED"]
    assert expiry == ["REVOKED", "tasks.add", ids["expired"], node, "-", "expired"]
    # As above, the retry's own run may end before the first run's task-retried is logged,
    # so RETRY may be the last line of the three.
    states = [line[0] for line in task_lines if line[2] == ids["retry"]]
    assert states[0] == "PENDING" and {"RETRY", "SUCCESS"} <= set(states[1:])
    assert states.count("STARTED") == 2

    # -- filters ---------------------------------------------------------------------------
    assert {e["type"] for e in dump(project, "--type", "task-failed")} == {"task-failed"}
    some = dump(project, "--type", "task-succeeded,task-f*", "--type", "task-rejected")
    assert {e["type"] for e in some} == {"task-succeeded", "task-failed", "task-rejected"}
    named = view(project, "--task", "tasks.f*")
    assert named and {line[1] for line in named} == {"tasks.fail", "tasks.flaky"}
    assert [line[:3] for line in view(project, "--type", "task-succeeded", "--task",
                                      "tasks.flaky")] == [["SUCCESS", "tasks.flaky", ids["retry"]]]
    assert view(project, "--type", "worker-heartbeat")[0][:2] == ["worker-heartbeat", node]
    assert worker.stop() == 0


def test_an_unknown_event_type_is_refused_with_a_suggestion(project: Project) -> None:
    load_tasks(project)
    done = project.cli("-A", "tasks", "events", "--type", "task-succeded", check=False)
    assert done.returncode == 2
    assert "'task-succeded' matches no event type (did you mean 'task-succeeded'?)" in done.stderr


# -- following, on a pipe and on a terminal --------------------------------------------------
def test_the_view_follows_new_tasks_on_a_pipe_until_sigterm(project: Project) -> None:
    tasks = load_tasks(project)
    project.start_worker("-E", "-P", "threads", "-c", "2")
    follower = subprocess.Popen(
        [sys.executable, "-m", "celeriac", "-A", "tasks", "events", "--follow", "--task",
         "tasks.add"], cwd=project.path, env=project.env, stdout=subprocess.PIPE, text=True)
    try:
        task_id = tasks.add.delay(20, 22).id
        assert follower.stdout is not None
        seen: list[list[str]] = []
        while not seen or seen[-1][0] != "SUCCESS":
            seen.append(follower.stdout.readline().split(maxsplit=5))
        assert [line[0] for line in seen] == ["RECEIVED", "STARTED", "SUCCESS"]
        assert {line[2] for line in seen} == {task_id}
        follower.send_signal(signal.SIGTERM)
        assert follower.wait(10) == 0
    finally:
        if follower.poll() is None:
            follower.kill()


def test_on_a_terminal_the_view_is_a_table_of_tasks_and_workers(project: Project) -> None:
    tasks = load_tasks(project)
    project.start_worker("-E", "-P", "threads", "-c", "2")
    node = node_of(project)
    task_id = tasks.add.delay(1, 2).id
    assert tasks.app.AsyncResult(task_id).get(timeout=30) == 3
    wait_until(lambda: [line for line in view(project) if line[0] == "SUCCESS"], timeout=10,
               message="task-succeeded recorded")
    screen = run_on_terminal(project, "-A", "tasks", "events")
    row = next(line for line in screen.splitlines() if task_id in line)
    assert "SUCCESS" in row and "tasks.add" in row and node in row
    assert f"{node}: online" in screen


def run_on_terminal(project: Project, *args: str) -> str:
    """Run ``celeriac ARGS`` with a pseudo-terminal as stdout; what it printed (no colours)."""
    main, child = pty.openpty()
    env = {**project.env, "COLUMNS": "220", "LINES": "50", "NO_COLOR": "1", "TERM": "xterm"}
    proc = subprocess.Popen([sys.executable, "-m", "celeriac", *args], cwd=project.path,
                            env=env, stdout=child, stderr=child, stdin=subprocess.DEVNULL)
    os.close(child)
    chunks: list[bytes] = []
    try:
        while True:
            ready, _, _ = select.select([main], [], [], 30)
            if not ready:
                raise AssertionError("no output on the terminal for 30 s")
            try:
                chunk = os.read(main, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
        assert proc.wait(30) == 0, b"".join(chunks).decode(errors="replace")
    finally:
        os.close(main)
        if proc.poll() is None:
            proc.kill()
    return b"".join(chunks).decode(errors="replace")


# -- the cap, the gevent pool, a termination by the supervisor --------------------------------
def test_the_event_stream_stays_capped_however_many_tasks_run(any_project: Project) -> None:
    project = any_project
    tasks = load_tasks(project)
    project.start_worker("-E", "-P", "threads", "-c", "8")
    count = EVENTS_KEPT // 3 + 400  # three events each: well past the cap
    results = tasks.noop.apply_many([()] * count)
    last = results[-1].id

    def settled() -> list[dict[str, Any]] | None:
        found = dump(project, "--type", "task-succeeded")
        return found if any(e["data"]["uuid"] == last for e in found) else None

    wait_until(lambda: all(r.ready() for r in results[-50:]), timeout=120,
               message="the last tasks done")
    wait_until(settled, timeout=30, message="the last task's events")
    found = dump(project)
    assert len(found) == EVENTS_KEPT
    assert found[-1]["seq"] - found[0]["seq"] == EVENTS_KEPT - 1
    assert not any(e["type"] == "worker-online" for e in found)  # the oldest are gone


def test_the_gevent_pool_records_task_events(project: Project) -> None:
    tasks = load_tasks(project)
    worker = project.start_worker("-E", "-P", "gevent", "-c", "20")
    node = node_of(project)
    ok = [tasks.add.delay(i, i).id for i in range(10)]
    bad = tasks.fail.delay("green boom").id
    assert [tasks.app.AsyncResult(i).get(timeout=30) for i in ok] == [2 * i for i in range(10)]

    def finished() -> list[list[str]] | None:
        lines = view(project, "--type", "task-succeeded,task-failed")
        return lines if len(lines) == 11 else None

    lines = wait_until(finished, timeout=20, message="eleven final events")
    assert sorted(line[2] for line in lines if line[0] == "SUCCESS") == sorted(ok)
    [failure] = [line for line in lines if line[0] == "FAILURE"]
    assert failure[2:4] == [bad, node] and failure[5] == "ValueError('green boom')"
    [child] = worker.children()
    started = dump(project, "--type", "task-started")
    assert {e["data"]["pid"] for e in started} == {child}


def test_a_task_terminated_by_replacing_its_prefork_process_is_reported_by_the_supervisor(
        project: Project) -> None:
    tasks = load_tasks(project)
    project.start_worker("-E", "-P", "prefork", "-c", "1")
    node = node_of(project)
    task = tasks.sleep.delay(60)
    wait_until(lambda: dump(project, "--type", "task-started"), timeout=20,
               message="the task started")
    task.revoke(terminate=True)
    found = wait_until(lambda: dump(project, "--type", "task-revoked"), timeout=20,
                       message="task-revoked")
    [revoked] = found
    assert revoked["worker"] == node and revoked["data"]["uuid"] == task.id
    assert revoked["data"]["name"] == "tasks.sleep"
    assert (revoked["data"]["terminated"], revoked["data"]["signum"], revoked["data"]["expired"]) == (
        True, signal.SIGTERM, False)
    assert project.workers[0].stop() == 0
