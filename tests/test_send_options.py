"""The send options past the common ones (celeriac.send_options), in-process with a real
memory broker: each option encoded, decoded and seen by the task as a worker runs it,
and the options celeriac refuses refused with their reason.

The same with the real CLI worker: ``tests/e2e/test_send_options.py``.
"""

from __future__ import annotations

import logging
import subprocess
import textwrap
from typing import Any

import pytest
from conftest import compare_python, needs_celery

from celeriac import Celeriac, Task
from celeriac.brokers import OutgoingMessage
from celeriac.exceptions import ConfigurationError, UnknownSettingError
from celeriac.message import TaskMessage, decode
from celeriac.middleware import Pipeline, TaskRun
from celeriac.middleware.events import finished_event
from celeriac.pools.threads import ThreadPool
from celeriac.send_options import REFUSED
from celeriac.task import SEND_OPTIONS
from celeriac.worker.executor import Executor
from celeriac.worker.run import run_task


@pytest.fixture
def app() -> Celeriac:
    return Celeriac("t", broker="memory://", backend="memory://")


def fetched(app: Celeriac, queue: str = "celery") -> TaskMessage:
    [delivery] = app.broker.fetch([queue], 1, consumer="c", lease=5)
    return decode(delivery.body)


def run_next(app: Celeriac, task: Task[Any, Any], queue: str = "celery") -> TaskRun:
    """Fetch the next message of ``queue`` and run it as a worker would."""
    [delivery] = app.broker.fetch([queue], 1, consumer="c", lease=5)
    executor = Executor(app, ThreadPool(1), Pipeline(), lambda delivery: None)
    run = executor._prepare(delivery, decode(delivery.body), task)
    run_task(run, Pipeline())
    return run


def nothing_sent(app: Celeriac, queue: str = "celery") -> bool:
    return not app.broker.fetch([queue], 1, consumer="c", lease=5)


# -- headers -----------------------------------------------------------------------------


def test_custom_headers_travel_to_the_request(app: Celeriac) -> None:
    @app.task(name="t.seen", bind=True)
    def seen(self: Task[Any, Any]) -> list[Any]:
        return [self.request.headers, self.request.tenant,  # type: ignore[attr-defined]
                self.request.get("trace")]

    seen.apply_async(headers={"tenant": "acme", "trace": [1, 2]})
    run = run_next(app, seen)
    assert run.retval == [{"tenant": "acme", "trace": [1, 2]}, "acme", [1, 2]]


def test_headers_in_an_eager_run(app: Celeriac) -> None:
    @app.task(name="t.eager", bind=True)
    def eager(self: Task[Any, Any]) -> Any:
        return self.request.headers

    app.conf.task_always_eager = True
    assert eager.apply_async(headers={"tenant": "acme"}).get() == {"tenant": "acme"}


@pytest.mark.parametrize("key", ["id", "task", "eta", "retries", "shadow", "root_id"])
def test_a_protocol_header_is_refused_and_nothing_is_sent(app: Celeriac, key: str) -> None:
    @app.task(name="t.noop")
    def noop() -> None:
        return None

    with pytest.raises(ConfigurationError, match=f"'{key}' is a task protocol header"):
        noop.apply_async(headers={key: "x", "fine": 1})
    assert nothing_sent(app)


def test_headers_must_be_a_dict(app: Celeriac) -> None:
    @app.task(name="t.noop")
    def noop() -> None:
        return None

    with pytest.raises(ConfigurationError, match="must be a dict"):
        noop.apply_async(headers=[("a", 1)])  # type: ignore[typeddict-item]


def test_a_retry_keeps_the_custom_headers_shadow_and_reply_to(app: Celeriac) -> None:
    @app.task(name="t.flaky", bind=True, max_retries=2)
    def flaky(self: Task[Any, Any]) -> None:
        raise self.retry(countdown=0)

    flaky.apply_async(headers={"tenant": "acme"}, shadow="flaky-for-acme", reply_to="box")
    run_next(app, flaky)
    again = fetched(app)
    assert again.retries == 1
    assert again.headers["tenant"] == "acme"
    assert again.headers["shadow"] == "flaky-for-acme"
    assert again.properties["reply_to"] == "box"


# -- shadow --------------------------------------------------------------------------------


