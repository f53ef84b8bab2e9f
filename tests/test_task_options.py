"""Celery's task options, in-process: declared, resolved (decorator, base class, setting)
and acted on, eagerly and through the worker's executor (no subprocess; the e2e
counterpart is tests/e2e/test_task_options.py)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from celeriac import Celeriac, Task
from celeriac.brokers.base import Delivery
from celeriac.canvas import group
from celeriac.exceptions import ConfigurationError, UnknownSettingError
from celeriac.middleware import ACK, DEAD, SETTLED, Pipeline
from celeriac.middleware.autoretry import Autoretry
from celeriac.middleware.ratelimit import RateLimitNotice, declared
from celeriac.pools.threads import ThreadPool
from celeriac.states import FAILURE, RETRY, REVOKED, SUCCESS
from celeriac.task_options import OPTION_NAMES, UNSUPPORTED, backoff_countdown, parse_rate_limit
from celeriac.worker.executor import Executor

QUEUE = "celery"

#: The options Celery 5 documents for a task (its Task class attributes and the keywords
#: its autoretry reads): each must be one of celeriac's options or refused by name.
CELERY_TASK_OPTIONS = [
    "name", "bind", "base", "typing", "max_retries", "throws", "default_retry_delay", "rate_limit",
    "ignore_result", "trail", "send_events", "store_errors_even_if_ignored", "serializer",
    "time_limit", "soft_time_limit", "backend", "autoregister", "track_started", "acks_late",
    "acks_on_failure_or_timeout", "reject_on_worker_lost", "priority", "resultrepr_maxsize",
    "expires", "store_eager_result", "queue", "routing_key", "exchange", "exchange_type",
    "delivery_mode", "compression", "immediate", "mandatory", "autoretry_for",
    "dont_autoretry_for", "retry_kwargs", "retry_backoff", "retry_backoff_max", "retry_jitter",
    "lazy", "abstract", "Request", "Strategy", "pydantic", "pydantic_strict", "pydantic_context",
    "pydantic_dump_kwargs",
]


@pytest.fixture
def app() -> Iterator[Celeriac]:
    app = Celeriac("options", broker="memory://", backend="memory://")
    yield app
    app.close()


def executor(app: Celeriac, pipeline: Pipeline | None = None) -> Executor:
    def early_ack(delivery: Delivery) -> None:
        app.broker.ack([delivery])

    return Executor(app, ThreadPool(1, app.conf), pipeline or Pipeline([]), early_ack)


def run_one(app: Celeriac, name: str, *args: Any, pipeline: Pipeline | None = None) -> Any:
    """Send ``name`` through the real producer path and run it through the executor."""
    app.send_task(name, args)
    [delivery] = app.broker.fetch([QUEUE], 1, consumer="test", lease=30.0)
    return executor(app, pipeline).handle(delivery)


def ready(app: Celeriac) -> int:
    stats = app.broker.stats().get(QUEUE)
    return stats.ready + stats.scheduled if stats else 0


# -- every Celery option is known --------------------------------------------------------
def test_every_celery_task_option_is_supported_or_refused_by_name(app: Celeriac) -> None:
    for option in CELERY_TASK_OPTIONS:
        assert option in OPTION_NAMES or option in UNSUPPORTED, option
    for option, why in UNSUPPORTED.items():
        with pytest.raises(ConfigurationError, match=f"'{option}' is a Celery task option "
                                                     "celeriac does not support") as info:
            options: dict[str, Any] = {option: True}
            app.task(**options)
        assert why in str(info.value) and "docs/migrating.md" in str(info.value)


def test_a_misspelt_option_is_an_error_with_a_hint(app: Celeriac) -> None:
    with pytest.raises(UnknownSettingError, match="did you mean 'max_retries'"):
        app.task(max_retires=3)
    with pytest.raises(UnknownSettingError, match="did you mean 'rate_limit'"):
        app.task(rate_limt="1/s")


def test_other_unknown_keywords_become_attributes_of_the_task(app: Celeriac) -> None:
    @app.task(owner="billing", sla_seconds=30)
    def charge() -> None: ...

    assert (charge.owner, charge.sla_seconds) == ("billing", 30)  # type: ignore[attr-defined]
    assert charge.options.extra == {"owner": "billing", "sla_seconds": 30}
    with pytest.raises(ConfigurationError, match="would hide the task's own attribute"):
        app.task(apply_async=1)


# -- base= class attributes ------------------------------------------------------------
def test_a_base_class_sets_options_as_attributes_and_the_decorator_wins(app: Celeriac) -> None:
    class Base(Task[Any, Any]):
        autoretry_for = [ConnectionError]  # a list, as Celery allows
        retry_kwargs = {"max_retries": 2}
        throws = (KeyError,)
        acks_late = False
        store_errors_even_if_ignored = True

    @app.task(base=Base)
    def inherits() -> None: ...

    @app.task(base=Base, acks_late=True, throws=[LookupError])
    def overrides() -> None: ...

    assert inherits.options.autoretry_for == (ConnectionError,)
    assert inherits.options.retry_kwargs == {"max_retries": 2}
    assert inherits.acks_late is False and inherits.store_errors_even_if_ignored is True
    assert overrides.acks_late is True and overrides.options.throws == (LookupError,)

    class Bad(Task[Any, Any]):
        send_events = False

    with pytest.raises(ConfigurationError, match=r"Bad\.send_events is a Celery task option"):
        app.task(base=Bad)(lambda: None)


# -- typing ----------------------------------------------------------------------------
def test_typing_checks_arguments_before_anything_is_sent(app: Celeriac) -> None:
    @app.task
    def add(x: int, y: int = 0, *, scale: int = 1) -> int:
        return (x + y) * scale

    @app.task(bind=True)
    def bound(self: Task[Any, Any], x: int, /) -> int:
        return x

    @app.task(typing=False)
    def unchecked(x: int) -> int:
        return x

    with pytest.raises(TypeError, match=r"add\(\) takes from 1 to 2 positional arguments but 3 "
                                        r"were given \(task .*add; .*typing=False"):
        add.delay(1, 2, 3)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="unexpected keyword argument 'z'"):
        add.apply_async((1,), {"z": 2})
    with pytest.raises(TypeError, match="missing 1 required positional argument: 'x'"):
        bound.delay()  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="positional-only"):
        bound.apply_async((), {"x": 1})
    with pytest.raises(TypeError):
        group(add.s(1), add.s(1, 2, 3)).delay()  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        add.apply_many([(1,), (1, 2, 3)])
    assert ready(app) == 0  # nothing of the above was sent, not even the group's good half
    add.delay(1, 2, scale=3)
    add.s(2).delay(1)  # a partial signature is checked when sent, complete
    bound.delay(5)
    unchecked.delay(1, 2, 3)  # type: ignore[call-arg]
    app.send_task(add.name, (1, 2, 3))  # send_task never checks
    assert ready(app) == 5


def test_typing_applies_in_eager_mode_too(app: Celeriac) -> None:
    app.conf.update(task_always_eager=True)

    @app.task
    def one(x: int) -> int:
        return x

    with pytest.raises(TypeError, match="takes 1 positional argument but 2 were given"):
        one.delay(1, 2)  # type: ignore[call-arg]
    assert one.delay(7).get() == 7


# -- autoretry -------------------------------------------------------------------------
def test_autoretry_list_dont_autoretry_for_and_retry_kwargs(app: Celeriac) -> None:
    runs: list[str] = []

    @app.task(autoretry_for=[OSError], dont_autoretry_for=(FileNotFoundError,),
              retry_kwargs={"max_retries": 2, "countdown": 0})
    def flaky(kind: str) -> None:
        runs.append(kind)
        raise (FileNotFoundError if kind == "missing" else ConnectionError)(kind)

    result = flaky.apply(("conn",))
    assert runs == ["conn"] * 3  # the first run and max_retries=2 retries, from retry_kwargs
    assert result.state == FAILURE and isinstance(result.result, ConnectionError)
    runs.clear()
    assert flaky.apply(("missing",)).state == FAILURE and runs == ["missing"]  # not retried
    with pytest.raises(ConfigurationError, match="retry_kwargs: colour is not an argument"):
        app.task(retry_kwargs={"colour": 1})


def test_autoretry_in_a_worker_uses_retry_kwargs_countdown(app: Celeriac) -> None:
    @app.task(name="t.flaky", autoretry_for=(KeyError,), retry_kwargs={"countdown": 30})
    def flaky() -> None:
        raise KeyError("again")

    outcome = run_one(app, "t.flaky", pipeline=Pipeline([Autoretry()]))
    assert outcome.action == ACK and outcome.record.status == RETRY
    stats = app.broker.stats()[QUEUE]
    assert (stats.ready, stats.scheduled) == (0, 1)  # the retry waits its 30 s countdown
    # retry_kwargs' max_retries wins over the task's own.
    app.conf.update(task_always_eager=True)

    @app.task(max_retries=10, autoretry_for=(KeyError,), retry_kwargs={"max_retries": 0})
    def once() -> None:
        raise KeyError("no")

    assert isinstance(once.apply().result, KeyError)


def test_retry_backoff_is_the_countdown_of_automatic_retries_only(
        app: Celeriac, monkeypatch: pytest.MonkeyPatch) -> None:
    @app.task(name="t.backoff", autoretry_for=(KeyError,), retry_backoff=2, retry_jitter=False,
              retry_kwargs={"countdown": 99}, max_retries=10, default_retry_delay=7)
    def backoff() -> None:
        raise KeyError("again")

    countdowns: list[float | None] = []
    retry = backoff.retry

    def spy(*args: Any, **kwargs: Any) -> Any:
        countdowns.append(kwargs.get("countdown"))
        return retry(*args, **kwargs)

    monkeypatch.setattr(backoff, "retry", spy)
    app.send_task("t.backoff", (), retries=3)
    [delivery] = app.broker.fetch([QUEUE], 1, consumer="test", lease=30.0)
    outcome = executor(app, Pipeline([Autoretry()])).handle(delivery)
    assert outcome.record is not None and outcome.record.status == RETRY
    assert countdowns == [16.0]  # 2 s doubled per retry made (3), over retry_kwargs' countdown
    # A manual retry without countdown waits default_retry_delay, backoff or not (Celery).
    assert backoff._retry_delay(3, None, None) == 7.0
    # At most retry_backoff_max; with jitter, a random part of it.
    options = replace(backoff.options, retry_backoff=True, retry_backoff_max=5.0)
    assert backoff_countdown(options, 10) == 5.0
    jittered = [backoff_countdown(replace(options, retry_jitter=True), 10) for _ in range(50)]
    assert all(0 <= value <= 5.0 for value in jittered) and len(set(jittered)) > 1


# -- throws: expected errors -----------------------------------------------------------
def test_throws_is_logged_at_info_without_traceback_other_failures_at_error_with_one(
        app: Celeriac, caplog: pytest.LogCaptureFixture) -> None:
    @app.task(name="t.expected", throws=(KeyError,))
    def expected() -> None:
        raise KeyError("no such user")

    @app.task(name="t.unexpected", throws=(KeyError,))
    def unexpected() -> None:
        raise ValueError("bug")

    caplog.set_level(logging.INFO, logger="celeriac.worker")
    outcome = run_one(app, "t.expected")
    assert outcome.record.status == FAILURE and outcome.record.exc_type == "KeyError"
    [line] = [r for r in caplog.records if "t.expected" in r.getMessage()]
    assert line.levelno == logging.INFO and "raised expected KeyError" in line.getMessage()
    assert "Traceback" not in line.getMessage()
    caplog.clear()
    outcome = run_one(app, "t.unexpected")
    assert outcome.record.status == FAILURE
    [line] = [r for r in caplog.records if "t.unexpected" in r.getMessage()]
    assert line.levelno == logging.ERROR and "Traceback" in line.getMessage()
    assert "raise ValueError" in line.getMessage()


# -- acks_on_failure_or_timeout --------------------------------------------------------
def test_acks_on_failure_or_timeout_false_dead_letters_a_failed_message(app: Celeriac) -> None:
    @app.task(name="t.keep", acks_on_failure_or_timeout=False)
    def keep(fail: bool) -> int:
        if fail:
            raise ValueError("x")
        return 1

    @app.task(name="t.default")
    def default() -> None:
        raise ValueError("y")

    @app.task(name="t.early", acks_late=False, acks_on_failure_or_timeout=False)
    def early() -> None:
        raise ValueError("z")

    failed = run_one(app, "t.keep", True)
    assert failed.action == DEAD and "acks_on_failure_or_timeout is False" in failed.reason
    assert failed.record is not None and failed.record.status == FAILURE  # still stored
    assert run_one(app, "t.keep", False).action == ACK  # a success is acked
    assert run_one(app, "t.default").action == ACK
    assert run_one(app, "t.early").action == SETTLED  # acked before it ran: nothing to reject
    app.conf.update(task_acks_on_failure_or_timeout=False)
    assert run_one(app, "t.default").action == DEAD


# -- store_errors_even_if_ignored -------------------------------------------------------
def test_store_errors_even_if_ignored_keeps_failures_only(app: Celeriac) -> None:
    @app.task(name="t.quiet", ignore_result=True, store_errors_even_if_ignored=True)
    def quiet(fail: bool) -> int:
        if fail:
            raise ValueError("kept")
        return 1

    @app.task(name="t.silent", ignore_result=True)
    def silent() -> None:
        raise ValueError("dropped")

    assert run_one(app, "t.quiet", False).record is None
    failed = run_one(app, "t.quiet", True).record
    assert failed is not None and (failed.status, failed.exc_message) == (FAILURE, "kept")
    assert run_one(app, "t.silent").record is None
    app.conf.update(task_store_errors_even_if_ignored=True)
    assert run_one(app, "t.silent").record is not None
    # A revoked (here: expired) task that ignores results is stored as well.
    from celeriac.middleware.expiry import Expiry

    app.send_task("t.quiet", (False,), expires=datetime.now(timezone.utc) - timedelta(seconds=1))
    [delivery] = app.broker.fetch([QUEUE], 1, consumer="test", lease=30.0)
    skipped = executor(app, Pipeline([Expiry()])).handle(delivery)
    assert skipped.record is not None and skipped.record.status == REVOKED


def test_eager_store_options(app: Celeriac) -> None:
    @app.task(ignore_result=True, store_errors_even_if_ignored=True, store_eager_result=True)
    def quiet(fail: bool) -> int:
        if fail:
            raise ValueError("kept")
        return 1

    @app.task(store_eager_result=True)
    def stored() -> int:
        return 2

    ok, failed = quiet.apply((False,)), quiet.apply((True,))
    assert app.backend.get(ok.id) is None
    record = app.backend.get(failed.id)
    assert record is not None and record.status == FAILURE
    result = stored.apply()
    record = app.backend.get(result.id)
    assert record is not None and (record.status, record.result) == (SUCCESS, 2)


# -- rate_limit ------------------------------------------------------------------------
@pytest.mark.parametrize(("value", "per_second"), [
    ("10/s", 10.0), ("120/m", 2.0), ("3600/h", 1.0), ("5", 5.0), (2.5, 2.5), (0, None),
    ("0/s", None), (None, None)])
def test_rate_limits_are_parsed_as_celery_writes_them(value: Any, per_second: float | None) -> None:
    assert parse_rate_limit(value) == per_second


@pytest.mark.parametrize("value", ["10/d", "fast", "-1/s", -3, True, "1/s/m"])
def test_a_bad_rate_limit_is_refused_when_declared(app: Celeriac, value: Any) -> None:
    with pytest.raises(ConfigurationError, match="rate_limit="):
        app.task(rate_limit=value)


def test_the_node_lists_rate_limits_and_warns_when_this_node_disables_them(
        app: Celeriac, caplog: pytest.LogCaptureFixture) -> None:
    @app.task(name="t.limited", rate_limit="10/s", concurrency_limit=2)
    def limited() -> None: ...

    @app.task(name="t.free")
    def free() -> None: ...

    assert declared(app) == {"t.limited": "10/s"}
    app.conf.update(task_default_rate_limit="100/m")
    assert declared(app) == {"t.free": "100/m", "t.limited": "10/s"}

    class Node:  # what the hook reads of a supervisor
        pass

    node: Any = Node()
    node.app = app
    caplog.set_level(logging.INFO, logger="celeriac.worker")
    RateLimitNotice().node_starting(node)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3 and all("across every worker" in line for line in lines)
    caplog.clear()
    app.conf.update(worker_disable_rate_limits=True)
    RateLimitNotice().node_starting(node)
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 2 and all("NOT enforced on this node" in line for line in warned)
    with pytest.raises(ConfigurationError):
        app.conf.update(task_default_rate_limit="often")


@pytest.mark.parametrize("value", [0, -1, 2.5, True, "3"])
def test_a_bad_concurrency_limit_is_refused_when_declared(app: Celeriac, value: Any) -> None:
    with pytest.raises(ConfigurationError, match="concurrency_limit="):
        app.task(concurrency_limit=value)


# -- max_retries --------------------------------------------------------------------------
def test_max_retries_none_means_unlimited_as_in_celery(app: Celeriac) -> None:
    app.conf.update(task_always_eager=True)
    attempts: list[int] = []

    def flaky(self: Task[Any, Any]) -> int:
        attempts.append(self.request.retries)
        if self.request.retries < 5:
            raise self.retry(countdown=0)
        return self.request.retries

    unlimited = app.task(name="t.unlimited", bind=True, max_retries=None)(flaky)
    assert unlimited.max_retries is None
    assert unlimited.delay().get() == 5
    assert attempts == [0, 1, 2, 3, 4, 5]

    default = app.task(name="t.default", bind=True)(flaky)
    assert default.max_retries == 3  # unset: task_default_max_retries
    attempts.clear()
    with pytest.raises(Exception, match="max retries"):
        default.delay().get()
    assert attempts == [0, 1, 2, 3]

    class Patient(Task[Any, Any]):
        max_retries = None

    inherited = app.task(name="t.inherited", bind=True, base=Patient)(flaky)
    assert inherited.max_retries is None
