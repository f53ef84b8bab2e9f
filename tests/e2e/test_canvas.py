"""Chains, callbacks, errbacks and maps through a real ``celeriac worker``, on SQLite and
Redis; and a chain written by Celery's own client running to its end here."""

from __future__ import annotations

import json
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import pytest
from conftest import BROKER_KINDS, Project, compare_python, needs_celery, project_on

from celeriac.brokers import OutgoingMessage

EXTRA = '''
@app.task
def mul(x, y):
    return x * y

@app.task
def on_err(request, exc, traceback):
    with open(os.environ["CANVAS_LOG"], "a") as f:
        f.write(f"new {request.id} {type(exc).__name__} {exc} {'Traceback' in (traceback or '')}\\n")

@app.task(acks_late=True)
def dies_once(value):
    return value

from celeriac.signals import task_postrun

@task_postrun.connect
def _die_after_followups(sender=None, task=None, **kwargs):
    # After the follow-ups went out, before the result is stored and the message acked.
    if task.name == "tasks.dies_once" and task.request.delivery_count == 1:
        os._exit(1)

@app.task(bind=True)
def group_of(self, x):
    return [x, self.request.group]

@app.task
def old_err(task_id):
    with open(os.environ["CANVAS_LOG"], "a") as f:
        f.write(f"old {task_id}\\n")
'''

def celery_python() -> str:
    python = compare_python()
    assert python is not None, "no venv with Celery: run ./scripts/test, or set CELERIAC_COMPARE_VENV"
    return str(python)


@pytest.fixture(params=BROKER_KINDS)
def canvas(request: pytest.FixtureRequest, tmp_path: Path,
           monkeypatch: pytest.MonkeyPatch) -> tuple[Project, Any, Path]:
    project: Project = project_on(request, request.param)
    log = tmp_path / "canvas.log"
    monkeypatch.setenv("CANVAS_LOG", str(log))
    project.write_tasks(EXTRA)
    project.start_worker("-P", "threads", "-c", "4")
    return project, project.app(), log


