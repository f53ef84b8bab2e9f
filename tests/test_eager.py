"""Eager runs (``apply()``, ``task_always_eager``) with Celery's settings around them:
``task_eager_propagates``, ``apply(throw=...)`` and ``task_store_eager_result``, on the
in-process memory broker and backend."""

from __future__ import annotations

import traceback
from typing import Any

import pytest

from celeriac import Celeriac
from celeriac.exceptions import ConfigurationError, MaxRetriesExceededError, SerializationError


class Boom(Exception):
    """A user's own exception type (not builtin: the stored result only names it)."""


@pytest.fixture
def app() -> Celeriac:
    return Celeriac("tests", broker="memory://", backend="memory://")


def queued(app: Celeriac) -> int:
    return sum(s.ready + s.scheduled for s in app.broker.stats().values())


def test_without_propagation_a_failure_is_a_result(app: Celeriac) -> None:
    @app.task
    def boom() -> None:
        raise Boom("no")

    app.conf.task_always_eager = True
    result = boom.delay()
    assert result.status == "FAILURE"
    # Boom's module is imported here, so the task's own class comes back.
    with pytest.raises(Boom, match="no"):
        result.get()


def test_eager_propagates_raises_the_tasks_own_exception_from_delay(app: Celeriac) -> None:
    seen: list[str] = []

    class Tracked(app.Task):  # type: ignore[name-defined,misc]
        def on_failure(self, exc: BaseException, task_id: str, args: list[Any],
                       kwargs: dict[str, Any], einfo: Any) -> None:
            seen.append(f"on_failure {exc}")

    @app.task(base=Tracked)
    def boom(x: int) -> None:
        raise Boom(f"no {x}")

    app.conf.update(task_always_eager=True, task_eager_propagates=True)
    with pytest.raises(Boom, match="no 1") as info:
        boom.delay(1)
    assert "raise Boom" in "".join(traceback.format_tb(info.value.__traceback__))
    with pytest.raises(Boom):
        boom.apply_async((2,))
    with pytest.raises(Boom):
        boom.apply((3,))
    # The handlers ran before the exception came out, once per run.
    assert seen == ["on_failure no 1", "on_failure no 2", "on_failure no 3"]
    assert queued(app) == 0


def test_apply_throw_overrides_the_setting_both_ways(app: Celeriac) -> None:
    @app.task
    def boom() -> None:
        raise Boom("no")

    with pytest.raises(Boom):
        boom.apply(throw=True)
    app.conf.task_eager_propagates = True
    assert boom.apply(throw=False).status == "FAILURE"


def test_retries_run_here_and_only_the_final_failure_propagates(app: Celeriac) -> None:
    runs: list[int] = []

    @app.task(bind=True, max_retries=2)
    def flaky(self: Any) -> None:
        runs.append(self.request.retries)
        raise self.retry(exc=Boom(f"attempt {self.request.retries}"), countdown=0)

    app.conf.update(task_always_eager=True, task_eager_propagates=True)
    with pytest.raises(Boom, match="attempt 2"):
        flaky.delay()
    assert runs == [0, 1, 2]


def test_retry_without_exc_past_the_limit_fails_instead_of_looping(app: Celeriac) -> None:
    @app.task(bind=True, max_retries=1)
    def again(self: Any) -> None:
        raise self.retry(countdown=0)

    result = again.apply()
    assert result.status == "FAILURE"
    with pytest.raises(MaxRetriesExceededError, match=r"max retries \(1\) exceeded"):
        result.get()
    with pytest.raises(MaxRetriesExceededError):
        again.apply(throw=True)


def test_apply_starts_from_the_given_retries(app: Celeriac) -> None:
    @app.task(bind=True, max_retries=5)
    def count(self: Any) -> int:
        if self.request.retries < 4:
            raise self.retry(countdown=0)
        return int(self.request.retries)

    assert count.apply(retries=3).get() == 4


