"""Celery's worker flags and helper commands, as deploy files use them, end to end.

A Celery deploy line (``celery -A proj worker -E --without-gossip --without-mingle
--without-heartbeat -O fair -X other --logfile=%n%I.log --pidfile=%n.pid``) must start
a celeriac worker with ``celery`` replaced by ``celeriac``, with Celery's meaning for
each flag; ``report`` and ``shell`` are Celery's helper commands. Every test runs the
real CLI in a subprocess on a SQLite broker (see ``conftest.Project``); one worker per
test carries as many flags as it can, to keep this file quick.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

from conftest import Project, wait_until

#: Fast heartbeats, and a heartbeat_sent receiver that would leave a trace.
FLAG_TASKS = '''
from celeriac import signals

app.conf.update(worker_heartbeat_interval=0.5)

@signals.heartbeat_sent.connect
def beat(sender=None, **kwargs):
    with open("heartbeat_sent.txt", "a") as file:
        file.write("beat\\n")
'''


def celeriac(project: Project, *args: str, env: dict[str, str] | None = None,
             stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m celeriac ARGS`` in the project; never checks the exit status."""
    return subprocess.run([sys.executable, "-m", "celeriac", *args], cwd=project.path,
                          env={**project.env, **(env or {})}, input=stdin,
                          capture_output=True, text=True, timeout=60)


def log_lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def test_a_celery_deploy_line_starts_a_worker_with_celerys_meaning(project: Project) -> None:
    project.write_tasks(FLAG_TASKS)
    host = socket.gethostname()
    node = f"flags@{host}"
    logs = project.path / "logs"
    logs.mkdir()
    worker = project.start_worker(
        "-P", "threads", "-c", "1", "--processes", "2", "-n", "flags@%h",
        "-E", "--without-gossip", "--without-mingle", "--without-heartbeat", "-O", "fair",
        "-Q", "celery,other", "-X", "other",
        "--logfile", f"{logs}/%n%I.log", "--pidfile", f"{project.path}/%n.pid", ready=False)
    supervisor_log = logs / "flags.log"
    wait_until(lambda: any("all worker processes ready" in line
                           for line in log_lines(supervisor_log)),
               timeout=30, message="ready in the --logfile")

    # --pidfile: the supervisor's pid; a second worker with the same file refuses to start.
    pidfile = project.path / "flags.pid"
    assert pidfile.read_text() == f"{worker.proc.pid}\n"
    refused = celeriac(project, "-A", "tasks", "worker", "-P", "solo", "-n", "flags@%h",
                       "--pidfile", f"{project.path}/%n.pid")
    assert refused.returncode == 73, refused.stderr
    assert f"names process {worker.proc.pid}, which is running" in refused.stderr
    assert pidfile.read_text() == f"{worker.proc.pid}\n"

    # -X other: consumes -Q's queues (and its pool's) but that one.
    [entry] = [w for w in project.status()["workers"] if w["name"] == node]
    assert entry["queues"] == ["celery", "celery.threads"]
    app = project.app()
    assert app.tasks["tasks.add"].delay(2, 3).get(timeout=30) == 5
    app.send_task("tasks.add", (1, 1), queue="other")
    time.sleep(1.0)  # two heartbeats (0.5 s) and time for a wrong consumer to take it
    assert project.queue("other")["ready"] == 1

    # --without-heartbeat: no worker-heartbeat events (task events are on with -E), no
    # heartbeat_sent; but the node's heartbeat record is there (status listed it above).
    types = {event.type for event in app.broker.events(limit=1000)}
    assert {"worker-online", "task-received", "task-succeeded"} <= types, types
    assert "worker-heartbeat" not in types
    assert not (project.path / "heartbeat_sent.txt").exists()

    assert worker.stop() == 0
    assert not pidfile.exists(), "--pidfile not removed on exit"
    # --logfile: the supervisor's lines and each worker process's (%I: -1, -2) are there,
    # not on stderr; the no-op flags said so.
    supervisor_lines = "\n".join(log_lines(supervisor_log))
    for said in ("--without-gossip: nothing to turn off", "--without-mingle: nothing to turn off",
                 "--without-heartbeat: no worker-heartbeat events", "-O fair: nothing to change",
                 f"{node}: stopped"):
        assert said in supervisor_lines, supervisor_lines
    for index in (1, 2):
        lines = log_lines(logs / f"flags-{index}.log")
        assert any(f": INFO/Worker-{index - 1}]" in line for line in lines), lines
    assert "INFO" not in worker.log(), worker.log()


def test_loglevel_critical_and_a_stale_pidfile(project: Project) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    pidfile = project.path / "w.pid"
    pidfile.write_text(f"{dead.pid}\n")  # left by a worker that was killed
    worker = project.start_worker("-P", "solo", "-l", "critical", "--pidfile", str(pidfile),
                                  ready=False)
    wait_until(lambda: pidfile.read_text() == f"{worker.proc.pid}\n", timeout=30,
               message="the stale pidfile replaced")
    wait_until(lambda: any(w["pid"] == worker.proc.pid for w in project.status()["workers"]),
               timeout=30, message="the worker listed")
    assert worker.stop() == 0
    assert not pidfile.exists()
    # Nothing below CRITICAL: no start-up lines, no stale-pidfile warning.
    assert worker.log().strip() == "", worker.log()

    for name in ("FATAL", "warn", "Critical"):  # accepted: the error is --scheduler's, not -l's
        assert "cannot replace it" in celeriac(project, "-A", "tasks", "worker", "-l", name,
                                               "-B", "--scheduler", "x:Y").stderr


def test_beat_with_another_scheduler_class_is_refused_naming_it(project: Project) -> None:
    proc = celeriac(project, "-A", "tasks", "worker", "-B", "--scheduler",
                    "django_celery_beat.schedulers:DatabaseScheduler")
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    [error] = [line for line in proc.stderr.splitlines() if line.startswith("Error:")]
    assert "beat_scheduler" in error and "cannot replace it" in error


def test_report_shows_versions_and_masks_secrets(project: Project) -> None:
    secret_url = "redis://:s3cretpassword@127.0.0.1:1/0"  # never connected to
    proc = celeriac(project, "-A", "tasks", "report", env={"CELERIAC_RESULT_BACKEND": secret_url})
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "s3cretpassword" not in out
    assert "result_backend: 'redis://:**@127.0.0.1:1/0'" in out
    assert "celeriac:0.1.0" in out and f"py:{sys.version.split()[0]}" in out
    assert "system:" in out and "sqlite:" in out
    assert "task_default_queue" not in out  # only what was set, unless --all
    everything = celeriac(project, "-A", "tasks", "report", "--all",
                          env={"CELERIAC_RESULT_BACKEND": secret_url})
    assert "task_default_queue: 'celery'" in everything.stdout
    assert "s3cretpassword" not in everything.stdout


def test_shell_with_python_runs_what_stdin_says(project: Project) -> None:
    commands = "print(add(2, 3), app is celery is celeriac, add.name, app.main)\n"
    proc = celeriac(project, "-A", "tasks", "shell", "--python", stdin=commands)
    assert proc.returncode == 0, proc.stderr
    assert "5 True tasks.add tasks" in proc.stdout, proc.stdout
    [listed] = [line for line in proc.stderr.splitlines() if line.startswith("tasks: ")]
    assert {"add", "fail", "sleep"} <= set(listed[len("tasks: "):].split(", "))  # the banner
    without = celeriac(project, "-A", "tasks", "shell", "--python", "-T",
                       stdin="print('add' in dir())\n")
    assert "False" in without.stdout, without.stdout
