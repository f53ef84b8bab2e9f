"""The status channel from a worker process to its supervisor.

One pipe per process, one JSON object per line. The supervisor learns from it
which messages a process has *started* (so that when the process dies it can
give back the unstarted ones uncharged and charge the started ones), and each
started task's hard deadline (so it can kill a process whose task overran).
Lines stay below ``PIPE_BUF`` (4096 bytes), so a write is atomic and writes
from several threads never mix; no lock is taken, so a green pool's monitor
thread can report while the event loop is blocked.
"""

from __future__ import annotations

import contextlib
import json
import os
import posix
from collections import deque
from dataclasses import dataclass
from typing import Any

from celeriac.brokers.base import Delivery
from celeriac.pools.base import Stall

#: The C ``write()``: green pools patch ``os.write`` (eventlet's waits on the hub for
#: every write, and refuses two green threads writing one fd); a status line is small
#: and the supervisor drains the pipe, so the plain call never waits long.
_raw_write = posix.write

#: Task names longer than this are cut in status lines (keeps writes atomic).
NAME_LIMIT = 200
#: Characters of a blocking stack sent to the supervisor (the innermost calls).
STACK_LIMIT = 2500
#: Delivery ids per "done" line (keeps lines under PIPE_BUF for any broker's ids).
DONE_PER_LINE = 40


class StatusWriter:
    """The worker process's end: reports task starts and ends."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        #: Delivery ids of tasks that ended since the last flush (appended from any job).
        self._done: deque[str] = deque()
        #: False once the supervisor is gone (the pipe broke).
        self.connected = True

    def _send(self, event: dict[str, Any]) -> None:
        line = (json.dumps(event, separators=(",", ":")) + "\n").encode()
        try:
            _raw_write(self._fd, line)
        except OSError:
            self.connected = False

    def ready(self) -> None:
        self._send({"e": "ready", "pid": os.getpid()})

    def started(self, delivery: Delivery, task_id: str, name: str,
                hard_limit: float | None, ignore_result: bool) -> None:
        self._send({"e": "start", "d": delivery.id, "tok": delivery.token, "q": delivery.queue,
                    "n": delivery.delivery_count, "id": task_id, "task": name[:NAME_LIMIT],
                    "hard": hard_limit, "ir": ignore_result})

    def stall(self, stall: Stall) -> None:
        """A green pool's event loop was blocked (safe from any thread: no locks)."""
        job = stall.job
        self._send({"e": "stall", "d": job.delivery_id if job else None,
                    "task": job.task[:NAME_LIMIT] if job else None,
                    "id": job.task_id if job else None, "secs": round(stall.seconds, 3),
                    "end": stall.ended, "stack": stall.stack[-STACK_LIMIT:]})

    def finished(self, delivery: Delivery) -> None:
        """Note that a task ended; sent with the others at the next :meth:`flush`.

        Ends are batched (starts are not: the supervisor must know a task started
        before it can crash the process). An end reported late only means a
        process that dies in between has that message charged a delivery.
        """
        self._done.append(delivery.id)

    def flush(self) -> None:
        """Send the task ends noted since the last flush, many per line."""
        while self._done:
            batch: list[str] = []
            while self._done and len(batch) < DONE_PER_LINE:
                batch.append(self._done.popleft())
            self._send({"e": "done", "ds": batch})

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self._fd)


@dataclass
class RunningTask:
    """A task a worker process reported as started, as the supervisor tracks it."""

    delivery_id: str
    token: int
    queue: str
    delivery_count: int
    task_id: str
    name: str
    ignore_result: bool
    #: time.monotonic() in the supervisor when the hard limit runs out, or None.
    deadline: float | None

    def delivery(self) -> Delivery:
        return Delivery(id=self.delivery_id, queue=self.queue, body=b"",
                        delivery_count=self.delivery_count, token=self.token)


class StatusReader:
    """The supervisor's end: turns bytes from the pipe into events."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        os.set_blocking(fd, False)
        self._partial = b""

    def read(self) -> tuple[list[dict[str, Any]], bool]:
        """Events available now, and whether the pipe is still open."""
        chunks: list[bytes] = []
        open_ = True
        while True:
            try:
                chunk = os.read(self.fd, 65536)
            except BlockingIOError:
                break
            except OSError:
                open_ = False
                break
            if not chunk:
                open_ = False
                break
            chunks.append(chunk)
        data = self._partial + b"".join(chunks)
        *lines, self._partial = data.split(b"\n")
        events = []
        for line in lines:
            try:
                events.append(json.loads(line))
            except ValueError:
                continue
        return events, open_

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)
