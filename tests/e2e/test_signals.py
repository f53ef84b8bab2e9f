"""Signals end to end: a real worker for every pool, receivers in the project's tasks.py.

The project's ``tasks.py`` connects a receiver to every signal that records one
JSON line per call (signal, pid, sender, argument names, values) in
``signals.jsonl``. One worker start per pool runs a handful of tasks -- success,
failure, a retry, an unknown task, a malformed message, an expired message, a
task reading a header a ``before_task_publish`` receiver added, a ``base=`` task
-- and after a warm shutdown the test checks that each signal fired exactly once
per event, with Celery's argument names, in the process ``docs/signals.md``
says: the producer (this test process), the supervisor (the ``celeriac worker``
process) or a worker process. A receiver that raises is connected to many signals
throughout: every task still succeeds and the worker stays up.

Logging signals need two set-ups: in half the pools the worker processes
configure logging themselves (a ``setup_logging`` receiver) and the supervisor
lets celeriac do it (``after_setup_logger``, ``after_setup_task_logger``); in
the other half the reverse.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from types import ModuleType
from typing import Any

import pytest
from conftest import Project, wait_until

from celeriac.brokers import OutgoingMessage

POOLS = ["solo", "threads", "prefork", "gevent", "eventlet", "asyncio"]
CONCURRENCY = {"solo": 1, "threads": 2, "prefork": 2, "gevent": 4, "eventlet": 4, "asyncio": 4}
#: Which process has a ``setup_logging`` receiver (and configures logging itself).
USER_LOGGING = {"solo": "worker", "threads": "supervisor", "prefork": "worker",
                "gevent": "supervisor", "eventlet": "worker", "asyncio": "worker"}

TASKS = r'''
"""Receivers for every signal, each call recorded as one JSON line in signals.jsonl."""
import json, logging, os, sys

from celeriac import Celeriac, Task, signals
from celeriac.context import Request

LOG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "signals.jsonl")
IN_WORKER_PROCESS = "CELERIAC_WORKER_SPEC" in os.environ
RECEIVERS = []


def plain(value):
    """A JSON-friendly summary of an argument."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, Task):
        return "task:" + value.name
    if isinstance(value, Request):
        return {"id": value.id, "task": value.task, "retries": value.retries}
    if isinstance(value, BaseException):
        return type(value).__name__ + ": " + str(value)
    if isinstance(value, logging.Logger):
        return "logger:" + value.name
    return "<" + type(value).__name__ + ">"


