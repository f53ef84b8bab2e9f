"""The worker core in-process: Settler, Executor, Consumer and Supervisor logic on real
brokers and backends (memory, SQLite files), real pipes and real child processes.

The end-to-end suite runs ``celeriac worker`` as users do; these tests pin down the
rules underneath one at a time, fast and deterministically: results are stored
before acks, a backend failure turns the ack into a delayed redelivery, a lost lease
lets go of the message, recycling stops the consumer by itself, malformed and unknown
messages are dead-lettered with the reason and a FAILURE where the id is known, and
the supervisor reads typed status events and enforces hard limits by killing a real
process.

Faults are real too: a SQLite trigger that refuses writes is the database failing,
exactly as a full disk or a read-only file would make it fail.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import collector_off, wait_until

from celeriac import Celeriac
from celeriac.backends.base import ResultRecord
from celeriac.brokers.base import Delivery, OutgoingMessage
from celeriac.message import encode
from celeriac.middleware import ACK, DEAD, RETRY_LATER, SETTLED, Finished, Middleware, Outcome, Pipeline
from celeriac.middleware.expiry import Expiry
from celeriac.middleware.results import ResultStore
from celeriac.pools.threads import ThreadPool
from celeriac.states import FAILURE, SUCCESS
from celeriac.worker.consumer import Consumer
from celeriac.worker.executor import Executor
from celeriac.worker.options import PoolGroup, WorkerOptions
from celeriac.worker.settle import Settler
from celeriac.worker.spec import WorkerSpec
from celeriac.worker.status import (
    EVENT_TYPES,
    Done,
    FollowupsPart,
    Ready,
    Stalled,
    Started,
    StatusEvent,
    StatusReader,
    StatusWriter,
    decode_event,
    encode_event,
)
from celeriac.worker.supervisor import Child, Supervisor

QUEUE = "celery"


# -- fixtures and helpers -----------------------------------------------------------------
@pytest.fixture
def app() -> Iterator[Celeriac]:
    app = Celeriac("core", broker="memory://", backend="memory://")
    yield app
    app.close()


@pytest.fixture
def sqlite_app(tmp_path: Path) -> Iterator[Celeriac]:
    url = f"sqlite:///{tmp_path / 'celeriac.db'}"
    app = Celeriac("core", broker=url, backend=url)
    yield app
    app.close()


class Fault:
    """The SQLite database refusing writes to one table while switched on: a trigger
    that aborts the statement, as the engine does for a full disk or a read-only file."""

    def __init__(self, path: Path, table: str, operation: str) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None)
        self.conn.execute("CREATE TABLE IF NOT EXISTS fault (name TEXT PRIMARY KEY)")
        self.name = f"fail_{table}_{operation.lower()}"
        self.conn.execute(
            f"CREATE TRIGGER IF NOT EXISTS {self.name} BEFORE {operation} ON {table} "
            f"WHEN EXISTS (SELECT 1 FROM fault WHERE name = '{self.name}') "
            f"BEGIN SELECT RAISE(ABORT, 'injected {operation.lower()} failure'); END")

    def on(self) -> None:
        self.conn.execute("INSERT OR IGNORE INTO fault VALUES (?)", (self.name,))

    def off(self) -> None:
        self.conn.execute("DELETE FROM fault WHERE name = ?", (self.name,))


def db_path(app: Celeriac) -> Path:
    return Path(app.conf.broker_url.removeprefix("sqlite:///"))


def publish(app: Celeriac, name: str, *args: Any, task_id: str | None = None,
            **options: Any) -> str:
    """Send ``name`` through the app (the real producer path); its task id."""
    return app.send_task(name, args, task_id=task_id, **options).id


def claim(app: Celeriac, count: int = 1, consumer: str = "test", lease: float = 30.0
          ) -> list[Delivery]:
    deliveries = app.broker.fetch([QUEUE], count, consumer=consumer, lease=lease)
    assert len(deliveries) == count, f"claimed {len(deliveries)} of {count}"
    return deliveries


def counts(app: Celeriac) -> dict[str, int]:
    stats = app.broker.stats().get(QUEUE)
    return stats.as_dict() if stats else {"ready": 0, "scheduled": 0, "in_flight": 0, "dead": 0}


@dataclasses.dataclass
class Rig:
    """One worker process's consumer and pool, run on a thread of this process, with the
    supervisor's end of its status pipe."""

    consumer: Consumer
    pool: ThreadPool
    reader: StatusReader
    writer: StatusWriter
    thread: threading.Thread | None = None

    def start(self) -> None:
        self.pool.start()
        self.thread = threading.Thread(target=self.pool.run, args=(self.consumer.run,), daemon=True)
        self.thread.start()

    def join(self, timeout: float = 20.0) -> None:
        assert self.thread is not None
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the consumer did not return"

    def events(self) -> list[StatusEvent]:
        return self.reader.read()[0]

    def close(self) -> None:
        if self.thread is not None and self.thread.is_alive():
            self.consumer.stop("test over")
            self.thread.join(20)
        self.pool.stop()
        self.writer.close()
        self.reader.close()


