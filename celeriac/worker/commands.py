"""The command pipe: from the supervisor to one of its worker processes.

The status pipe (:mod:`celeriac.worker.status`) carries what a process tells its
supervisor; this pipe carries the other way what remote control
(``celeriac control``, :mod:`celeriac.middleware.remote`) asks of a process:
consume other queues, run more or fewer tasks at once, use other time limits
for a task, list the messages it holds, stop. Each command is a frozen
dataclass below, encoded and decoded by the same two functions at both ends
(one JSON object per line), so a renamed field fails a round-trip test rather
than silently.

The supervisor's end never blocks: a process that does not read (its event loop
held by a task) cannot stall the supervisor; what does not fit in the pipe waits
in memory and goes with the next write. The process's end is read from the
consumer loop with a non-blocking read, one system call per turn when empty.
A command is also kept by the supervisor as state where it must outlive the
process (queues, concurrency, time limits go into the :class:`WorkerSpec` of
every process it starts later), so a process that is replaced loses nothing.
"""

from __future__ import annotations

import contextlib
import logging
import os
import posix
from dataclasses import dataclass
from typing import ClassVar

from celeriac.worker.lines import LineCodec

log = logging.getLogger("celeriac.worker")

#: The C ``read()``/``write()``: eventlet patches ``os.read``/``os.write`` to wait on
#: its hub, which the supervisor has none of and the worker must not wait on here.
_raw_read = posix.read
_raw_write = posix.write


@dataclass(frozen=True)
class SetQueues:
    """Consume exactly these queues from now on; messages held but not started from a
    queue no longer consumed go back to the broker at once (uncharged)."""

    kind: ClassVar[str] = "queues"
    queues: tuple[str, ...]


@dataclass(frozen=True)
class SetConcurrency:
    """Run up to ``concurrency`` tasks at once and hold up to ``prefetch`` messages."""

    kind: ClassVar[str] = "concurrency"
    concurrency: int
    prefetch: int


@dataclass(frozen=True)
class SetTimeLimit:
    """Run task ``task`` under these limits from its next message on (None: no limit),
    whatever the message or the task's options say (``celeriac control time_limit``)."""

    kind: ClassVar[str] = "time_limit"
    task: str
    soft: float | None
    hard: float | None


@dataclass(frozen=True)
class SetRateLimit:
    """Use rate limit ``rate`` for task ``task`` from its next message on (``celeriac
    control rate_limit``; the client stored it in the broker, where a process started
    later reads it)."""

    kind: ClassVar[str] = "rate_limit"
    task: str
    rate: str


@dataclass(frozen=True)
class ReportReserved:
    """Report the messages held but not started, as :class:`~celeriac.worker.status.Reserved`
    events carrying ``request``."""

    kind: ClassVar[str] = "reserved"
    request: int


@dataclass(frozen=True)
class Stop:
    """Shut down warm (the pool shrank by this process)."""

    kind: ClassVar[str] = "stop"
    reason: str


Command = SetQueues | SetConcurrency | SetTimeLimit | ReportReserved | Stop | SetRateLimit
#: The command pipe's lines, written and read by this one codec at both ends.
COMMAND_LINES: LineCodec[Command] = LineCodec(
    "command", (SetQueues, SetConcurrency, SetTimeLimit, ReportReserved, Stop, SetRateLimit))
#: kind -> class.
COMMAND_TYPES = COMMAND_LINES.types
encode_command = COMMAND_LINES.encode
decode_command = COMMAND_LINES.decode


class CommandWriter:
    """The supervisor's end of one process's command pipe."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        os.set_blocking(fd, False)
        #: Bytes written but not yet taken by the pipe (the process is not reading).
        self._pending = b""
        #: False once the process's end is closed (it exited).
        self.connected = True

    def send(self, command: Command) -> None:
        """Queue ``command`` and write as much as the pipe takes now; never blocks."""
        self._pending += encode_command(command)
        self.flush()

    def flush(self) -> None:
        """Write what is pending (called again on later turns while some is left)."""
        while self._pending and self.connected:
            try:
                written = _raw_write(self.fd, self._pending)
            except BlockingIOError:
                return
            except OSError:
                self.connected = False
                self._pending = b""
                return
            self._pending = self._pending[written:]

    @property
    def pending(self) -> bool:
        return bool(self._pending)

    def close(self) -> None:
        """Close the fd once: closing it again could close whatever reused its number."""
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = -1


class CommandReader:
    """The worker process's end: commands available now, without waiting."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        os.set_blocking(fd, False)
        self._partial = b""
        #: False once the supervisor's end is closed.
        self.open = True

    def read(self) -> list[Command]:
        """Every complete command in the pipe now (one ``read()`` when it is empty)."""
        chunks: list[bytes] = []
        while self.open:
            try:
                chunk = _raw_read(self.fd, 65536)
            except BlockingIOError:
                break
            except OSError:
                self.open = False
                break
            if not chunk:
                self.open = False
                break
            chunks.append(chunk)
        if not chunks:
            return []
        *lines, self._partial = (self._partial + b"".join(chunks)).split(b"\n")
        commands: list[Command] = []
        for line in lines:
            try:
                commands.append(decode_command(line))
            except ValueError as exc:
                log.warning("ignoring a malformed command from the supervisor: %s", exc)
        return commands

    def close(self) -> None:
        """Close the fd once: closing it again could close whatever reused its number."""
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = -1
