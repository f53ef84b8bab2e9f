"""The ``celeriac`` command line, end to end, as a user runs it.

Every test runs ``python -m celeriac ...`` (or a user's own script) as a real
subprocess in a temporary project holding ``tasks.py`` and a SQLite database;
workers are real ``celeriac worker`` subprocesses. Nothing is mocked.

Waits have generous upper bounds and only decide "did it happen"; nothing here
asserts how fast something was.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from conftest import TASKS, Project, Worker, normal_leg_only, wait_until

from celeriac import __version__

#: Every celeriac call here is a subprocess: a gevent-patched test process runs none of
#: celeriac's client code, so the patched leg would only repeat the normal one.
pytestmark = normal_leg_only

UNREACHABLE = "sqlite:////nonexistent-dir/x.db"


# -- helpers ----------------------------------------------------------------------------------
def run(project: Project, *args: str, env: dict[str, str] | None = None,
        timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """``python -m celeriac ARGS`` in the project, with extra environment; never checks."""
    return subprocess.run([sys.executable, "-m", "celeriac", *args], cwd=project.path,
                          env={**project.env, **(env or {})}, capture_output=True, text=True,
                          timeout=timeout)


def assert_one_line_error(proc: subprocess.CompletedProcess[str], *needles: str,
                          code: int = 1) -> str:
    """The command failed with ``code`` and said why in one line (no traceback)."""
    output = f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert proc.returncode == code, output
    assert "Traceback" not in proc.stderr, output
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, output
    for needle in needles:
        assert needle in lines[0], output
    return lines[0]


def assert_usage_error(proc: subprocess.CompletedProcess[str], *needles: str) -> str:
    """Click rejected the command line: exit 2, usage and one ``Error:`` line."""
    output = f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert proc.returncode == 2, output
    assert "Traceback" not in proc.stderr, output
    assert "Usage:" in proc.stderr, output
    errors = [line for line in proc.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, output
    for needle in needles:
        assert needle in errors[0], output
    return errors[0]


def call(project: Project, *args: str, app: str = "tasks") -> str:
    """``celeriac call ...``; the task id it printed."""
    task_id = project.cli("-A", app, "call", *args).stdout.strip()
    assert task_id and len(task_id.split()) == 1, task_id
    return task_id


def result(project: Project, task_id: str, *args: str, app: str = "tasks"
           ) -> tuple[int, dict[str, Any]]:
    """``celeriac result ID ...``: exit code and the JSON it printed."""
    proc = project.cli("-A", app, "result", task_id, *args, check=False)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def worker_entry(project: Project, name: str) -> dict[str, Any] | None:
    """The live worker called ``name`` in ``celeriac status --json``, if listed."""
    return next((w for w in project.status()["workers"] if w["name"] == name), None)


def start_script(project: Project, script: str) -> Worker:
    """Run ``python SCRIPT`` in the project (a user's own worker script), logged like a worker."""
    log_path = project.path / f"script-{len(project.workers)}.log"
    proc = subprocess.Popen([sys.executable, script], cwd=project.path, env=project.env,
                            text=True, stdout=log_path.open("w"), stderr=subprocess.STDOUT)
    worker = Worker(proc, log_path, [script])
    project.workers.append(worker)
    return worker


# -- call / result --------------------------------------------------------------------------
def test_call_prints_an_id_and_result_waits_for_the_worker(project: Project) -> None:
    task_id = call(project, "tasks.add", "--args", "[2, 3]")
    assert result(project, task_id) == (0, {"task_id": task_id, "status": "PENDING"})

    project.start_worker("-P", "threads", "-c", "2")
    code, out = result(project, task_id, "--wait", "30")
    assert code == 0
    assert out["task_id"] == task_id
    assert out["status"] == "SUCCESS"
    assert out["result"] == 5

    with_kwargs = call(project, "tasks.add", "--kwargs", '{"x": 40, "y": 2}')
    assert result(project, with_kwargs, "--wait", "30")[1]["result"] == 42


def test_result_of_a_failed_task_shows_the_error_and_exits_non_zero(project: Project) -> None:
    project.start_worker("-P", "threads")
    task_id = call(project, "tasks.fail", "--args", '["it broke"]')
    code, out = result(project, task_id, "--wait", "30")
    assert code != 0
    assert out["status"] == "FAILURE"
    assert out["error"] == {"type": "ValueError", "message": "it broke"}
    assert "ValueError: it broke" in out["traceback"]
    # Asking again (no wait) says the same.
    assert result(project, task_id) == (code, out)


def test_result_of_an_unknown_id_is_pending(project: Project) -> None:
    code, out = result(project, "no-such-task-id")
    assert code == 0
    assert out == {"task_id": "no-such-task-id", "status": "PENDING"}


# -- call options, status counts and purge ----------------------------------------------------
def test_countdown_queue_and_purge(project: Project) -> None:
    call(project, "tasks.add", "--args", "[1, 1]", "--countdown", "60")
    assert project.queue("celery") == {"ready": 0, "scheduled": 1, "in_flight": 0, "dead": 0}

    call(project, "tasks.add", "--args", "[1, 2]", "--queue", "other")
    call(project, "tasks.add", "--args", "[1, 3]", "-Q", "other")
    assert project.queue("other")["ready"] == 2
    assert project.queue("celery")["ready"] == 0

    purged = project.cli("-A", "tasks", "purge", "-Q", "other", "-f").stdout
    assert "purged 2 message(s)" in purged
    assert "other" in purged
    assert project.queue("other")["ready"] == 0
    assert project.queue("celery")["scheduled"] == 1, "purge -Q other touched another queue"

    call(project, "tasks.add", "--args", "[1, 4]")
    refused = project.cli("-A", "tasks", "purge", check=False)
    assert refused.returncode == 2 and "-f" in refused.stderr, "purged without confirmation"
    assert project.queue("celery")["ready"] == 1
    purged = project.cli("-A", "tasks", "purge", "-f").stdout
    assert "purged 2 message(s)" in purged  # the scheduled one and the ready one
    for name, counts in project.status()["queues"].items():
        assert counts["ready"] == counts["scheduled"] == 0, (name, counts)


# -- status -------------------------------------------------------------------------------------
def test_status_json_shape_and_live_workers(project: Project) -> None:
    call(project, "tasks.add", "--args", "[1, 1]", "--queue", "shape")
    data = project.status()
    assert set(data) == {"queues", "workers", "unserved", "beats"}
    assert data["beats"] == []
    assert data["workers"] == []
    assert data["unserved"] == ["shape"], "a queue with waiting messages and no worker"
    assert set(data["queues"]["shape"]) == {"ready", "scheduled", "in_flight", "dead"}
    assert data["queues"]["shape"]["ready"] == 1

    worker = project.start_worker("-P", "threads", "-c", "3", "-Q", "alpha,beta",
                                  "-n", "cli-status@test")
    entry = wait_until(lambda: worker_entry(project, "cli-status@test"), timeout=30,
                       message="worker listed in status")
    assert entry["pool"] == "threads"
    assert entry["concurrency"] == 3
    assert entry["queues"] == ["alpha", "beta", "celery.threads"], "-Q queues and the pool's own"

    assert worker.stop() == 0
    # A clean exit removes the worker at once, without waiting for its heartbeat to expire.
    assert worker_entry(project, "cli-status@test") is None


def test_status_table(project: Project) -> None:
    call(project, "tasks.add", "--args", "[1, 1]", "--queue", "tableq")
    call(project, "tasks.add", "--args", "[1, 2]", "--queue", "tableq")
    out = project.cli("-A", "tasks", "status").stdout
    rows = [line for line in out.splitlines() if "tableq" in line]
    assert len(rows) == 1, out
    assert "2" in rows[0].replace("tableq", "").split(), out
    assert "no live workers" in out


# -- -A forms ------------------------------------------------------------------------------------
@pytest.mark.parametrize("spec", ["tasks", "tasks:app"])
def test_app_as_module_or_module_attribute(project: Project, spec: str) -> None:
    task_id = call(project, "tasks.add", "--args", "[2, 3]", app=spec)
    assert project.queue("celery", app=spec)["ready"] == 1
    assert result(project, task_id, app=spec)[1]["status"] == "PENDING"


def test_app_as_file_path(project: Project) -> None:
    """``-A path/to/file.py:app`` from elsewhere: call, a worker and result all find it."""
    package = project.path / "src" / "deep"
    package.mkdir(parents=True)
    (package / "myapp.py").write_text(TASKS.replace('Celeriac("tasks")', 'Celeriac("myapp")'))
    spec = "src/deep/myapp.py:app"
    for form in (spec, "src/deep/myapp.py"):
        assert project.status(app=form)["workers"] == []

    project.start_worker("-P", "threads", app=spec)
    task_id = call(project, "myapp.add", "--args", "[2, 3]", app=spec)
    code, out = result(project, task_id, "--wait", "30", app=spec)
    assert (code, out.get("status"), out.get("result")) == (0, "SUCCESS", 5), out


def test_app_missing_module_is_one_line(project: Project) -> None:
    proc = run(project, "-A", "no_such_module", "status")
    assert_one_line_error(proc, "no_such_module")


def test_app_module_whose_own_import_fails_points_at_it(project: Project) -> None:
    """A module that exists but imports something missing is not reported as missing itself."""
    (project.path / "helpers_app.py").write_text("import helpers\n")
    proc = run(project, "-A", "helpers_app", "status")
    assert proc.returncode != 0
    assert "helpers_app.py" in proc.stderr, proc.stderr  # where the bad import is
    assert "'helpers'" in proc.stderr, proc.stderr


def test_app_module_without_an_app(project: Project) -> None:
    (project.path / "plain.py").write_text("x = 1\n")
    assert_one_line_error(run(project, "-A", "plain", "status"), "plain", "no Celeriac app")
    assert_one_line_error(run(project, "-A", "plain.py", "status"), "plain.py", "no Celeriac app")
    assert_one_line_error(run(project, "-A", "tasks:nothing_here", "status"),
                          "no attribute 'nothing_here'")
    assert_one_line_error(run(project, "-A", "tasks:add", "status"), "'add'",
                          "not a Celeriac app")
    assert_one_line_error(run(project, "-A", "missing.py", "status"), "missing.py")
    assert_one_line_error(run(project, "status"), "-A")


# -- bad input -----------------------------------------------------------------------------------
@pytest.mark.parametrize("command", [["worker", "-P", "threads"], ["call", "tasks.add"], ["status"]])
def test_unreachable_broker(project: Project, command: list[str]) -> None:
    proc = run(project, "-A", "tasks", *command,
               env={"CELERIAC_BROKER_URL": UNREACHABLE, "CELERIAC_RESULT_BACKEND": UNREACHABLE},
               timeout=60)
    assert_one_line_error(proc, "/nonexistent-dir/x.db")


@pytest.mark.parametrize("command", [["worker", "-P", "threads"], ["call", "tasks.add"], ["status"]])
def test_unknown_broker_scheme(project: Project, command: list[str]) -> None:
    proc = run(project, "-A", "tasks", *command, env={"CELERIAC_BROKER_URL": "foo://x"})
    line = assert_one_line_error(proc, "foo")
    assert "sqlite://" in line and "memory://" in line


def test_unknown_pool_lists_the_valid_ones(project: Project) -> None:
    line = assert_one_line_error(run(project, "-A", "tasks", "worker", "-P", "nosuchpool"),
                                 "nosuchpool")
    for pool in ("solo", "threads", "prefork"):
        assert pool in line


def test_misspelt_flag_is_a_usage_error(project: Project) -> None:
    error = assert_usage_error(run(project, "-A", "tasks", "worker", "--concurency", "4"),
                               "--concurency")
    assert "--concurrency" in error  # click suggests the right one


def test_call_args_must_be_a_json_list(project: Project) -> None:
    assert_usage_error(run(project, "-A", "tasks", "call", "tasks.add", "--args", "not json"),
                       "--args", "JSON")
    assert_usage_error(run(project, "-A", "tasks", "call", "tasks.add", "--args", '{"a":1}'),
                       "--args", "list")
    assert_usage_error(run(project, "-A", "tasks", "call", "tasks.add", "--kwargs", "[1]"),
                       "--kwargs")
    assert project.queue("celery")["ready"] == 0, "a rejected call sent something"


def test_worker_refuses_a_broker_inside_one_process(project: Project) -> None:
    proc = run(project, "-A", "tasks", "worker", "-P", "threads",
               env={"CELERIAC_BROKER_URL": "memory://"})
    assert_one_line_error(proc, "memory://", "shared broker")


@pytest.mark.parametrize("command", [["status"], ["worker", "-P", "threads"]])
def test_misspelt_setting_suggests_the_right_one(project: Project, command: list[str]) -> None:
    project.write_tasks("app.conf.update(task_default_queu='x')\n")
    proc = run(project, "-A", "tasks", *command)
    assert_one_line_error(proc, "task_default_queu", "did you mean", "task_default_queue")


# -- help and version ------------------------------------------------------------------------------
def test_version_and_help(project: Project) -> None:
    version = project.cli("--version").stdout
    assert __version__ in version
    assert "celeriac" in version

    top = project.cli("--help").stdout
    for command in ("worker", "call", "result", "status", "purge", "dead", "report", "shell"):
        assert command in top, top
    assert "-A" in top

    script = Path(sys.executable).parent / "celeriac"
    if script.exists():  # the installed console script is the same command
        proc = subprocess.run([str(script), "--version"], capture_output=True, text=True,
                              timeout=60)
        assert proc.returncode == 0 and __version__ in proc.stdout


def test_worker_help_lists_the_flags(project: Project) -> None:
    out = project.cli("worker", "--help").stdout
    for flag in ("-P", "--pool", "-c", "--concurrency", "-Q", "--queues", "-l", "--loglevel",
                 "-n", "--hostname", "--processes", "--prefetch-multiplier", "--time-limit",
                 "--soft-time-limit", "--max-tasks-per-child", "--max-memory-per-child",
                 "--shutdown-timeout", "-X", "--exclude-queues", "-f", "--logfile", "--pidfile",
                 "-E", "--events", "--without-heartbeat", "--without-gossip", "--without-mingle",
                 "-O", "--optimization", "-B", "--beat"):
        assert flag in out.split() or f"{flag}," in out.split(), f"{flag} not in:\n{out}"


# -- pool flag spellings -----------------------------------------------------------------------------
@pytest.mark.parametrize("spelling", [["-Pthreads"], ["--pool=threads"]])
def test_pool_flag_spellings(project: Project, spelling: list[str]) -> None:
    node = f"spelling-{spelling[0].strip('-=')}@test"
    worker = project.start_worker(*spelling, "-c", "2", "-n", node)
    entry = wait_until(lambda: worker_entry(project, node), timeout=30,
                       message="worker listed in status")
    assert entry["pool"] == "threads"
    task_id = call(project, "tasks.add", "--args", "[20, 22]")
    assert result(project, task_id, "--wait", "30")[1].get("result") == 42
    assert worker.stop() == 0


# -- app.worker_main ------------------------------------------------------------------------------
def test_worker_main_from_a_user_script(project: Project) -> None:
    (project.path / "run_worker.py").write_text(textwrap.dedent('''
        import sys

        from tasks import app

        if __name__ == "__main__":
            sys.exit(app.worker_main(["worker", "-P", "threads", "-c", "2", "-n", "script@test"]))
    '''))
    worker = start_script(project, "run_worker.py")
    project.wait_ready(worker)
    entry = wait_until(lambda: worker_entry(project, "script@test"), timeout=30,
                       message="script worker listed in status")
    assert (entry["pool"], entry["concurrency"]) == ("threads", 2)

    task_id = call(project, "tasks.add", "--args", "[2, 3]")
    code, out = result(project, task_id, "--wait", "30")
    assert (code, out.get("result")) == (0, 5), out

    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0, worker.log()
    assert worker_entry(project, "script@test") is None


def test_worker_main_in_the_module_that_defines_the_app(project: Project) -> None:
    """The Celery idiom: tasks and ``worker_main`` in one script run with ``python script.py``.

    The script's tasks live in ``__main__`` there, and in module ``standalone`` in the
    worker processes and for ``celeriac -A standalone``: all must agree on the names.
    """
    (project.path / "standalone.py").write_text(textwrap.dedent('''
        import sys

        from celeriac import Celeriac

        app = Celeriac()

        @app.task
        def mul(x, y):
            return x * y

        if __name__ == "__main__":
            assert mul.name == "standalone.mul", mul.name
            sys.exit(app.worker_main(["worker", "-P", "threads", "-c", "2"]))
    '''))
    worker = start_script(project, "standalone.py")
    project.wait_ready(worker)
    task_id = call(project, "standalone.mul", "--args", "[6, 7]", app="standalone")
    code, out = result(project, task_id, "--wait", "30", app="standalone")
    assert (code, out.get("result")) == (0, 42), out
    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0, worker.log()


def test_worker_main_with_a_bad_flag_returns_2(project: Project) -> None:
    (project.path / "bad_worker.py").write_text(textwrap.dedent('''
        import sys

        from tasks import app

        if __name__ == "__main__":
            sys.exit(app.worker_main(["worker", "--concurency", "4"]))
    '''))
    proc = subprocess.run([sys.executable, "bad_worker.py"], cwd=project.path, env=project.env,
                          capture_output=True, text=True, timeout=60)
    assert_usage_error(proc, "--concurency")


# -- dead letters ------------------------------------------------------------------------------------
def test_dead_lists_unknown_tasks_with_a_reason(project: Project) -> None:
    project.start_worker("-P", "threads")
    task_id = call(project, "tasks.no_such_task", "--args", "[1]")

    def letters() -> list[dict[str, Any]]:
        out = project.cli("-A", "tasks", "dead").stdout
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    found = wait_until(lambda: [d for d in letters() if d["id"] == task_id], timeout=30,
                       message="dead letter listed")
    letter = found[0]
    assert letter["task"] == "tasks.no_such_task"
    assert letter["queue"] == "celery"
    assert "tasks.no_such_task" in letter["reason"]
    assert project.queue("celery")["dead"] >= 1
    # --queue filters: nothing dead in another queue.
    assert project.cli("-A", "tasks", "dead", "-Q", "other").stdout.strip() == ""