@pytest.fixture
def rigs() -> Iterator[list[Rig]]:
    made: list[Rig] = []
    yield made
    for rig in made:
        rig.close()


def make_rig(rigs: list[Rig], app: Celeriac, *, concurrency: int = 2, prefetch: int = 4,
             max_tasks: int | None = None, pipeline: Pipeline | None = None) -> Rig:
    read_fd, write_fd = os.pipe()
    writer, reader = StatusWriter(write_fd), StatusReader(read_fd)
    spec = WorkerSpec(app="core", pool="threads", concurrency=concurrency, queues=[QUEUE],
                      prefetch=prefetch, consumer_id=f"core/{len(rigs)}", node="core", index=0,
                      status_fd=write_fd, parent_pid=os.getppid(), max_tasks=max_tasks)
    pool = ThreadPool(concurrency, app.conf)
    rig = Rig(Consumer(app, pool, spec, writer, pipeline), pool, reader, writer)
    rigs.append(rig)
    return rig


class SettleProbe(Middleware):
    """Looks at the broker and backend at each side of the acks (after ResultStore)."""

    def __init__(self, app: Celeriac, task_id: str) -> None:
        self.app, self.task_id = app, task_id
        self.seen: list[tuple[str, bool, int]] = []

    def _look(self, when: str) -> None:
        stored = self.app.backend.get(self.task_id) is not None
        self.seen.append((when, stored, counts(self.app)["in_flight"]))

    def before_settle(self, batch: list[Finished]) -> list[Finished]:
        self._look("before acks")
        return batch

    def after_settle(self, batch: list[Finished]) -> None:
        self._look("after acks")


def success(task_id: str, value: Any = 1) -> ResultRecord:
    return ResultRecord(task_id=task_id, status=SUCCESS, result=value, name="t",
                        date_done=time.time())


# -- settling: results first, then acks ---------------------------------------------------
def test_results_are_stored_before_the_messages_are_acked(app: Celeriac) -> None:
    task_id = publish(app, "t")
    [delivery] = claim(app)
    probe = SettleProbe(app, task_id)
    settled = Settler(app.broker, Pipeline([ResultStore(app.backend), probe])).settle(
        [(delivery, Outcome(ACK, ran=True, record=success(task_id)))])
    assert probe.seen == [("before acks", True, 1), ("after acks", True, 0)]
    assert [o.action for _, o in settled] == [ACK]
    assert counts(app) == {"ready": 0, "scheduled": 0, "in_flight": 0, "dead": 0}


