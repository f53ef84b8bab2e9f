"""Task events in-process: batching, what each event carries, and where they are wired.

:class:`TaskEvents` is fed by the hooks of real task runs (a real task, request and
message) and publishes to a real memory broker; a subclass of it counts ``emit``
calls, so the batching rules are checked exactly: nothing leaves before a batch is
full or its interval passed, one call per batch, the rest when the process stops.
A real consumer on a threads pool then runs tasks that succeed, fail, retry, expire
and are unknown, with ``worker_send_task_events`` on, and the events it records are
read back from the broker. The view and filters of ``celeriac events`` are checked
on the same events.
"""

from __future__ import annotations

import logging
import os
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from conftest import wait_until

from celeriac import Celeriac
from celeriac.brokers.base import Delivery, WorkerEvent
from celeriac.brokers.memory import MemoryBroker
from celeriac.cli.events import EventFilter, TaskView, check_types
from celeriac.context import Request
from celeriac.exceptions import NotRegistered
from celeriac.message import build, decode
from celeriac.middleware import Pipeline, Rejection, TaskRun, producer_pipeline, worker_pipeline
from celeriac.middleware.events import (
    EVENT_TYPES,
    TASK_STATES,
    NodeEvents,
    SentEvents,
    TaskEvents,
    short_repr,
    signal_number,
)
from celeriac.pools.threads import ThreadPool
from celeriac.worker.consumer import Consumer
from celeriac.worker.run import run_task
from celeriac.worker.spec import WorkerSpec
from celeriac.worker.status import StatusReader, StatusWriter

QUEUE = "celery"


class CountingBroker(MemoryBroker):
    """A memory broker that also notes the size of each ``emit`` call."""

    def __init__(self) -> None:
        super().__init__("memory://")
        self.emits: list[int] = []
        self.emitted = threading.Event()

    def emit(self, events: Sequence[WorkerEvent]) -> None:
        self.emits.append(len(events))
        super().emit(events)
        self.emitted.set()


@pytest.fixture
def app() -> Iterator[Celeriac]:
    app = Celeriac("evtest", broker="memory://", backend="memory://")

    @app.task(name="t.add")
    def add(x: int, y: int) -> int:
        return x + y

    yield app
    app.close()


def a_run(app: Celeriac, name: str = "t.add", args: list[Any] | None = None,
          task_id: str = "id-1") -> TaskRun:
    """A run as the executor builds it: the real message, decoded, and its request."""
    args = [1, 2] if args is None else args
    message = decode(build(name, task_id, args, {}, queue=QUEUE).dumps())
    delivery = Delivery(id="d-" + task_id, queue=QUEUE, body=b"", delivery_count=1, token=1)
    request = Request(id=task_id, task=name, args=message.args, kwargs=message.kwargs,
                      root_id=message.root_id, queue=QUEUE)
    return TaskRun(app.get_task(name), request, delivery, message)


def stored(broker: MemoryBroker) -> list[WorkerEvent]:
    return broker.events(after=0, limit=10_000)


# -- batching -----------------------------------------------------------------------------
def test_events_wait_in_memory_until_a_batch_is_full_then_leave_in_one_call(app: Celeriac
                                                                             ) -> None:
    broker = CountingBroker()
    events = TaskEvents(broker, "node-1", flush_size=5, flush_interval=3600)
    events.process_started(app)
    for index in range(4):
        events.message_received(a_run(app, task_id=f"id-{index}"))
        events.tick()
    assert stored(broker) == [] and broker.emits == []
    assert len(events.buffer) == 4
    events.message_received(a_run(app, task_id="id-4"))
    events.tick()
    assert broker.emits == [5]
    assert [e.data["uuid"] for e in stored(broker)] == [f"id-{i}" for i in range(5)]
    assert not events.buffer
    events.tick()  # nothing buffered: no call
    assert broker.emits == [5]


def test_a_tick_after_the_interval_publishes_whatever_is_buffered(app: Celeriac) -> None:
    broker = CountingBroker()
    events = TaskEvents(broker, "node-1", flush_size=200, flush_interval=0.0)
    events.tick()  # nothing buffered: nothing sent, however due
    assert broker.emits == []
    run = a_run(app)
    events.message_received(run)
    events.before_task(run)
    events.tick()
    assert broker.emits == [2]
    assert [e.type for e in stored(broker)] == ["task-received", "task-started"]