def test_shadow_names_the_run_in_logs_and_events(app: Celeriac, caplog: pytest.LogCaptureFixture
                                                 ) -> None:
    @app.task(name="t.add")
    def add(x: int, y: int) -> int:
        return x + y

    add.apply_async((2, 3), shadow="add-for-report")
    message = fetched(app)
    assert message.headers["shadow"] == "add-for-report" and message.task == "t.add"
    add.apply_async((2, 3), shadow="add-for-report")
    run = run_next(app, add)
    assert run.retval == 5 and run.request.shadow == "add-for-report"
    assert run.name == "add-for-report"
    event = finished_event(run, "node")
    assert event is not None and event.data["name"] == "add-for-report"
    assert run.record is not None and run.record.name == "t.add"  # the result keeps the real name
    add.apply_async((1, 1))
    assert run_next(app, add).name == "t.add"


def test_the_worker_logs_the_shadow_name(app: Celeriac, caplog: pytest.LogCaptureFixture) -> None:
    @app.task(name="t.add")
    def add(x: int, y: int) -> int:
        return x + y

    add.apply_async((2, 3), shadow="add-for-report")
    [delivery] = app.broker.fetch(["celery"], 1, consumer="c", lease=5)
    executor = Executor(app, ThreadPool(1), Pipeline(), lambda delivery: None)
    run = executor._prepare(delivery, decode(delivery.body), add)
    with caplog.at_level(logging.INFO, logger="celeriac"):
        executor._run(run)
    assert f"task add-for-report[{run.request.id}] succeeded" in caplog.text


def test_shadow_name_hook_on_a_subclass_and_as_a_decorator_keyword(app: Celeriac) -> None:
    class Named(Task[Any, Any]):
        def shadow_name(self, args: Any, kwargs: Any, options: Any) -> str | None:
            return f"{self.name}:{args[0]}"

    @app.task(name="t.job", base=Named)
    def job(kind: str) -> str:
        return kind

    def by_kwarg(task: Task[Any, Any], args: Any, kwargs: Any, options: Any) -> str:
        return f"{task.name}/{kwargs['kind']}/{options.get('priority')}"

    @app.task(name="t.other", shadow_name=by_kwarg)
    def other(kind: str) -> str:
        return kind

    @app.task(name="t.plain")
    def plain() -> None:
        return None

    job.delay("report")
    assert fetched(app).headers["shadow"] == "t.job:report"
    other.apply_async(kwargs={"kind": "x"}, priority=3)
    assert fetched(app).headers["shadow"] == "t.other/x/3"
    job.apply_async(("report",), shadow="given")  # the option wins over the hook
    assert fetched(app).headers["shadow"] == "given"
    plain.delay()
    assert fetched(app).headers["shadow"] is None
    assert not plain.has_shadow_name and job.has_shadow_name and other.has_shadow_name


# -- routing_key and exchange ------------------------------------------------------------


def test_routing_key_is_the_queue_on_the_default_exchange(app: Celeriac) -> None:
    @app.task(name="t.noop")
    def noop() -> None:
        return None

    noop.apply_async(routing_key="reports")
    assert fetched(app, "reports").task == "t.noop"
    noop.apply_async(routing_key="reports", exchange="")
    noop.apply_async(routing_key="reports", exchange="celery")
    assert fetched(app, "reports") and fetched(app, "reports")
    noop.apply_async(queue="mail", routing_key="reports")  # queue wins, as in Celery
    assert fetched(app, "mail").task == "t.noop"
    noop.apply_async(exchange=None)
    assert fetched(app).task == "t.noop"


def test_another_exchange_is_refused_with_the_reason(app: Celeriac) -> None:
    @app.task(name="t.noop")
    def noop() -> None:
        return None

    with pytest.raises(ConfigurationError, match=r"exchange='topics'.*no exchanges.*issue 12"):
        noop.apply_async(routing_key="a.b", exchange="topics")
    with pytest.raises(ConfigurationError, match="routing_key=''"):
        noop.apply_async(routing_key="")
    assert nothing_sent(app)


def test_task_routes_with_routing_key_and_exchange(app: Celeriac) -> None:
    app.conf.task_routes = {"t.a": {"routing_key": "qa"},
                            "t.b": {"exchange": "celery", "routing_key": "qb"},
                            "t.c": {"exchange": "fanout", "routing_key": "qc"}}
    assert app.route("t.a") == "qa" and app.route("t.b") == "qb"
    with pytest.raises(ConfigurationError, match=r"task_routes\['t.c'\]: exchange='fanout'"):
        app.route("t.c")


# -- publish retry, add_to_parent, reply_to --------------------------------------------------


