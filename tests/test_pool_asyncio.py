"""The ``-P asyncio`` pool's parts in-process: the jobs thread's greenlet scheduler, its
thread-safe event, time limits and terminations thrown into parked jobs, and sync task
bodies on the bounded thread pool (with what hits the job forwarded to the body).

Everything is real: real threads, real greenlets; waits are bounded and only decide
"did it happen" (no timing assertions).
"""

from __future__ import annotations

import contextvars
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from conftest import normal_leg_only, wait_until

from celeriac import Celeriac
from celeriac.aio.greenjobs import JobEvent, JobScheduler
from celeriac.aio.syncbodies import SyncBodies
from celeriac.exceptions import (
    ConfigurationError,
    HardTimeLimit,
    SoftTimeLimitExceeded,
    Terminated,
)
from celeriac.middleware import Middleware, Pipeline
from celeriac.pools import get_pool
from celeriac.pools.asyncio import SYNC_THREADS, AsyncioPool, sync_threads
from celeriac.worker.consumer import Consumer
from celeriac.worker.spec import WorkerSpec
from celeriac.worker.status import StatusReader, StatusWriter

WAIT = 20.0

# The pool runs in a worker process of its own, never patched: real threads are the point.
pytestmark = normal_leg_only


@pytest.fixture
def scheduler() -> Iterator[JobScheduler]:
    jobs = JobScheduler("test-jobs")
    jobs.start()
    yield jobs
    jobs.stop()


@pytest.fixture
def pool() -> Iterator[AsyncioPool]:
    made = AsyncioPool(4)
    made.start()
    yield made
    assert made.join(WAIT)
    made.stop()


def outcome_of(fn: Callable[[], Any], into: list[Any]) -> Callable[[], None]:
    """A job that records what ``fn`` returned, or the exception it raised."""
    def job() -> None:
        try:
            into.append(fn())
        except BaseException as exc:
            into.append(exc)
    return job


def test_parked_jobs_let_the_others_run_on_one_thread(scheduler: JobScheduler) -> None:
    gate = JobEvent(scheduler)
    started: list[int] = []
    threads: set[int] = set()
    ended: list[Any] = []

    def job(index: int) -> Callable[[], None]:
        def run() -> None:
            started.append(index)
            threads.add(threading.get_ident())
            assert gate.wait() is True
            ended.append(index)
        return run

    for index in range(5):
        scheduler.submit(job(index))
    deadline = time.monotonic() + WAIT
    while len(started) < 5 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sorted(started) == [0, 1, 2, 3, 4], "a parked job kept the others from starting"
    assert ended == [] and scheduler.running() == 5
    gate.set()  # from the test's thread: wakes every parked job
    assert scheduler.join(WAIT)
    assert sorted(ended) == [0, 1, 2, 3, 4]
    assert threads == {scheduler.ident} and scheduler.ident != threading.get_ident()


def test_event_waits_natively_off_the_jobs_thread(scheduler: JobScheduler) -> None:
    event = JobEvent(scheduler)
    assert event.wait(0.01) is False
    threading.Timer(0.05, event.set).start()
    assert event.wait(WAIT) is True and event.is_set()
    event.clear()
    assert not event.is_set()


def test_a_parked_wait_times_out_and_a_stale_wake_is_ignored(scheduler: JobScheduler) -> None:
    event, later = JobEvent(scheduler), JobEvent(scheduler)
    results: list[Any] = []

    def job() -> None:
        results.append(event.wait(0.05))   # nobody sets it: times out
        results.append(later.wait())       # a wake for the first wait must not end this one
        results.append("after")

    scheduler.submit(job)
    deadline = time.monotonic() + WAIT
    while not results and time.monotonic() < deadline:
        time.sleep(0.01)
    event.set()  # stale: its waiter gave up
    time.sleep(0.1)
    assert results == [False], "a stale wake resumed a job waiting for something else"
    later.set()
    assert scheduler.join(WAIT)
    assert results == [False, True, "after"]