def note(name, **data):
    """One line per call, appended with one write (processes share the file)."""
    line = json.dumps({"signal": name, "pid": os.getpid(), **data}) + "\n"
    fd = os.open(LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def connect(signal, receiver):
    signal.connect(receiver)  # weakly, as by default; RECEIVERS keeps them alive
    RECEIVERS.append((signal, receiver))


def disconnect_all():
    """The test process imports this module once per test: leave nothing behind."""
    for signal, receiver in RECEIVERS:
        signal.disconnect(receiver)


def handlers(prefix):
    class Handlers(Task):
        def before_start(self, task_id, args, kwargs):
            note(prefix + "before_start", task=self.name, task_id=task_id)

        def on_success(self, retval, task_id, args, kwargs):
            note(prefix + "on_success", task=self.name, task_id=task_id, retval=plain(retval))

        def on_failure(self, exc, task_id, args, kwargs, einfo):
            note(prefix + "on_failure", task=self.name, task_id=task_id, exc=plain(exc),
                 einfo=plain(einfo))

        def on_retry(self, exc, task_id, args, kwargs, einfo):
            note(prefix + "on_retry", task=self.name, task_id=task_id, exc=plain(exc))

        def after_return(self, status, retval, task_id, args, kwargs, einfo):
            note(prefix + "after_return", task=self.name, task_id=task_id, status=status)

    return Handlers


app = Celeriac("tasks", task_cls=handlers(""))


@app.on_after_configure.connect
def after_configure(sender, **kwargs):
    note("on_after_configure", sender_is_app=sender is app, source=plain(kwargs["source"]))


@app.on_after_finalize.connect
def after_finalize(sender, **kwargs):
    note("on_after_finalize", sender_is_app=sender is app)


@app.task
def add(x, y):
    return x + y


@app.task
def fail(message):
    raise ValueError(message)


@app.task(bind=True, max_retries=3)
def flaky(self):
    if self.request.retries < 1:
        raise self.retry(exc=KeyError("again"), countdown=0.1)
    return self.request.retries


@app.task(bind=True)
def traced(self):
    return [(self.request.headers or {}).get("x_trace"), getattr(self.request, "x_trace", None)]


@app.task(base=handlers("base."))
def based(x):
    return x


@app.task
def setting():
    return app.conf.result_expires


def recorder(name):
    def receive(sender=None, **kwargs):
        note(name, sender=plain(sender), arguments=sorted(kwargs),
             values={k: plain(v) for k, v in kwargs.items() if k not in ("signal", "conf", "instance")})
    return receive


for name in ["before_task_publish", "after_task_publish", "task_received", "task_prerun",
             "task_postrun", "task_success", "task_failure", "task_retry", "task_revoked",
             "task_rejected", "task_unknown", "task_internal_error", "celeryd_init",
             "worker_init", "celeryd_after_setup", "worker_ready", "heartbeat_sent",
             "worker_shutting_down", "worker_shutdown", "worker_process_init",
             "worker_process_shutdown", "after_setup_logger", "after_setup_task_logger"]:
    connect(getattr(signals, name), recorder(name))


def add_trace(headers=None, **kwargs):
    headers["x_trace"] = "trace-" + headers["id"]


def per_node(sender=None, conf=None, **kwargs):
    conf.result_expires = 4321  # celeryd_init's use: configure this node


def broken_receiver(**kwargs):
    raise RuntimeError("this receiver is broken")


connect(signals.before_task_publish, add_trace)
connect(signals.celeryd_init, per_node)
for signal in (signals.before_task_publish, signals.after_task_publish, signals.task_received,
               signals.task_prerun, signals.task_postrun, signals.task_success,
               signals.task_failure, signals.task_retry, signals.worker_process_init,
               signals.worker_init, signals.worker_ready, signals.heartbeat_sent):
    connect(signal, broken_receiver)


def own_logging(sender=None, loglevel=None, logfile=None, format=None, colorize=None, **kwargs):
    """A user's own logging set-up: celeriac then configures nothing."""
    logging.basicConfig(level=loglevel, stream=sys.stderr, format="[user-logging] " + format)
    values = {"loglevel": loglevel, "logfile": logfile, "format": format, "colorize": colorize}
    note("setup_logging", sender=sender, arguments=sorted([*kwargs, *values]), values=values)


if os.environ.get("USER_LOGGING") == ("worker" if IN_WORKER_PROCESS else "supervisor"):
    connect(signals.setup_logging, own_logging)
'''

#: Celery's argument names of each signal (plus ``signal``, which every receiver gets).
ARGUMENTS = {
    "before_task_publish": {"body", "exchange", "routing_key", "headers", "properties",
                            "declare", "retry_policy"},
    "after_task_publish": {"body", "exchange", "routing_key", "headers"},
    "task_received": {"request"},
    "task_prerun": {"task_id", "task", "args", "kwargs"},
    "task_postrun": {"task_id", "task", "args", "kwargs", "retval", "state"},
    "task_success": {"result"},
    "task_failure": {"task_id", "exception", "args", "kwargs", "traceback", "einfo"},
    "task_retry": {"request", "reason", "einfo"},
    "task_revoked": {"request", "terminated", "signum", "expired"},
    "task_unknown": {"name", "id", "message", "exc"},
    "task_rejected": {"message", "exc"},
    "celeryd_init": {"instance", "conf", "options"},
    "celeryd_after_setup": {"instance", "conf"},
    "worker_init": set(),
    "worker_ready": set(),
    "heartbeat_sent": set(),
    "worker_shutting_down": {"sig", "how", "exitcode"},
    "worker_shutdown": set(),
    "worker_process_init": set(),
    "worker_process_shutdown": {"pid", "exitcode"},
    "setup_logging": {"loglevel", "logfile", "format", "colorize"},
    "after_setup_logger": {"logger", "loglevel", "logfile", "format", "colorize"},
    "after_setup_task_logger": {"logger", "loglevel", "logfile", "format", "colorize"},
}
#: Signals about one message: sent in the worker process that handled it.
TASK_SIGNALS = {"task_received", "task_prerun", "task_postrun", "task_success", "task_failure",
                "task_retry", "task_revoked", "task_unknown", "task_rejected",
                "before_start", "on_success", "on_failure", "on_retry", "after_return",
                "base.before_start", "base.on_success", "base.after_return"}
#: Signals of the node, in the order the supervisor sends them.
NODE_SIGNALS = ["celeryd_init", "worker_init", "celeryd_after_setup", "worker_ready",
                "worker_shutting_down", "worker_shutdown"]
#: Task-class handlers (``task_cls=``) and their ``base=`` counterparts.
HANDLERS = ["before_start", "on_success", "on_failure", "on_retry", "after_return"]

Record = dict[str, Any]


@pytest.fixture
def tasks(project: Project, pool: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    monkeypatch.setenv("USER_LOGGING", USER_LOGGING[pool])
    (project.path / "tasks.py").write_text(TASKS)
    project.app()
    module = sys.modules["tasks"]
    yield module
    module.disconnect_all()


def task_id_of(record: Record) -> str | None:
    values = record.get("values") or {}
    request = values.get("request") if isinstance(values.get("request"), dict) else {}
    headers = values.get("headers") if isinstance(values.get("headers"), dict) else {}
    found = (record.get("task_id") or values.get("task_id") or request.get("id")
             or values.get("id") or headers.get("id"))
    return str(found) if found else None


def count(records: list[Record], signal: str, task_id: str | None = None) -> int:
    return sum(1 for r in records if r["signal"] == signal
               and (task_id is None or task_id_of(r) == task_id))


def only(records: list[Record], signal: str, **where: Any) -> Record:
    found = [r for r in records if r["signal"] == signal
             and all(task_id_of(r) == v if k == "task_id" else r.get(k) == v
                     for k, v in where.items())]
    assert len(found) == 1, (signal, where, found)
    return found[0]


@pytest.mark.parametrize("pool", POOLS)
def test_every_signal_fires_once_per_event_in_its_own_process(
        project: Project, tasks: ModuleType, pool: str) -> None:
    worker = project.start_worker("-P", pool, "-c", str(CONCURRENCY[pool]))
    sent = {
        "add": tasks.add.delay(2, 3),
        "fail": tasks.fail.delay("boom"),
        "flaky": tasks.flaky.delay(),
        "traced": tasks.traced.delay(),
        "based": tasks.based.delay(7),
        "setting": tasks.setting.delay(),
        "missing": tasks.app.send_task("tasks.missing"),
        "expired": tasks.add.apply_async(
            (1, 1), expires=datetime.now(timezone.utc) - timedelta(seconds=30)),
    }
    tasks.app.broker.publish([OutgoingMessage(queue="celery", body=b"not a task message")])
    ids = {name: result.id for name, result in sent.items()}
    assert sent["add"].get(timeout=30) == 5
    with pytest.raises(ValueError, match="boom"):
        sent["fail"].get(timeout=30)
    assert sent["flaky"].get(timeout=30) == 1
    trace = f"trace-{ids['traced']}"
    assert sent["traced"].get(timeout=30) == [trace, trace]  # headers and attribute
    assert sent["based"].get(timeout=30) == 7
    assert sent["setting"].get(timeout=30) == 4321  # set by a celeryd_init receiver
    wait_until(lambda: sent["missing"].state == "FAILURE", message="the unknown task failed")
    wait_until(lambda: sent["expired"].state == "REVOKED", message="the expired task revoked")
    log_path = project.path / "signals.jsonl"
    wait_until(lambda: "task_rejected" in log_path.read_text(), message="task_rejected")
    children = set(worker.children())
    assert worker.stop() == 0, worker.log()

    records = [json.loads(line) for line in log_path.read_text().splitlines()]
    producer, node = os.getpid(), worker.proc.pid
    assert len(children) == (CONCURRENCY[pool] if pool == "prefork" else 1)
    assert {r["pid"] for r in records} == {producer, node, *children}
    for record in records:
        if record["signal"] in ARGUMENTS:
            assert set(record["arguments"]) == {"signal", *ARGUMENTS[record["signal"]]}, record
    check_producer([r for r in records if r["pid"] == producer], ids)
    check_node([r for r in records if r["pid"] == node], pool, node)
    in_workers = [r for r in records if r["pid"] in children]
    for pid in children:
        check_worker_process([r for r in records if r["pid"] == pid], pid)
    check_tasks(in_workers, ids)
    check_logging(records, pool, node, children)
    log = worker.log()
    for signal in ("task_prerun", "task_success", "worker_process_init", "worker_ready"):
        assert f"receiver tasks.broken_receiver of signal {signal} raised" in log


def check_producer(records: list[Record], ids: dict[str, str]) -> None:
    """This process sent every task: both publish signals once per message, the task name
    as sender; nothing else but ``on_after_configure`` (on first use)."""
    assert {r["signal"] for r in records} == {"before_task_publish", "after_task_publish",
                                              "on_after_configure"}
    assert count(records, "on_after_configure") == 1
    for name, task_id in ids.items():
        for signal in ("before_task_publish", "after_task_publish"):
            record = only(records, signal, task_id=task_id)
            assert record["sender"] == ("tasks.missing" if name == "missing" else
                                        f"tasks.{'add' if name == 'expired' else name}")
            assert record["values"]["routing_key"] == "celery"
        # Receivers run in connection order: the recorder before add_trace, then the
        # published message carries what add_trace added.
        headers = [only(records, signal, task_id=task_id)["values"]["headers"]
                   for signal in ("before_task_publish", "after_task_publish")]
        assert ("x_trace" in headers[0], headers[1].get("x_trace")) == (False, f"trace-{task_id}")
    body = only(records, "before_task_publish", task_id=ids["add"])["values"]["body"]
    assert body[:2] == [[2, 3], {}]


def check_node(records: list[Record], pool: str, node_pid: int) -> None:
    """The supervisor: the node signals once each, in order, and no task signal."""
    signals = [r["signal"] for r in records]
    for name in [*NODE_SIGNALS, "on_after_configure", "on_after_finalize"]:
        assert signals.count(name) == 1, (name, signals)
    assert [s for s in signals if s in NODE_SIGNALS] == NODE_SIGNALS
    assert signals.count("heartbeat_sent") >= 1
    assert not set(signals) & TASK_SIGNALS
    node_name = f"celeriac.{node_pid}@{socket.gethostname()}"
    init = only(records, "celeryd_init")
    assert init["sender"] == node_name
    options = init["values"]["options"]
    assert (options["hostname"], options["pool"], options["concurrency"]) == (
        node_name, pool, CONCURRENCY[pool])
    assert only(records, "celeryd_after_setup")["sender"] == node_name
    for name in ("worker_init", "worker_ready", "worker_shutdown", "heartbeat_sent"):
        assert {r["sender"] for r in records if r["signal"] == name} == {"<Supervisor>"}
    stopping = only(records, "worker_shutting_down")
    assert stopping["sender"] == node_name
    assert stopping["values"] == {"sig": "SIGTERM", "how": "Warm", "exitcode": 0}
    assert only(records, "on_after_configure")["source"] == "<Settings>"


def check_worker_process(records: list[Record], pid: int) -> None:
    """One worker process: its own start and end, once, and the app's signals once."""
    signals = [r["signal"] for r in records]
    for name in ("worker_process_init", "worker_process_shutdown", "on_after_configure",
                 "on_after_finalize"):
        assert signals.count(name) == 1, (name, signals)
    assert signals.index("worker_process_init") < signals.index("worker_process_shutdown")
    assert not set(signals) & set(NODE_SIGNALS)
    shutdown = only(records, "worker_process_shutdown")
    assert (shutdown["sender"], shutdown["values"]) == (None, {"pid": pid, "exitcode": 0})
    assert only(records, "worker_process_init")["sender"] is None
    assert all(r["sender_is_app"] for r in records if r["signal"].startswith("on_after"))


def check_tasks(records: list[Record], ids: dict[str, str]) -> None:
    """Task signals and handlers, in the worker processes: once per event."""
    add, fail, flaky = ids["add"], ids["fail"], ids["flaky"]
    expected = {
        add: {"task_received": 1, "task_prerun": 1, "task_postrun": 1, "before_start": 1,
              "on_success": 1, "after_return": 1},
        fail: {"task_received": 1, "task_prerun": 1, "task_failure": 1, "task_postrun": 1,
               "before_start": 1, "on_failure": 1, "after_return": 1},
        flaky: {"task_received": 2, "task_prerun": 2, "task_retry": 1, "task_postrun": 2,
                "before_start": 2, "on_retry": 1, "on_success": 1, "after_return": 2},
        ids["based"]: {"task_received": 1, "task_prerun": 1, "task_postrun": 1,
                       "base.before_start": 1, "base.on_success": 1, "base.after_return": 1},
        ids["expired"]: {"task_received": 1, "task_revoked": 1},
        ids["missing"]: {"task_unknown": 1},
    }
    for task_id, counts in expected.items():
        seen = Counter(r["signal"] for r in records if task_id_of(r) == task_id
                       and r["signal"] in TASK_SIGNALS)
        assert seen == counts, (task_id, seen)
    # task_success names no task id: one per task that succeeded, the task as sender.
    assert sorted(r["sender"] for r in records if r["signal"] == "task_success") == sorted(
        f"task:tasks.{name}" for name in ("add", "flaky", "traced", "based", "setting"))
    assert only(records, "task_success", sender="task:tasks.add")["values"] == {"result": 5}
    prerun = only(records, "task_prerun", task_id=add)
    assert prerun["sender"] == prerun["values"]["task"] == "task:tasks.add"
    assert (prerun["values"]["args"], prerun["values"]["kwargs"]) == ([2, 3], {})
    received = only(records, "task_received", task_id=add)
    assert received["sender"] == "<Consumer>"
    assert received["values"]["request"] == {"id": add, "task": "tasks.add", "retries": 0}
    failure = only(records, "task_failure", task_id=fail)
    assert failure["sender"] == "task:tasks.fail"
    assert failure["values"]["exception"] == "ValueError: boom"
    assert (failure["values"]["traceback"], failure["values"]["einfo"]) == (
        "<traceback>", "<ExceptionInfo>")
    assert only(records, "task_postrun", task_id=fail)["values"]["state"] == "FAILURE"
    retry = only(records, "task_retry", task_id=flaky)
    assert retry["sender"] == "task:tasks.flaky" and retry["values"]["request"]["retries"] == 0
    assert retry["values"]["reason"].startswith("Retry: ")
    assert "KeyError" in retry["values"]["reason"]
    assert [r["values"]["state"] for r in records
            if r["signal"] == "task_postrun" and task_id_of(r) == flaky] == ["RETRY", "SUCCESS"]
    # The retry was published from the worker process, with a fresh trace header.
    retried = only(records, "before_task_publish", task_id=flaky)
    assert retried["values"]["headers"]["retries"] == 1
    revoked = only(records, "task_revoked", task_id=ids["expired"])
    assert revoked["sender"] == "task:tasks.add"
    assert {k: revoked["values"][k] for k in ("terminated", "signum", "expired")} == {
        "terminated": False, "signum": None, "expired": True}
    unknown = only(records, "task_unknown")
    assert (unknown["sender"], unknown["values"]["name"], unknown["values"]["message"]) == (
        "<Consumer>", "tasks.missing", "<Delivery>")
    assert unknown["values"]["exc"].startswith("NotRegistered")
    rejected = only(records, "task_rejected")
    assert rejected["sender"] == "<Consumer>" and rejected["values"]["message"] == "<Delivery>"
    assert rejected["values"]["exc"].startswith("MessageDecodeError")


def check_logging(records: list[Record], pool: str, node: int, children: set[int]) -> None:
    """Where a ``setup_logging`` receiver is connected it alone runs; elsewhere celeriac
    configures logging and sends the two after-set-up signals."""
    user = children if USER_LOGGING[pool] == "worker" else {node}
    celeriac = {node, *children} - user
    for pid in user:
        mine = [r for r in records if r["pid"] == pid]
        setup = only(mine, "setup_logging")
        assert setup["values"]["loglevel"] == 20 and "%(message)s" in setup["values"]["format"]
        assert (setup["values"]["logfile"], setup["values"]["colorize"]) == (None, False)
        assert count(mine, "after_setup_logger") == count(mine, "after_setup_task_logger") == 0
    for pid in celeriac:
        mine = [r for r in records if r["pid"] == pid]
        assert count(mine, "setup_logging") == 0
        logger = only(mine, "after_setup_logger")
        assert (logger["values"]["logger"], logger["values"]["loglevel"]) == ("logger:root", 20)
        task_logger = only(mine, "after_setup_task_logger")
        assert task_logger["values"]["logger"] == "logger:celeriac.task"
