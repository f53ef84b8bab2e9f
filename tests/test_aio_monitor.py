"""Blocking detection for an asyncio loop on a native thread (celeriac.aio.monitor), on a
real loop in a real thread: a stall is reported while it lasts, naming the task's job and
the blocking call, and again when it ends; a loop that only awaits is never reported.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace

import pytest
from conftest import normal_leg_only

from celeriac.aio.monitor import LoopMonitor, attach_monitor, forget_job, register_job
from celeriac.exceptions import CeleriacError
from celeriac.pools.base import JobInfo, Stall

MAX_BLOCKING = 0.1

# A worker-side part on real native threads: the gevent-patched leg has no place for it.
pytestmark = normal_leg_only


@dataclass
class LoopThread:
    """A plain asyncio loop running forever on its own thread."""

    loop: asyncio.AbstractEventLoop
    thread: threading.Thread
    ident: int | None = None

    def run(self, coro_fn, *args):  # type: ignore[no-untyped-def]
        return asyncio.run_coroutine_threadsafe(coro_fn(*args), self.loop).result(20)


@pytest.fixture
def loop_thread() -> Iterator[LoopThread]:
    loop = asyncio.new_event_loop()
    ready = threading.Event()

    def main() -> None:
        asyncio.set_event_loop(loop)
        loop.call_soon(ready.set)
        loop.run_forever()

    thread = threading.Thread(target=main, daemon=True)
    thread.start()
    assert ready.wait(10)
    made = LoopThread(loop, thread, thread.ident)
    yield made
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.close()


class Reports:
    """Stall reports as they came: copies, since the monitor updates the one it reported."""

    def __init__(self) -> None:
        self.seen: list[Stall] = []
        #: Whether the blocking call had returned when each report came.
        self.after_block: list[bool] = []
        self.returned = False

    def __call__(self, stall: Stall) -> None:
        self.seen.append(replace(stall))
        self.after_block.append(self.returned)


def block_for(seconds: float, reports: Reports) -> None:
    time.sleep(seconds)  # the blocking call the report must show
    reports.returned = True


def test_a_blocking_coroutine_is_reported_while_it_blocks_and_when_it_ends(
        loop_thread: LoopThread) -> None:
    reports = Reports()
    monitor = attach_monitor(loop_thread, MAX_BLOCKING, reports)
    job = JobInfo("delivery-1", "tasks.blocker", "task-1")

    async def blocker() -> str:
        await asyncio.sleep(0.05)
        block_for(0.6, reports)
        await asyncio.sleep(0.05)
        return "done"

    async def start() -> str:
        task = asyncio.ensure_future(blocker())
        register_job(task, job)
        task.add_done_callback(forget_job)
        return await task

    assert loop_thread.run(start) == "done"
    deadline = time.monotonic() + 10
    while len(reports.seen) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    monitor.stop()
    first, last = reports.seen[0], reports.seen[-1]
    assert reports.after_block[0] is False, "the stall was reported only after it ended"
    assert first.job == job and not first.ended
    assert "block_for" in first.stack and "time.sleep" in first.stack
    assert last.ended and last.job == job and len(reports.seen) == 2
    assert last.seconds >= MAX_BLOCKING


def test_a_loop_that_only_awaits_is_never_reported(loop_thread: LoopThread) -> None:
    reports = Reports()
    # A longer limit here: only a machine too loaded to run the loop thread for half a
    # second could make a report (its steps take microseconds).
    monitor = attach_monitor(loop_thread, 0.5, reports)

    async def polite() -> None:
        for _ in range(40):
            await asyncio.sleep(0.02)
            sum(range(1000))

    async def many() -> None:
        await asyncio.gather(*(polite() for _ in range(20)))

    loop_thread.run(many)
    time.sleep(0.3)  # idle too
    monitor.stop()
    assert reports.seen == []


def test_a_blocking_callback_outside_any_job_is_reported_without_a_job(
        loop_thread: LoopThread) -> None:
    reports = Reports()
    monitor = attach_monitor(loop_thread, MAX_BLOCKING, reports)
    loop_thread.loop.call_soon_threadsafe(block_for, 0.5, reports)
    deadline = time.monotonic() + 10
    while not (reports.seen and reports.seen[-1].ended) and time.monotonic() < deadline:
        time.sleep(0.02)
    monitor.stop()
    assert reports.seen[0].job is None and "block_for" in reports.seen[0].stack
    assert reports.seen[-1].ended


def test_a_loop_thread_not_started_is_refused() -> None:
    loop = asyncio.new_event_loop()
    try:
        with pytest.raises(CeleriacError, match="has not started"):
            attach_monitor(LoopThread(loop, threading.Thread(target=print)), 0.1, print)
    finally:
        loop.close()


def test_monitor_checks_do_nothing_on_a_loop_not_running() -> None:
    loop = asyncio.new_event_loop()
    reports = Reports()
    monitor = LoopMonitor(loop, threading.get_ident(), MAX_BLOCKING, reports)
    time.sleep(0.2)  # no tick for longer than MAX_BLOCKING, but the loop does not run
    monitor.check()
    loop.close()
    assert reports.seen == []


def test_the_asyncio_pool_reports_its_loops_stalls_to_on_stall(loop_thread: LoopThread) -> None:
    from celeriac.pools.asyncio import AsyncioPool

    pool = AsyncioPool(2, {"worker_max_blocking_time": MAX_BLOCKING})
    reports = Reports()
    pool.on_stall = reports  # set by the worker process after the pool is made
    pool.watch_loop(loop_thread)
    loop_thread.loop.call_soon_threadsafe(block_for, 0.5, reports)
    deadline = time.monotonic() + 10
    while not (reports.seen and reports.seen[-1].ended) and time.monotonic() < deadline:
        time.sleep(0.02)
    pool.stop()
    assert [stall.ended for stall in reports.seen] == [False, True]


def wait_for_end(reports: Reports) -> None:
    deadline = time.monotonic() + 10
    while not (reports.seen and reports.seen[-1].ended) and time.monotonic() < deadline:
        time.sleep(0.02)


@pytest.mark.parametrize("pool_name", ["threads", "solo"])
def test_an_async_task_blocking_the_shared_loop_is_named_on_every_pool(pool_name: str) -> None:
    """A pool's run_body watches the process's shared loop and registers the task's job:
    the stall names it (through the trampoline run_coroutine wraps the coroutine in)."""
    from celeriac.pools import get_pool

    pool = get_pool(pool_name)(2, {"worker_max_blocking_time": MAX_BLOCKING})
    reports = Reports()
    pool.on_stall = reports  # set by the worker process after the pool is made
    job = JobInfo("delivery-2", "tasks.ablocker", "task-2")

    async def ablocker() -> str:
        await asyncio.sleep(0.01)
        block_for(0.5, reports)
        return "done"

    pool.start()
    try:
        assert pool.run_body(ablocker, is_async=True, soft=None, hard=None, job=job) == "done"
        wait_for_end(reports)
    finally:
        pool.stop()
    first, last = reports.seen[0], reports.seen[-1]
    assert first.job == job and not first.ended and "block_for" in first.stack
    assert reports.after_block[0] is False, "the stall was reported only after it ended"
    assert last.job == job and last.ended


def test_the_asyncio_pool_watches_the_shared_loop_from_its_start() -> None:
    from celeriac.aio.loop import shared_loop
    from celeriac.pools.asyncio import AsyncioPool

    pool = AsyncioPool(2, {"worker_max_blocking_time": MAX_BLOCKING})
    reports = Reports()
    pool.on_stall = reports
    pool.start()  # no async task ran: the loop is watched all the same
    try:
        shared_loop().loop.call_soon_threadsafe(block_for, 0.5, reports)
        wait_for_end(reports)
    finally:
        pool.stop()
    assert [stall.ended for stall in reports.seen] == [False, True]
    assert reports.seen[0].job is None and "block_for" in reports.seen[0].stack