def test_a_backend_failure_turns_the_ack_into_a_delayed_redelivery(
        sqlite_app: Celeriac, caplog: pytest.LogCaptureFixture) -> None:
    app = sqlite_app
    app.backend.ping()  # the results table exists before the trigger is put on it
    fault = Fault(db_path(app), "results", "INSERT")
    ok_id, dead_id = publish(app, "t"), publish(app, "t")
    first, malformed = claim(app, 2)
    settler = Settler(app.broker, Pipeline([ResultStore(app.backend)]))
    fault.on()
    settled = settler.settle([
        (first, Outcome(ACK, ran=True, record=success(ok_id))),
        (malformed, Outcome(DEAD, "malformed message: test", record=success(dead_id)))])
    # The finished task is not acked (its result would be lost) but delivered again later;
    # the dead letter goes to the dead-letter store all the same.
    assert [(d.id, o.action) for d, o in settled] == [(first.id, RETRY_LATER), (malformed.id, DEAD)]
    assert "injected insert failure" in settled[0][1].reason
    assert "could not store 2 result(s)" in caplog.text
    assert counts(app) == {"ready": 0, "scheduled": 1, "in_flight": 0, "dead": 1}
    assert app.backend.get(ok_id) is None
    # It comes back charged (it ran once), and once the backend works it settles for good.
    fault.off()
    [again] = wait_until(lambda: app.broker.fetch([QUEUE], 1, consumer="c", lease=30, timeout=0.5),
                         timeout=10, message="the delayed redelivery")
    assert (again.id, again.delivery_count) == (first.id, 2)
    settler.settle([(again, Outcome(ACK, ran=True, record=success(ok_id, 2)))])
    assert app.AsyncResult(ok_id).get(timeout=1) == 2
    assert counts(app)["scheduled"] + counts(app)["in_flight"] == 0


def test_an_ack_after_the_lease_passed_to_another_worker_is_refused_and_logged(
        app: Celeriac, caplog: pytest.LogCaptureFixture) -> None:
    app.conf.broker_lease_timeout = 0.2
    publish(app, "t")
    [mine] = claim(app, lease=0.2)
    [theirs] = wait_until(lambda: app.broker.fetch([QUEUE], 1, consumer="other", lease=30),
                          message="the lease to run out")
    Settler(app.broker, Pipeline()).settle([(mine, Outcome(ACK, ran=True))])
    assert "refused: its lease passed to another worker" in caplog.text
    assert app.broker.ack([theirs]) == [True]


# -- the executor: one delivery to one outcome --------------------------------------------
def test_executor_outcomes(app: Celeriac) -> None:
    in_flight_while_running: list[int] = []

    @app.task(name="t.ok")
    def ok(x: int) -> int:
        return x + 1

    @app.task(name="t.boom")
    def boom() -> None:
        raise KeyError("k")

    @app.task(name="t.early", acks_late=False)
    def early() -> None:
        in_flight_while_running.append(counts(app)["in_flight"])

    @app.task(name="t.quiet", ignore_result=True)
    def quiet() -> int:
        return 1

    ran_expired: list[bool] = []

    @app.task(name="t.expired")
    def expired() -> None:
        ran_expired.append(True)

    acked: list[Delivery] = []

    def early_ack(delivery: Delivery) -> None:
        acked.append(delivery)
        app.broker.ack([delivery])

    executor = Executor(app, ThreadPool(1, app.conf), Pipeline([Expiry()]), early_ack)
    ids = [publish(app, "t.ok", 1), publish(app, "t.boom"), publish(app, "t.early"),
           publish(app, "t.quiet")]
    app.broker.publish([OutgoingMessage(QUEUE, encode("t.expired", "x-id", [], {}, queue=QUEUE,
                                                      expires=time.time() - 1))])
    outcomes = [executor.handle(d) for d in claim(app, 5)]
    [o_ok, o_boom, o_early, o_quiet, o_expired] = outcomes
    assert (o_ok.action, o_ok.ran, o_ok.record and o_ok.record.result) == (ACK, True, 2)
    assert o_boom.action == ACK and o_boom.record is not None
    assert (o_boom.record.status, o_boom.record.exc_type) == (FAILURE, "KeyError")
    # acks_late=False: acked before the body ran, nothing left to settle.
    assert o_early.action == SETTLED and len(acked) == 1 and in_flight_while_running == [4]
    assert o_quiet.action == ACK and o_quiet.record is None
    assert o_expired.action == ACK and o_expired.record is not None and not ran_expired
    assert (o_expired.record.status, o_expired.record.exc_message) == ("REVOKED", "expired")
    assert [o.record.task_id for o in (o_ok, o_boom) if o.record] == ids[:2]


