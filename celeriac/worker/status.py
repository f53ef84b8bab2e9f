"""The status channel from a worker process to its supervisor.

One pipe per process, one line per typed event (a frozen dataclass below,
encoded and decoded by the one :class:`~celeriac.worker.lines.LineCodec` at both
ends, so the two ends cannot disagree on a field). The supervisor learns from it
which messages a process has *started* (so that when the process dies it can
give back the unstarted ones uncharged and charge the started ones), and each
started task's hard deadline (so it can kill a process whose task overran).
Lines stay below ``PIPE_BUF`` (4096 bytes), so a write is atomic and writes
from several threads never mix; no lock is taken, so a green pool's monitor
thread can report while the event loop is blocked.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import logging
import os
import posix
import select
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from celeriac.blocking import native_poll
from celeriac.brokers.base import Delivery
from celeriac.fastjson import dumps
from celeriac.pools.base import Stall
from celeriac.worker.lines import LineCodec

#: The C ``write()``: green pools patch ``os.write`` (eventlet's waits on the hub for
#: every write, and refuses two green threads writing one fd); a status line is small
#: and the supervisor drains the pipe, so the plain call never waits long.
_raw_write = posix.write


def _gil_holding_write() -> Callable[[int, bytes, int], int] | None:
    """The C ``write()`` called *without* releasing the GIL (``ctypes.PyDLL``), or None
    where the C library cannot be loaded so.

    Every Python write releases the GIL for the system call. A worker process writes a
    status line for each task it starts, from the thread that starts tasks, and while it
    has released the GIL another thread of the process (the event loop, the consumer)
    takes it: the writer then waits, on a loaded machine often for a whole time slice of
    the OS, before it can start the next task. On ``-P asyncio`` (cProfile of the jobs
    thread, 3,000 tasks) the write took 0.53 s of its 2.7 s, nearly all of it waiting for
    the GIL back. The fd is made non-blocking, so this write never waits: a full pipe
    makes it fail with ``EAGAIN``, and the caller waits with the GIL released
    (:meth:`StatusWriter._write`).
    """
    try:
        write = ctypes.PyDLL(None, use_errno=True).write
    except (OSError, AttributeError):  # pragma: no cover - no dlopen(NULL) here
        return None
    write.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t)
    write.restype = ctypes.c_ssize_t
    return write


_held_write = _gil_holding_write()

log = logging.getLogger("celeriac.supervisor")

#: Task names longer than this are cut in status lines (keeps writes atomic).
NAME_LIMIT = 200
#: Characters of a blocking stack sent to the supervisor (the innermost calls).
STACK_LIMIT = 2500
#: Characters of argsrepr/kwargsrepr sent with a start (keeps writes atomic).
REPR_LIMIT = 400
#: Delivery ids per "done" line (keeps lines under PIPE_BUF for any broker's ids).
DONE_PER_LINE = 40
#: Bytes of one "reserved" line at most (below PIPE_BUF, with room for the envelope).
RESERVED_LINE_LIMIT = 3500
#: Characters of a follow-ups part: at most 4 bytes each once encoded (UTF-8, or an
#: escaped quote), so a line stays below PIPE_BUF.
FOLLOWUPS_PART = 900


@dataclass(frozen=True)
class Ready:
    """The worker process is ready to take messages."""

    kind: ClassVar[str] = "ready"
    pid: int


@dataclass(frozen=True)
class Started:
    """A task started: from now on a crash of the process charges its message a delivery."""

    kind: ClassVar[str] = "start"
    delivery_id: str
    token: int
    queue: str
    delivery_count: int
    task_id: str
    name: str
    #: The hard time limit in seconds (the supervisor enforces it), or None.
    hard_limit: float | None
    ignore_result: bool
    #: Short reprs of the arguments, for ``celeriac inspect active``.
    argsrepr: str = ""
    kwargsrepr: str = ""
    #: A suspect message running alone (nothing else runs in its process).
    isolated: bool = False
    #: The process ends the task at its hard limit itself (an ``async def`` task: its
    #: slot throws the limit into the coroutine), so the supervisor waits a grace
    #: before it steps in -- only a blocked event loop gets that far.
    limit_in_process: bool = False


@dataclass(frozen=True)
class FollowupsPart:
    """Part of what a task's message asks for once it has ended, should the supervisor
    have to end it (:meth:`~celeriac.worker.attribution.Verdicts.after_task`): its errbacks,
    the rest of its chain, its chord. Written before its :class:`Started`, only for a task
    that has any, in as many parts as keep each line under PIPE_BUF; the parts joined are
    one JSON object."""

    kind: ClassVar[str] = "followups"
    delivery_id: str
    part: str


@dataclass(frozen=True)
class Done:
    """Tasks that ended since the last report (many per line)."""

    kind: ClassVar[str] = "done"
    delivery_ids: tuple[str, ...]


@dataclass(frozen=True)
class Stalled:
    """A green pool's event loop was blocked (``ended`` False) or is free again (True)."""

    kind: ClassVar[str] = "stall"
    delivery_id: str | None
    task: str | None
    task_id: str | None
    seconds: float
    ended: bool
    stack: str


