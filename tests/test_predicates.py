"""``Ignore`` and ``Reject`` raised by a task, and the request fields a task reads, in
process: through the worker's executor and settler on a memory broker, and eagerly
(the e2e counterpart, with the real CLI worker, is tests/e2e/test_predicates.py)."""

from __future__ import annotations

import json
import pickle
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest

from celeriac import Celeriac, Task, signals
from celeriac.brokers.base import Delivery
from celeriac.exceptions import Ignore, Reject
from celeriac.middleware import ACK, DEAD, REQUEUE, SETTLED, Outcome, Pipeline
from celeriac.middleware.autoretry import Autoretry
from celeriac.middleware.events import TaskEvents
from celeriac.middleware.handlers import TaskHandlers
from celeriac.middleware.results import ResultStore
from celeriac.middleware.signals import SignalsMiddleware
from celeriac.pools.threads import ThreadPool
from celeriac.states import FAILURE, IGNORED, PENDING, REJECTED, RETRY
from celeriac.worker.executor import Executor
from celeriac.worker.settle import Settler

QUEUE = "celery"
NODE = "w1@example.test"


@pytest.fixture
def app() -> Iterator[Celeriac]:
    app = Celeriac("predicates", broker="memory://", backend="memory://")
    yield app
    app.close()


def pipeline(app: Celeriac, *extra: Any) -> Pipeline:
    """A worker's hooks that matter here: signals, handlers, autoretry, result storage."""
    return Pipeline([SignalsMiddleware(), TaskHandlers(), Autoretry(), ResultStore(app.backend),
                     *extra])


def fetch(app: Celeriac) -> Delivery:
    [delivery] = app.broker.fetch([QUEUE], 1, consumer="test", lease=30.0)
    return delivery


def handle(app: Celeriac, delivery: Delivery, hooks: Pipeline | None = None) -> Outcome:
    """Run one delivery as a worker process does, then settle it (results, then the broker)."""
    hooks = hooks or pipeline(app)
    def early_ack(delivery: Delivery) -> None:
        app.broker.ack([delivery])

    executor = Executor(app, ThreadPool(1, app.conf), hooks, early_ack, NODE)
    outcome = executor.handle(delivery)
    Settler(app.broker, hooks).settle([(delivery, outcome)])
    return outcome