# -- the consumer, running --------------------------------------------------------------
def test_a_failed_run_leaves_no_reference_cycle_behind(app: Celeriac) -> None:
    """A failure's exception holds its traceback, whose frames hold the run and the
    task's locals: the executor lets go of it once every hook has seen it, so a storm of
    failures does not wait for the cycle collector, which a worker at -c 1000 runs only
    every 100,000 objects (celeriac.worker.heap)."""
    import weakref

    class Payload:
        pass

    refs: list[weakref.ref[Payload]] = []

    @app.task(name="t.heavy_boom")
    def heavy_boom() -> None:
        payload = Payload()
        refs.append(weakref.ref(payload))
        raise KeyError("k")

    executor = Executor(app, ThreadPool(1, app.conf), Pipeline([]), lambda delivery: None)
    publish(app, "t.heavy_boom")
    [delivery] = claim(app, 1)
    with collector_off():
        outcome = executor.handle(delivery)
        assert outcome.record is not None and outcome.record.exc_type == "KeyError"
        assert "KeyError" in (outcome.record.traceback or "")  # the text is kept
        assert refs and refs[0]() is None, "the task's locals outlived its run"


def test_consumer_runs_settles_and_reports_on_the_status_pipe(app: Celeriac, rigs: list[Rig]
                                                              ) -> None:
    @app.task(name="t.add")
    def add(x: int, y: int) -> int:
        return x + y

    rig = make_rig(rigs, app)
    ids = [publish(app, "t.add", i, i) for i in range(5)]
    rig.start()
    assert [app.AsyncResult(i).get(timeout=10) for i in ids] == [0, 2, 4, 6, 8]
    wait_until(lambda: counts(app)["in_flight"] == 0, message="all acked")
    rig.consumer.stop("test over")
    rig.join()
    events = rig.events()
    assert isinstance(events[0], Ready)
    started = [e for e in events if isinstance(e, Started)]
    done = [i for e in events if isinstance(e, Done) for i in e.delivery_ids]
    assert sorted(e.task_id for e in started) == sorted(ids)
    assert sorted(done) == sorted(e.delivery_id for e in started)


def test_recycling_by_task_count_stops_the_consumer_and_hands_back_the_rest(
        app: Celeriac, rigs: list[Rig]) -> None:
    @app.task(name="t.noop")
    def noop() -> None: ...

    rig = make_rig(rigs, app, concurrency=2, prefetch=8, max_tasks=3)
    ids = [publish(app, "t.noop") for _ in range(7)]
    rig.start()
    rig.join()  # it stops by itself
    assert rig.consumer.stop_reason == "max tasks per child (3) reached"
    assert rig.consumer.tasks_run == 3
    assert sorted(app.AsyncResult(i).status for i in ids) == ["PENDING"] * 4 + ["SUCCESS"] * 3
    rest = app.broker.fetch([QUEUE], 10, consumer="next", lease=30)
    assert len(rest) == 4 and {d.delivery_count for d in rest} == {1}  # uncharged


def test_malformed_and_unknown_messages_are_dead_lettered_with_failure_stored(
        app: Celeriac, rigs: list[Rig]) -> None:
    bad_body = json.loads(encode("t.known", "bad-body-id", [], {}, queue=QUEUE))
    bad_body["body"] = "[1, 2"
    app.broker.publish([
        OutgoingMessage(QUEUE, b"\x00 not json at all"),
        OutgoingMessage(QUEUE, json.dumps(bad_body).encode()),
    ])
    unknown_id = publish(app, "t.nobody.registered.this")

    @app.task(name="t.known")
    def known() -> str:
        return "ran"

    ok_id = publish(app, "t.known")
    rig = make_rig(rigs, app)
    rig.start()
    assert app.AsyncResult(ok_id).get(timeout=10) == "ran"  # the worker went on
    wait_until(lambda: counts(app)["dead"] == 3, message="three dead letters")
    reasons = sorted(letter.reason for letter in app.broker.dead_letters(QUEUE))
    assert reasons[0].startswith("malformed message: message is not JSON")
    assert reasons[1].startswith("malformed message: undecodable application/json body")
    assert reasons[2] == "unknown task 't.nobody.registered.this'"
    unknown = app.backend.get(unknown_id)
    assert unknown is not None and (unknown.status, unknown.exc_type) == (FAILURE, "NotRegistered")
    malformed = app.backend.get("bad-body-id")
    assert malformed is not None
    assert (malformed.status, malformed.exc_type) == (FAILURE, "MessageDecodeError")