def test_time_limits_are_thrown_where_the_job_waits(scheduler: JobScheduler) -> None:
    results: list[Any] = []
    never = JobEvent(scheduler)

    def soft_then_cleanup() -> str:
        with scheduler.limits(0.05, None):
            try:
                never.wait()
            except SoftTimeLimitExceeded:
                return "cleaned up"
        return "not reached"

    def hard() -> str:
        with scheduler.limits(None, 0.05):
            never.wait()
        return "not reached"

    scheduler.submit(outcome_of(soft_then_cleanup, results))
    scheduler.submit(outcome_of(hard, results))
    assert scheduler.join(WAIT)
    assert "cleaned up" in results
    [exc] = [r for r in results if isinstance(r, BaseException)]
    assert isinstance(exc, HardTimeLimit) and "hard time limit (0.05s)" in str(exc)


def test_limits_end_with_their_block(scheduler: JobScheduler) -> None:
    results: list[Any] = []
    pause = JobEvent(scheduler)

    def quick_then_wait() -> str:
        with scheduler.limits(0.05, 0.06):
            pass
        pause.wait(0.3)  # past both deadlines, outside the block: nothing thrown
        return "fine"

    scheduler.submit(outcome_of(quick_then_wait, results))
    assert scheduler.join(WAIT)
    assert results == ["fine"]


def test_throw_from_another_thread_reaches_a_parked_job(scheduler: JobScheduler) -> None:
    handles: list[Any] = []
    results: list[Any] = []
    never = JobEvent(scheduler)

    def job() -> None:
        handles.append(scheduler.current())
        never.wait()

    scheduler.submit(outcome_of(job, results))
    deadline = time.monotonic() + WAIT
    while not handles and time.monotonic() < deadline:
        time.sleep(0.01)
    assert handles[0] is not None and scheduler.current() is None
    scheduler.throw(handles[0], Terminated("stop"))
    assert scheduler.join(WAIT)
    assert isinstance(results[0], Terminated)


request_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_var")


def test_jobs_reuse_their_greenlets_each_in_a_fresh_context(scheduler: JobScheduler) -> None:
    import greenlet

    seen: list[Any] = []

    def job() -> tuple[Any, str]:
        found = request_var.get("unset")
        request_var.set("set by a job")
        return greenlet.getcurrent(), found

    for _ in range(3):  # one after another: each ends before the next starts
        scheduler.submit(outcome_of(job, seen))
        assert scheduler.join(WAIT)
    assert [found for _, found in seen] == ["unset"] * 3
    assert len({id(glet) for glet, _ in seen}) == 1


def test_a_spare_greenlet_keeps_nothing_of_its_last_job(scheduler: JobScheduler) -> None:
    import gc
    import weakref

    class Job:
        def __call__(self) -> None:
            pass

    last = Job()
    last_ref = weakref.ref(last)
    scheduler.submit(last)
    del last
    assert scheduler.join(WAIT)
    # The job ends before its greenlet goes among the spares: wait for that, then look.
    assert wait_until(lambda: bool(scheduler._spares), WAIT)
    gc.collect()
    assert last_ref() is None, "a spare greenlet keeps its last job alive"


def test_no_post_is_lost_while_the_scheduler_falls_asleep(scheduler: JobScheduler) -> None:
    # Posts take no lock unless the scheduler sleeps: submits from four threads and
    # wake-ups from a fifth race its falling asleep thousands of times. A lost post
    # would leave a job unstarted or parked for good (no timer would rescue it).
    events: list[JobEvent] = []
    guard = threading.Lock()
    ended: list[Any] = []

    def job() -> None:
        event = JobEvent(scheduler)
        with guard:
            events.append(event)
        event.wait()

    def submitter() -> None:
        for _ in range(500):
            scheduler.submit(outcome_of(job, ended))
            time.sleep(0)

    stop = threading.Event()

    def waker() -> None:
        while not stop.is_set():
            with guard:
                pending, events[:] = events[:], []
            for event in pending:
                event.set()
            time.sleep(0)

    threads = [threading.Thread(target=submitter) for _ in range(4)]
    wakers = threading.Thread(target=waker)
    wakers.start()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        assert scheduler.join(WAIT)
    finally:
        stop.set()
        wakers.join()
    assert ended == [None] * 2000