@dataclass(frozen=True)
class Terminate:
    """A running task was revoked with ``terminate=True`` and the process cannot stop it
    alone (prefork, solo; or a thread stuck in a C call): the supervisor fails it as
    REVOKED, acks its message and replaces the process."""

    kind: ClassVar[str] = "terminate"
    delivery_id: str
    task_id: str
    #: The signal name the revoke asked for.
    signal: str


@dataclass(frozen=True)
class Reserved:
    """Part of an answer to the supervisor's ``ReportReserved`` (``celeriac inspect reserved``):
    messages the process holds but has not started, as Celery's task info dicts. Many
    messages take many lines; the last part has ``last`` True."""

    kind: ClassVar[str] = "reserved"
    request: int
    tasks: tuple[dict[str, Any], ...]
    last: bool


StatusEvent = Ready | Started | FollowupsPart | Done | Stalled | Terminate | Reserved
#: The status pipe's lines, written and read by this one codec at both ends.
STATUS_LINES: LineCodec[StatusEvent] = LineCodec(
    "status event", (Ready, Started, FollowupsPart, Done, Stalled, Terminate, Reserved))
#: kind -> class.
EVENT_TYPES = STATUS_LINES.types
encode_event = STATUS_LINES.encode
decode_event = STATUS_LINES.decode
_encode_start = STATUS_LINES.encode_values