def test_an_internal_error_around_a_task_means_deliver_it_again_later(
        sqlite_app: Celeriac, rigs: list[Rig], caplog: pytest.LogCaptureFixture) -> None:
    app = sqlite_app
    runs: list[int] = []

    @app.task(name="t.early", acks_late=False, bind=True)
    def early(self: Any) -> None:
        runs.append(self.request.delivery_count)

    task_id = publish(app, "t.early")
    # The early ack (before the body) fails: a fault in the broker, not in the task.
    fault = Fault(db_path(app), "messages", "DELETE")
    fault.on()
    rig = make_rig(rigs, app)
    rig.start()
    wait_until(lambda: "internal error while handling message" in caplog.text,
               message="the internal error")
    fault.off()
    # Not run, not lost: back after the retry-later delay, charged, and then it runs.
    assert app.AsyncResult(task_id).get(timeout=10) is None
    assert runs == [2]
    assert counts(app) == {"ready": 0, "scheduled": 0, "in_flight": 0, "dead": 0}


def test_lease_loss_found_by_renew_lets_go_of_a_waiting_message(
        app: Celeriac, rigs: list[Rig], caplog: pytest.LogCaptureFixture) -> None:
    app.conf.broker_lease_timeout = 0.2
    publish(app, "t.a")
    publish(app, "t.b")
    rig = make_rig(rigs, app)
    consumer = rig.consumer
    # The consumer claims two messages and then freezes (a GC pause, SIGSTOP) past the
    # lease: another worker claims them. One had been handed to the pool, one waits.
    assert consumer._fetch(2, 0.0)
    running = consumer.waiting.popleft()
    stolen = wait_until(lambda: app.broker.fetch([QUEUE], 2, consumer="thief", lease=30),
                        message="the leases to run out")
    assert len(stolen) == 2
    consumer._renew()
    assert caplog.text.count("was lost; it may run elsewhere") == 2
    # The waiting one is dropped (it would run twice); the running one stays held until
    # it is settled, and its ack is then refused.
    assert list(consumer.waiting) == [] and list(consumer.held) == [running.id]
    assert app.broker.ack(stolen) == [True, True]


# -- the status pipe ----------------------------------------------------------------------
def _sample(hint: Any, name: str) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return _sample(next(a for a in args if a is not type(None)), name)
    if origin is tuple:
        return (_sample(args[0], name), _sample(args[0], name))
    if origin is dict or hint is dict:
        return {"key": [1, "two"]}
    samples = {str: f"{name}-value é", int: 7, float: 1.25, bool: True}
    return samples.get(hint, f"{name}-any")


def sample_event(cls: type[StatusEvent]) -> StatusEvent:
    """An event of ``cls`` with a value for every field, built from its type hints."""
    import celeriac.worker.status as status_module

    hints = typing.get_type_hints(cls, vars(status_module))
    return cls(**{f.name: _sample(hints[f.name], f.name) for f in dataclasses.fields(cls)})


@pytest.mark.parametrize("kind", sorted(EVENT_TYPES))
def test_every_status_event_round_trips(kind: str) -> None:
    event = sample_event(EVENT_TYPES[kind])
    line = encode_event(event)
    assert line.endswith(b"\n") and line.count(b"\n") == 1 and len(line) < 4096
    assert decode_event(line.rstrip(b"\n")) == event
    # A field one end has and the other has not is an error, not a silent default.
    data = json.loads(line)
    assert data[0] == kind and len(data) == 1 + len(dataclasses.fields(type(event)))
    for wrong in (data[:-1], [*data, "extra"]):
        with pytest.raises(ValueError, match=f"malformed {kind} status event"):
            decode_event(json.dumps(wrong).encode())


def test_real_events_round_trip_with_their_meaning() -> None:
    delivery = Delivery(id="d1", queue=QUEUE, body=b"", delivery_count=2, token=9)
    read_fd, write_fd = os.pipe()
    writer, reader = StatusWriter(write_fd), StatusReader(read_fd)
    try:
        writer.ready()
        writer.started(delivery, "task-1", "t" * 500, 5.0, False, "(1,)", "{}")
        for _ in range(45):
            writer.finished(delivery)
        writer.flush()
        events, open_ = reader.read()
    finally:
        writer.close()
        reader.close()
    assert open_ and isinstance(events[0], Ready) and events[0].pid == os.getpid()
    started = events[1]
    assert isinstance(started, Started)
    assert (started.delivery_id, started.token, started.delivery_count, started.hard_limit) == (
        "d1", 9, 2, 5.0)
    assert len(started.name) == 200  # cut so that a line stays atomic
    done = [e for e in events[2:] if isinstance(e, Done)]
    assert [len(e.delivery_ids) for e in done] == [40, 5]