def test_process_stopping_publishes_the_rest_in_one_call(app: Celeriac) -> None:
    broker = CountingBroker()
    events = TaskEvents(broker, "node-1", flush_size=1000, flush_interval=3600)
    events.process_started(app)
    for index in range(7):
        events.before_task(a_run(app, task_id=f"id-{index}"))
    events.tick()
    assert broker.emits == []
    events.process_stopping(app, 0)
    assert broker.emits == [7]


def test_events_appended_from_many_threads_while_the_loop_drains_are_all_published(
        app: Celeriac) -> None:
    """Jobs append from their own threads while the loop flushes: none lost, none twice."""
    broker = CountingBroker()
    events = TaskEvents(broker, "node-1", flush_size=50, flush_interval=0.0)
    runs = [a_run(app, task_id=f"id-{i}") for i in range(8)]
    done = threading.Event()

    def job(run: TaskRun) -> None:
        for index in range(500):
            events.before_task(run)
            if index == 250:  # half way, go on only once the loop has published a batch
                assert broker.emitted.wait(20)

    threads = [threading.Thread(target=job, args=(run,)) for run in runs]
    for thread in threads:
        thread.start()

    def loop() -> None:
        while not done.is_set():
            events.tick()
            time.sleep(0)  # as the consumer loop waits between turns (a switch when green)

    looper = threading.Thread(target=loop)
    looper.start()
    for thread in threads:
        thread.join()
    done.set()
    looper.join()
    events.process_stopping(app, 0)
    seen = stored(broker)
    assert len(seen) == 8 * 500 == sum(broker.emits)
    assert len(broker.emits) > 1  # the loop really drained while jobs appended
    for run in runs:
        assert sum(1 for e in seen if e.data["uuid"] == run.request.id) == 500