def test_spares_beyond_the_limit_end_and_the_rest_end_with_the_scheduler() -> None:
    import greenlet

    jobs = JobScheduler("test-spares")
    jobs.max_spares = 2
    jobs.start()
    gate = JobEvent(jobs)
    glets: list[Any] = []

    def job() -> None:
        glets.append(greenlet.getcurrent())
        gate.wait()

    for _ in range(5):
        jobs.submit(outcome_of(job, []))
    assert wait_until(lambda: len(glets) == 5, WAIT)
    gate.set()
    assert jobs.join(WAIT)
    assert wait_until(lambda: sum(not glet.dead for glet in glets) == 2, WAIT)
    jobs.stop()
    assert wait_until(lambda: all(glet.dead for glet in glets), WAIT)


def test_a_throw_for_an_ended_job_misses_the_next_job_of_its_greenlet(
        scheduler: JobScheduler) -> None:
    handles: list[Any] = []
    results: list[Any] = []
    gate = JobEvent(scheduler)

    def first() -> str:
        handles.append(scheduler.current())
        return "first"

    def second() -> str:
        handles.append(scheduler.current())
        gate.wait()
        return "second ran to its end"

    scheduler.submit(outcome_of(first, results))
    assert scheduler.join(WAIT)
    scheduler.submit(outcome_of(second, results))
    assert wait_until(lambda: len(handles) == 2, WAIT)
    assert handles[0][0] is handles[1][0]  # the same greenlet ran both
    scheduler.throw(handles[0], Terminated("meant for the first job"))
    scheduler.throw(handles[1], SoftTimeLimitExceeded("meant for the second"))
    gate.set()
    assert scheduler.join(WAIT)
    # Only the throw naming the second job reached it (the first's came too late).
    assert results[0] == "first" and isinstance(results[1], SoftTimeLimitExceeded)


def test_sync_bodies_run_on_pool_threads_with_the_jobs_context(pool: AsyncioPool) -> None:
    results: list[Any] = []

    def body() -> tuple[str, int, str]:
        return request_var.get(), threading.get_ident(), threading.current_thread().name

    def job() -> Any:
        request_var.set("req-1")
        return pool.run_body(body, soft=None, hard=None)

    pool.submit(outcome_of(job, results))
    assert pool.join(WAIT)
    [(value, ident, name)] = results
    assert value == "req-1", "the body did not see the job's contextvars"
    assert ident not in (pool._jobs.ident, threading.get_ident())
    assert name.startswith("celeriac-sync")


def test_n_sync_bodies_run_at_once(pool: AsyncioPool) -> None:
    arrived = threading.Barrier(4, timeout=WAIT)
    results: list[Any] = []
    for _ in range(4):
        pool.submit(outcome_of(lambda: pool.run_body(arrived.wait, soft=None, hard=None),
                               results))
    assert pool.join(WAIT)
    # A barrier of 4 is only passed by 4 bodies running at the same time.
    assert sorted(results) == [0, 1, 2, 3]


def _spin_until_soft_limit() -> str:
    try:
        while True:
            sum(range(1000))
    except SoftTimeLimitExceeded:
        return "soft limit caught in the body"


def test_soft_limit_is_forwarded_into_a_sync_body(pool: AsyncioPool) -> None:
    results: list[Any] = []
    pool.submit(outcome_of(lambda: pool.run_body(_spin_until_soft_limit, soft=0.1, hard=None),
                           results))
    assert pool.join(WAIT)
    assert results == ["soft limit caught in the body"]


def test_hard_limit_ends_the_job_and_stops_the_body(pool: AsyncioPool) -> None:
    results: list[Any] = []
    body_saw: list[BaseException] = []
    body = _spinner(body_saw)
    pool.submit(outcome_of(lambda: pool.run_body(body, soft=None, hard=0.1), results))
    assert pool.join(WAIT)
    assert isinstance(results[0], HardTimeLimit)
    _wait_until(body_saw)
    assert isinstance(body_saw[0], HardTimeLimit), "the body's thread was not stopped"


