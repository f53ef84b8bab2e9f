"""A gradual migration on RabbitMQ: Celery 5 producers and a celeriac worker on the same
classic queue, and the other way round (issue 12, "Celery's producers, celeriac's workers").

Celery runs from the compare venv (``CELERIAC_COMPARE_VENV``, never a celeriac
dependency) as a subprocess against the test's vhost; celeriac's worker is the real CLI
worker with ``broker_queue_type = "classic"``. What is proved here is what
``docs/rabbitmq.md`` says ("Serving Celery's producers on RabbitMQ").
"""

from __future__ import annotations

import json
import subprocess
import textwrap
import time
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import pytest
from conftest import Project, compare_python, needs_celery, wait_until
from rabbitserver import RabbitServer

pytestmark = needs_celery

#: celeriac's side: Celery's queue layout; and Celery's x-max-priority (both sides set it).
CLASSIC = '''
app.conf.broker_queue_type = "classic"
'''
PRIORITY = '''
app.conf.task_queue_max_priority = 10
'''

EXTRA = '''
@app.task
def now():
    return time.time()

@app.task
def log_order(path, tag):
    with open(path, "a") as f:
        f.write(tag + "\\n")

@app.task(bind=True)
def retry_once(self):
    if self.request.retries == 0:
        raise self.retry(countdown=1)
    return [self.request.retries, time.time()]

@app.task
def on_err(request, exc, traceback, path):
    with open(path, "a") as f:
        f.write(f"{request.id} {type(exc).__name__} {exc}\\n")
'''

#: Celery's producer: ``argv[1]`` is a JSON plan; prints what it sent as JSON.
CELERY_PRODUCER = textwrap.dedent('''
    import datetime, json, sys
    from celery import Celery, chain
    plan = json.loads(sys.argv[1])
    app = Celery("tasks", broker=plan["broker"], backend=plan.get("backend"))
    app.conf.update(task_serializer="json", accept_content=["json"],
                    task_queue_max_priority=plan.get("max_priority"))

    def s(name, *args, kwargs=None, **options):
        return app.signature("tasks." + name, args=args, kwargs=kwargs, **options)

    out = {}
    if plan["mode"] == "priority":
        out["low"] = [s("log_order", plan["path"], f"low{i}").apply_async(priority=0).id
                      for i in range(3)]
        out["high"] = s("log_order", plan["path"], "high").apply_async(priority=9).id
    elif plan["mode"] == "state":
        out["state"] = app.AsyncResult(plan["id"]).state
    elif plan["mode"] == "add":
        out["add"] = s("add", 2, 3).delay().id
    else:
        out["sent"] = datetime.datetime.now(datetime.timezone.utc).timestamp()
        out["add"] = s("add", 2, 3).delay().id
        out["countdown"] = s("now").apply_async(countdown=2).id
        eta = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=6)
        out["eta"], out["eta_at"] = s("now").apply_async(eta=eta).id, eta.timestamp()
        result = chain(s("add", 1, 2), s("add", 3)).apply_async()
        out["chain"] = [result.parent.id, result.id]
        callback = s("add", 10)
        callback.freeze()
        out["link"] = [s("add", 2, 3).apply_async(link=callback).id, callback.id]
        out["failed"] = s("fail", "boom").apply_async(
            link_error=s("on_err", kwargs={"path": plan["path"]})).id
        out["retry"] = s("retry_once").delay().id
    print(json.dumps(out))
''')

#: Celery's worker module: the same task names, each run written to a file.
CELERY_WORKER = textwrap.dedent('''
    import json, os, time
    from celery import Celery
    app = Celery("celery_tasks", broker=os.environ["CELERY_BROKER"])
    app.conf.update(task_serializer="json", accept_content=["json"], result_backend=None)

    def _log(name, value):
        with open(os.environ["CELERY_RUNS"], "a") as f:
            f.write(json.dumps([name, value, time.time()]) + "\\n")

    @app.task(name="tasks.add")
    def add(x, y):
        _log("add", x + y)
        return x + y

    @app.task(name="tasks.now")
    def now():
        _log("now", None)
''')


def celery_python() -> str:
    python = compare_python()
    assert python is not None, "no venv with Celery: run ./scripts/test, or set CELERIAC_COMPARE_VENV"
    return str(python)