class StatusWriter:
    """The worker process's end: reports task starts and ends."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        #: Delivery ids of tasks that ended since the last flush (appended from any job).
        self._done: deque[str] = deque()
        #: Start lines written later, together (:meth:`flush_starts`); jobs' thread only.
        self._starts: list[bytes] = []
        #: False once the supervisor is gone (the pipe broke).
        self.connected = True
        #: The write that keeps the GIL, on a non-blocking fd (only this process writes
        #: to it: the supervisor closed its copy), or None: a plain blocking write.
        self._held_write = _held_write
        if self._held_write is not None:
            try:
                os.set_blocking(fd, False)
            except OSError:
                self._held_write = None

    def _write(self, line: bytes) -> None:
        """Write one line (under PIPE_BUF: one write, atomic, never mixed with another
        thread's) without giving the GIL away when the pipe has room (see
        :func:`_gil_holding_write`); when it is full, wait for room with the GIL
        released, as a blocking write would. OSError when the pipe is broken."""
        write, fd = self._held_write, self._fd
        if write is None:
            _raw_write(fd, line)
            return
        while line:
            written = write(fd, line, len(line))
            if written >= 0:
                line = line[written:]
                continue
            code = ctypes.get_errno()
            if code == errno.EINTR:
                continue
            if code not in (errno.EAGAIN, errno.EWOULDBLOCK):
                raise OSError(code, os.strerror(code))
            # Full: the supervisor is behind. Wait here (GIL released) until it drains.
            poll = native_poll()
            poll.register(fd, select.POLLOUT)
            poll.poll(1000)

    def send(self, event: StatusEvent) -> None:
        """Write one event (atomic: lines stay under PIPE_BUF; safe from any thread)."""
        try:
            self._write(encode_event(event))
        except OSError:
            self.connected = False

    def ready(self) -> None:
        self.send(Ready(os.getpid()))

    def started(self, delivery: Delivery, task_id: str, name: str, hard_limit: float | None,
                ignore_result: bool, argsrepr: str = "", kwargsrepr: str = "",
                limit_in_process: bool = False, *, later: bool = False) -> None:
        """A :class:`Started` line, written for every task: encoded from its values
        without building the event first. ``later``: kept for :meth:`flush_starts`, which
        the task must call before its body runs."""
        line = _encode_start(Started, (
            delivery.id, delivery.token, delivery.queue, delivery.delivery_count, task_id,
            name[:NAME_LIMIT], hard_limit, ignore_result, argsrepr[:REPR_LIMIT],
            kwargsrepr[:REPR_LIMIT], delivery.suspect == 1, limit_in_process))
        if later:
            self._starts.append(line)
            return
        try:
            self._write(line)
        except OSError:
            self.connected = False

    def flush_starts(self) -> None:
        """Write the start lines kept by ``started(later=True)``, many per write (each
        write under PIPE_BUF, so still atomic): a write to the pipe costs a system call
        and a wake-up of the supervisor, more than the rest of a no-op task's start."""
        starts = self._starts
        if not starts:
            return
        self._starts = []
        batch: list[bytes] = []
        size = 0
        try:
            for line in starts:
                if batch and size + len(line) > select.PIPE_BUF:
                    self._write(b"".join(batch))
                    batch, size = [], 0
                batch.append(line)
                size += len(line)
            self._write(b"".join(batch))
        except OSError:
            self.connected = False

    def followups(self, delivery: Delivery, followups: dict[str, Any]) -> None:
        """What ``delivery``'s task asks for once it ended (see :class:`FollowupsPart`):
        written before its start, in parts."""
        text = dumps(followups).decode()
        for at in range(0, len(text), FOLLOWUPS_PART):
            self.send(FollowupsPart(delivery.id, text[at:at + FOLLOWUPS_PART]))

    def stall(self, stall: Stall) -> None:
        """An event loop of this process was blocked (safe from any thread: no locks)."""
        job = stall.job
        self.send(Stalled(job.delivery_id if job else None,
                          job.task[:NAME_LIMIT] if job else None, job.task_id if job else None,
                          round(stall.seconds, 3), stall.ended, stall.stack[-STACK_LIMIT:]))

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
            self.send(Done(tuple(batch)))

    def reserved(self, request: int, tasks: list[dict[str, Any]]) -> None:
        """Answer ``ReportReserved``: ``tasks`` over as many lines as they need, each under
        PIPE_BUF (a task's reprs must already be cut to ``REPR_LIMIT``)."""
        part: list[dict[str, Any]] = []
        size = 0
        for task in tasks:
            length = len(json.dumps(task, ensure_ascii=False)) + 1
            if part and size + length > RESERVED_LINE_LIMIT:
                self.send(Reserved(request, tuple(part), last=False))
                part, size = [], 0
            part.append(task)
            size += length
        self.send(Reserved(request, tuple(part), last=True))

    def close(self) -> None:
        """Close the fd once: closing it again could close whatever reused its number."""
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = -1


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
    #: time.time() when the supervisor learnt that it started.
    started_at: float = 0.0
    argsrepr: str = ""
    kwargsrepr: str = ""
    #: A suspect message running alone: a crash now is its own.
    isolated: bool = False
    #: The message's errbacks, chain and chord, if it has any (from :class:`FollowupsPart`).
    followups: dict[str, Any] | None = None

    def delivery(self) -> Delivery:
        return Delivery(id=self.delivery_id, queue=self.queue, body=b"",
                        delivery_count=self.delivery_count, token=self.token)


class StatusReader:
    """The supervisor's end: turns bytes from the pipe into events."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        os.set_blocking(fd, False)
        self._partial = b""

    def read(self) -> tuple[list[StatusEvent], bool]:
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
        events: list[StatusEvent] = []
        for line in lines:
            try:
                events.append(decode_event(line))
            except (ValueError, KeyError):
                log.warning("ignoring a malformed status line: %r", line[:200])
        return events, open_

    def close(self) -> None:
        """Close the fd once: closing it again could close whatever reused its number."""
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = -1