def test_a_body_still_waiting_for_a_thread_never_starts_once_its_job_ended() -> None:
    pool = AsyncioPool(2)
    pool.start()
    pool.resize(2)
    pool._sync.resize(1)  # type: ignore[union-attr]  # one thread: the second body queues
    release = threading.Event()
    ran: list[str] = []
    results: list[Any] = []

    def first() -> str:
        release.wait(WAIT)
        return "first"

    def second() -> str:
        ran.append("second")
        return "second"

    pool.submit(outcome_of(lambda: pool.run_body(first, soft=None, hard=None), results))
    pool.submit(outcome_of(lambda: pool.run_body(second, soft=None, hard=0.1), results))
    deadline = time.monotonic() + WAIT
    while not any(isinstance(r, HardTimeLimit) for r in results) and time.monotonic() < deadline:
        time.sleep(0.01)
    release.set()
    assert pool.join(WAIT)
    pool.stop()
    assert "first" in results and any(isinstance(r, HardTimeLimit) for r in results)
    assert ran == [], "a body whose job had ended ran anyway"


def test_interrupt_terminates_a_job_waiting_for_its_sync_body(pool: AsyncioPool) -> None:
    handles: list[Any] = []
    results: list[Any] = []
    body_saw: list[BaseException] = []

    def job() -> Any:
        handles.append(pool.current_job())
        return pool.run_body(_spinner(body_saw), soft=None, hard=None)

    pool.submit(outcome_of(job, results))
    deadline = time.monotonic() + WAIT
    while not handles and time.monotonic() < deadline:
        time.sleep(0.01)
    assert pool.can_interrupt and pool.current_job() is None
    pool.interrupt(handles[0], Terminated)
    assert pool.join(WAIT)
    assert isinstance(results[0], Terminated)
    _wait_until(body_saw)
    assert isinstance(body_saw[0], Terminated), "the body's thread was not stopped"


def _spinner(saw: list[BaseException]) -> Callable[[], None]:
    """A body that spins until an exception is raised in its thread, and notes which."""
    def spin() -> None:
        try:
            while True:
                sum(range(1000))
        except BaseException as exc:
            saw.append(exc)
            raise
    return spin


def _wait_until(items: list[Any]) -> None:
    deadline = time.monotonic() + WAIT
    while not items and time.monotonic() < deadline:
        time.sleep(0.01)


def test_free_slots_follow_resize(pool: AsyncioPool) -> None:
    gate = JobEvent(pool._jobs)
    for _ in range(3):
        pool.submit(gate.wait)
    assert pool.free_slots() == 1 and pool.running() == 3
    pool.resize(2)  # running jobs go on; no room until enough ended
    assert pool.free_slots() == 0 and pool.concurrency == 2
    pool.resize(10)
    assert pool.free_slots() == 7
    gate.set()
    assert pool.join(WAIT) and pool.running() == 0


def test_no_more_bodies_run_at_once_than_threads() -> None:
    bodies = SyncBodies(2)
    scheduler = JobScheduler("test-jobs")
    scheduler.start()
    lock, release = threading.Lock(), threading.Event()
    active, most = [0], [0]

    def body() -> None:
        with lock:
            active[0] += 1
            most[0] = max(most[0], active[0])
        release.wait(WAIT)
        with lock:
            active[0] -= 1

    for _ in range(5):
        scheduler.submit(lambda: bodies.call(body, JobEvent(scheduler)))
    deadline = time.monotonic() + WAIT
    while active[0] < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.2)  # room for a third body to start, if the bound did not hold
    assert active[0] == 2
    release.set()
    assert scheduler.join(WAIT)
    scheduler.stop()
    bodies.stop()
    assert most[0] == 2


def test_a_thread_stuck_past_a_hard_limit_is_replaced() -> None:
    """One thread, stuck in a C call its job gave up on: the next body gets a new thread
    instead of waiting for the call to return."""
    pool = AsyncioPool(1)
    pool.start()
    results: list[Any] = []
    pool.submit(outcome_of(lambda: pool.run_body(lambda: time.sleep(60), soft=None, hard=0.1),
                           results))
    assert pool.join(WAIT)
    assert isinstance(results[0], HardTimeLimit)
    assert pool._sync is not None and pool._sync.abandoned == 1
    pool.submit(outcome_of(lambda: pool.run_body(lambda: "next", soft=None, hard=None), results))
    assert pool.join(WAIT)
    pool.stop()
    assert results[1] == "next"