def test_always_eager_sends_arguments_through_the_serializer(app: Celeriac) -> None:
    @app.task
    def echo(*args: Any, **kwargs: Any) -> list[str]:
        return [type(args[0]).__name__, type(kwargs["k"]).__name__]

    app.conf.task_always_eager = True
    # A tuple arrives as the list JSON makes of it, as on a worker.
    assert echo.delay((1, 2), k=(3,)).get() == ["list", "list"]
    with pytest.raises(SerializationError, match="JSON"):
        echo.delay({1, 2})
    with pytest.raises(ConfigurationError, match="accept_content"):
        echo.apply_async((1,), serializer="pickle")


def test_always_eager_apply_many_encodes_every_call_before_running_any(app: Celeriac) -> None:
    runs: list[int] = []

    @app.task
    def note(x: Any) -> None:
        runs.append(x)

    app.conf.task_always_eager = True
    with pytest.raises(SerializationError):
        note.apply_many([(1,), (2,), ({3},)])
    assert runs == []
    note.apply_many([(1,), (2,)])
    assert runs == [1, 2]


def test_eager_results_are_not_stored_unless_asked(app: Celeriac) -> None:
    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    app.conf.task_always_eager = True
    result = add.delay(2, 3)
    assert app.backend.get(result.id) is None
    app.conf.task_store_eager_result = True
    result = add.delay(2, 3)
    assert app.AsyncResult(result.id).get(timeout=1) == 5


def test_stored_eager_results_include_failures_and_respect_ignore_result(app: Celeriac) -> None:
    @app.task
    def boom() -> None:
        raise Boom("kept")

    @app.task(ignore_result=True)
    def quiet() -> int:
        return 1

    app.conf.update(task_always_eager=True, task_store_eager_result=True)
    failed = boom.delay()
    stored = app.AsyncResult(failed.id)
    assert stored.status == "FAILURE"
    with pytest.raises(Boom, match="kept"):
        stored.get(timeout=1)
    assert app.backend.get(quiet.delay().id) is None
    assert app.backend.get(boom.apply_async(ignore_result=True).id) is None


def test_apply_refuses_an_unknown_option(app: Celeriac) -> None:
    @app.task
    def noop() -> None: ...

    with pytest.raises(ConfigurationError, match="did you mean 'countdown'"):
        noop.apply(countdwn=1)  # type: ignore[call-arg]


def test_a_task_may_take_a_keyword_argument_named_self() -> None:
    app = Celeriac("selfish", broker="memory://", backend="memory://", task_always_eager=True)

    @app.task
    def echo(self: str) -> str:
        return self

    assert echo(self="me") == "me"
    assert echo.delay(self="you").get() == "you"
    assert echo.s(self="sig").delay().get() == "sig"
    assert echo.s().delay(self="partial").get() == "partial"


def test_a_result_is_refused_exactly_when_json_cannot_carry_it() -> None:
    """The check of a task's return value takes a fast path for plain JSON values
    (orjson's word, no encoding by the standard library): it must refuse and let through
    exactly what the results' own encoder does."""
    import datetime
    import decimal
    import uuid

    from celeriac import serialization
    from celeriac.worker.run import _checked_value

    class Custom:
        pass

    values: list[Any] = [
        [1.5, 2.25], {"a": [1, 2, {"b": None}], "c": True}, ("x", 1), [2**70], {"é": "ü"},
        [float("nan")], [float("inf")], {1: "int key"}, datetime.datetime(2026, 12, 5),
        decimal.Decimal("1.5"), uuid.UUID(int=5), b"bytes", [Custom()], {"k": Custom()},
        set(), [[[[[[[[[[[[1]]]]]]]]]]]], list(range(500)),
    ]
    for value in values:
        try:
            serialization.json_dumps(value)
        except (TypeError, ValueError):
            with pytest.raises(SerializationError, match="cannot be encoded as JSON"):
                _checked_value(value)
        else:
            assert _checked_value(value) is value, value
