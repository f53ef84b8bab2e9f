"""``celeriac worker --detach`` (Celery's ``-D``), end to end: a real daemon.

Each test runs ``python -m celeriac -A tasks worker --detach ...`` in a temporary project
on a SQLite broker and checks what an init script relies on: the command returns (exit 0)
with the pidfile written by the daemon, the daemon runs tasks in a session of its own with
no terminal and its output on the log file, ``kill -TERM $(cat PIDFILE)`` is a warm
shutdown that removes the pidfile; and what goes wrong before the daemon is ready fails
the command with the reason. ``subprocess.run(capture_output=True)`` waits for the
command's stdout and stderr to close, so a daemon that kept them would hang the test.

A daemon is nobody's child here: the ``daemons`` fixture finds what a test left running
(by its command line, which names the test's directory) and ends it, whatever happened.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest
from conftest import Project, wait_until

UNREACHABLE = "sqlite:////nonexistent-dir/x.db"


def detach(project: Project, *args: str, cwd: Path | None = None,
           env: dict[str, str] | None = None, before: tuple[str, ...] = (),
           after: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    """``celeriac [BEFORE] -A tasks [AFTER] worker --detach ARGS``; never checks the exit
    status."""
    return subprocess.run(
        [sys.executable, "-m", "celeriac", *before, "-A", "tasks", *after, "worker", "--detach",
         "-P", "threads", "-c", "2", *args],
        cwd=cwd or project.path, env={**project.env, **(env or {})}, capture_output=True,
        text=True, timeout=60)


def output(proc: subprocess.CompletedProcess[str]) -> str:
    return f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"


def alive(pid: int) -> bool:
    """Running, and not a zombie nobody reaped yet."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def gone(pid: int) -> bool:
    return not alive(pid)


def stat_fields(pid: int) -> list[str]:
    """``/proc/PID/stat`` after the command name: state, ppid, pgrp, session, tty_nr, ..."""
    return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()