def celery_send(plan: dict[str, Any]) -> dict[str, Any]:
    done = subprocess.run([celery_python(), "-c", CELERY_PRODUCER, json.dumps(plan)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    sent: dict[str, Any] = json.loads(done.stdout)
    return sent


def server_queue(server: RabbitServer, amqp_url: str, name: str) -> dict[str, Any]:
    """Queue ``name`` of the URL's vhost as the server holds it (type, arguments, counts)."""
    vhost = unquote(urlparse(amqp_url).path[1:])
    done = server.ctl("list_queues", "-p", vhost, "name", "type", "arguments", "messages_ready",
                      "messages_unacknowledged", "--formatter", "json", "--quiet")
    for row in json.loads(done.stdout):
        if row["name"] == name:
            row["arguments"] = {arg[0]: arg[-1] for arg in row["arguments"] or []}
            return dict(row)
    raise AssertionError(f"no queue {name!r} on the server")


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def test_a_celeriac_worker_runs_what_celery_producers_send(
        amqp_project: Project, rabbit_server: RabbitServer, tmp_path: Path) -> None:
    project = amqp_project
    project.write_tasks(CLASSIC + PRIORITY + EXTRA)
    order, errors = tmp_path / "order.log", tmp_path / "errors.log"
    # Celery first (its queue, x-max-priority 10): a low-priority backlog, then one urgent.
    celery_send({"broker": project.broker_url, "mode": "priority", "path": str(order),
                 "max_priority": 10})
    worker = project.start_worker("-P", "solo")
    wait_until(lambda: len(lines(order)) == 4, timeout=30, message="the four priority tasks ran")
    assert lines(order)[0] == "high"
    assert "other arguments" not in worker.log()  # celeriac declared exactly what Celery did
    assert server_queue(rabbit_server, project.broker_url, "celery")["arguments"] == {
        "x-max-priority": 10}

    sent = celery_send({"broker": project.broker_url, "mode": "all", "path": str(errors),
                        "max_priority": 10})
    app = project.app()
    result = app.AsyncResult
    assert result(sent["add"]).get(timeout=30) == 5
    # Celery's client reads Celery's result keys (celery-task-meta-<id>), which celeriac's
    # Redis backend does not write: a Celery producer cannot wait on celeriac's results.
    backend = project.result_url.split("?")[0]
    assert celery_send({"broker": project.broker_url, "backend": backend, "mode": "state",
                        "id": sent["add"]}) == {"state": "PENDING"}
    first, last = sent["chain"]
    assert result(last).get(timeout=30) == 6 and result(first).get(timeout=5) == 3
    parent, callback = sent["link"]
    assert result(parent).get(timeout=30) == 5 and result(callback).get(timeout=30) == 15
    with pytest.raises(ValueError, match="boom"):
        result(sent["failed"]).get(timeout=30)
    wait_until(lambda: lines(errors), timeout=30, message="Celery's link_error ran here")
    assert lines(errors) == [f"{sent['failed']} ValueError boom"]
    retries, _ = result(sent["retry"]).get(timeout=30)
    assert retries == 1

    # The eta task waits in RabbitMQ's delay ladder, not unacked in the worker: nothing
    # is unacked on "celery" while it is due later, and it runs no earlier than its eta.
    waiting = project.queue()
    queue = server_queue(rabbit_server, project.broker_url, "celery")
    looked = time.time()
    ran_at = result(sent["eta"]).get(timeout=30)
    if looked < sent["eta_at"] - 0.5:  # else the machine was too slow to look in time
        assert waiting["scheduled"] >= 1 and waiting["in_flight"] == 0, waiting  # (the countdown too)
        assert queue["messages_unacknowledged"] == 0 and queue["messages_ready"] == 0, queue
    assert ran_at >= sent["eta_at"] - 0.01  # the ladder's ms rounding
    assert result(sent["countdown"]).get(timeout=30) >= sent["sent"] + 2 - 0.01
    assert "other arguments" not in worker.log()


def test_a_celery_worker_runs_what_celeriac_sends_on_the_classic_queue(
        amqp_project: Project, rabbit_server: RabbitServer, tmp_path: Path) -> None:
    project = amqp_project
    project.write_tasks(CLASSIC + EXTRA)
    (tmp_path / "celery_tasks.py").write_text(CELERY_WORKER)
    runs = tmp_path / "runs.log"
    env = {**project.env, "CELERY_BROKER": project.broker_url, "CELERY_RUNS": str(runs)}
    app = project.app()
    sent_at = time.time()
    app.tasks["tasks.add"].delay(2, 3)  # celeriac declares the queue first
    app.tasks["tasks.now"].apply_async(countdown=2)  # through celeriac's ladder
    # The countdown is not in Celery's queue (where Celery's worker would hold it in
    # memory until due) but in the ladder: "celery" has the add alone.
    ready = server_queue(rabbit_server, project.broker_url, "celery")["messages_ready"]
    if time.time() < sent_at + 2:  # else the machine was too slow to look in time
        assert ready == 1
    log = (tmp_path / "celery-worker.log").open("w")
    worker = subprocess.Popen(
        [str(Path(celery_python()).parent / "celery"), "-A", "celery_tasks", "worker", "-P", "solo",
         "-Q", "celery", "--without-mingle", "--without-gossip", "--without-heartbeat",
         "-l", "INFO"], cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: len(lines(runs)) == 2, timeout=60,
                   message=f"Celery's worker ran both tasks:\n{_read(tmp_path / 'celery-worker.log')}")
    finally:
        worker.terminate()
        worker.wait(30)
    got = {name: (value, at) for name, value, at in map(json.loads, lines(runs))}
    assert got["add"][0] == 5
    assert got["now"][1] >= sent_at + 2 - 0.01
    assert "PRECONDITION_FAILED" not in _read(tmp_path / "celery-worker.log")


def test_a_default_quorum_worker_uses_celerys_classic_queue_as_it_is_with_a_warning(
        amqp_project: Project, rabbit_server: RabbitServer) -> None:
    project = amqp_project
    sent = celery_send({"broker": project.broker_url, "mode": "add"})  # Celery declares it first
    worker = project.start_worker("-P", "solo")
    assert project.app().AsyncResult(sent["add"]).get(timeout=30) == 5
    worker.wait_for_log("exists on RabbitMQ with other arguments")
    assert "'celery'" in worker.log() and "inequivalent arg" in worker.log()
    assert server_queue(rabbit_server, project.broker_url, "celery")["type"] == "classic"
    again = celery_send({"broker": project.broker_url, "mode": "add"})  # Celery still sends
    assert project.app().AsyncResult(again["add"]).get(timeout=30) == 5


def _read(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


def test_celerys_producer_is_refused_a_queue_celeriac_declared_quorum(amqp_project: Project) -> None:
    project = amqp_project
    project.app().tasks["tasks.add"].delay(2, 3)  # the default: celeriac declares it quorum
    done = subprocess.run([celery_python(), "-c", CELERY_PRODUCER,
                           json.dumps({"broker": project.broker_url, "mode": "add"})],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "PRECONDITION_FAILED" in done.stderr, done.stderr
    assert "inequivalent arg" in done.stderr  # (the first argument Celery's declare lacks)
