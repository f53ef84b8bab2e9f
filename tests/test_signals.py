"""Signals in-process: the Signal class (Celery's calling convention), and what the hook
pipeline, logging set-up and the app send, with Celery's senders and arguments.

The same signals in real worker subprocesses, in every pool, are in
``tests/e2e/test_signals.py``.
"""

from __future__ import annotations

import copy
import gc
import logging
import pickle
import threading
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace
from typing import Any

import pytest
from logstate import bare_logging

from celeriac import Celeriac, Task, signals
from celeriac.backends.base import ResultRecord
from celeriac.brokers import OutgoingMessage
from celeriac.brokers.base import Delivery
from celeriac.context import Request, custom_headers
from celeriac.exceptions import ExceptionInfo, MessageDecodeError, NotRegistered, Retry
from celeriac.message import decode, encode
from celeriac.middleware import Pipeline, Rejection, TaskRun
from celeriac.middleware.expiry import Expiry
from celeriac.middleware.signals import SignalsMiddleware
from celeriac.pools.threads import ThreadPool
from celeriac.signals import Signal
from celeriac.states import REVOKED
from celeriac.worker.executor import Executor
from celeriac.worker.logs import TASK_LOGGER, LogSetup, setup_logging
from celeriac.worker.options import PoolGroup, WorkerOptions
from celeriac.worker.run import run_task

Call = dict[str, Any]


@pytest.fixture
def app() -> Celeriac:
    return Celeriac("t", broker="memory://", backend="memory://")


@pytest.fixture
def listen() -> Iterator[Callable[[Signal], list[Call]]]:
    """Connect a recording receiver to a signal (strongly held, disconnected afterwards);
    returns the list of the keyword arguments of each call."""
    connected: list[tuple[Signal, Callable[..., None]]] = []

    def connect(signal: Signal) -> list[Call]:
        calls: list[Call] = []

        def receiver(**kwargs: Any) -> None:
            calls.append(kwargs)

        signal.connect(receiver, weak=False)
        connected.append((signal, receiver))
        return calls

    yield connect
    for signal, receiver in connected:
        signal.disconnect(receiver)


# -- the Signal class ----------------------------------------------------------------------


def test_connect_as_a_decorator_returns_the_function_and_send_returns_pairs() -> None:
    sig = Signal(name="s")
    assert sig.receivers == [] and sig.send(sender="x") == []

    @sig.connect
    def receiver(sender: Any = None, **kwargs: Any) -> tuple[Any, Any]:
        return sender, kwargs

    assert receiver(sender=1) == (1, {})  # the decorator left the function as it was
    [(who, response)] = sig.send(sender="me", value=3)
    assert who is receiver
    assert response == ("me", {"signal": sig, "value": 3})
    assert sig.send_robust(sender="me") == [(receiver, ("me", {"signal": sig}))]


def test_connect_with_arguments_as_a_decorator_or_a_call() -> None:
    sig = Signal(name="s")
    got: list[str] = []

    @sig.connect(sender="a", weak=False)
    def for_a(**kwargs: Any) -> None:
        got.append("a")

    def for_b(**kwargs: Any) -> None:
        got.append("b")

    assert sig.connect(for_b, "b") is for_b  # Celery's positional form
    sig.send(sender="a")
    sig.send(sender="b")
    sig.send(sender="c")
    assert got == ["a", "b"]
    assert sig.has_listeners("a") and not sig.has_listeners("c")


def test_a_task_sender_matches_receivers_connected_with_the_task_or_its_name(
        app: Celeriac) -> None:
    @app.task(name="t.add")
    def add(x: int, y: int) -> int:
        return x + y

    @app.task(name="t.other")
    def other() -> None: ...

    sig = Signal(name="s")
    got: list[str] = []
    by_object = sig.connect(lambda **kw: got.append("object"), sender=add, weak=False)
    by_name = sig.connect(lambda **kw: got.append("name"), sender="t.add", weak=False)
    sig.send(sender=add)           # task_prerun sends the task object...
    sig.send(sender="t.add")       # ...before_task_publish its name
    sig.send(sender=other)
    sig.send(sender="t.other")
    assert got == ["object", "name", "object", "name"]
    assert sig.disconnect(by_object, sender="t.add")  # one filter, either spelling
    assert sig.disconnect(by_name, sender=add)


