"""``celeriac worker --detach``: the worker as a daemon, as Celery's ``-D/--detach``.

What happens, in three processes:

1. **The command** (what the caller ran) loads the app and checks the flags as a worker
   in the foreground would, applies ``--umask``/``--uid``/``--gid`` (so that what the
   daemon creates belongs to the user it runs as), then starts ``python -m
   celeriac.worker.daemon`` with the same arguments (``--executable`` names another
   Python) in a new session (``setsid``), in the current directory (``celeriac --workdir
   DIR`` changed it first, as Celery's), with stdin on ``/dev/null`` and stdout and stderr
   on a pipe it reads.
2. **That process** forks once more and exits, so the daemon is not a session leader (it
   can never take a terminal again) and is nobody's child but init's: the classic double
   fork.
3. **The daemon** runs the worker command as a foreground worker would -- a fresh
   interpreter, as Celery's ``execv``: nothing of the command's app, connections or
   threads is inherited -- until it holds its ``--pidfile`` (written with the daemon's
   own pid) and has set up logging. Then it tells the command it is ready, and points
   stdout and stderr at the ``--logfile`` (or ``/dev/null``) for good.

Unlike Celery's, whose command exits 0 as soon as it forked, the command waits for that
"ready" and passes on what the daemon printed before it: a bad app, a broker that cannot
be reached, a pidfile held by a running worker (exit status 73) fail the command with the
daemon's message and exit status. When it exits 0, the pidfile exists and names the
daemon, so ``kill -TERM $(cat PIDFILE)`` (a warm shutdown) works at once; an init system
that waits for the pidfile (systemd's ``Type=forking`` with ``PIDFile=``) finds it.

As in Celery, there is no default ``--pidfile`` or ``--logfile``: a detached worker
without ``--logfile`` logs nowhere.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import traceback
from collections.abc import Callable
from types import FrameType
from typing import BinaryIO, NoReturn

from celeriac.exceptions import ConfigurationError
from celeriac.worker import privileges

log = logging.getLogger("celeriac.supervisor")

#: Lines the daemon writes on its pipe to the command; never shown to the caller.
_READY = b"\0celeriac-daemon ready\n"
_EXIT = b"\0celeriac-daemon exit "
_IS_READY = -1


class _Daemon:
    """This process's part, when it is a daemon started by :func:`start`."""

    #: The daemon's end of the pipe to the waiting command, until it is ready.
    report: int | None = None
    #: True in a daemon (also after it is ready): ``--detach`` and ``--workdir`` are done.
    active = False


def in_daemon() -> bool:
    """True in a worker started by ``--detach``, whose command already detached it and
    changed its directory."""
    return _Daemon.active


def start(*, detach: bool, user: str | None, group: str | None, umask: str | None,
          executable: str | None, argv: Callable[[], list[str]]) -> None:
    """The daemon flags of ``celeriac worker``, before it connects to anything:
    ``--umask``, ``--uid``, ``--gid`` (:mod:`celeriac.worker.privileges`), then, with
    ``--detach`` in the command the caller ran, the daemon is started and this process
    exits (with the daemon's status); ``argv`` gives the arguments it runs with. Returns
    in a foreground worker and in the daemon itself."""
    privileges.apply(user, group, None if umask is None else privileges.parse_umask(umask))
    if executable and not detach:
        log.warning("--executable %s: used only with --detach (the Python a detached worker "
                    "runs under); ignored", executable)
    if detach and not in_daemon():
        _detach(argv(), executable)


