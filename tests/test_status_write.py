"""The status pipe's writes: a line is written with the GIL kept while the pipe has room,
and a full pipe (the supervisor behind) makes the writer wait, not drop or split lines
(:meth:`celeriac.worker.status.StatusWriter._write`)."""

from __future__ import annotations

import os
import select
import threading
import time
from typing import Any

from conftest import normal_leg_only

from celeriac import Celeriac
from celeriac.brokers.base import Delivery
from celeriac.context import Request
from celeriac.middleware.base import TaskRun
from celeriac.middleware.status import StatusReporter
from celeriac.worker.status import Started, StatusReader, StatusWriter, _held_write, decode_event


def delivery(n: int) -> Delivery:
    return Delivery(id=f"d{n}", queue="celery", body=b"", delivery_count=1, token=n)


def test_the_write_end_is_non_blocking_and_the_write_keeps_the_gil() -> None:
    read_fd, write_fd = os.pipe()
    writer, reader = StatusWriter(write_fd), StatusReader(read_fd)
    try:
        assert _held_write is not None  # Linux: libc through ctypes.PyDLL
        assert not os.get_blocking(write_fd)
        writer.started(delivery(1), "t1", "tasks.x", None, False)
        events = reader.read()[0]
        assert [(e.delivery_id, e.task_id) for e in events if isinstance(e, Started)] == [
            ("d1", "t1")]
    finally:
        writer.close()
        reader.close()


@normal_leg_only  # its writer waits in a native poll: as a greenlet it would block the reader
def test_a_full_pipe_makes_the_writer_wait_until_the_supervisor_reads() -> None:
    read_fd, write_fd = os.pipe()
    writer = StatusWriter(write_fd)
    try:
        # Fill the pipe to the last byte, as a supervisor that stopped reading would.
        filled = 0
        for size in (4096, 1):
            while True:
                try:
                    filled += os.write(write_fd, b"x" * size)
                except BlockingIOError:
                    break
        done = threading.Event()

        def report() -> None:
            for n in range(50):
                writer.started(delivery(n), f"t{n}", "tasks.x", None, False)
            done.set()

        thread = threading.Thread(target=report)
        thread.start()
        time.sleep(0.2)
        assert not done.is_set() and writer.connected  # waiting for room, not failed

        # The supervisor catches up: every line arrives, whole and in order.
        os.set_blocking(read_fd, False)
        data = b""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            # Read "done" before the read: checked after an empty read, it could have been
            # set (every line written) between the two, and the last lines left unread.
            finished = done.is_set()
            try:
                data += os.read(read_fd, 65536)
            except BlockingIOError:
                if finished:
                    break
                time.sleep(0.01)
        thread.join(10)
        assert writer.connected
        assert data[:filled] == b"x" * filled
        events = [decode_event(line) for line in data[filled:].splitlines()]
        assert [e.task_id for e in events if isinstance(e, Started)] == [
            f"t{n}" for n in range(50)]
    finally:
        writer.close()
        os.close(read_fd)


def test_starts_kept_for_later_go_out_together_in_whole_atomic_writes() -> None:
    """A green pool's jobs that start together report together (StatusReporter): kept
    lines are not written until flush_starts, which writes them all, whole, in as few
    writes as keep each under PIPE_BUF."""
    read_fd, write_fd = os.pipe()
    writer, reader = StatusWriter(write_fd), StatusReader(read_fd)
    writes: list[int] = []
    real = writer._write
    writer._write = lambda line: (writes.append(len(line)), real(line))[1]  # type: ignore[method-assign]
    try:
        for n in range(40):  # long reprs: about 800 bytes a line, so several writes
            writer.started(delivery(n), f"t{n}", "tasks.x", None, False, "a" * 390, "k" * 390,
                           later=True)
        assert writes == [] and reader.read()[0] == []
        writer.flush_starts()
        assert 1 < len(writes) < 40 and all(size <= select.PIPE_BUF for size in writes)
        events: list[Started] = []
        while len(events) < 40:
            events += [e for e in reader.read()[0] if isinstance(e, Started)]
        assert [e.task_id for e in events] == [f"t{n}" for n in range(40)]
        count = len(writes)
        writer.flush_starts()  # nothing kept: nothing written
        assert len(writes) == count
    finally:
        writer.close()
        reader.close()


class _GreenPoolStandIn:
    """What StatusReporter asks of a green pool: how many jobs run, and a yield during
    which the other new jobs reach their own start (here: called in turn)."""

    green = True

    def __init__(self, reporter: Any, runs: list[TaskRun]) -> None:
        self.reporter, self.waiting, self.running_now = reporter, list(runs), 1 + len(runs)

    def running(self) -> int:
        return self.running_now

    def let_jobs_start(self) -> None:
        while self.waiting:
            self.reporter.before_task(self.waiting.pop(0))


def test_jobs_of_a_green_pool_that_start_together_share_one_write() -> None:
    app = Celeriac("t", broker="memory://", backend="memory://")

    @app.task
    def noop() -> None:
        return None

    read_fd, write_fd = os.pipe()
    writer, reader = StatusWriter(write_fd), StatusReader(read_fd)
    writes: list[bytes] = []
    real = writer._write
    writer._write = lambda line: (writes.append(line), real(line))[1]  # type: ignore[method-assign]
    runs = [TaskRun(noop, Request(id=f"t{n}", task=noop.name), delivery(n)) for n in range(5)]
    reporter = StatusReporter(writer, None)
    reporter.pool = _GreenPoolStandIn(reporter, runs[1:])  # type: ignore[assignment]
    try:
        reporter.before_task(runs[0])
        # Every job's line was written before its before_task returned (before its body):
        # the first one's yield let the other four keep theirs, then one write took all.
        assert len(writes) == 1 and writes[0].count(b"\n") == 5
        assert [e.task_id for e in reader.read()[0] if isinstance(e, Started)] == [
            f"t{n}" for n in range(5)]
        lone = StatusReporter(writer, None)  # no green pool: one write per start, at once
        lone.before_task(runs[0])
        assert len(writes) == 2
    finally:
        writer.close()
        reader.close()