def test_other_senders_match_by_identity() -> None:
    sig = Signal(name="s")
    first, second = object(), object()
    got: list[object] = []
    sig.connect(lambda sender=None, **kw: got.append(sender), sender=first, weak=False)
    sig.send(sender=first)
    sig.send(sender=second)
    assert got == [first]


def test_weak_receivers_go_away_with_their_owner_and_strong_ones_stay() -> None:
    sig = Signal(name="s")
    got: list[str] = []

    class Owner:
        def on(self, **kwargs: Any) -> None:
            got.append("method")

    def make(label: str, weak: bool) -> None:
        def receiver(**kwargs: Any) -> None:
            got.append(label)

        sig.connect(receiver, weak=weak)

    owner = Owner()
    sig.connect(owner.on)  # a bound method is held by (instance, function), weakly
    make("weak", weak=True)
    make("strong", weak=False)
    gc.collect()
    sig.send()
    assert got == ["method", "strong"]
    del owner
    gc.collect()
    got.clear()
    sig.send()
    assert got == ["strong"]
    assert len(sig.receivers) == 1  # the dead ones were tidied away on send


def test_a_dying_receiver_never_waits_for_the_lock() -> None:
    """Garbage collection may run while this very thread holds the signal's lock: the
    weak reference's callback must not take the lock (it would deadlock)."""
    sig = Signal(name="s")

    def connect_one() -> None:
        cycle: list[Any] = []

        def receiver(**kwargs: Any) -> None:
            cycle.append(kwargs)  # receiver -> cycle -> receiver: only gc frees it

        cycle.append(receiver)
        sig.connect(receiver)

    def collect_holding_the_lock() -> None:
        with sig.lock:
            gc.collect()

    gc.disable()
    try:
        connect_one()
        [(_, reference)] = sig.receivers
        assert reference() is not None  # unreachable, but alive until collected
        worker = threading.Thread(target=collect_holding_the_lock, daemon=True)
        worker.start()
        worker.join(10)
    finally:
        gc.enable()
    assert not worker.is_alive(), "the weak reference callback waited for the lock"
    assert reference() is None
    assert sig.send() == [] and sig.receivers == []


def test_dispatch_uid_connects_once_and_disconnects_by_uid() -> None:
    sig = Signal(name="s")
    got: list[str] = []

    for label in ("first", "second"):  # e.g. a module imported twice
        sig.connect(lambda label=label, **kw: got.append(label), weak=False,
                    dispatch_uid="audit")
    sig.send()
    assert got == ["first"]
    assert sig.disconnect(dispatch_uid="audit")
    assert not sig.disconnect(dispatch_uid="audit")
    assert sig.send() == []


def test_disconnect_says_whether_it_was_connected_and_respects_the_sender() -> None:
    sig = Signal(name="s")

    def receiver(**kwargs: Any) -> None: ...

    sig.connect(receiver, sender="a")
    sig.connect(receiver)
    assert len(sig.receivers) == 2
    assert sig.disconnect(receiver, sender="a")
    assert not sig.disconnect(receiver, sender="a")
    assert sig.has_listeners("a")  # still connected for every sender
    assert sig.disconnect(receiver)
    assert not sig.has_listeners()
    with pytest.raises(TypeError, match="needs a receiver or a dispatch_uid"):
        sig.disconnect()


def test_a_receiver_that_raises_is_logged_by_name_and_the_others_still_run(
        caplog: pytest.LogCaptureFixture) -> None:
    sig = Signal(name="my_signal")
    got: list[str] = []

    def broken_receiver(**kwargs: Any) -> None:
        raise RuntimeError("receiver bug")

    def good_receiver(**kwargs: Any) -> str:
        got.append("ran")
        return "ok"

    sig.connect(broken_receiver)
    sig.connect(good_receiver)
    with caplog.at_level(logging.ERROR, logger="celeriac.signals"):
        responses = sig.send(sender=None)
    assert got == ["ran"]
    [(first, error), (second, ok)] = responses
    assert first is broken_receiver and isinstance(error, RuntimeError)
    assert (second, ok) == (good_receiver, "ok")
    [record] = caplog.records
    assert "broken_receiver" in record.getMessage() and "my_signal" in record.getMessage()
    assert record.exc_info is not None  # with its traceback


def test_bad_receivers_are_refused_when_connected() -> None:
    sig = Signal(name="s")

    def no_kwargs(sender: Any) -> None: ...

    with pytest.raises(ValueError, match=r"no_kwargs must accept \*\*kwargs"):
        sig.connect(no_kwargs)
    with pytest.raises(TypeError, match="is not callable"):
        sig.connect(42)  # type: ignore[call-overload]
    assert sig.receivers == []


