"""Inspect and control end to end: real worker nodes, commands through the broker.

* two nodes on SQLite and on Redis answer ping, active (a running task), reserved,
  stats, registered, active_queues, conf and revoked, from Python
  (``app.control``) and from the CLI; a destination that does not exist gets no
  reply, ``no reply from ...`` and exit status 69;
* control changes what a node does: ``add_consumer``/``cancel_consumer`` change
  the queues it consumes, ``pool_grow``/``pool_shrink`` its concurrency (slots in
  a thread pool, processes in prefork), ``time_limit`` the limits of the next
  task, ``rate_limit`` is stored in the broker and answered by every node,
  ``shutdown`` stops one node and not the other;
* bad input: a malformed command in the broker's stream is skipped with a log
  line and the node keeps answering; an unknown command is refused.
"""

from __future__ import annotations

import json
import socket
import sys
import uuid
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from conftest import BROKER_KINDS, Project, Worker, gevent_patched, normal_leg_only, project_on, wait_until

from celeriac.control import flatten
from celeriac.masking import mask_url

HOST = socket.gethostname()
W1, W2 = f"w1@{HOST}", f"w2@{HOST}"

def tasks_module(project: Project) -> ModuleType:
    project.write_tasks()
    project.app()
    return sys.modules["tasks"]


#: Seconds a control call waits for replies in the inspect test: it returns as soon as
#: every live node answered, so this only matters on a loaded machine, where 1 s (Celery's
#: default) was seen to pass before a busy node's supervisor answered.
CONTROL_TIMEOUT = 10.0


def inspect(project: Project, *args: str, check: bool = True) -> Any:
    """``celeriac inspect ... --json``, parsed."""
    return json.loads(project.cli("-A", "tasks", "inspect", *args, "-t", str(CONTROL_TIMEOUT), "--json",
                                  check=check).stdout)


def running(app: Any, node: str) -> list[dict[str, Any]]:
    replies = app.control.inspect(destination=[node], timeout=CONTROL_TIMEOUT).active() or {}
    tasks: list[dict[str, Any]] = replies.get(node, [])
    return tasks