class Calls:
    """Every signal of a run and every handler of the task, in order."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, Any]] = []

    def postrun(self, sender: Any = None, **kwargs: Any) -> None:
        self.seen.append(("task_postrun", kwargs["state"]))

    def failure(self, sender: Any = None, **kwargs: Any) -> None:
        self.seen.append(("task_failure", kwargs["exception"]))


@pytest.fixture
def calls() -> Iterator[Calls]:
    calls = Calls()
    signals.task_postrun.connect(calls.postrun)
    signals.task_failure.connect(calls.failure)
    yield calls
    signals.task_postrun.disconnect(calls.postrun)
    signals.task_failure.disconnect(calls.failure)


def handled_task(app: Celeriac, calls: Calls, name: str, raises: BaseException,
                 **options: Any) -> Task[Any, Any]:
    """A task raising ``raises`` whose class records which handlers ran."""

    class Recording(Task[Any, Any]):
        def on_success(self, *args: Any) -> None:
            calls.seen.append(("on_success", None))

        def on_failure(self, *args: Any) -> None:
            calls.seen.append(("on_failure", None))

        def after_return(self, *args: Any) -> None:
            calls.seen.append(("after_return", None))

    def body() -> None:
        raise raises

    decorate: Any = app.task(name=name, base=Recording, **options)
    task: Task[Any, Any] = decorate(body)
    return task


# -- Ignore ---------------------------------------------------------------------------------
def test_ignore_acks_stores_nothing_and_runs_no_handler(app: Celeriac, calls: Calls) -> None:
    task = handled_task(app, calls, "t.ignored", Ignore())
    result = task.delay()
    outcome = handle(app, fetch(app))
    assert outcome == Outcome(ACK, ran=True)
    assert app.backend.get(result.id) is None and result.state == PENDING
    assert app.broker.stats()[QUEUE].in_flight == 0 and app.broker.dead_letters() == []
    assert calls.seen == [("task_postrun", IGNORED)]


def test_ignore_of_a_task_acked_early_settles_nothing_more(app: Celeriac, calls: Calls) -> None:
    task = handled_task(app, calls, "t.ignored", Ignore(), acks_late=False)
    result = task.delay()
    assert handle(app, fetch(app)) == Outcome(SETTLED, ran=True)
    assert app.backend.get(result.id) is None


# -- Reject(requeue=False) -------------------------------------------------------------------
def test_reject_dead_letters_the_message_with_the_reason_and_stores_failure(
        app: Celeriac, calls: Calls) -> None:
    task = handled_task(app, calls, "t.rejected", Reject("bad input"))
    result = task.delay()
    outcome = handle(app, fetch(app))
    assert outcome.action == DEAD and outcome.reason == "task rejected its message: bad input"
    [letter] = app.broker.dead_letters()
    assert letter.reason == "task rejected its message: bad input"
    assert result.state == FAILURE
    with pytest.raises(Reject, match="bad input"):
        result.get(timeout=1)
    # task_postrun says REJECTED, then task_failure (FAILURE is stored); no task handler.
    assert [kind for kind, _ in calls.seen] == ["task_postrun", "task_failure"]
    assert calls.seen[0][1] == REJECTED and isinstance(calls.seen[1][1], Reject)


def test_a_rejected_task_ignoring_results_stores_nothing(app: Celeriac, calls: Calls) -> None:
    task = handled_task(app, calls, "t.rejected", Reject("quiet"), ignore_result=True)
    result = task.delay()
    assert handle(app, fetch(app)).action == DEAD
    assert app.backend.get(result.id) is None
    assert [letter.reason for letter in app.broker.dead_letters()] == [
        "task rejected its message: quiet"]


# -- Reject(requeue=True) --------------------------------------------------------------------
def test_reject_with_requeue_puts_the_message_back_and_it_runs_again(app: Celeriac) -> None:
    seen: list[dict[str, Any]] = []

    @app.task(bind=True, name="t.twice")
    def twice(self: Task[Any, Any]) -> str:
        seen.append(dict(self.request.delivery_info))
        if not self.request.delivery_info["redelivered"]:
            raise Reject("not yet", requeue=True)
        return "done"

    result = twice.delay()
    first = handle(app, fetch(app))
    assert first == Outcome(REQUEUE, "not yet", ran=True)
    assert app.backend.get(result.id) is None, "nothing stored for a requeued run"
    second = fetch(app)
    assert second.delivery_count == 2
    assert handle(app, second).action == ACK
    assert result.get(timeout=1) == "done"
    assert [info["redelivered"] for info in seen] == [False, True]
    assert app.broker.dead_letters() == []


def test_a_task_that_always_rejects_with_requeue_ends_dead_lettered_saying_why(
        app: Celeriac, calls: Calls) -> None:
    app.conf.broker_max_deliveries = 3
    task = handled_task(app, calls, "t.never", Reject("never ready", requeue=True))
    result = task.delay()
    actions = [handle(app, fetch(app)).action for _ in range(3)]
    assert actions == [REQUEUE, REQUEUE, DEAD]
    [letter] = app.broker.dead_letters()
    assert letter.reason == ("task rejected its message: never ready (requeue=True, but this "
                             "was delivery 3 of broker_max_deliveries=3)")
    with pytest.raises(Reject, match="never ready"):
        result.get(timeout=1)
    assert [kind for kind, _ in calls.seen] == ["task_postrun"] * 3 + ["task_failure"]


def test_reject_with_requeue_of_a_message_acked_early_stores_failure(
        app: Celeriac, caplog: pytest.LogCaptureFixture) -> None:
    @app.task(name="t.early", acks_late=False)
    def early() -> None:
        raise Reject("too late", requeue=True)

    result = early.delay()
    assert handle(app, fetch(app)).action == SETTLED
    assert result.state == FAILURE and app.broker.stats()[QUEUE].ready == 0
    assert "acked before the task ran: acks_late is False" in caplog.text


def test_autoretry_for_exception_retries_a_reject_as_celery_does(app: Celeriac) -> None:
    @app.task(name="t.auto", autoretry_for=(Exception,), max_retries=1)
    def auto() -> None:
        raise Reject("retry me")

    result = auto.delay()
    handle(app, fetch(app))
    assert result.state == RETRY


def test_task_events_report_a_reject_as_failed_then_rejected(app: Celeriac) -> None:
    events = TaskEvents(app.broker, NODE)

    @app.task(name="t.ev")
    def ev() -> None:
        raise Reject("no", requeue=False)

    ev.delay()
    handle(app, fetch(app), pipeline(app, events))
    buffered = [json.loads(line) for line in events.buffer]
    kinds = [(e["type"], e["data"].get("requeue")) for e in buffered]
    assert kinds[2:] == [("task-failed", None), ("task-rejected", False)]
    assert buffered[-1]["data"]["reason"] == "no"


# -- eager ------------------------------------------------------------------------------------
@pytest.mark.parametrize("raises, state", [(Ignore(), IGNORED), (Reject("r"), REJECTED)])
def test_an_eager_run_returns_the_state_and_stores_nothing(
        app: Celeriac, raises: Exception, state: str) -> None:
    app.conf.task_store_eager_result = True

    @app.task(name="t.eager")
    def eager() -> None:
        raise raises

    result = eager.apply(throw=True)
    assert result.state == state and result.get() is None
    assert app.backend.get(result.id) is None


# -- request fields ---------------------------------------------------------------------------
def test_the_request_carries_celerys_fields_from_the_message(app: Celeriac) -> None:
    seen: dict[str, Any] = {}

    @app.task(bind=True, name="t.fields")
    def fields(self: Task[Any, Any]) -> None:
        request = self.request
        seen.update(
            hostname=request.hostname, correlation_id=request.correlation_id,
            reply_to=request.reply_to, called_directly=request.called_directly,
            group_index=request.group_index, callbacks=request.callbacks,
            errbacks=request.errbacks, chain=request.chain, chord=request.chord,
            delivery_info=request.delivery_info, id=request.id,
            time_limit=request.time_limit, soft_time_limit=request.soft_time_limit)

    result = fields.apply_async(priority=7, time_limit=9, soft_time_limit=4)
    delivery = fetch(app)
    envelope = json.loads(delivery.body)
    envelope["headers"]["group_index"] = 2
    envelope["properties"]["reply_to"] = "reply-box"
    args, kwargs, _ = json.loads(envelope["body"])
    link = {"task": "t.next", "args": [], "kwargs": {}, "options": {}}
    envelope["body"] = json.dumps([args, kwargs, {"callbacks": [link], "errbacks": None,
                                                  "chain": None, "chord": None}])
    handle(app, replace(delivery, body=json.dumps(envelope).encode()))
    assert seen == {
        "hostname": NODE, "correlation_id": result.id, "reply_to": "reply-box",
        "called_directly": False, "group_index": 2, "callbacks": [link], "errbacks": None,
        "chain": None, "chord": None, "id": result.id, "time_limit": 9, "soft_time_limit": 4,
        "delivery_info": {"exchange": "", "routing_key": QUEUE, "priority": 7,
                          "redelivered": False},
    }


def test_called_directly_is_true_only_outside_a_run(app: Celeriac) -> None:
    @app.task(bind=True, name="t.direct")
    def direct(self: Task[Any, Any]) -> tuple[bool, str | None, dict[str, Any]]:
        request = self.request
        return request.called_directly, request.hostname, request.delivery_info

    assert direct()[0] is True
    called_directly, hostname, info = direct.apply(priority=3).get()
    assert called_directly is False and hostname  # this machine's name, as Celery's apply
    assert info == {"is_eager": True, "exchange": None, "routing_key": None, "priority": 3}


def test_ignore_and_reject_are_celerys_task_predicates() -> None:
    from celeriac.exceptions import CeleriacError, Retry, TaskPredicate

    assert all(issubclass(cls, TaskPredicate) for cls in (Ignore, Reject, Retry))
    assert issubclass(TaskPredicate, CeleriacError)
    reject = Reject("bad input", requeue=True)
    assert (reject.reason, reject.requeue, str(reject)) == ("bad input", True, "bad input")
    assert repr(reject) == "reject requeue=True: bad input" and str(Reject()) == ""
    again = pickle.loads(pickle.dumps(reject))
    assert (again.reason, again.requeue) == ("bad input", True)