def daemons_in(path: Path) -> list[int]:
    """Pids of detached workers running in ``path`` or whose command line names it."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        if ("celeriac.worker.daemon" in cmdline and (cwd == str(path) or f"{path}/" in cmdline)
                and alive(int(entry.name))):
            found.append(int(entry.name))
    # A daemon's child between fork and exec still shows the daemon's command line: only
    # the daemons themselves count.
    return [pid for pid in found if parent_of(pid) not in found]


def parent_of(pid: int) -> int | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    return next((int(line.split()[1]) for line in status.splitlines()
                 if line.startswith("PPid:")), None)


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int(stat_fields(int(entry.name))[1]) == pid:
                    found.append(int(entry.name))
            except (OSError, IndexError, ValueError):
                continue
    return found


@pytest.fixture
def daemons(project: Project) -> Iterator[None]:
    """End every daemon the test started, even when it failed before it could."""
    yield
    for pid in daemons_in(project.path):
        children = children_of(pid)
        os.kill(pid, signal.SIGTERM)
        try:
            wait_until(partial(gone, pid), timeout=15)
        except AssertionError:
            for victim in [*children, pid]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(victim, signal.SIGKILL)


@pytest.mark.usefixtures("daemons")
def test_detach_starts_a_daemon_that_runs_tasks_and_stops_on_term(project: Project) -> None:
    pidfile, logfile = project.path / "worker.pid", project.path / "worker.log"
    proc = detach(project, "--pidfile", str(pidfile), "--logfile", str(logfile))
    assert proc.returncode == 0, output(proc)
    # The pidfile is there when the command returns, with the daemon's pid.
    pid = int(pidfile.read_text())
    assert alive(pid) and daemons_in(project.path) == [pid]

    # A daemon: another session, of which it is not the leader (it can never take a
    # terminal), no terminal, not our child; stdin on /dev/null, stdout and stderr on the log.
    ppid, _, session, tty = stat_fields(pid)[1:5]
    assert os.getsid(pid) == int(session) != os.getsid(0)
    assert int(session) != pid
    assert tty == "0"
    assert int(ppid) != os.getpid()
    assert os.readlink(f"/proc/{pid}/fd/0") == os.devnull
    assert os.readlink(f"/proc/{pid}/fd/1") == os.readlink(f"/proc/{pid}/fd/2") == str(logfile)

    app = project.app()
    assert app.tasks["tasks.add"].delay(2, 3).get(timeout=30) == 5
    assert f"detached: pid {pid}, session {session}" in logfile.read_text()

    os.kill(int(pidfile.read_text()), signal.SIGTERM)  # kill -TERM $(cat pidfile)
    wait_until(partial(gone, pid), timeout=30, message="the daemon exits on TERM")
    assert not pidfile.exists()
    log = logfile.read_text()
    assert "warm shutdown" in log and ": stopped" in log


@pytest.mark.usefixtures("daemons")
def test_a_pidfile_held_by_a_running_worker_fails_the_command(project: Project) -> None:
    pidfile = project.path / "worker.pid"
    first = detach(project, "--pidfile", str(pidfile), "--logfile", "first.log")
    assert first.returncode == 0, output(first)
    pid = int(pidfile.read_text())

    second = detach(project, "--pidfile", str(pidfile), "--logfile", "second.log")
    assert second.returncode == 73, output(second)  # EX_CANTCREAT, as Celery's pid lock
    assert f"pidfile {pidfile} names process {pid}, which is running" in second.stderr
    assert pidfile.read_text() == f"{pid}\n"
    # The second daemon gave up (it reports before it exits, so give it a moment).
    wait_until(lambda: daemons_in(project.path) == [pid], message="only the first daemon runs")


@pytest.mark.usefixtures("daemons")
@pytest.mark.parametrize(("before", "args", "env", "message"), [
    (("-A", "nosuch"), (), {}, "-A 'nosuch': no module named 'nosuch'"),
    ((), (), {"CELERIAC_BROKER_URL": UNREACHABLE}, "nonexistent-dir"),
    ((), ("--logfile", "/nonexistent-dir/worker.log"), {}, "cannot open log file"),
    ((), ("--uid", "no-such-user-here"), {}, "--uid 'no-such-user-here': no such user"),
    ((), ("--umask", "9z"), {}, "--umask '9z': not a number"),
    ((), ("--executable", "/nonexistent-dir/python"), {}, "cannot run /nonexistent-dir/python"),
], ids=["bad-app", "unreachable-broker", "bad-logfile", "unknown-uid", "bad-umask",
        "bad-executable"])
def test_what_fails_before_the_daemon_is_ready_fails_the_command(
        project: Project, before: tuple[str, ...], args: tuple[str, ...], env: dict[str, str],
        message: str) -> None:
    proc = detach(project, "--pidfile", "worker.pid", *args, env=env, after=before)
    assert proc.returncode == 1, output(proc)
    assert message in proc.stderr, output(proc)
    assert "Traceback" not in proc.stderr, output(proc)
    assert not (project.path / "worker.pid").exists()
    wait_until(lambda: daemons_in(project.path) == [], message="no daemon left")


@pytest.mark.usefixtures("daemons")
def test_workdir_and_umask_apply_to_the_daemon(project: Project) -> None:
    """``celeriac --workdir DIR`` (relative here) is where the app is found and where the
    daemon runs; ``--umask`` as Celery reads it (a leading 0: octal)."""
    proc = detach(project, "--pidfile", "worker.pid", "--logfile", "worker.log",
                  "--umask", "0027", before=("--workdir", project.path.name),
                  cwd=project.path.parent)
    assert proc.returncode == 0, output(proc)
    pid = int((project.path / "worker.pid").read_text())
    assert os.readlink(f"/proc/{pid}/cwd") == str(project.path)
    status = Path(f"/proc/{pid}/status").read_text()
    assert "Umask:\t0027" in status
    assert (project.path / "worker.log").stat().st_mode & 0o777 == 0o640
    os.kill(pid, signal.SIGTERM)
    wait_until(partial(gone, pid), timeout=30, message="the daemon exits on TERM")
    assert not (project.path / "worker.pid").exists()


def test_executable_without_detach_is_said_to_be_ignored(project: Project) -> None:
    """Celery's ``--executable`` only matters to a detached worker; a foreground worker
    says so (here it then stops at once on an unreachable broker)."""
    proc = subprocess.run(
        [sys.executable, "-m", "celeriac", "-A", "tasks", "worker", "--executable",
         sys.executable], cwd=project.path, env={**project.env, "CELERIAC_BROKER_URL":
                                                 UNREACHABLE},
        capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1, output(proc)
    assert "--executable" in proc.stderr and "used only with --detach" in proc.stderr


@pytest.mark.usefixtures("daemons")
def test_worker_main_detaches_and_ends_the_calling_script(project: Project) -> None:
    """``app.worker_main(["worker", "--detach"])``: the daemon finds the app by its module
    (the script is not run again) and the script's process ends, as Celery's. Without
    ``--logfile`` what the daemon logs before it is ready reaches the caller's stderr."""
    (project.path / "script.py").write_text(
        "from tasks import app\n"
        "if __name__ == '__main__':\n"
        "    app.worker_main(['worker', '--detach', '-P', 'solo', '--pidfile', 'worker.pid'])\n"
        "    print('the script went on')\n")
    proc = subprocess.run([sys.executable, "script.py"], cwd=project.path, env=project.env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, output(proc)
    assert "the script went on" not in proc.stdout
    pid = int((project.path / "worker.pid").read_text())
    assert f"detached: pid {pid}" in proc.stderr
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    assert cmdline[cmdline.index(b"-A") + 1] == b"tasks:app"
    assert project.app().tasks["tasks.add"].delay(1, 2).get(timeout=30) == 3


#: A node that takes its time to start (a worker_init receiver), so a TERM comes while
#: it starts: after the supervisor set up its signal handlers, before its worker processes.
SLOW_START = '''
import time
from celeriac import signals

@signals.worker_init.connect
def slow_start(sender=None, **kwargs):
    open("starting", "w").close()
    time.sleep(2)
'''


@pytest.mark.usefixtures("daemons")
def test_term_while_the_node_starts_is_a_prompt_warm_shutdown(project: Project) -> None:
    """``kill -TERM $(cat PIDFILE)`` as soon as the command returned: the node starts no
    worker process after the TERM (one started then would never be told to stop, and the
    node would wait out ``--shutdown-timeout`` for it)."""
    project.write_tasks(SLOW_START)
    pidfile, logfile = project.path / "worker.pid", project.path / "worker.log"
    proc = detach(project, "--pidfile", str(pidfile), "--logfile", str(logfile),
                  "--shutdown-timeout", "300")
    assert proc.returncode == 0, output(proc)
    pid = int(pidfile.read_text())
    wait_until((project.path / "starting").exists, timeout=30, message="worker_init")
    os.kill(pid, signal.SIGTERM)
    wait_until(partial(gone, pid), timeout=60, message="the daemon exits on TERM")
    assert not pidfile.exists()
    assert "warm shutdown" in logfile.read_text()