@pytest.mark.parametrize("broker", BROKER_KINDS)
def test_two_nodes_answer_inspect(broker: str, request: pytest.FixtureRequest,
                                  tmp_path: Path) -> None:
    project: Project = project_on(request, broker)
    tasks = tasks_module(project)
    app = tasks.app
    w1 = project.start_worker("-P", "threads", "-c", "2", "-Q", "celery,only1", "-n", "w1@%h")
    w2 = project.start_worker("-P", "prefork", "-c", "2", "-n", "w2@%h")

    # Who is alive: Celery's shapes, from Python and from the CLI.
    assert sorted(app.control.ping(timeout=CONTROL_TIMEOUT), key=lambda r: list(r)) == [
        {W1: {"ok": "pong"}}, {W2: {"ok": "pong"}}]
    assert app.control.inspect(timeout=CONTROL_TIMEOUT).ping() == {W1: {"ok": "pong"},
                                                                   W2: {"ok": "pong"}}
    out = project.cli("-A", "tasks", "inspect", "ping", "-t", str(CONTROL_TIMEOUT)).stdout
    assert f"-> {W1}: OK pong" in out and f"-> {W2}: OK pong" in out and "2 nodes online." in out

    # A running task and two held behind it, on w1 only (its slots are full).
    gate = tmp_path / "gate"
    busy = [tasks.wait_for.apply_async((str(gate),), queue="only1") for _ in range(4)]
    active = wait_until(lambda: (lambda a: a if len(a) == 2 else None)(running(app, W1)),
                        message="two tasks running on w1")
    assert {t["id"] for t in active} < {r.id for r in busy}
    [child] = w1.children()
    for task in active:
        assert task["name"] == task["type"] == "tasks.wait_for"
        assert task["args"] == repr([str(gate)]) and task["hostname"] == W1
        assert task["worker_pid"] == child and task["delivery_info"]["routing_key"] == "only1"
    assert running(app, W2) == []
    reserved = app.control.inspect(timeout=CONTROL_TIMEOUT).reserved()
    assert {t["id"] for t in reserved[W1]} == {r.id for r in busy} - {t["id"] for t in active}
    assert reserved[W2] == []
    # query_task: by id, with its state (Celery's shape), from Python and from the CLI.
    held = sorted({t["id"] for t in reserved[W1]})[0]
    asked = app.control.inspect(timeout=CONTROL_TIMEOUT).query_task(active[0]["id"], held,
                                                                    "unknown-id")
    assert set(asked[W1]) == {active[0]["id"], held} and asked[W2] == {}
    assert asked[W1][active[0]["id"]][0] == "active" and asked[W1][held][0] == "reserved"
    assert asked[W1][held][1]["name"] == "tasks.wait_for"
    old_form = app.control.inspect(timeout=CONTROL_TIMEOUT).query_task([held])
    assert old_form[W1][held][0] == "reserved"
    by_cli = inspect(project, "query_task", active[0]["id"], "-d", W1)
    assert by_cli[W1][active[0]["id"]][1]["worker_pid"] == child
    report = app.control.inspect(destination=W2, timeout=CONTROL_TIMEOUT).report()
    assert report["ok"].startswith("software -> celeriac:")

    stats = inspect(project, "stats")
    assert stats[W1]["pid"] == w1.proc.pid and stats[W2]["pid"] == w2.proc.pid
    assert stats[W1]["pool"]["max-concurrency"] == stats[W2]["pool"]["max-concurrency"] == 2
    assert stats[W1]["pool"]["processes"] == [child]
    assert sorted(stats[W2]["pool"]["processes"]) == sorted(w2.children())
    assert stats[W1]["total"] == {"tasks.wait_for": 2} and stats[W2]["total"] == {}
    assert stats[W1]["broker"]["transport"] == broker
    assert set(stats[W1]["rusage"]) >= {"utime", "stime", "maxrss"}

    registered = app.control.inspect(timeout=CONTROL_TIMEOUT).registered()
    assert registered[W1] == registered[W2] == sorted(
        ["tasks.add", "tasks.noop", "tasks.sleep", "tasks.fail", "tasks.pid", "tasks.record",
         "tasks.record_until", "tasks.wait_for"])
    queues = inspect(project, "active_queues")
    assert [q["name"] for q in queues[W1]] == ["celery", "only1", "celery.threads"]
    assert [q["name"] for q in queues[W2]] == ["celery", "celery.prefork"]
    conf = app.control.inspect(destination=W2, timeout=CONTROL_TIMEOUT).conf()
    # A single name: that node's reply alone (passwords masked, as in every report).
    assert conf["broker_url"] == mask_url(project.broker_url)

    tasks.app.control.revoke("some-task-id")
    revoked = wait_until(lambda: (lambda r: r if r and r.get(W1) else None)(
        app.control.inspect(timeout=CONTROL_TIMEOUT).revoked()), message="the revocation listed")
    assert revoked == {W1: ["some-task-id"], W2: ["some-task-id"]}

    gate.touch()
    assert [r.get(timeout=30) for r in busy] == [str(gate)] * 4

    # A destination that does not exist: no reply, said plainly, Celery's exit status.
    assert app.control.inspect(destination=["nobody@nowhere"], timeout=0.3).ping() is None
    missing = project.cli("-A", "tasks", "inspect", "ping", "-d", "nobody@nowhere", "-t", "0.3",
                          check=False)
    assert missing.returncode == 69
    assert "no reply from nobody@nowhere" in missing.stderr
    assert "No nodes replied within time constraint" in missing.stderr
    partly = project.cli("-A", "tasks", "inspect", "ping", "-d", f"{W1},nobody@nowhere",
                         "-t", "3")
    assert f"-> {W1}: OK pong" in partly.stdout and "1 node online." in partly.stdout
    assert "no reply from nobody@nowhere" in partly.stderr


def pool_size(app: Any, node: str) -> int:
    stats = app.control.inspect(destination=[node]).stats() or {}
    size: int = stats[node]["pool"]["max-concurrency"]
    return size


def wait_running(app: Any, node: str, count: int) -> list[dict[str, Any]]:
    seen: list[int] = []

    def enough() -> list[dict[str, Any]] | None:
        active = running(app, node)
        seen.append(len(active))
        return active if len(active) == count else None

    try:
        found: list[dict[str, Any]] = wait_until(enough, message=f"{count} task(s) running on {node}")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; counts seen: {sorted(set(seen))}") from None
    return found


