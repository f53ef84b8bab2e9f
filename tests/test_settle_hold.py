"""Starting before settling: while held messages wait for a slot, the consumer settles the
jobs that finished (result stored, message acked) in one batch at most ``SETTLE_HOLD``
after it first saw them, and at once when nothing is left to start
(:meth:`celeriac.worker.consumer.Consumer._settle_wait`). Their ends reach the supervisor
at once all the same (the status pipe)."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator

import pytest
from conftest import wait_until

from celeriac import Celeriac
from celeriac.pools.threads import ThreadPool
from celeriac.worker.consumer import SETTLE_HOLD, Consumer
from celeriac.worker.spec import WorkerSpec
from celeriac.worker.status import Done, Started, StatusReader, StatusWriter

QUEUE = "celery"


@pytest.fixture
def app() -> Iterator[Celeriac]:
    app = Celeriac("hold", broker="memory://", backend="memory://")
    yield app
    app.close()


@pytest.fixture
def made(app: Celeriac) -> Iterator[Callable[[int, int], tuple[Consumer, StatusReader]]]:
    """Makes consumers of ``concurrency`` slots that hold ``prefetch`` messages."""
    rigs: list[tuple[ThreadPool, StatusWriter, StatusReader]] = []

    def make(concurrency: int, prefetch: int) -> tuple[Consumer, StatusReader]:
        read_fd, write_fd = os.pipe()
        writer, reader = StatusWriter(write_fd), StatusReader(read_fd)
        spec = WorkerSpec(app="hold", pool="threads", concurrency=concurrency, queues=[QUEUE],
                          prefetch=prefetch, consumer_id=f"hold/{len(rigs)}", node="hold",
                          index=0, status_fd=write_fd, parent_pid=os.getppid(), max_tasks=None)
        pool = ThreadPool(concurrency, app.conf)
        pool.start()
        rigs.append((pool, writer, reader))
        return Consumer(app, pool, spec, writer), reader

    yield make
    for pool, writer, reader in rigs:
        pool.join(10)
        pool.stop()
        writer.close()
        reader.close()


@pytest.fixture
def consumer(made: Callable[[int, int], tuple[Consumer, StatusReader]]
             ) -> tuple[Consumer, StatusReader]:
    """A consumer of one slot that holds two messages: one runs, one waits for the slot."""
    return made(1, 2)


def in_flight(app: Celeriac) -> int:
    stats = app.broker.stats().get(QUEUE)
    return stats.in_flight if stats else 0


def test_a_finished_job_waits_for_its_batch_while_a_message_waits_for_its_slot(
        app: Celeriac, consumer: tuple[Consumer, StatusReader]) -> None:
    gate = threading.Event()

    @app.task(name="t.double")
    def double(x: int) -> int:
        gate.wait(10)
        return 2 * x

    loop, reader = consumer
    first, second = (app.send_task("t.double", (n,)).id for n in (1, 2))
    assert loop._fetch(2, 0.0)
    loop._dispatch()  # one slot: the first runs, the second waits for it
    assert len(loop.waiting) == 1
    gate.set()
    wait_until(lambda: bool(loop.finished), message="the first task ended")

    hold = loop._settle_wait()
    assert 0.0 < hold <= SETTLE_HOLD
    # Held: no result, no ack yet; but the supervisor knows the task ended.
    assert app.backend.get(first) is None
    assert in_flight(app) == 2
    events = reader.read()[0]
    started = [e.delivery_id for e in events if isinstance(e, Started)]
    assert [i for e in events if isinstance(e, Done) for i in e.delivery_ids] == started

    assert loop.finished_seen is not None
    loop.finished_seen -= SETTLE_HOLD  # as if the hold had run out
    assert loop._settle_wait() == 0.0
    loop._settle()
    assert app.AsyncResult(first).get(timeout=5) == 2
    assert in_flight(app) == 1
    assert app.backend.get(second) is None


def test_finished_jobs_are_settled_at_once_when_nothing_is_left_to_start(
        app: Celeriac, consumer: tuple[Consumer, StatusReader]) -> None:
    @app.task(name="t.double")
    def double(x: int) -> int:
        return 2 * x

    loop, _ = consumer
    task_id = app.send_task("t.double", (3,)).id
    assert loop._fetch(2, 0.0)
    loop._dispatch()
    assert not loop.waiting
    wait_until(lambda: bool(loop.finished), message="the task ended")
    assert loop._settle_wait() == 0.0  # nothing waits for a slot
    loop._settle()
    assert app.AsyncResult(task_id).get(timeout=5) == 6
    assert in_flight(app) == 0


def test_a_stopping_consumer_settles_at_once(
        app: Celeriac, consumer: tuple[Consumer, StatusReader]) -> None:
    gate = threading.Event()

    @app.task(name="t.double")
    def double(x: int) -> int:
        gate.wait(10)
        return 2 * x

    loop, _ = consumer
    for n in (1, 2):
        app.send_task("t.double", (n,))
    assert loop._fetch(2, 0.0)
    loop._dispatch()
    assert len(loop.waiting) == 1
    gate.set()
    wait_until(lambda: bool(loop.finished), message="the first task ended")
    assert loop._settle_wait() > 0.0
    loop.stop("test over")
    assert loop._settle_wait() == 0.0


def test_a_long_backlog_is_settled_a_batch_a_turn_with_no_new_hold(
        app: Celeriac, made: Callable[[int, int], tuple[Consumer, StatusReader]]) -> None:
    gate = threading.Event()

    @app.task(name="t.double")
    def double(x: int) -> int:
        gate.wait(10)
        return 2 * x

    loop, _ = made(2, 3)
    first, second, third = (app.send_task("t.double", (n,)).id for n in (1, 2, 3))
    assert loop._fetch(3, 0.0)
    loop._dispatch()  # two slots: two run, the third waits
    assert len(loop.waiting) == 1
    gate.set()
    wait_until(lambda: len(loop.finished) == 2, message="both running tasks ended")
    assert loop._settle_wait() > 0.0
    assert loop.finished_seen is not None
    loop.finished_seen -= SETTLE_HOLD
    assert loop._settle_wait() == 0.0
    loop._settle(1)  # one a turn (SETTLE_BATCH in the loop)
    assert len(loop.finished) == 1
    assert loop._settle_wait() == 0.0  # the rest goes next turn, not after a new hold
    loop._settle(1)
    assert not loop.finished and loop.finished_seen is None
    assert sorted(app.AsyncResult(i).get(timeout=5) for i in (first, second)) == [2, 4]
    assert app.backend.get(third) is None
