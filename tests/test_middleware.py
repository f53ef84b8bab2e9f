"""The hook pipeline in-process: order, isolation, skipping, and what travels on a retry."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from celeriac import Celeriac
from celeriac.backends.base import ResultRecord
from celeriac.context import Request
from celeriac.message import decode
from celeriac.middleware import Middleware, Pipeline, TaskRun
from celeriac.middleware.base import HOOKS
from celeriac.pools.threads import ThreadPool
from celeriac.states import RETRY, SUCCESS
from celeriac.worker.executor import Executor
from celeriac.worker.run import run_task


class Recorder(Middleware):
    def __init__(self, name: str, calls: list[str]) -> None:
        self.name = name
        self.calls = calls

    def before_task(self, run: TaskRun) -> None:
        self.calls.append(f"before {self.name}")

    def after_task(self, run: TaskRun) -> None:
        self.calls.append(f"after {self.name}")


class Broken(Middleware):
    def before_task(self, run: TaskRun) -> None:
        raise RuntimeError("broken hook")

    def after_task(self, run: TaskRun) -> None:
        raise RuntimeError("broken hook")


class Stopper(Middleware):
    def check_run(self, run: TaskRun) -> ResultRecord | None:
        return ResultRecord(task_id=run.request.id, status="REVOKED")


@pytest.fixture
def app() -> Celeriac:
    return Celeriac("t", broker="memory://", backend="memory://")


def run_of(app: Celeriac, name: str, *args: Any) -> TaskRun:
    return TaskRun(app.get_task(name), Request(id="id-1", task=name, args=list(args)))


def test_before_hooks_run_in_order_and_after_hooks_in_reverse(app: Celeriac) -> None:
    calls: list[str] = []

    @app.task(name="t.add")
    def add(x: int, y: int) -> int:
        calls.append("body")
        return x + y

    pipeline = Pipeline([Recorder("a", calls), Recorder("b", calls)])
    record = run_task(run_of(app, "t.add", 2, 3), pipeline)
    assert record.status == SUCCESS and record.result == 5
    assert calls == ["before a", "before b", "body", "after b", "after a"]


def test_a_failing_hook_is_logged_and_isolated(app: Celeriac,
                                               caplog: pytest.LogCaptureFixture) -> None:
    calls: list[str] = []

    @app.task(name="t.one")
    def one() -> int:
        return 1

    pipeline = Pipeline([Broken(), Recorder("a", calls)])
    with caplog.at_level(logging.ERROR, logger="celeriac.middleware"):
        record = run_task(run_of(app, "t.one"), pipeline)
    assert record.status == SUCCESS
    assert calls == ["before a", "after a"]
    assert "before_task hook of Broken raised" in caplog.text
    assert "after_task hook of Broken raised" in caplog.text


def test_only_overridden_hooks_are_indexed() -> None:
    pipeline = Pipeline([Stopper()])
    assert [type(m) for m in pipeline._in_order["check_run"]] == [Stopper]
    assert all(not pipeline._in_order[hook] for hook in HOOKS if hook != "check_run")
    assert not pipeline.publish_hooks


def test_check_run_returns_the_first_record(app: Celeriac) -> None:
    @app.task(name="t.never")
    def never() -> None:
        raise AssertionError("must not run")

    run = run_of(app, "t.never")
    record = Pipeline([Stopper(), Stopper()]).check_run(run)
    assert record is not None and record.status == "REVOKED"


def test_add_before_a_type() -> None:
    calls: list[str] = []
    first, second = Recorder("a", calls), Stopper()
    pipeline = Pipeline([first, second])
    pipeline.add(Broken(), before=Stopper)
    assert [type(m) for m in pipeline.middleware] == [Recorder, Broken, Stopper]
    assert pipeline.find(Stopper) is second


def test_retry_sends_the_calls_own_options_again(app: Celeriac) -> None:
    """A message sent with priority=9 and time_limit=5 is retried with them, not with the
    task's defaults: the options travel message -> request -> retry()."""

    @app.task(name="t.flaky", bind=True, priority=1, time_limit=60)
    def flaky(self: Any) -> None:
        raise self.retry(countdown=0)

    flaky.apply_async(priority=9, time_limit=5, soft_time_limit=4, queue="special")
    [first] = app.broker.fetch(["special"], 1, consumer="c", lease=30)
    executor = Executor(app, ThreadPool(1), Pipeline(), lambda delivery: None)
    run = executor._prepare(first, decode(first.body), flaky)
    assert run.request.priority == 9 and run.request.timelimit == (5, 4)
    assert run_task(run, Pipeline()).status == RETRY
    [again] = app.broker.fetch(["special"], 1, consumer="c", lease=30, timeout=1)
    message = decode(again.body)
    assert (message.priority, message.timelimit, message.retries) == (9, (5, 4), 1)
    assert message.id == run.request.id


def test_publish_hooks_are_watched_only_while_a_receiver_is_connected(app: Celeriac) -> None:
    """With no receiver on the publish signals, the producer neither calls the publish
    hooks nor keeps the messages for them (their garbage cost bulk sends a third)."""
    from celeriac.signals import before_task_publish

    pipeline = app.middleware
    assert pipeline.publish_hooks and not pipeline.publish_watched()
    seen: list[str] = []

    def receiver(sender: Any = None, headers: Any = None, **kwargs: Any) -> None:
        seen.append(headers["id"])

    before_task_publish.connect(receiver, weak=False)
    try:
        assert pipeline.publish_watched()

        @app.task(name="t.noop")
        def noop() -> None:
            return None

        results = noop.apply_many([()] * 3)
        assert seen == [r.id for r in results]
    finally:
        before_task_publish.disconnect(receiver)
    assert not pipeline.publish_watched()
