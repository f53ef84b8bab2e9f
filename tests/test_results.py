"""The results API as Celery users use it: ``update_state`` and custom states, children
and ``collect``, ``date_done``/``args``/``kwargs``, ``get()``'s keywords, ``ResultSet``,
and a task's own exception class coming back (from ``sys.modules`` only, never imported).

Worker-side behaviour runs on an embedded worker (``start_worker``: a real consumer and
threads pool in this process) on the memory broker and backend.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from celeriac import Celeriac, group
from celeriac.backends.base import ResultRecord
from celeriac.contrib.testing.worker import start_worker
from celeriac.exceptions import (
    ConfigurationError,
    IncompleteStream,
    SerializationError,
    SyncSubtaskError,
    TaskError,
    TimeoutError,
)
from celeriac.result import AsyncResult, GroupResult, ResultSet, exception_from_record
from celeriac.states import FAILURE, SUCCESS


class Quota(Exception):
    """A user's exception whose constructor takes more than a message."""

    def __init__(self, user: str, limit: int) -> None:
        super().__init__(user, limit)
        self.user, self.limit = user, limit


class Picky(Exception):
    def __init__(self, *, code: int) -> None:  # cannot be rebuilt from args
        super().__init__(code)


@pytest.fixture
def app() -> Celeriac:
    return Celeriac("tests", broker="memory://", backend="memory://")


@pytest.fixture
def gate() -> Iterator[threading.Event]:
    event = threading.Event()
    yield event
    event.set()  # never leave a task blocked behind a failed test


def _failure(exc_type: str, module: str | None, args: list[Any] | None,
             message: str = "m") -> ResultRecord:
    return ResultRecord(task_id="t", status=FAILURE, exc_type=exc_type, exc_message=message,
                        exc_module=module, exc_args=args)


# -- exceptions come back as their own class, when it is already imported ------------------
def test_a_custom_exception_class_already_imported_comes_back_with_its_args() -> None:
    exc = exception_from_record(_failure("Quota", __name__, ["ann", 3]))
    assert type(exc) is Quota and (exc.user, exc.limit) == ("ann", 3)