def test_sync_threads_are_bounded() -> None:
    assert sync_threads(4) == 4
    assert sync_threads(1000) == SYNC_THREADS


def test_pool_is_registered_and_needs_greenlet(monkeypatch: pytest.MonkeyPatch) -> None:
    assert get_pool("asyncio") is AsyncioPool
    for name in ("celeriac.pools.asyncio", "celeriac.aio.greenjobs"):
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "greenlet", None)  # what an uninstalled package looks like
    with pytest.raises(ConfigurationError, match=r"pip install 'celeriac\[asyncio\]'"):
        get_pool("asyncio")


# -- freed slots: handed their next messages from the jobs thread ---------------------------
def test_on_free_is_called_on_the_jobs_thread_once_per_turn_and_may_fail(
        scheduler: JobScheduler, caplog: pytest.LogCaptureFixture) -> None:
    calls: list[int] = []
    gate = JobEvent(scheduler)

    def freed() -> None:
        calls.append(threading.get_ident())
        if len(calls) == 1:
            raise RuntimeError("the first call fails")

    scheduler.on_free = freed
    for _ in range(20):
        scheduler.submit(gate.wait)
    wait_until(lambda: scheduler.running() == 20)
    assert calls == []  # parked, not ended
    gate.set()  # wakes all twenty in one command batch
    assert scheduler.join(WAIT)
    wait_until(lambda: len(calls) >= 1)
    assert set(calls) == {scheduler.ident}
    assert len(calls) < 20  # once per turn, not once per job
    # Logged on the jobs thread just after the call raised: waited for, not read at once.
    wait_until(lambda: "handing freed slots their next messages failed" in caplog.text,
               message="the failure logged")
    # The scheduler went on: a job submitted now runs, and its end calls on_free again.
    before = len(calls)
    scheduler.submit(lambda: None)
    assert scheduler.join(WAIT)
    wait_until(lambda: len(calls) > before)


class HoldTick(Middleware):
    """Once armed, holds the consumer's loop in its next tick until ``released`` is set
    (at most WAIT): the loop hands out nothing meanwhile."""

    def __init__(self, released: threading.Event) -> None:
        self.armed, self.entered, self.released = threading.Event(), threading.Event(), released
        self.waited: list[bool] = []

    def tick(self) -> None:
        if self.armed.is_set() and not self.waited:
            self.entered.set()
            self.waited.append(self.released.wait(WAIT))


def test_a_freed_slot_gets_its_next_message_while_the_consumer_loop_is_held() -> None:
    app = Celeriac("refill", broker="memory://", backend="memory://")
    first_go, second_started = threading.Event(), threading.Event()
    running: list[str] = []

    @app.task(name="t.first")
    def first() -> None:
        running.append("first")
        assert first_go.wait(WAIT)

    @app.task(name="t.other")
    def other() -> None:
        running.append("other")
        assert first_go.wait(WAIT)

    @app.task(name="t.second")
    def second() -> None:
        second_started.set()

    for name in ("t.first", "t.other", "t.second"):
        app.send_task(name)
    hold = HoldTick(second_started)
    read_fd, write_fd = os.pipe()
    writer, reader = StatusWriter(write_fd), StatusReader(read_fd)
    spec = WorkerSpec(app="refill", pool="asyncio", concurrency=2, queues=["celery"], prefetch=8,
                      consumer_id="refill/0", node="refill", index=0, status_fd=write_fd,
                      parent_pid=os.getppid())
    pool = AsyncioPool(2, app.conf)
    consumer = Consumer(app, pool, spec, writer, Pipeline([hold]))
    pool.start()
    loop = threading.Thread(target=pool.run, args=(consumer.run,), daemon=True)
    loop.start()
    try:
        wait_until(lambda: sorted(running) == ["first", "other"])
        hold.armed.set()
        assert hold.entered.wait(WAIT)  # the loop is held from here on
        first_go.set()  # both slots free: only the jobs thread can hand out t.second now
        wait_until(lambda: bool(hold.waited))
        assert hold.waited == [True], "t.second did not start while the loop was held"
    finally:
        second_started.set()
        consumer.stop("test over")
        loop.join(WAIT)
        pool.stop()
        writer.close()
        reader.close()
        app.close()
    assert not loop.is_alive()
