"""The status pipe's writes: a line is written with the GIL kept while the pipe has room,
and a full pipe (the supervisor behind) makes the writer wait, not drop or split lines
(:meth:`celeriac.worker.status.StatusWriter._write`)."""

from __future__ import annotations

import os
import threading
import time

from conftest import normal_leg_only

from celeriac.brokers.base import Delivery
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
            try:
                data += os.read(read_fd, 65536)
            except BlockingIOError:
                if done.is_set():
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