def test_a_module_not_imported_is_never_imported(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "evil_side_effect.py").write_text(
        "import pathlib\npathlib.Path(__file__).with_name('ran').touch()\n"
        "class Boom(Exception): pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    exc = exception_from_record(_failure("Boom", "evil_side_effect", ["x"]))
    assert type(exc) is TaskError and exc.exc_type == "Boom"
    assert "evil_side_effect" not in sys.modules and not (tmp_path / "ran").exists()


def test_only_exception_classes_are_taken_from_a_module() -> None:
    # os.system is a function of an imported module: never called, never returned.
    for name, module in [("system", "os"), ("Path", "pathlib"), ("TaskError", "celeriac.exceptions")]:
        exc = exception_from_record(_failure(name, module, ["echo hi"]))
        assert type(exc) is TaskError, name


def test_a_constructor_that_refuses_the_stored_args_gives_a_task_error() -> None:
    exc = exception_from_record(_failure("Picky", __name__, [7]))
    assert type(exc) is TaskError and exc.exc_type == "Picky"


def test_records_without_a_module_keep_the_builtin_rule() -> None:
    assert type(exception_from_record(_failure("KeyError", None, None))) is KeyError
    assert type(exception_from_record(_failure("Quota", None, None))) is TaskError


def test_builtin_args_round_trip(app: Celeriac) -> None:
    @app.task
    def lookup() -> None:
        raise KeyError("missing")

    app.conf.task_always_eager = True
    with pytest.raises(KeyError) as info:
        lookup.delay().get()
    assert info.value.args == ("missing",)  # not "'missing'", the str() of a KeyError


def test_a_worker_failure_comes_back_as_the_tasks_class(app: Celeriac) -> None:
    @app.task
    def over(user: str) -> None:
        raise Quota(user, 10)

    with start_worker(app, pool="threads", perform_ping_check=False):
        result = over.delay("bob")
        with pytest.raises(Quota) as info:
            result.get(timeout=10)
    assert (info.value.user, info.value.limit) == ("bob", 10)
    assert isinstance(result.result, Quota) and result.failed()


# -- update_state ------------------------------------------------------------------------------
def test_update_state_is_seen_while_running_and_does_not_end_get(
        app: Celeriac, gate: threading.Event) -> None:
    @app.task(bind=True)
    def crunch(self: Any, total: int) -> int:
        self.update_state(state="PROGRESS", meta={"done": 1, "total": total})
        gate.wait(10)
        return total

    with start_worker(app, pool="threads", perform_ping_check=False):
        result = crunch.delay(4)
        deadline = time.monotonic() + 10
        while result.state != "PROGRESS" and time.monotonic() < deadline:
            time.sleep(0.01)
        assert result.state == "PROGRESS" and result.info == {"done": 1, "total": 4}
        assert not result.ready() and result.date_done is None
        with pytest.raises(TimeoutError):
            result.get(timeout=0.3)  # a custom state wakes no waiter as if ready
        gate.set()
        assert result.get(timeout=10) == 4
    assert result.state == SUCCESS and result.info == 4


def test_update_state_eagerly_writes_to_the_backend(app: Celeriac) -> None:
    seen: dict[str, Any] = {}

    @app.task(bind=True)
    def step(self: Any) -> str:
        self.update_state(state="PROGRESS", meta={"step": 1})
        mine = app.AsyncResult(self.request.id)
        seen.update(state=mine.state, info=mine.info)
        return "done"

    app.conf.task_always_eager = True
    result = step.delay()
    assert seen == {"state": "PROGRESS", "info": {"step": 1}}
    assert result.state == SUCCESS and result.get() == "done"
    # Not stored at the end (task_store_eager_result is off): the backend keeps the last
    # state the task wrote, as Celery's does.
    assert app.AsyncResult(result.id).state == "PROGRESS"


def test_update_state_of_another_id_and_bad_input(app: Celeriac) -> None:
    @app.task
    def plain() -> None: ...

    plain.update_state("other-id", "QUEUED", {"n": 1})
    assert app.AsyncResult("other-id").info == {"n": 1}
    with pytest.raises(ConfigurationError, match="needs task_id"):
        plain.update_state(state="PROGRESS")
    with pytest.raises(ConfigurationError, match="state name"):
        plain.update_state("x", None)
    with pytest.raises(SerializationError):
        plain.update_state("x", "PROGRESS", meta={"f": object()})
    with pytest.raises(TypeError, match="unexpected keyword"):
        plain.update_state("x", "PROGRESS", traceback="t")


def test_update_state_failure_with_an_exception_stores_it(app: Celeriac) -> None:
    @app.task
    def plain() -> None: ...

    plain.update_state("f-id", FAILURE, Quota("cy", 1))
    result = app.AsyncResult("f-id")
    assert result.failed() and isinstance(result.result, Quota)
    assert isinstance(result.date_done, datetime)


# -- children, collect, trail --------------------------------------------------------------------
def _family(app: Celeriac, trail: bool = True) -> Any:
    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    @app.task(trail=trail)
    def fan(n: int) -> str:
        add.delay(n, 1)
        group(add.s(n, i) for i in range(2)).delay()
        add.apply_many([(n, 10)])
        return "sent"

    return fan


def test_children_and_collect_on_a_worker(app: Celeriac) -> None:
    fan = _family(app)
    with start_worker(app, pool="threads", concurrency=2, perform_ping_check=False):
        result = fan.delay(5)
        assert result.get(timeout=10) == "sent"
        children = result.children
        assert children is not None and len(children) == 3
        assert isinstance(children[0], AsyncResult) and isinstance(children[1], GroupResult)
        collected = [(type(node).__name__, value) for node, value in result.collect(timeout=10)]
    assert collected == [("AsyncResult", "sent"), ("AsyncResult", 6), ("GroupResult", [5, 6]),
                         ("AsyncResult", 15), ("AsyncResult", 5), ("AsyncResult", 6)]
    assert children[0].children == []  # stored, sent nothing
    assert app.AsyncResult("never-sent").children is None


def test_trail_false_keeps_children_out(app: Celeriac) -> None:
    fan = _family(app, trail=False)
    with start_worker(app, pool="threads", perform_ping_check=False):
        result = fan.delay(1)
        assert result.get(timeout=10) == "sent"
        assert result.children == []


def test_a_retry_is_not_a_child_of_its_own_task(app: Celeriac) -> None:
    @app.task(bind=True)
    def flaky(self: Any) -> None:
        raise self.retry(countdown=60)  # stays in RETRY for the test

    with start_worker(app, pool="threads", perform_ping_check=False):
        result = flaky.delay()
        deadline = time.monotonic() + 10
        while result.state != "RETRY" and time.monotonic() < deadline:
            time.sleep(0.01)
        assert result.state == "RETRY" and result.children == []


def test_eager_children(app: Celeriac) -> None:
    fan = _family(app)
    app.conf.task_always_eager = True
    result = fan.delay(2)
    children = result.children
    assert children is not None and [type(c).__name__ for c in children] == [
        "EagerResult", "GroupResult", "EagerResult"]
    assert [value for _, value in result.collect()] == ["sent", 3, [2, 3], 12, 2, 3]


def test_iterdeps_raises_incomplete_stream_on_a_result_not_ready(app: Celeriac) -> None:
    pending = app.AsyncResult("nobody")
    with pytest.raises(IncompleteStream):
        list(pending.iterdeps())
    assert [node for _, node in pending.iterdeps(intermediate=True)] == [pending]


# -- get() inside a task, get()'s keywords ------------------------------------------------------
def test_get_inside_a_worker_task_raises_unless_allowed(app: Celeriac) -> None:
    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    @app.task
    def waits(allow: bool) -> int:
        return add.delay(1, 2).get(timeout=10, disable_sync_subtasks=not allow)

    @app.task
    def joins(deny_inside: bool) -> int:
        from celeriac.result import allow_join_result, denied_join_result

        with allow_join_result():
            if deny_inside:
                with denied_join_result():
                    return add.delay(1, 2).get(timeout=10)
            return add.delay(2, 2).get(timeout=10)

    with start_worker(app, pool="threads", concurrency=2, perform_ping_check=False):
        with pytest.raises(SyncSubtaskError, match=r"Never call result\.get"):
            waits.delay(False).get(timeout=10)
        assert isinstance(SyncSubtaskError("x"), RuntimeError)
        assert waits.delay(True).get(timeout=10) == 3
        # Celery's allow_join_result: waiting allowed inside the block, and refused again
        # inside a denied_join_result block.
        assert joins.delay(False).get(timeout=10) == 4
        with pytest.raises(SyncSubtaskError):
            joins.delay(True).get(timeout=10)


def test_get_in_an_eager_task_is_allowed(app: Celeriac) -> None:
    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    @app.task
    def waits() -> int:
        return add.delay(1, 2).get()

    app.conf.task_always_eager = True
    assert waits.delay().get() == 3


def test_on_message_sees_each_state_and_callback_gets_the_value(
        app: Celeriac, gate: threading.Event) -> None:
    @app.task(bind=True)
    def crunch(self: Any) -> str:
        self.update_state(state="PROGRESS", meta={"done": 1})
        gate.wait(10)
        return "ok"

    messages: list[tuple[str, Any]] = []
    called: list[tuple[str, Any]] = []
    intervals: list[int] = []

    def on_message(meta: dict[str, Any]) -> None:
        messages.append((meta["status"], meta["result"]))
        if meta["status"] == "PROGRESS":
            gate.set()

    with start_worker(app, pool="threads", perform_ping_check=False):
        result = crunch.delay()
        value = result.get(timeout=10, interval=0.01, on_message=on_message,
                           on_interval=lambda: intervals.append(1),
                           callback=lambda task_id, v: called.append((task_id, v)))
    assert value == "ok" and called == [(result.id, "ok")]
    assert messages[-2:] == [("PROGRESS", {"done": 1}), ("SUCCESS", "ok")] and intervals


def test_propagate_states_decide_what_raises(app: Celeriac, caplog: pytest.LogCaptureFixture) -> None:
    @app.task
    def over() -> None:
        raise Quota("dee", 2)

    app.conf.task_always_eager = True
    result = over.delay()
    returned = result.get(PROPAGATE_STATES=frozenset())
    assert isinstance(returned, Quota)
    assert isinstance(result.get(propagate=False), Quota)
    with caplog.at_level(logging.DEBUG, logger="celeriac.result"), pytest.raises(Quota):
        result.get(no_ack=False)
    assert "get(no_ack=...) is accepted for Celery's signature and has no effect" in caplog.text


# -- what the record tells -----------------------------------------------------------------------
def test_date_done_name_and_extended_fields(app: Celeriac) -> None:
    @app.task
    def add(x: int, y: int = 0) -> int:
        return x + y

    with start_worker(app, pool="threads", perform_ping_check=False):
        plain = add.delay(1, y=2)
        plain.get(timeout=10)
        app.conf.result_extended = True
        extended = add.delay(3, y=4)
        extended.get(timeout=10)
    done = plain.date_done
    assert done is not None and done.tzinfo is not None and done.utcoffset() == timedelta(0)
    assert abs((datetime.now(timezone.utc) - done).total_seconds()) < 60
    assert plain.name == add.name and plain.args is None and plain.kwargs is None
    assert (extended.args, extended.kwargs, extended.queue) == ([3], {"y": 4}, "celery")
    assert extended.worker and extended.retries == 0
    pending = app.AsyncResult("nope")
    assert pending.date_done is None and pending.args is None and not pending.exists()


def test_async_result_without_an_app_uses_the_current_one(app: Celeriac) -> None:
    from celeriac._state import using_app

    with using_app(app):
        assert AsyncResult("some-id").app is app
    assert AsyncResult("some-id") == "some-id" and str(AsyncResult("some-id")) == "some-id"


# -- ResultSet ---------------------------------------------------------------------------------
def test_result_set_membership_and_questions(app: Celeriac) -> None:
    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    app.conf.task_always_eager = True
    one, two, three = (add.delay(i, i) for i in range(3))
    rs: ResultSet[int] = ResultSet([one, two])
    rs.add(one)
    rs.update([two, three])
    assert [r.id for r in rs] == [one.id, two.id, three.id] and len(rs) == 3
    rs.remove(three.id)
    rs.discard(three)
    with pytest.raises(KeyError):
        rs.remove(three)
    assert rs.ready() and rs.successful() and not rs.failed() and not rs.waiting()
    assert rs.completed_count() == 2 and rs.get() == [0, 2]
    got: list[tuple[str, int]] = []
    assert rs.join(callback=lambda task_id, value: got.append((task_id, value))) == []
    assert got == [(one.id, 0), (two.id, 2)]
    assert rs == ResultSet([one, two]) and rs[0] is one
    rs.clear()
    assert len(rs) == 0
    grouped = GroupResult("g1", [one])
    assert isinstance(grouped, ResultSet) and grouped == "g1" and grouped.children == [one]
    assert grouped.as_tuple() == (("g1", None), [((one.id, None), None)])


def test_result_set_join_times_out_for_the_whole_set(app: Celeriac) -> None:
    rs: ResultSet[Any] = ResultSet([app.AsyncResult("a"), app.AsyncResult("b")])
    assert rs.waiting() and not rs.ready()
    with pytest.raises(TimeoutError, match="task 0 of 2"):
        rs.join(timeout=0.05)
