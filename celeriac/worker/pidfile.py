"""``celeriac worker --pidfile``: the supervisor's pid in a file, for init scripts.

As Celery's pid lock (``celery.platforms.create_pidlock``): the file is created
when the worker starts and removed when it exits; a file that names a process
still running means the worker is already running, so the new one refuses to
start (exit status 73, ``EX_CANTCREAT``, as Celery's); a file naming a process
that is gone (left by a ``kill -9`` or a crash) is stale and replaced.

Unlike Celery, a pid that exists but belongs to another user (``EPERM``) counts
as running: a worker started under the wrong account must not take over a live
worker's pidfile. A pid reused by an unrelated process after a crash also looks
running; as with Celery, remove such a file by hand.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os

from celeriac.exceptions import ConfigurationError

log = logging.getLogger("celeriac.supervisor")

class PidfileLocked(ConfigurationError):
    """The pidfile names a process that is running: this worker must not start."""


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError as exc:
        return exc.errno == errno.EPERM  # exists, but not ours to signal
    return True


def _read_pid(path: str) -> int | None:
    """The pid in ``path``; None when the file is empty, partial or not a number."""
    try:
        with open(path, encoding="ascii", errors="replace") as file:
            text = file.read()
    except FileNotFoundError:
        return None
    try:
        return int(text.strip()) if text.endswith("\n") else None
    except ValueError:
        return None


class Pidfile:
    """The pidfile of one supervisor: :meth:`acquire` at start, :meth:`release` at exit."""

    def __init__(self, path: str) -> None:
        self.path = os.path.abspath(path)
        self.pid = os.getpid()

    def acquire(self) -> Pidfile:
        """Write this process's pid, replacing a stale file; raise :class:`PidfileLocked`
        if the file names a running process. ``O_EXCL`` makes two workers started at the
        same moment agree on which one starts."""
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self._remove_if_stale()
                continue
            except OSError as exc:
                raise ConfigurationError(f"cannot create pidfile {self.path}: {exc.strerror}") from None
            with os.fdopen(fd, "w", encoding="ascii") as file:
                file.write(f"{self.pid}\n")
            return self
        raise ConfigurationError(f"cannot create pidfile {self.path}: another process keeps "
                                 "creating it")

    def _remove_if_stale(self) -> None:
        pid = _read_pid(self.path)
        if pid is not None and pid != self.pid and _running(pid):
            raise PidfileLocked(f"pidfile {self.path} names process {pid}, which is running: "
                                "is this worker already running? (remove the file if not)")
        log.warning("removing stale pidfile %s (%s)", self.path,
                    "its process is gone" if pid is not None else "not a pid")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    def release(self) -> None:
        """Remove the file if it still holds this process's pid (never another's)."""
        if _read_pid(self.path) == self.pid:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