def test_signal_takes_celerys_constructor_arguments() -> None:
    sig = Signal(providing_args={"a", "b"}, name="custom")
    assert (sig.name, sig.providing_args) == ("custom", {"a", "b"})
    assert "custom" in repr(sig)
    with pytest.raises(TypeError, match=r"Signal\(name='custom'\)"):
        Signal("custom")


def test_retry_calls_a_raising_receiver_again_until_it_succeeds(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(signals, "RETRY_FIRST_DELAY", 0.001)
    monkeypatch.setattr(signals, "RETRY_DELAY_STEP", 0.001)
    sig = Signal(name="s")
    attempts: list[int] = []

    def flaky(**kwargs: Any) -> str:
        attempts.append(1)
        if len(attempts) < 3:
            raise ConnectionError("not yet")
        return "done"

    sig.connect(flaky, retry=True)
    [(wrapper, response)] = sig.send()
    assert (response, len(attempts)) == ("done", 3)
    assert signals.describe(wrapper) == f"{__name__}.{flaky.__qualname__} (retried)"
    assert sig.disconnect(flaky)  # found by the function it wraps


# -- the producer: before/after_task_publish -------------------------------------------------


def test_publish_signals_have_the_task_name_as_sender_and_added_headers_travel(
        app: Celeriac, listen: Callable[[Signal], list[Call]]) -> None:
    @app.task(name="t.add", queue="io")
    def add(x: int, y: int) -> int:
        return x + y

    def inject(headers: dict[str, Any], **kwargs: Any) -> None:
        headers["traceparent"] = f"00-{headers['id']}"

    signals.before_task_publish.connect(inject)
    try:
        before = listen(signals.before_task_publish)
        after = listen(signals.after_task_publish)
        result = add.delay(2, 3)
    finally:
        signals.before_task_publish.disconnect(inject)
    [sent] = before
    assert set(sent) == {"signal", "sender", "body", "exchange", "routing_key", "headers",
                         "properties", "declare", "retry_policy"}
    assert (sent["sender"], sent["routing_key"], sent["headers"]["id"]) == (
        "t.add", "io", result.id)
    assert sent["body"][:2] == ([2, 3], {})
    [published] = after
    assert set(published) == {"signal", "sender", "body", "exchange", "routing_key", "headers"}
    assert published["headers"]["traceparent"] == f"00-{result.id}"
    [delivery] = app.broker.fetch(["io"], 1, consumer="c", lease=5)
    assert decode(delivery.body).headers["traceparent"] == f"00-{result.id}"


def test_a_header_that_cannot_be_sent_is_dropped_and_the_message_still_goes_out(
        app: Celeriac, caplog: pytest.LogCaptureFixture) -> None:
    @app.task(name="t.noop")
    def noop() -> None: ...

    def careless(headers: dict[str, Any], **kwargs: Any) -> None:
        headers["span"] = object()      # not JSON
        headers["good"] = "kept"
        del headers["task"]             # the worker could not run it

    signals.before_task_publish.connect(careless)
    try:
        with caplog.at_level(logging.ERROR, logger="celeriac.signals"):
            result = noop.delay()
    finally:
        signals.before_task_publish.disconnect(careless)
    [delivery] = app.broker.fetch(["celery"], 1, consumer="c", lease=5)
    message = decode(delivery.body)
    assert (message.id, message.task) == (result.id, "t.noop")
    assert message.headers["good"] == "kept" and "span" not in message.headers
    text = caplog.text
    assert "header 'span'" in text and "dropped it" in text and "removed header 'task'" in text


# -- custom headers on the request -----------------------------------------------------------


def test_custom_headers_are_readable_on_the_request_as_in_celery(app: Celeriac) -> None:
    @app.task(name="t.traced", bind=True)
    def traced(self: Task[Any, Any]) -> list[Any]:
        request = self.request
        return [request.headers, request.traceparent,  # type: ignore[attr-defined]
                getattr(request, "tracestate", None), request.get("traceparent"),
                request.get("nothing", "default")]

    def inject(headers: dict[str, Any], **kwargs: Any) -> None:
        headers["traceparent"] = "00-abc-01"

    signals.before_task_publish.connect(inject)
    try:
        traced.delay()
    finally:
        signals.before_task_publish.disconnect(inject)
    [delivery] = app.broker.fetch(["celery"], 1, consumer="c", lease=5)
    executor = Executor(app, ThreadPool(1), Pipeline(), lambda delivery: None)
    run = executor._prepare(delivery, decode(delivery.body), traced)
    run_task(run, Pipeline())
    assert run.retval == [{"traceparent": "00-abc-01"}, "00-abc-01", None, "00-abc-01",
                          "default"]


def test_a_request_without_custom_headers_behaves_like_a_plain_value() -> None:
    assert custom_headers({"id": "x", "task": "t", "argsrepr": "()"}) is None
    assert custom_headers({"id": "x", "sentry-trace": "s"}) == {"sentry-trace": "s"}
    plain = Request(id="1", task="t")
    assert plain.headers is None and plain.get("traceparent") is None
    with pytest.raises(AttributeError, match="traceparent"):
        plain.traceparent  # type: ignore[attr-defined]  # noqa: B018
    with_headers = Request(id="1", task="t", headers={"baggage": "k=v"})
    for again in (copy.copy(with_headers), pickle.loads(pickle.dumps(with_headers))):
        assert again == with_headers and again.get("baggage") == "k=v"


# -- task signals (an eager run goes through the same pipeline as a worker's) --------------


def test_task_signals_have_the_task_object_as_sender_and_celerys_arguments(
        app: Celeriac, listen: Callable[[Signal], list[Call]]) -> None:
    @app.task(name="t.add")
    def add(x: int, y: int) -> int:
        return x + y

    prerun, postrun = listen(signals.task_prerun), listen(signals.task_postrun)
    success = listen(signals.task_success)
    result = add.apply((2, 3))
    [before] = prerun
    assert before["sender"] is add and before["task"] is add
    assert (before["task_id"], before["args"], before["kwargs"]) == (result.id, [2, 3], {})
    assert set(before) == {"signal", "sender", "task_id", "task", "args", "kwargs"}
    [after] = postrun
    assert (after["sender"], after["retval"], after["state"]) == (add, 5, "SUCCESS")
    assert set(after) == {"signal", "sender", "task_id", "task", "args", "kwargs", "retval",
                          "state"}
    [succeeded] = success
    assert (succeeded["sender"], succeeded["result"]) == (add, 5)


def test_task_failure_and_retry_carry_the_exception_and_its_traceback(
        app: Celeriac, listen: Callable[[Signal], list[Call]]) -> None:
    @app.task(name="t.fail")
    def fail() -> None:
        raise ValueError("boom")

    @app.task(name="t.flaky", bind=True, max_retries=3)
    def flaky(self: Task[Any, Any]) -> int:
        if self.request.retries < 1:
            raise self.retry(exc=KeyError("again"), countdown=0)
        return self.request.retries

    failure, retry = listen(signals.task_failure), listen(signals.task_retry)
    postrun = listen(signals.task_postrun)
    failed = fail.apply()
    [error] = failure
    assert set(error) == {"signal", "sender", "task_id", "exception", "args", "kwargs",
                          "traceback", "einfo"}
    assert error["sender"] is fail and error["task_id"] == failed.id
    assert isinstance(error["exception"], ValueError)
    assert error["traceback"] is error["exception"].__traceback__ is not None
    assert isinstance(error["einfo"], ExceptionInfo) and "boom" in error["einfo"].traceback
    flaky.apply()
    [retried] = retry
    assert set(retried) == {"signal", "sender", "request", "reason", "einfo"}
    assert retried["sender"] is flaky and retried["request"].retries == 0
    reason = retried["reason"]
    assert isinstance(reason, Retry) and isinstance(reason.exc, KeyError)  # Celery's shape
    assert [(c["state"], type(c["retval"]).__name__) for c in postrun] == [
        ("FAILURE", "ValueError"), ("RETRY", "Retry"), ("SUCCESS", "int")]


def test_task_revoked_for_an_expired_message(app: Celeriac,
                                             listen: Callable[[Signal], list[Call]]) -> None:
    @app.task(name="t.late")
    def late() -> None: ...

    revoked, received = listen(signals.task_revoked), listen(signals.task_received)
    prerun = listen(signals.task_prerun)
    result = late.apply_async(expires=datetime.now(timezone.utc) - timedelta(seconds=5))
    [delivery] = app.broker.fetch(["celery"], 1, consumer="c", lease=5)
    consumer = SimpleNamespace(app=app)
    executor = Executor(app, ThreadPool(1), Pipeline([Expiry(), SignalsMiddleware(consumer)]),
                        lambda delivery: None)
    executor.handle(delivery)
    [got] = revoked
    assert got["sender"] is late and got["request"].id == result.id
    assert (got["terminated"], got["signum"], got["expired"]) == (False, None, True)
    assert [r["sender"] for r in received] == [consumer] and prerun == []


def test_task_revoked_for_a_terminated_task_gives_the_signal_number(
        app: Celeriac, listen: Callable[[Signal], list[Call]]) -> None:
    @app.task(name="t.long")
    def long() -> None: ...

    revoked, postrun = listen(signals.task_revoked), listen(signals.task_postrun)
    run = TaskRun(long, Request(id="r1", task="t.long"), revoked="terminated", signal="SIGKILL",
                  record=ResultRecord(task_id="r1", status=REVOKED))
    SignalsMiddleware().after_task(run)
    [got] = revoked
    assert (got["terminated"], got["signum"], got["expired"]) == (True, 9, False)
    assert postrun == []  # as in Celery: a terminated task has no task_postrun


def test_unknown_and_malformed_messages(app: Celeriac,
                                        listen: Callable[[Signal], list[Call]]) -> None:
    unknown, rejected = listen(signals.task_unknown), listen(signals.task_rejected)
    app.send_task("t.missing")
    app.broker.publish([OutgoingMessage(queue="celery", body=b"not a message")])
    consumer = SimpleNamespace(app=app)
    executor = Executor(app, ThreadPool(1), Pipeline([SignalsMiddleware(consumer)]),
                        lambda delivery: None)
    for delivery in app.broker.fetch(["celery"], 2, consumer="c", lease=5):
        executor.handle(delivery)
    [missing] = unknown
    assert set(missing) == {"signal", "sender", "name", "id", "message", "exc"}
    assert (missing["sender"], missing["name"]) == (consumer, "t.missing")
    assert isinstance(missing["message"], Delivery) and isinstance(missing["exc"], NotRegistered)
    [bad] = rejected
    assert bad["sender"] is consumer and bad["message"].body == b"not a message"
    assert isinstance(bad["exc"], MessageDecodeError)


def test_task_internal_error_names_the_task_object_and_the_call(
        app: Celeriac, listen: Callable[[Signal], list[Call]]) -> None:
    @app.task(name="t.add")
    def add(x: int, y: int) -> int:
        return x + y

    internal = listen(signals.task_internal_error)
    body = encode("t.add", "id-7", [1, 2], {}, queue="celery")
    delivery = Delivery(id="d", queue="celery", body=body, delivery_count=1, token=1)
    try:
        raise OSError("disk full")
    except OSError as exc:
        error = exc
    SignalsMiddleware(SimpleNamespace(app=app)).message_rejected(
        Rejection(delivery, "internal error", error, kind="internal"))
    [got] = internal
    assert got["sender"] is add and got["task_id"] == "id-7"
    assert (got["args"], got["kwargs"], got["request"]["id"]) == ([1, 2], {}, "id-7")
    assert got["exception"] is error and got["traceback"] is error.__traceback__
    assert isinstance(got["einfo"], ExceptionInfo)


# -- the worker node ----------------------------------------------------------------------------


def test_node_start_signals_and_settings_they_change_reach_the_worker_processes(
        app: Celeriac, listen: Callable[[Signal], list[Call]],
        caplog: pytest.LogCaptureFixture) -> None:
    from celeriac.worker.supervisor import Supervisor

    def configure(conf: Any = None, **kwargs: Any) -> None:
        conf.result_expires = 123.0
        conf.task_routes = {"t.*": {"queue": "io"}}

    init, after = listen(signals.celeryd_init), listen(signals.celeryd_after_setup)
    worker_init = listen(signals.worker_init)
    signals.celeryd_init.connect(configure)
    supervisor = Supervisor(app, WorkerOptions(app="t", groups=[PoolGroup("threads", 4, ["q"])],
                                               node="w1@host"))
    try:
        SignalsMiddleware().node_starting(supervisor)
    finally:
        signals.celeryd_init.disconnect(configure)
    [first] = init
    assert (first["sender"], first["instance"], first["conf"]) == ("w1@host", supervisor, app.conf)
    assert {k: first["options"][k] for k in ("hostname", "pool", "concurrency", "queues")} == {
        "hostname": "w1@host", "pool": "threads", "concurrency": 4, "queues": ["q"]}
    assert [c["sender"] for c in worker_init] == [supervisor]
    assert [(c["sender"], c["conf"]) for c in after] == [("w1@host", app.conf)]
    assert supervisor.options.settings == {"result_expires": 123.0,
                                           "task_routes": {"t.*": {"queue": "io"}}}


# -- logging ------------------------------------------------------------------------------------


def test_celeriac_configures_logging_then_sends_the_after_setup_signals(
        listen: Callable[[Signal], list[Call]]) -> None:
    logger, task_logger = listen(signals.after_setup_logger), listen(signals.after_setup_task_logger)
    with bare_logging() as root:
        assert setup_logging(LogSetup(logging.WARNING, format="root: %(message)s",
                                      task_format="task: %(message)s")) is False
        configured = (root.handlers[:], root.level, logging.getLogger(TASK_LOGGER).level)
    [handler], level, task_level = configured
    assert handler.formatter is not None and handler.formatter._fmt == "root: %(message)s"
    assert level == task_level == logging.WARNING
    expected = {"loglevel": logging.WARNING, "logfile": None, "colorize": False,
                "format": "root: %(message)s"}
    [root_call] = logger
    assert root_call["sender"] is None and root_call["logger"] is logging.getLogger()
    assert {k: root_call[k] for k in expected} == expected
    [task_call] = task_logger  # as in Celery, with the task format
    assert task_call["logger"] is logging.getLogger(TASK_LOGGER)
    assert {k: task_call[k] for k in expected} == {**expected, "format": "task: %(message)s"}


def test_a_setup_logging_receiver_takes_logging_over(
        listen: Callable[[Signal], list[Call]]) -> None:
    setup, after = listen(signals.setup_logging), listen(signals.after_setup_logger)
    with bare_logging() as root:
        assert setup_logging(LogSetup.from_conf(Celeriac("t").conf, "info", None)) is True
        assert root.handlers == [] and root.level == logging.NOTSET  # left alone
    assert after == []
    [call] = setup
    assert call["sender"] is None and call["loglevel"] == logging.INFO
    assert call["format"] == "[%(asctime)s: %(levelname)s/%(processName)s] %(message)s"
    assert (call["logfile"], call["colorize"]) == (None, False)
    with pytest.raises(ValueError, match="unknown log level 'LOUD'"):
        LogSetup.from_conf(Celeriac("t").conf, "LOUD", None)


def test_a_setup_logging_receiver_that_raises_does_not_leave_the_process_without_logs(
        listen: Callable[[Signal], list[Call]], caplog: pytest.LogCaptureFixture) -> None:
    def broken_logging_setup(**kwargs: Any) -> None:
        raise OSError("cannot open /var/log/app.log")

    after = listen(signals.after_setup_logger)
    signals.setup_logging.connect(broken_logging_setup)
    signals_log = logging.getLogger("celeriac.signals")
    signals_log.addHandler(caplog.handler)  # the root logger is bare meanwhile
    try:
        with bare_logging() as root:
            assert setup_logging(LogSetup(logging.INFO)) is False
            assert len(root.handlers) == 1  # celeriac's own stderr handler
    finally:
        signals_log.removeHandler(caplog.handler)
        signals.setup_logging.disconnect(broken_logging_setup)
    assert len(after) == 1
    assert "broken_logging_setup" in caplog.text


# -- the app's own signals ---------------------------------------------------------------------


def test_on_after_configure_fires_once_on_first_use_and_before_on_after_finalize() -> None:
    app = Celeriac("t", broker="memory://", backend="memory://")
    seen: list[tuple[str, Any]] = []

    @app.on_after_configure.connect
    def setup_periodic_tasks(sender: Celeriac, **kwargs: Any) -> None:
        seen.append(("configure", kwargs["source"]))
        sender.send_task("t.from_the_receiver")  # the app is usable in the receiver

    @app.on_after_finalize.connect
    def finalized(sender: Celeriac, **kwargs: Any) -> None:
        seen.append(("finalize", sender))

    assert seen == []  # creating the app and connecting is not using it
    threads = [threading.Thread(target=lambda: app.broker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    app.send_task("t.other")
    app.finalize()
    app.finalize()
    assert seen == [("configure", app.conf), ("finalize", app)]
    assert app.broker.stats()["celery"].ready == 2
