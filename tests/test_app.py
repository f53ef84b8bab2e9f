"""The app and task API on the in-process memory broker and backend (no worker)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from celeriac import Celeriac, TaskError
from celeriac.exceptions import ConfigurationError, NotRegistered, SerializationError, UnknownSettingError
from celeriac.message import decode


@pytest.fixture
def app() -> Celeriac:
    return Celeriac("tests", broker="memory://", backend="memory://")


def test_task_name_defaults_to_module_and_function(app: Celeriac) -> None:
    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    assert add.name == f"{__name__}.test_task_name_defaults_to_module_and_function.<locals>.add"
    assert add(2, 3) == 5
    assert app.get_task(add.name) is add


def test_delay_publishes_a_protocol_v2_message_to_the_routed_queue(app: Celeriac) -> None:
    @app.task(name="feeds.fetch", queue="io")
    def fetch(url: str) -> str:
        return url

    result = fetch.delay("http://x")
    [delivery] = app.broker.fetch(["io"], 10, consumer="c", lease=5)
    message = decode(delivery.body)
    assert (message.task, message.id, message.args) == ("feeds.fetch", result.id, ["http://x"])
    assert result.status == "PENDING" and not result.ready()


def test_routing_precedence(app: Celeriac) -> None:
    app.conf.task_routes = {"feeds.*": "io", "exact.name": {"queue": "exact"}}

    @app.task(name="other", queue="own")
    def other() -> None: ...

    assert app.route("feeds.fetch") == "io"
    assert app.route("exact.name") == "exact"
    assert app.route("other") == "own"
    assert app.route("unknown.task") == "celery"
    assert app.route("feeds.fetch", queue="explicit") == "explicit"


def test_countdown_and_options_reach_the_broker(app: Celeriac) -> None:
    @app.task
    def t() -> None: ...

    t.apply_async(countdown=60, priority=5, expires=120)
    stats = app.broker.stats()["celery"]
    assert (stats.ready, stats.scheduled) == (0, 1)


def test_unserialisable_argument_fails_at_delay_and_enqueues_nothing(app: Celeriac) -> None:
    @app.task
    def t(x: Any) -> None: ...

    with pytest.raises(SerializationError, match="JSON"):
        t.delay(object())
    assert sum(s.ready + s.scheduled for s in app.broker.stats().values()) == 0


def test_unknown_task_option_is_an_error_with_a_hint(app: Celeriac) -> None:
    with pytest.raises(UnknownSettingError, match="did you mean 'max_retries'"):
        app.task(max_retrys=3)
    with pytest.raises(ConfigurationError, match="priority"):
        app.task(priority=11)


def test_pickle_requires_opt_in(app: Celeriac) -> None:
    @app.task(serializer="pickle")
    def t() -> None: ...

    with pytest.raises(ConfigurationError, match="accept_content"):
        t.delay()
    app.conf.accept_content = ["json", "pickle"]
    t.delay()


def test_eager_apply_runs_here_with_retries(app: Celeriac) -> None:
    calls: list[int] = []

    @app.task(bind=True, max_retries=2)
    def flaky(self: Any) -> int:
        calls.append(self.request.retries)
        if self.request.retries < 2:
            raise self.retry(countdown=0)
        return self.request.retries

    assert flaky.apply().get() == 2
    assert calls == [0, 1, 2]


def test_get_reraises_builtin_exceptions_and_wraps_others(app: Celeriac) -> None:
    class Custom(Exception):
        pass

    @app.task
    def boom(kind: str) -> None:
        raise (KeyError("k") if kind == "builtin" else Custom("custom message"))

    with pytest.raises(KeyError):
        boom.apply(["builtin"]).get()
    with pytest.raises(TaskError) as info:
        boom.apply(["custom"]).get()
    assert info.value.exc_type == "Custom"
    assert "custom message" in str(info.value)
    assert info.value.remote_traceback and "raise" in info.value.remote_traceback


def test_always_eager_setting(app: Celeriac) -> None:
    app.conf.task_always_eager = True

    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    assert add.delay(2, 3).get() == 5
    assert app.broker.stats() == {} or all(s.ready == 0 for s in app.broker.stats().values())


def test_result_round_trip_through_the_backend(app: Celeriac) -> None:
    from celeriac.backends.base import ResultRecord
    from celeriac.states import SUCCESS

    app.backend.store(ResultRecord(task_id="abc", status=SUCCESS, result={"a": [1]}))
    result = app.AsyncResult("abc")
    assert result.successful() and result.get(timeout=1) == {"a": [1]}


def test_send_task_by_name_needs_no_registration(app: Celeriac) -> None:
    result = app.send_task("elsewhere.task", args=[1], kwargs={"k": 2})
    [delivery] = app.broker.fetch(["celery"], 1, consumer="c", lease=5)
    envelope = json.loads(delivery.body)
    assert envelope["headers"]["task"] == "elsewhere.task"
    assert envelope["headers"]["id"] == result.id


def test_get_task_unknown_name(app: Celeriac) -> None:
    with pytest.raises(NotRegistered, match="no task named"):
        app.get_task("nope")