def test_an_event_batch_the_broker_refuses_is_logged_and_dropped_and_the_next_one_goes(
        app: Celeriac, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A real SQLite broker whose events table refuses inserts (a trigger, as a full
    disk would): the batch is logged and dropped, the worker goes on."""
    from celeriac.brokers.sqlite import SQLiteBroker

    path = tmp_path / "events.db"
    broker = SQLiteBroker(f"sqlite:///{path}")
    broker.emit([WorkerEvent(type="worker-online", worker="node-1")])  # creates the schema
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("CREATE TRIGGER refuse BEFORE INSERT ON events "
                 "BEGIN SELECT RAISE(ABORT, 'disk full'); END")
    events = TaskEvents(broker, "node-1", flush_size=1, flush_interval=3600)
    with caplog.at_level(logging.WARNING, logger="celeriac.events"):
        events.before_task(a_run(app))
        events.tick()
    assert "could not record 1 task event(s)" in caplog.text
    assert "disk full" in caplog.text
    assert not events.buffer
    conn.execute("DROP TRIGGER refuse")
    events.before_task(a_run(app, task_id="id-2"))
    events.tick()
    assert [e.data.get("uuid") for e in broker.events()] == [None, "id-2"]
    conn.close()
    broker.close()


# -- the publisher beside the loop (a worker process's pool runs it) ----------------------
class GatedBroker(CountingBroker):
    """A memory broker whose ``emit`` waits for ``gate``: a broker slow to answer. It
    notes the thread of each call."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.threads: list[str] = []

    def emit(self, events: Sequence[WorkerEvent]) -> None:
        self.threads.append(threading.current_thread().name)
        self.entered.set()
        assert self.gate.wait(20), "the test never opened the gate"
        super().emit(events)


def in_thread(fn: Any) -> threading.Thread:
    thread = threading.Thread(target=fn, daemon=True)
    thread.start()
    return thread


def test_with_a_pool_a_full_batch_leaves_from_the_pools_service_not_the_loop(
        app: Celeriac) -> None:
    broker = GatedBroker()
    pool = ThreadPool(2, app.conf)
    events = TaskEvents(broker, "node-1", pool=pool, flush_size=5, flush_interval=3600)
    events.process_started(app)
    for index in range(5):
        events.message_received(a_run(app, task_id=f"id-{index}"))
    tick = in_thread(events.tick)
    tick.join(5)
    # The loop's tick is back while the broker still holds the batch: it did not wait.
    assert not tick.is_alive()
    assert broker.entered.wait(5) and not broker.emits
    assert broker.threads == ["celeriac-events"]
    broker.gate.set()
    wait_until(lambda: broker.emits == [5], timeout=5, message="the batch stored")
    assert [e.data["uuid"] for e in stored(broker)] == [f"id-{i}" for i in range(5)]
    events.process_stopping(app, 0)


def test_the_publisher_also_sends_a_partial_batch_once_its_interval_passes(
        app: Celeriac) -> None:
    broker = CountingBroker()
    events = TaskEvents(broker, "node-1", pool=ThreadPool(2, app.conf), flush_size=1000,
                        flush_interval=0.05)
    events.process_started(app)
    events.before_task(a_run(app))
    # No tick at all: the publisher's own interval sends it.
    wait_until(lambda: broker.emits == [1], timeout=5, message="the lone event sent")
    events.process_stopping(app, 0)


def test_a_backlog_past_ten_batches_makes_the_loop_wait_for_the_publisher(
        app: Celeriac) -> None:
    """The broker stalls with one batch in hand; the loop goes on until ten batches wait,
    then its tick waits for the publisher to drain (bounded memory, and the worker slows
    down with its broker as it did when the loop published)."""
    broker = GatedBroker()
    events = TaskEvents(broker, "node-1", pool=ThreadPool(2, app.conf), flush_size=2,
                        flush_interval=3600)
    events.process_started(app)
    for index in range(2):
        events.before_task(a_run(app, task_id=f"a-{index}"))
    events.tick()
    assert broker.entered.wait(5)  # the publisher holds the first batch, waiting
    for index in range(19):  # 19 waiting: one short of the backlog, the tick goes on
        events.before_task(a_run(app, task_id=f"b-{index}"))
    quick = in_thread(events.tick)
    quick.join(5)
    assert not quick.is_alive()
    events.before_task(a_run(app, task_id="b-19"))  # 20 waiting: ten batches
    waits = in_thread(events.tick)
    waits.join(0.3)
    assert waits.is_alive()  # waiting for the publisher, which waits for the broker
    broker.gate.set()
    waits.join(5)
    assert not waits.is_alive()
    wait_until(lambda: sum(broker.emits) == 22, timeout=5, message="every event stored")
    assert [e.data["uuid"] for e in stored(broker)] == [
        "a-0", "a-1", *(f"b-{i}" for i in range(20))]
    events.process_stopping(app, 0)


def test_if_the_publisher_is_gone_the_loop_publishes_instead_of_waiting(
        app: Celeriac, caplog: pytest.LogCaptureFixture) -> None:
    """A publisher that ended (a greenlet killed by something no ``except Exception``
    catches) would leave a backlog no one drains, and the loop waiting a second a turn."""
    broker = CountingBroker()
    events = TaskEvents(broker, "node-1", pool=ThreadPool(2, app.conf), flush_size=2,
                        flush_interval=3600)
    events.process_started(app)
    events._stopping = True  # end the service, as a kill would, without process_stopping
    events.tick()
    assert events._publisher is not None
    events._publisher.wake.set()
    assert events._publisher.join(5)
    for index in range(20):  # ten batches waiting
        events.before_task(a_run(app, task_id=f"id-{index}"))
    with caplog.at_level(logging.WARNING, logger="celeriac.events"):
        events.tick()
    assert broker.emits == [20]  # published by this call, on the caller's thread
    assert "the task event publisher has stopped" in caplog.text
    events.before_task(a_run(app, task_id="id-20"))
    events.before_task(a_run(app, task_id="id-21"))
    events.tick()  # a full batch: the loop publishes it itself now
    assert broker.emits == [20, 2]


def test_process_stopping_stops_the_publisher_and_sends_the_rest(app: Celeriac) -> None:
    broker = CountingBroker()
    pool = ThreadPool(2, app.conf)
    events = TaskEvents(broker, "node-1", pool=pool, flush_size=1000, flush_interval=3600)
    events.process_started(app)
    assert any(t.name == "celeriac-events" for t in threading.enumerate())
    for index in range(7):
        events.before_task(a_run(app, task_id=f"id-{index}"))
    events.process_stopping(app, 0)
    assert sum(broker.emits) == 7 and len(stored(broker)) == 7
    assert not any(t.name == "celeriac-events" for t in threading.enumerate())


# -- what each event carries ------------------------------------------------------------
def test_a_successful_run_records_received_started_and_succeeded_with_celerys_fields(
        app: Celeriac) -> None:
    broker = CountingBroker()
    events = TaskEvents(broker, "node-1", flush_interval=0.0)
    run = a_run(app, args=[20, 22])
    pipeline = Pipeline([events])
    pipeline.message_received(run)
    record = run_task(run, pipeline)
    events.process_stopping(app, 0)
    assert record.status == "SUCCESS"
    received, started, succeeded = stored(broker)
    assert [received.type, started.type, succeeded.type] == [
        "task-received", "task-started", "task-succeeded"]
    for event in (received, started, succeeded):
        assert event.worker == "node-1"
        assert event.data["uuid"] == "id-1" and event.data["name"] == "t.add"
        assert event.data["hostname"] == "node-1"
        assert event.data["timestamp"] == event.time
    assert started.data["pid"] == os.getpid()
    assert received.data["args"] == "[20, 22]" and received.data["kwargs"] == "{}"
    assert received.data["retries"] == 0 and received.data["root_id"] == "id-1"
    assert received.data["parent_id"] is None
    assert received.data["eta"] is None and received.data["expires"] is None
    assert succeeded.data["result"] == "42"
    assert succeeded.data["runtime"] == run.runtime >= 0


def test_failures_retries_and_revocations_carry_exception_traceback_and_flags(
        app: Celeriac) -> None:
    @app.task(name="t.boom")
    def boom() -> None:
        raise KeyError("missing")

    @app.task(name="t.again", bind=True, max_retries=3)
    def again(self: Any) -> None:
        raise self.retry(countdown=60, exc=ValueError("later"))

    broker = CountingBroker()
    events = TaskEvents(broker, "node-1", flush_interval=0.0)
    pipeline = Pipeline([events])
    run_task(a_run(app, "t.boom", [], task_id="f"), pipeline)
    retried = a_run(app, "t.again", [], task_id="r")
    run_task(retried, pipeline)
    expired = a_run(app, task_id="x")
    expired.revoked = "expired"
    events.task_skipped(expired)
    terminated = a_run(app, task_id="k")
    terminated.revoked, terminated.signal = "terminated", "SIGKILL"
    from celeriac.worker.run import revoked_record

    terminated.record = revoked_record("k", "t.add", "terminated")
    events.after_task(terminated)
    events.flush()
    by_type = {e.type: e for e in stored(broker) if e.type != "task-started"}
    failed = by_type["task-failed"].data
    assert failed["exception"] == "KeyError('missing')"
    assert "raise KeyError(\"missing\")" in failed["traceback"]
    retry = by_type["task-retried"].data
    assert retry["uuid"] == "r" and retry["exception"] == "ValueError('later')"
    assert "ValueError: later" in retry["traceback"]  # a cause never raised has no frames
    revoked = [e.data for e in stored(broker) if e.type == "task-revoked"]
    assert [(r["uuid"], r["terminated"], r["signum"], r["expired"]) for r in revoked] == [
        ("x", False, None, True), ("k", True, 9, False)]


def test_a_rejected_message_says_whether_it_goes_back(app: Celeriac) -> None:
    broker = CountingBroker()
    events = TaskEvents(broker, "node-1")
    delivery = Delivery(id="d", queue=QUEUE, body=b"{}", delivery_count=1, token=1)
    exc = NotRegistered("no task named 't.nope' is registered")
    events.message_rejected(Rejection(delivery, str(exc), exc, "t.nope", "u1", kind="unknown"))
    events.message_rejected(Rejection(delivery, "boom", RuntimeError("boom"), kind="internal"))
    events.flush()
    unknown, internal = stored(broker)
    assert unknown.type == internal.type == "task-rejected"
    assert (unknown.data["uuid"], unknown.data["name"], unknown.data["requeue"]) == (
        "u1", "t.nope", False)
    assert "no task named 't.nope'" in unknown.data["reason"]
    assert (internal.data["uuid"], internal.data["requeue"]) == (None, True)


def test_reprs_are_cut_and_a_broken_repr_does_not_lose_the_event() -> None:
    class Broken:
        def __repr__(self) -> str:
            raise RuntimeError("no repr")

    assert len(short_repr("x" * 5000)) == 1024 and short_repr("x" * 5000).endswith("...")
    assert short_repr(Broken()).startswith("<unrepresentable Broken")
    assert signal_number("SIGTERM") == 15 and signal_number("sigkill") == 9
    assert signal_number(None) is None and signal_number("SIGNOPE") is None


def test_a_producer_with_task_send_sent_event_records_task_sent_per_message(app: Celeriac
                                                                            ) -> None:
    app.conf.task_send_sent_event = True
    app.send_task("t.add", [1, 2], task_id="s0", countdown=3600, queue="q1")
    group = app.send_many([app.signature("t.add", [i, i]) for i in range(3)], chunk_size=None)
    sent = app.broker.events(limit=100)
    assert [e.type for e in sent] == ["task-sent"] * 4
    assert [e.data["uuid"] for e in sent] == ["s0", *(r.id for r in group)]
    first = sent[0]
    assert first.worker == first.data["hostname"] == f"gen{os.getpid()}@{socket.gethostname()}"
    data = first.data
    assert (data["name"], data["args"], data["kwargs"], data["retries"]) == (
        "t.add", "[1, 2]", "{}", 0)
    assert (data["queue"], data["routing_key"], data["exchange"]) == ("q1", "q1", "")
    assert data["eta"] is not None and data["expires"] is None
    assert data["root_id"] == "s0" and data["parent_id"] is None
    assert data["pid"] == os.getpid() and data["timestamp"] == first.time


# -- wiring -----------------------------------------------------------------------------
def test_the_pipelines_get_events_only_when_their_setting_is_on(app: Celeriac) -> None:
    from celeriac.worker.supervisor import node_pipeline

    read_fd, write_fd = os.pipe()
    status, reader = StatusWriter(write_fd), StatusReader(read_fd)
    pool = ThreadPool(1, app.conf)
    try:
        assert worker_pipeline(app, pool, status, _Stub(), None, None).find(TaskEvents) is None
        assert node_pipeline(app).find(NodeEvents) is None
        assert producer_pipeline(app).find(SentEvents) is None
        app.conf.update(worker_send_task_events=True, task_send_sent_event=True)
        found = worker_pipeline(app, pool, status, _Stub(), None, None).find(TaskEvents)
        assert found is not None and found.node.startswith("celeriac.")
        assert node_pipeline(app).find(NodeEvents) is not None
        assert producer_pipeline(app).find(SentEvents) is not None
    finally:
        status.close()
        reader.close()


class _Stub:
    """What the recycler asks of a consumer (no spec: the events fall back to a node name)."""

    tasks_run = 0

    def stop(self, reason: str = "shutdown") -> None:
        pass


def test_a_consumer_with_task_events_on_records_every_kind_of_outcome(app: Celeriac) -> None:
    """A real consumer and threads pool on the memory broker, as a worker process runs."""
    @app.task(name="t.fail")
    def fail() -> None:
        raise ValueError("boom")

    @app.task(name="t.flaky", bind=True, max_retries=1)
    def flaky(self: Any) -> None:
        raise self.retry(countdown=0, exc=KeyError("again"))

    app.conf.worker_send_task_events = True
    ok = app.send_task("t.add", [2, 3]).id
    failed = app.send_task("t.fail").id
    retried = app.send_task("t.flaky").id
    unknown = app.send_task("t.nobody").id
    expired = app.send_task("t.add", [1, 1],
                            expires=datetime.now(timezone.utc) - timedelta(seconds=10)).id
    read_fd, write_fd = os.pipe()
    status, reader = StatusWriter(write_fd), StatusReader(read_fd)
    spec = WorkerSpec(app="evtest", pool="threads", concurrency=2, queues=[QUEUE], prefetch=4,
                      consumer_id="ev/0", node="ev-node", index=0, status_fd=write_fd,
                      parent_pid=os.getppid())
    pool = ThreadPool(2, app.conf)
    consumer = Consumer(app, pool, spec, status)
    pool.start()
    thread = threading.Thread(target=pool.run, args=(consumer.run,), daemon=True)
    thread.start()
    try:
        def final_states() -> dict[str, str] | None:
            view = TaskView()
            for event in app.broker.events(limit=1000):
                view.add(event)
            states = {uuid: line.state for uuid, line in view.tasks.items()}
            wanted = {ok: "SUCCESS", failed: "FAILURE", retried: "FAILURE",
                      unknown: "REJECTED", expired: "REVOKED"}
            return states if states == wanted else None

        wait_until(final_states, timeout=20, message="every task's final event")
    finally:
        consumer.stop("test over")
        thread.join(20)
        pool.stop()
        status.close()
        reader.close()
    seen = app.broker.events(limit=1000)
    assert {e.worker for e in seen} == {"ev-node"}
    flaky_types = [e.type for e in seen if e.data.get("uuid") == retried]
    assert flaky_types == ["task-received", "task-started", "task-retried",
                           "task-received", "task-started", "task-failed"]
    assert [e.type for e in seen if e.data.get("uuid") == expired] == [
        "task-received", "task-revoked"]
    assert [e.data["result"] for e in seen if e.type == "task-succeeded"] == ["5"]


# -- the view and filters of `celeriac events` ------------------------------------------------
def event(kind: str, uuid: str | None = "u1", name: str | None = "t.add", when: float = 1.0,
          worker: str = "w1", **data: Any) -> WorkerEvent:
    body: dict[str, Any] = {"uuid": uuid, "name": name, "timestamp": when, **data}
    return WorkerEvent(type=kind, worker=worker, data=body, time=when, seq=int(when * 10))


def test_the_view_keeps_each_tasks_latest_state_even_when_events_arrive_late() -> None:
    view = TaskView()
    view.add(event("task-sent", when=1.0, worker="gen1@host"))
    line = view.add(event("task-received", when=2.0))
    assert line is not None and (line.state, line.worker) == ("RECEIVED", "w1")
    view.add(event("task-started", when=3.0))
    view.add(event("task-received", when=5.0, worker="w2"))  # the retry, from another worker
    late = view.add(event("task-retried", when=4.0, exception="KeyError('x')", runtime=0.5))
    assert late is not None and (late.state, late.info) == ("RETRY", "KeyError('x')")
    assert view.tasks["u1"].state == "RECEIVED"  # a late event does not turn it back
    view.add(event("task-succeeded", when=6.0, worker="w2", runtime=0.25, result="3"))
    final = view.tasks["u1"]
    assert (final.state, final.name, final.worker, final.runtime) == (
        "SUCCESS", "t.add", "w2", 0.25)
    assert final.text().split() == ["SUCCESS", "t.add", "u1", "w2", "0.250s"]


def test_the_view_forgets_the_oldest_tasks_beyond_its_limit_and_follows_workers() -> None:
    view = TaskView(keep=3)
    for index in range(5):
        view.add(event("task-received", uuid=f"u{index}", when=float(index)))
    assert list(view.tasks) == ["u2", "u3", "u4"]
    view.add(WorkerEvent(type="worker-heartbeat", worker="w1",
                         data={"active": 2, "processed": 40}))
    view.add(WorkerEvent(type="worker-offline", worker="w9", data={"processed": 7}))
    assert [(w.name, w.state, w.active, w.processed) for w in view.workers.values()] == [
        ("w1", "online", 2, 40), ("w9", "offline", 0, 7)]


def test_filters_match_types_and_task_names_by_glob_and_hide_heartbeats_in_the_view() -> None:
    heartbeat = WorkerEvent(type="worker-heartbeat", worker="w1", data={})
    blocked = WorkerEvent(type="task-blocked", worker="w1", data={"task": "t.hog", "id": "u9"})
    failed = event("task-failed", name="app.mail.send")
    assert EventFilter()(heartbeat) and not EventFilter(heartbeats=False)(heartbeat)
    assert EventFilter(("worker-*",), heartbeats=False)(heartbeat)
    assert EventFilter(("task-f*", "task-retried"))(failed)
    assert not EventFilter(("task-succeeded",))(failed)
    assert EventFilter(tasks=("app.mail.*",))(failed)
    assert not EventFilter(tasks=("app.mail.*",))(heartbeat)
    assert EventFilter(tasks=("t.hog",))(blocked)
    assert set(TASK_STATES) <= set(EVENT_TYPES)


def test_a_type_that_matches_nothing_is_refused_with_a_suggestion() -> None:
    import click

    assert check_types(None, None, ("task-failed,task-retried", "worker-*")) == (
        "task-failed", "task-retried", "worker-*")
    with pytest.raises(click.BadParameter, match="'task-faild' matches no event type "
                                                 r"\(did you mean 'task-failed'\?\)"):
        check_types(None, None, ("task-faild",))


def test_brackets_and_line_breaks_in_names_and_exceptions_stay_as_they_are() -> None:
    """Text from tasks is shown as is: rich markup in it is not interpreted, and an
    exception spread over lines stays on its task's one line in a pipe."""
    import io

    from rich.console import Console

    view = TaskView()
    line = view.add(event("task-failed", name="t.[bold]odd[/]",
                          exception="ValueError('[/] and\nmore')"))
    assert line is not None
    assert line.text().split(maxsplit=5)[5] == "ValueError('[/] and more')"
    out = io.StringIO()
    Console(file=out, width=200, color_system=None).print(view.table(10))
    assert "t.[bold]odd[/]" in out.getvalue() and "ValueError('[/] and" in out.getvalue()