def _lines(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


def test_chain_with_partial_args_and_pipe_and_parent_walk(canvas: tuple[Project, Any, Path]) -> None:
    _, app, _ = canvas
    add, mul = app.tasks["tasks.add"], app.tasks["tasks.mul"]
    from celeriac import chain

    result = chain(add.s(1, 2), add.s(3), mul.s(10)).apply_async()
    assert result.get(timeout=30) == 60
    assert result.parent.get(timeout=5) == 6 and result.parent.parent.get(timeout=5) == 3
    assert result.parent.parent.parent is None
    piped = (add.s(2) | add.s(4) | mul.si(5, 5)).delay(1)
    assert piped.get(timeout=30) == 25
    assert piped.parent.get(timeout=5) == 7
    from celeriac import group

    fanned = (add.s(1, 2) | group(add.s(10), mul.s(10))).delay()
    assert fanned.get(timeout=30) == [13, 30] and fanned.parent.get(timeout=5) == 3


def test_link_and_link_error_with_request_exc_traceback(canvas: tuple[Project, Any, Path]) -> None:
    _, app, log = canvas
    add, fail, on_err, old_err = (app.tasks[f"tasks.{n}"] for n in ("add", "fail", "on_err", "old_err"))
    first = add.apply_async((1, 1), link=add.s(40))
    assert first.get(timeout=30) == 2
    [child] = first.children
    assert child.get(timeout=30) == 42
    failed = fail.apply_async(("boom",), link_error=[on_err.s(), old_err.s()])
    with pytest.raises(ValueError, match="boom"):
        failed.get(timeout=30)

    def both() -> bool:
        return len(_lines(log)) == 2
    from conftest import wait_until

    wait_until(both, timeout=30, message="both errbacks ran")
    assert sorted(_lines(log)) == [f"new {failed.id} ValueError boom True", f"old {failed.id}"]


def test_a_chain_failing_midway_stops_and_its_errback_runs(canvas: tuple[Project, Any, Path]) -> None:
    _, app, log = canvas
    add, fail, on_err = app.tasks["tasks.add"], app.tasks["tasks.fail"], app.tasks["tasks.on_err"]
    result = (add.s(1, 1) | fail.s() | add.s(100)).on_error(on_err.s()).delay()
    with pytest.raises(ValueError, match="2"):
        result.get(timeout=30)  # the last step's result carries the failure
    middle = result.parent
    with pytest.raises(ValueError):
        middle.get(timeout=5)
    assert result.parent.parent.get(timeout=5) == 2
    from conftest import wait_until

    wait_until(lambda: _lines(log), timeout=30, message="the errback ran")
    assert _lines(log) == [f"new {middle.id} ValueError 2 True"]


def test_a_worker_dying_after_sending_a_step_sends_it_again_under_the_same_id(
        canvas: tuple[Project, Any, Path], tmp_path: Path) -> None:
    _, app, _ = canvas
    runs = tmp_path / "runs.txt"
    result = (app.tasks["tasks.dies_once"].s(str(runs)) | app.tasks["tasks.record"].s()).delay()
    assert result.get(timeout=60) == result.id
    assert result.parent.get(timeout=5) == str(runs)
    from conftest import executions, wait_until

    wait_until(lambda: sum(map(len, executions(runs).values())) >= 2, timeout=30,
               message="the step sent twice ran twice")
    assert set(executions(runs)) == {result.id}  # each send of the step: one task id
    linked = tmp_path / "linked.txt"
    parent = app.tasks["tasks.dies_once"].apply_async((str(linked),),
                                                      link=app.tasks["tasks.record"].s())
    assert parent.get(timeout=60) == str(linked)
    wait_until(lambda: sum(map(len, executions(linked).values())) >= 2, timeout=30,
               message="the callback sent twice ran twice")
    [callback_id] = executions(linked)  # a callback's id is derived from its parent's
    assert app.AsyncResult(callback_id).get(timeout=10) == callback_id


def test_map_starmap_and_chunks(canvas: tuple[Project, Any, Path]) -> None:
    _, app, _ = canvas
    add, mul = app.tasks["tasks.add"], app.tasks["tasks.mul"]
    assert add.starmap([(1, 2), (3, 4)]).delay().get(timeout=30) == [3, 7]
    assert app.tasks["tasks.pid"].map([]).delay().get(timeout=30) == []
    parts = mul.chunks(zip(range(5), range(5), strict=True), 2).delay()
    assert parts.get(timeout=30) == [[0, 1], [4, 9], [16]]


CELERY_CHAIN = textwrap.dedent('''
    import json, sys
    from celery import Celery, chain, group
    app = Celery("tasks", broker="memory://")

    @app.task(name="tasks.add")
    def add(x, y): return x + y

    @app.task(name="tasks.mul")
    def mul(x, y): return x * y

    @app.task(name="tasks.fail")
    def fail(message): raise ValueError(message)

    @app.task(name="tasks.group_of", bind=True)
    def group_of(self, x): return [x, self.request.group]

    @app.task(name="tasks.on_err")
    def on_err(request, exc, tb): pass

    with app.connection() as conn:
        result = chain(add.s(1, 2), add.s(3), mul.s(10)).on_error(on_err.s()).apply_async(
            connection=conn)
        failing = chain(add.s(1, 2), fail.s(), mul.s(10)).on_error(on_err.s()).apply_async(
            connection=conn)
        fanned = (add.s(1, 2) | group(group_of.s(), group_of.s())).apply_async(connection=conn)
        print(json.dumps({"last": result.id, "first": result.parent.parent.id,
                          "group": [fanned.id, [r.id for r in fanned.results]],
                          "fanned": conn.default_channel._get("celery"),
                          "message": conn.default_channel._get("celery"),
                          "failing_last": failing.id, "failing_middle": failing.parent.id,
                          "failing": conn.default_channel._get("celery")}))
''')


@needs_celery
def test_a_chain_sent_by_celery_runs_to_its_end(canvas: tuple[Project, Any, Path]) -> None:
    _, app, log = canvas
    out = subprocess.run([celery_python(), "-c", CELERY_CHAIN],
                         capture_output=True, timeout=120, check=True, text=True).stdout
    sent = json.loads(out)
    app.broker.publish([OutgoingMessage(queue="celery", body=json.dumps(sent[key]).encode())
                        for key in ("message", "failing", "fanned")])
    assert app.AsyncResult(sent["last"]).get(timeout=30) == 60
    assert app.AsyncResult(sent["first"]).get(timeout=5) == 3
    group_id, members = sent["group"]  # a chain ending in a group: the ids Celery fixed
    assert [app.AsyncResult(m).get(timeout=30) for m in members] == [[3, group_id]] * 2
    with pytest.raises(ValueError, match="3"):  # the failure reaches the chain's last result
        app.AsyncResult(sent["failing_last"]).get(timeout=30)
    from conftest import wait_until

    wait_until(lambda: _lines(log), timeout=30, message="Celery's errback ran here")
    assert _lines(log) == [f"new {sent['failing_middle']} ValueError 3 True"]


CELERY_WORKER = textwrap.dedent('''
    import json, sys
    from celery import Celery
    from celery.contrib.testing.worker import start_worker
    app = Celery("tasks", broker="memory://", backend="cache+memory://")

    @app.task(name="tasks.add")
    def add(x, y): return x + y

    @app.task(name="tasks.mul")
    def mul(x, y): return x * y

    sent = json.load(sys.stdin)
    with start_worker(app, pool="solo", perform_ping_check=False, shutdown_timeout=10):
        with app.connection() as conn:
            conn.default_channel._put("celery", sent["message"])
        print(json.dumps([app.AsyncResult(sent["last"]).get(timeout=30),
                          app.AsyncResult(sent["first"]).get(timeout=5)]))
''')


@needs_celery
def test_a_chain_sent_by_celeriac_runs_to_its_end_on_a_celery_worker() -> None:
    from celeriac import Celeriac

    app = Celeriac("tasks", broker="memory://", backend="memory://")

    @app.task(name="tasks.add")
    def add(x: int, y: int) -> int:
        return x + y

    @app.task(name="tasks.mul")
    def mul(x: int, y: int) -> int:
        return x * y

    result = (add.s(1, 2) | add.s(3) | mul.s(10)).apply_async()
    [delivery] = app.broker.fetch(["celery"], 10, consumer="test", lease=30)
    sent = {"last": result.id, "first": result.parent.parent.id,
            "message": json.loads(delivery.body)}
    out = subprocess.run([celery_python(), "-c", CELERY_WORKER],
                         input=json.dumps(sent), capture_output=True, timeout=120, check=True,
                         text=True).stdout
    assert json.loads(out.splitlines()[-1]) == [60, 3]