def wait_reserved(app: Any, node: str, count: int) -> None:
    wait_until(lambda: len((app.control.inspect(destination=[node]).reserved() or {}).get(
        node, [])) == count, message=f"{count} message(s) held by {node}")


# What each command changes in a node is the worker's side; the patched leg has the client
# send commands and collect replies in test_two_nodes_answer_inspect and the next test.
@normal_leg_only
def test_control_changes_the_nodes_it_names(project: Project, tmp_path: Path) -> None:
    tasks = tasks_module(project)
    app = tasks.app
    w1 = project.start_worker("-P", "threads", "-c", "1", "-n", "w1@%h")
    w2 = project.start_worker("-P", "prefork", "-c", "1", "-Q", "only2", "-n", "w2@%h")

    # pool_grow/pool_shrink: a thread pool gets more slots, prefork more processes.
    gate = tmp_path / "gate"
    first = [tasks.wait_for.delay(str(gate)) for _ in range(2)]
    wait_running(app, W1, 1)
    assert app.control.pool_grow(1, destination=[W1], reply=True) == [
        {W1: {"ok": "pool grown by 1: threads 1x1 -> threads 1x2"}}]
    wait_running(app, W1, 2)  # the second task starts without the first ending
    assert pool_size(app, W1) == 2
    gate.touch()
    assert [r.get(timeout=30) for r in first] == [str(gate)] * 2
    shrunk = project.cli("-A", "tasks", "control", "pool_shrink", "-d", W1).stdout
    assert f"-> {W1}: OK pool shrunk by 1: threads 1x2 -> threads 1x1" in shrunk
    assert pool_size(app, W1) == 1
    gate.unlink()
    again = [tasks.wait_for.delay(str(gate)) for _ in range(2)]
    wait_running(app, W1, 1)
    wait_reserved(app, W1, 1)  # the other waits: one slot again
    gate.touch()
    assert [r.get(timeout=30) for r in again] == [str(gate)] * 2

    assert app.control.pool_grow(2, destination=W2, reply=True) == [
        {W2: {"ok": "pool grown by 2: prefork 1x1 -> prefork 3x1"}}]
    wait_until(lambda: len(w2.children()) == 3, message="three prefork processes")
    assert pool_size(app, W2) == 3
    assert app.control.pool_shrink(5, destination=W2, reply=True) == [
        {W2: {"error": "cannot shrink prefork 3x1 by 5: it would run nothing"}}]
    app.control.pool_shrink(2, destination=W2, reply=True)
    wait_until(lambda: len(w2.children()) == 1, message="one prefork process left")
    w2.wait_for_log("stopping: the pool shrank")

    # add_consumer/cancel_consumer: a queue nobody consumed is consumed by w1 only.
    extra = tasks.add.apply_async((2, 3), queue="extra")
    assert project.queue("extra")["ready"] == 1
    out = project.cli("-A", "tasks", "control", "add_consumer", "extra", "-d", W1).stdout
    assert f"-> {W1}: OK add consumer extra" in out
    assert extra.get(timeout=30) == 5
    queues = app.control.inspect().active_queues()
    assert "extra" in [q["name"] for q in queues[W1]]
    assert "extra" not in [q["name"] for q in queues[W2]]
    assert app.control.cancel_consumer("extra", destination=[W1], reply=True) == [
        {W1: {"ok": "no longer consuming from extra"}}]
    assert "extra" not in [q["name"] for q in app.control.inspect().active_queues()[W1]]
    assert app.control.cancel_consumer("extra", destination=[W2], reply=True) == [
        {W2: {"error": "not consuming from 'extra'"}}]

    # time_limit: the next run of the task runs under the new limits (prefork: SIGALRM).
    assert tasks.sleep.apply_async((0.1,), queue="only2").get(timeout=30) == 0.1
    out = project.cli("-A", "tasks", "control", "time_limit", "tasks.sleep", "0.5", "30",
                      "-d", W2).stdout
    assert "time limits set successfully: tasks.sleep soft=0.5 hard=30.0" in out
    limited = tasks.sleep.apply_async((20,), queue="only2")
    with pytest.raises(Exception, match="soft time limit"):
        limited.get(timeout=30)
    assert app.backend.get(limited.id).exc_type == "SoftTimeLimitExceeded"
    unknown = project.cli("-A", "tasks", "control", "time_limit", "tasks.nope", "1", check=False)
    assert unknown.returncode == 1 and "ERROR unknown task 'tasks.nope'" in unknown.stdout

    # rate_limit: stored in the broker for the whole cluster, and every node applies it.
    answered = flatten(app.control.rate_limit("tasks.add", "5/s", reply=True) or [])
    assert answered == {W1: {"ok": "new rate limit set successfully"},
                        W2: {"ok": "new rate limit set successfully"}}
    assert app.broker.rate_limits()["tasks.add"] == "5/s"
    bad = project.cli("-A", "tasks", "control", "rate_limit", "tasks.nope", "1/s", check=False)
    assert bad.returncode == 1 and "ERROR unknown task" in bad.stdout

    # shutdown: one node stops warm, the other goes on.
    assert app.control.shutdown(destination=[W2], reply=True) == [
        {W2: {"ok": "warm shutdown: running tasks get 30.0s to finish"}}]
    assert w2.wait(30) == 0
    assert app.control.ping() == [{W1: {"ok": "pong"}}]
    assert w1.proc.poll() is None