def test_followups_cross_in_parts_each_under_pipe_buf_before_the_start() -> None:
    """A chain of many steps (quotes, non-ASCII) is too long for one atomic line."""
    from celeriac.worker.supervisor import _joined

    delivery = Delivery(id="d1", queue=QUEUE, body=b"", delivery_count=1, token=1)
    followups = {"chain": [{"task": f"t.step\u00e9\U0001f600\"{i}", "args": [i] * 20}
                           for i in range(100)], "chord": None, "errbacks": None,
                 "group": None, "group_index": None}
    read_fd, write_fd = os.pipe()
    writer, reader = StatusWriter(write_fd), StatusReader(read_fd)
    try:
        writer.followups(delivery, followups)
        writer.started(delivery, "task-1", "t", None, False)
        raw = os.read(read_fd, 1 << 16)
    finally:
        writer.close()
        reader.close()
    lines = raw.splitlines()
    events = [decode_event(line) for line in lines]
    assert len(events) > 3 and all(len(line) < 4096 for line in lines)
    *parts, started = events
    assert all(isinstance(p, FollowupsPart) and p.delivery_id == "d1" for p in parts)
    assert isinstance(started, Started)
    assert _joined([p.part for p in parts if isinstance(p, FollowupsPart)]) == followups
    assert _joined(None) is None and _joined(["{not json"]) is None


def test_reader_joins_split_lines_skips_malformed_ones_and_sees_eof(
        caplog: pytest.LogCaptureFixture) -> None:
    read_fd, write_fd = os.pipe()
    reader = StatusReader(read_fd)
    line = encode_event(Done(("a", "b")))
    os.write(write_fd, line[:5])
    assert reader.read() == ([], True)
    os.write(write_fd, line[5:] + b'["nonsense"]\n' + b"not json\n" + encode_event(Ready(1)))
    events, open_ = reader.read()
    assert events == [Done(("a", "b")), Ready(1)] and open_
    assert caplog.text.count("ignoring a malformed status line") == 2
    os.close(write_fd)  # gevent (patched leg) closes a pipe at the hub's next turn
    wait_until(lambda: reader.read() == ([], False), message="end of file")
    reader.close()


# -- the supervisor, in this process ------------------------------------------------------
@pytest.fixture
def supervisors() -> Iterator[list[Supervisor]]:
    made: list[Supervisor] = []
    yield made
    for supervisor in made:
        for child in list(supervisor.children.values()):
            if child.proc.poll() is None:
                child.proc.kill()
            child.proc.wait()
            child.reader.close()
        supervisor.selector.close()


def make_supervisor(supervisors: list[Supervisor], app: Celeriac) -> Supervisor:
    """A supervisor of one solo process, built in this process (it starts nothing itself)."""
    options = WorkerOptions(app="core", groups=[PoolGroup("solo", 1, [QUEUE])], node="core-node")
    supervisor = Supervisor(app, options)
    supervisors.append(supervisor)
    return supervisor


def attach_child(supervisor: Supervisor, code: str) -> tuple[Child, StatusWriter]:
    """Give the supervisor a worker process of index 0 that runs ``code`` (a real process,
    killed or reaped like any other), and the write end of its status pipe."""
    import selectors

    read_fd, write_fd = os.pipe()
    proc = subprocess.Popen([sys.executable, "-c", code])
    child = Child(index=0, group=supervisor.slots[0], consumer_id="core-node/0/test", proc=proc,
                  reader=StatusReader(read_fd), started_at=time.monotonic())
    supervisor.children[0] = child
    supervisor.selector.register(read_fd, selectors.EVENT_READ, child)
    return child, StatusWriter(write_fd)