def _detach(argv: list[str], executable: str | None) -> NoReturn:
    """Start the daemon running ``celeriac ARGV``, wait until it is ready (or gave up)
    and exit with its status; the caller's process ends here."""
    python = executable or sys.executable
    read, write = os.pipe()
    try:
        proc = subprocess.Popen([python, "-m", "celeriac.worker.daemon", *argv],
                                stdin=subprocess.DEVNULL, stdout=write, stderr=write,
                                start_new_session=True, close_fds=True)
    except OSError as exc:
        os.close(read)
        raise ConfigurationError(f"cannot run {python} (the Python of the detached worker, "
                                 f"--executable): {exc.strerror}") from None
    finally:
        os.close(write)
    with open(read, "rb") as pipe:
        status = _await(pipe)
    first = proc.wait()  # it forked the daemon and exited at once (or failed to start)
    if status == _IS_READY:
        status = 0
    elif not status:  # no report, or an exit 0 before ready: no worker runs either way
        sys.stderr.write(f"celeriac: the detached worker exited before it was ready "
                         f"(status {first if status is None else status})\n")
        status = first or 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)  # as Celery's: nothing of this process (atexit, connections) runs


def _await(pipe: BinaryIO) -> int | None:
    """Copy the daemon's output to our stderr until it reports: ``_IS_READY``, or its
    exit status when it ended before; None when the pipe closed without a report."""
    for line in pipe:
        if line == _READY:
            return _IS_READY
        if line.startswith(_EXIT):
            return int(line[len(_EXIT):])
        sys.stderr.buffer.write(line)
        sys.stderr.flush()
    return None


def ready(logfile: str | None) -> None:
    """The worker holds its pidfile and is about to start its supervisor.

    A signal that arrives before the supervisor installs its handlers (``kill -TERM
    $(cat PIDFILE)`` at once) ends the worker cleanly -- nothing runs yet, and the pidfile
    is removed -- instead of killing it with the pidfile left behind.

    In a daemon, it then tells the command it is ready (the command exits 0) and sends
    stdout and stderr to the log file, or nowhere; a foreground worker keeps its terminal.
    """
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
        signal.signal(signum, _stop_before_start)
    if _Daemon.report is None:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    log.info("detached: pid %d, session %d", os.getpid(), os.getsid(0))
    target = os.open(logfile or os.devnull, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    os.dup2(target, 1)
    os.dup2(target, 2)
    os.close(target)
    with contextlib.suppress(OSError):  # the command was killed: the daemon runs on
        os.write(_Daemon.report, _READY)
    os.close(_Daemon.report)
    _Daemon.report = None


def _stop_before_start(signum: int, frame: FrameType | None) -> NoReturn:
    log.info("%s before the worker started: stopping", signal.Signals(signum).name)
    raise SystemExit(0)


def change_directory(path: str) -> None:
    """``celeriac --workdir DIR``: change to it before the app is loaded, as Celery's. A
    daemon does not: it started in that directory already, where a relative DIR would
    name another."""
    if in_daemon():
        return
    try:
        os.chdir(path)
    except OSError as exc:
        raise ConfigurationError(f"--workdir {path}: {exc.strerror}") from None


def _daemon_main(argv: list[str]) -> NoReturn:
    """``python -m celeriac.worker.daemon ARGV``: fork the daemon, which runs ``celeriac
    ARGV`` and, if it ends before it is ready, tells the waiting command how."""
    if os.fork() > 0:
        os._exit(0)  # the session leader goes; the daemon is init's child
    _Daemon.active = True
    _Daemon.report = os.dup(2)  # not inheritable: worker processes never hold the pipe
    from celeriac.cli.main import main

    try:
        main(argv)
        status = 0
    except SystemExit as exc:
        status = exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 1
        if not isinstance(exc.code, int | None):
            print(exc.code, file=sys.stderr)  # the interpreter would print it too late
    except BaseException:
        traceback.print_exc()  # before the report, so the command shows it
        status = 1
    if _Daemon.report is not None:
        sys.stdout.flush()
        sys.stderr.flush()
        with contextlib.suppress(OSError):
            os.write(_Daemon.report, _EXIT + b"%d\n" % status)
    raise SystemExit(status)


if __name__ == "__main__":
    from celeriac.worker import daemon as _module  # the module celeriac.cli.main sees

    _module._daemon_main(sys.argv[1:])