def test_malformed_commands_are_skipped(project: Project) -> None:
    tasks = tasks_module(project)
    app = tasks.app
    worker: Worker = project.start_worker("-P", "threads", "-c", "1", "-n", "w1@%h")
    assert app.control.ping() == [{W1: {"ok": "pong"}}]
    broker = app.broker
    broker.broadcast({"command": 42})
    broker.broadcast({"command": "ping", "destination": W1})  # not a list
    broker.broadcast({"command": "ping", "arguments": ["not", "an", "object"]})
    box = uuid.uuid4().hex
    broker.broadcast({"command": "nonsense", "reply_to": box})
    assert broker.replies(box, timeout=10, count=1) == [
        {W1: {"error": "unknown remote-control command 'nonsense'"}}]
    log = worker.log()
    assert "skipping malformed remote-control command" in log
    assert "'command' must be a non-empty string, got 42" in log
    assert "'destination' must be a list of node names" in log
    assert "'arguments' must be an object" in log
    assert app.control.ping() == [{W1: {"ok": "pong"}}]
    assert tasks.add.delay(1, 2).get(timeout=30) == 3


@pytest.mark.skipif(gevent_patched(), reason="worker-side (a green pool's slots): the normal "
                    "leg runs it")
@pytest.mark.parametrize("pool", ["gevent", "eventlet", "asyncio"])
def test_green_pools_grow_and_shrink_in_place(pool: str, project: Project, tmp_path: Path) -> None:
    tasks = tasks_module(project)
    app = tasks.app
    worker = project.start_worker("-P", pool, "-c", "1", "-n", "w1@%h")
    [child] = worker.children()
    gate = tmp_path / "gate"
    calls = [tasks.wait_for.delay(str(gate)) for _ in range(3)]
    wait_running(app, W1, 1)
    assert app.control.pool_grow(2, reply=True) == [
        {W1: {"ok": f"pool grown by 2: {pool} 1x1 -> {pool} 1x3"}}]
    wait_running(app, W1, 3)  # in the same process: slots, not processes
    assert worker.children() == [child]
    gate.touch()
    assert [r.get(timeout=30) for r in calls] == [str(gate)] * 3
    assert app.control.pool_shrink(2, reply=True) == [
        {W1: {"ok": f"pool shrunk by 2: {pool} 1x3 -> {pool} 1x1"}}]
    # The reply is the supervisor's; its process applies the size at its next look at the
    # command pipe: messages sent before that may still start in the old slots.
    worker.wait_for_log("now running up to 1 task(s) at once")
    gate.unlink()
    again = [tasks.wait_for.delay(str(gate)) for _ in range(2)]
    wait_running(app, W1, 1)
    wait_reserved(app, W1, 1)  # the other waits: one slot again
    gate.touch()
    assert [r.get(timeout=30) for r in again] == [str(gate)] * 2