def tick_until(supervisor: Supervisor, predicate: typing.Callable[[], bool],
               message: str) -> None:
    def turn() -> bool:
        supervisor._tick()
        return predicate()

    wait_until(turn, timeout=20, interval=0.0, message=message)


SLEEPER = "import time; time.sleep(30)"


def test_supervisor_follows_a_process_through_its_status_events(
        app: Celeriac, supervisors: list[Supervisor], caplog: pytest.LogCaptureFixture) -> None:
    supervisor = make_supervisor(supervisors, app)
    child, writer = attach_child(supervisor, SLEEPER)
    publish(app, "t.a")
    [delivery] = claim(app, consumer=child.consumer_id)
    writer.ready()
    tick_until(supervisor, lambda: child.ready, "ready")
    assert supervisor.announced  # every process of the node is ready
    writer.started(delivery, "task-a", "t.a", None, False)
    tick_until(supervisor, lambda: delivery.id in child.running, "started")
    assert child.running[delivery.id].task_id == "task-a"
    writer.send(Stalled(delivery.id, "t.a", "task-a", 0.5, False, "File x, line 1"))
    writer.send(Stalled(delivery.id, "t.a", "task-a", 0.7, True, ""))
    writer.finished(delivery)
    writer.flush()
    tick_until(supervisor, lambda: not child.running, "done")
    assert (child.processed, supervisor.processed, supervisor.stalls) == (1, 1, {"t.a": 1})
    assert child.blocker is None
    kinds = [e.type for e in app.broker.events()]
    assert "task-blocked" in kinds and "task-unblocked" in kinds
    assert "task t.a[task-a] is blocking the event loop" in caplog.text
    writer.close()


def test_supervisor_enforces_a_hard_limit_by_killing_a_real_process(
        app: Celeriac, supervisors: list[Supervisor]) -> None:
    supervisor = make_supervisor(supervisors, app)
    child, writer = attach_child(supervisor, SLEEPER)
    late_id, other_id = publish(app, "t.slow"), publish(app, "t.other")
    late, other = claim(app, 2, consumer=child.consumer_id)
    writer.ready()
    writer.started(late, late_id, "t.slow", 0.2, False)
    tick_until(supervisor, lambda: 0 not in supervisor.children, "the kill")
    assert child.proc.returncode == -signal.SIGKILL and child.killed_for == "hard time limit"
    # The task that overran failed and its message was acked; the other message went
    # back at once, uncharged; a replacement process is due.
    record = app.backend.get(late_id)
    assert record is not None and (record.status, record.exc_type) == (FAILURE, "TimeLimitExceeded")
    [back] = app.broker.fetch([QUEUE], 5, consumer="next", lease=30)
    assert (back.id, back.delivery_count) == (other.id, 1)
    assert app.backend.get(other_id) is None
    assert 0 in supervisor.restart_at
    supervisor.restart_at.clear()  # no real worker process is started by this test
    writer.close()


def test_supervisor_charges_a_crash_and_fails_a_task_on_its_last_delivery(
        supervisors: list[Supervisor]) -> None:
    app = Celeriac("core", broker="memory://", backend="memory://", broker_max_deliveries=1)
    supervisor = make_supervisor(supervisors, app)
    child, writer = attach_child(supervisor, "import sys, time; time.sleep(0.3); sys.exit(3)")
    spent_id, unstarted_id = publish(app, "t.crashy"), publish(app, "t.other")
    spent, unstarted = claim(app, 2, consumer=child.consumer_id)
    writer.ready()
    writer.started(spent, spent_id, "t.crashy", None, False)
    tick_until(supervisor, lambda: 0 not in supervisor.children, "the reap")
    assert child.proc.returncode == 3
    record = app.backend.get(spent_id)
    assert record is not None and (record.status, record.exc_type) == (FAILURE, "WorkerLostError")
    # The unstarted message is back uncharged; the spent one goes to the dead letters.
    [back] = app.broker.fetch([QUEUE], 5, consumer="next", lease=30)
    assert (back.id, back.delivery_count) == (unstarted.id, 1)
    assert [d.id for d in app.broker.dead_letters(QUEUE)] == [spent.id]
    assert app.backend.get(unstarted_id) is None
    supervisor.restart_at.clear()
    writer.close()
