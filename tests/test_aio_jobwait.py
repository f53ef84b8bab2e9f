"""A ``-P asyncio`` job waiting for its coroutine parks once, however long it waits.

The jobs thread runs a thousand parked jobs; each must cost nothing while its coroutine
awaits. Before ``JobEvent.cooperative``, ``run_coroutine`` waited on a job's event in
50 ms slices as it does on a thread's, so every waiting job was woken 20 times a second
by a scheduler timer (an ``-P asyncio`` worker with 1,000 coroutines in
``asyncio.sleep`` used 29% of a core doing nothing; bench/asyncio_compare.py). This
counts the waits: no timing assertion.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import normal_leg_only

from celeriac.aio.await_ import run_coroutine
from celeriac.aio.greenjobs import JobEvent, JobScheduler

pytestmark = normal_leg_only


class CountingEvent(JobEvent):
    """A JobEvent that counts its ``wait()`` calls."""

    waits = 0

    def wait(self, timeout: float | None = None) -> bool:
        self.waits += 1
        return super().wait(timeout)


@pytest.fixture
def scheduler() -> Iterator[JobScheduler]:
    jobs = JobScheduler("test-jobwait")
    jobs.start()
    yield jobs
    jobs.stop()


def test_a_job_parks_once_while_its_coroutine_awaits(scheduler: JobScheduler) -> None:
    event = CountingEvent(scheduler)
    done = threading.Event()
    out: list[Any] = []

    async def naps() -> str:
        await asyncio.sleep(0.4)  # eight slices of the old 50 ms wait
        return "rested"

    def job() -> None:
        try:
            out.append(run_coroutine(naps(), event=event))
        finally:
            done.set()

    scheduler.submit(job)
    assert done.wait(20)
    assert out == ["rested"]
    assert event.waits == 1