def test_retry_and_retry_policy_are_accepted_and_logged_once(
        app: Celeriac, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    from celeriac import send_options

    monkeypatch.setattr(send_options, "_RETRY_NOTED", [])

    @app.task(name="t.noop")
    def noop() -> None:
        return None

    with caplog.at_level(logging.WARNING, logger="celeriac.send"):
        noop.apply_async(retry=False)
        noop.apply_async(retry=True, retry_policy={"max_retries": 1, "interval_start": 0})
    assert caplog.text.count("broker_reconnect_timeout") == 1
    assert fetched(app) and fetched(app)
    with pytest.raises(ConfigurationError, match="retry_policy=5"):
        noop.apply_async(retry_policy=5)  # type: ignore[typeddict-item]


def test_add_to_parent_false_keeps_a_send_out_of_the_children(app: Celeriac) -> None:
    @app.task(name="t.child")
    def child() -> None:
        return None

    @app.task(name="t.parent")
    def parent() -> list[str]:
        kept = child.delay()
        child.apply_async(add_to_parent=False)
        app.send_task("t.child", add_to_parent=False)
        app.send_many([child.s().set(add_to_parent=False), child.s()])
        return [kept.id]

    parent.delay()
    run = run_next(app, parent)
    assert run.record is not None, run
    assert [c.id for c in run.request.children][:1] == run.retval
    assert len(run.request.children) == 2  # delay() and the plain signature of send_many


def test_reply_to_is_the_messages_property(app: Celeriac) -> None:
    @app.task(name="t.where", bind=True)
    def where(self: Task[Any, Any]) -> Any:
        return self.request.reply_to

    where.apply_async(reply_to="replies-1")
    assert run_next(app, where).retval == "replies-1"


# -- refusals ------------------------------------------------------------------------------


@pytest.mark.parametrize("key", sorted(REFUSED))
def test_kombu_and_amqp_options_are_refused_with_the_reason(app: Celeriac, key: str) -> None:
    @app.task(name="t.noop")
    def noop() -> None:
        return None

    with pytest.raises(UnknownSettingError, match=f"option '{key}' of apply_async is not supported: "
                                                  f"{REFUSED[key][:20]}"):
        noop.apply_async(**{key: object()})  # type: ignore[misc]
    assert key not in SEND_OPTIONS
    assert nothing_sent(app)


def test_a_misspelt_option_still_gets_a_hint(app: Celeriac) -> None:
    @app.task(name="t.noop")
    def noop() -> None:
        return None

    with pytest.raises(UnknownSettingError, match="did you mean 'headers'"):
        noop.apply_async(header={"a": 1})  # type: ignore[call-arg]


def test_a_signature_keeps_headers_and_shadow_through_its_dict_form(app: Celeriac) -> None:
    from celeriac.canvas import Signature

    @app.task(name="t.noop")
    def noop() -> None:
        return None

    sig = noop.s().set(headers={"tenant": "acme"}, shadow="alias", routing_key="reports")
    wire = sig.to_dict()
    wire["options"]["headers"] = {"tenant": "acme", "stamped_headers": ["x"]}  # Celery's stamping
    again = Signature.from_dict(wire, app)
    assert again.options == {"headers": {"tenant": "acme"}, "shadow": "alias"}
    again.delay()
    message = fetched(app)
    assert message.headers["tenant"] == "acme" and message.headers["shadow"] == "alias"
    sig.delay()  # the signature itself routes by its routing key
    assert fetched(app, "reports").headers["shadow"] == "alias"


CELERY_SENDS = textwrap.dedent('''
    import json
    from celery import Celery
    app = Celery("t", broker="memory://")

    @app.task(name="t.seen", bind=True)
    def seen(self): pass

    with app.connection() as conn:
        seen.apply_async(headers={"tenant": "acme"}, shadow="seen-for-acme", connection=conn)
        print(json.dumps(conn.default_channel._get("celery")))
''')


@needs_celery
def test_headers_and_shadow_sent_by_celery_reach_a_celeriac_task(app: Celeriac) -> None:
    python = compare_python()
    assert python is not None
    out = subprocess.run([str(python), "-c", CELERY_SENDS], capture_output=True, timeout=120,
                         check=True, text=True).stdout

    @app.task(name="t.seen", bind=True)
    def seen(self: Task[Any, Any]) -> list[Any]:
        return [self.request.headers, self.request.tenant,  # type: ignore[attr-defined]
                self.request.shadow]

    app.broker.publish([OutgoingMessage(queue="celery", body=out.strip().encode())])
    run = run_next(app, seen)
    assert run.retval == [{"tenant": "acme"}, "acme", "seen-for-acme"]
    assert run.name == "seen-for-acme"
